"""Minimal adversarial examples (Section 4.1 of Szegedy et al. 2014) and the controls they are compared to.

The public surface is flat, one contract for every attack (check, search, verify)::

    from intriguing.attacks import LBFGS, LBFGSConfig, Targeted, Untargeted
    result = LBFGS(LBFGSConfig.paper())(model, x, Targeted(t))   # or target=t; Untargeted(y) / labels=y
    result.adversarial, result.success, result.distortion

* :class:`LBFGS` — the paper's box-constrained L-BFGS attack, batched: every example has its own
  penalty constant ``c``, quasi-Newton memory and line search; configured by an :class:`LBFGSConfig`
  (``.paper()``, ``.pool()``, ``.refined()``);
* :class:`Attack` — the base class: input checks, the subclass's search, verification by a forward pass;
* :class:`Targeted`, :class:`Untargeted` — what counts as a success;
* :func:`exact_linear` — the exact optimum for linear softmax models (a QP), the attack's oracle;
* :func:`gaussian_noise`, :func:`rescale_perturbation` — Table 2/4 controls;
* :class:`AttackResult`, :func:`rms_distortion` — the shared record and the paper's distortion measure.

Random target classes come from :func:`intriguing.seeding.random_targets`.
"""

from intriguing.attacks.base import Attack, AttackResult, rms_distortion
from intriguing.attacks.config import LBFGSConfig
from intriguing.attacks.controls import gaussian_noise, rescale_perturbation
from intriguing.attacks.criteria import Targeted, Untargeted
from intriguing.attacks.exact import exact_linear
from intriguing.attacks.lbfgs import LBFGS

__all__ = [
    "LBFGS", "Attack", "AttackResult", "LBFGSConfig", "Targeted", "Untargeted", "exact_linear", "gaussian_noise",
    "rescale_perturbation", "rms_distortion",
]
