"""Minimal adversarial examples (Section 4.1 of Szegedy et al. 2014) and the controls they are compared to.

The public surface is flat::

    from intriguing.attacks import LBFGS, AttackResult, rms_distortion
    result = LBFGS()(model, x, target=t)       # or labels=y for the untargeted attack
    result.adversarial, result.success, result.distortion

* :class:`LBFGS` — the paper's box-constrained L-BFGS attack, batched: every example has its own
  penalty constant ``c``, quasi-Newton memory and line search;
* :func:`exact_linear` — the exact optimum for linear softmax models (a QP), the attack's oracle;
* :func:`gaussian_noise`, :func:`rescale_perturbation` — Table 2/4 controls;
* :class:`AttackResult`, :func:`rms_distortion` — the shared record and the paper's distortion measure;
* :func:`random_targets` — seeded random target classes (never the label).
"""

from intriguing.attacks.base import AttackResult, random_targets, rms_distortion
from intriguing.attacks.controls import gaussian_noise, rescale_perturbation
from intriguing.attacks.exact import exact_linear
from intriguing.attacks.lbfgs import LBFGS

__all__ = [
    "LBFGS", "AttackResult", "exact_linear", "gaussian_noise", "random_targets", "rescale_perturbation", "rms_distortion",
]
