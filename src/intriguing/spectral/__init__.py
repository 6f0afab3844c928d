"""Layer-wise Lipschitz upper bounds next to the exact norms (Szegedy et al. 2014, Section 4.3, Table 5).

The paper measures a network's instability by an upper Lipschitz constant per layer,
``||phi_k(x) - phi_k(x + r)|| <= L_k ||r||``, whose product bounds the whole network. This package
walks a network's layers in execution order and records, per layer, the paper's bound and the
exact Lipschitz constant of the layer *as implemented* (padding, stride, dilation and groups
included), so one can see how loose the paper's method is; the bounds compose over any graph of
layers (residual additions, concatenations), not only chains. The public surface is flat::

    from intriguing import spectral
    table = spectral.spectral_table(model, (1, 28, 28), images=x)   # rows, whole-network bound, lower bounds
    spectral.layer_bounds(model, (3, 227, 227))                     # the rows only

* :mod:`~intriguing.spectral.trace` and :mod:`~intriguing.spectral.graph`: the layers (``torch.fx``,
  or forward hooks for chains) and how their constants compose;
* :mod:`~intriguing.spectral.bounds` and :mod:`~intriguing.spectral.activations`: the per-kind
  registry (:func:`register_bound`) and the bounds of the layers of the paper and of modern networks;
* :mod:`~intriguing.spectral.conv`: Section 4.3's stride-aware Fourier bound of a convolution;
* :mod:`~intriguing.spectral.lanczos`: exact operator norms through the layer's own code;
* :mod:`~intriguing.spectral.table`: the records, the walk and the empirical lower bounds.
"""

from intriguing.spectral import activations as _activations  # noqa: F401  (registers the activations' bounds)
from intriguing.spectral.bounds import BoundEstimate, BoundFunction, register_bound
from intriguing.spectral.conv import PADDING_MODES, conv2d_map, conv_fourier_bound
from intriguing.spectral.graph import LayerCall, LayerGraph, Step, fold_batch_norms, folded_convolution
from intriguing.spectral.lanczos import NormSettings, OperatorNorm, operator_norm
from intriguing.spectral.table import (
    LayerBound,
    SpectralTable,
    adversarial_pairs,
    gradient_lower_bound,
    layer_bounds,
    pair_ratios,
    spectral_table,
)
from intriguing.spectral.trace import evaluation_mode, trace_graph, trace_layers

__all__ = [
    "PADDING_MODES", "BoundEstimate", "BoundFunction", "LayerBound", "LayerCall", "LayerGraph", "NormSettings",
    "OperatorNorm", "SpectralTable", "Step", "adversarial_pairs", "conv2d_map", "conv_fourier_bound",
    "evaluation_mode", "fold_batch_norms", "folded_convolution", "gradient_lower_bound", "layer_bounds",
    "operator_norm", "pair_ratios", "register_bound", "spectral_table", "trace_graph", "trace_layers",
]
