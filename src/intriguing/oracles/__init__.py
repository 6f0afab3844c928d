"""Oracles: exact answers and certified bounds that attacks and the paper's bounds are measured against.

* :func:`exact_minimal_distortion` — the exact minimal targeted L2 distortion of a small ReLU net
  (Szegedy et al. 2014, Sec. 4.1, Eq. 1) as a big-M mixed-integer program (Tjeng et al. 2019):
  the attack's point is polished by region QPs, then proven optimal by batched branch and bound
  with optimised linear bounds (beta-CROWN style, :mod:`~intriguing.oracles.verify`), or bracketed
  by branch and bound with exact QP node bounds; or by SCIP (``solver="scip"``);
* :func:`~intriguing.oracles.compare.compare_with_attack` — attack, certified bound and exact optimum side by side;
* :func:`certified_lower_bound` — a proven lower bound on that distortion from linear bound
  propagation (CROWN, Zhang et al. 2018), for ReLU and sigmoid chains;
* :func:`lipsdp` — LipSDP-Neuron's global Lipschitz constant (Fazlyab et al. 2019), beside
  :func:`product_bound` (the paper's Sec. 4.3 bound) and :func:`jacobian_lower_bound`;
* :func:`chain_of`, :func:`layer_bounds`, :class:`Domain` — the network form and the bounds beneath.

Example::

    from intriguing.attacks import LBFGS
    from intriguing.oracles import certified_lower_bound, exact_minimal_distortion
    found = LBFGS()(model, x, target=t)
    lower = certified_lower_bound(model, x, t, upper=found.distortion)
    exact = exact_minimal_distortion(model, x, t, start=found.adversarial)   # lower <= exact <= found
"""

from intriguing.oracles.certify import certified_lower_bound
from intriguing.oracles.lipsdp import LipschitzBound, jacobian_lower_bound, lipsdp, product_bound
from intriguing.oracles.mip import ExactResult, exact_minimal_distortion
from intriguing.chains import Chain, chain_of
from intriguing.oracles.propagation import Domain, layer_bounds

__all__ = [
    "Chain", "Domain", "ExactResult", "LipschitzBound", "certified_lower_bound", "chain_of",
    "exact_minimal_distortion", "jacobian_lower_bound", "layer_bounds", "lipsdp", "product_bound",
]
