"""Adversarial training with a refreshed pool of adversarial examples, per layer (Section 4.1).

Szegedy et al. 2014, Section 4.1, on training with adversarial examples: a two-layer 100-100-10
network reached "a test error below 1.2% by keeping a pool of adversarial examples a random subset
of which is continuously replaced by newly generated adversarial examples and which is mixed into
the original training set all the time" (weight decay, no dropout); the same network gets 1.6% with
weight decay alone and about 1.3% with "carefully applied dropout". And: "we only got improvements
by generating adversarial examples for each layer outputs which were used to train all the layers
above. The network was trained in an alternating fashion, maintaining and updating a pool of
adversarial examples for each layer separately in addition to the original training set."

How this package does it:

- :mod:`~intriguing.advtrain.layers` cuts a network after a layer: a hidden layer ``h``'s pool
  holds the activations ``h'`` that the attack found for the layers above, ``model[h+1:]``.
- :mod:`~intriguing.advtrain.pools` keeps a :class:`Pool` per perturbed layer. Every minibatch of
  the original training set is joined by ``pool_batch`` examples drawn from one pool; the pools
  take turns step by step (the paper's alternation), and a hidden layer's pool trains only the
  layers above it. After ``warmup_epochs`` of plain training the pools are filled; then every
  ``refresh_every`` steps a random ``refresh_fraction`` of each pool is replaced by adversarial
  examples freshly generated, in one batch, for the current network.
- :mod:`~intriguing.advtrain.robustness` measures the average minimum RMS distortion of
  adversarial examples for fixed test images and targets, before (the weight-decay baseline) and
  after.
- :mod:`~intriguing.advtrain.study` runs the comparison: the baselines (weight decay only; dropout)
  through the same harness with no pools, so every variant shares the data, the recipe, the
  minibatch loop and the seeds; mean ± std over seeds.

Usage::

    from intriguing import advtrain
    study = advtrain.run_experiment(advtrain.AdvTrainStudyConfig(seeds=(0,), limit=1000))
    study.summary  # one VariantSummary per variant
"""

from intriguing.advtrain.layers import INPUT, attack_layer, hidden_layers, split_at
from intriguing.advtrain.pools import TARGETS, AdvTrainConfig, Pool, RefreshEvent, TrainingLog, adversarial_train
from intriguing.advtrain.robustness import EVAL_SEED, Robustness, min_distortion
from intriguing.advtrain.study import (
    AdvTrainStudy,
    AdvTrainStudyConfig,
    RunResult,
    Variant,
    VariantSummary,
    collect_study,
    run_experiment,
    run_one,
    study_jobs,
    summarise_runs,
    train_and_evaluate,
)

__all__ = [
    "EVAL_SEED", "INPUT", "TARGETS",
    "AdvTrainConfig", "AdvTrainStudy", "AdvTrainStudyConfig", "Pool", "RefreshEvent", "Robustness", "RunResult",
    "TrainingLog", "Variant", "VariantSummary",
    "adversarial_train", "attack_layer", "hidden_layers", "collect_study", "min_distortion",
    "run_experiment", "run_one", "split_at", "study_jobs", "summarise_runs", "train_and_evaluate",
]
