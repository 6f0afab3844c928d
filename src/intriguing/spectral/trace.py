"""The layers a network's forward pass calls, and how they connect: the graph the bounds compose over.

Section 4.3 bounds a network layer by layer. :func:`trace_graph` finds those layers by tracing the
forward pass with ``torch.fx``: leaf modules (modules without children) are layers, and the
functional operations between them are read by :mod:`intriguing.spectral.functional` as layers
(``torch.flatten``, ``F.relu6``, ...) or as merges of branches (residual additions, ``torch.cat``).
Only what the forward pass runs is traced, in execution order (the autoencoder's decoder, never
called by its classifier, is not part of the function). A network ``torch.fx`` cannot trace (Python
control flow on values) is still accepted when it is a chain of modules, found with forward hooks.
"""

from __future__ import annotations

import contextlib
import inspect
import operator
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import fx, nn

from intriguing.errors import IntriguingError
from intriguing.spectral import functional
from intriguing.spectral.graph import INPUT, LAYER, SUM, LayerCall, LayerGraph, Step, fold_batch_norms
from intriguing.spectral.functional import Merge, Parts, Refused, Unary


@contextlib.contextmanager
def evaluation_mode(model: nn.Module) -> Iterator[nn.Module]:
    """The model in eval mode inside the block (dropout off, batch-norm running statistics), restored after."""
    training = {module: module.training for module in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for module, flag in training.items():
            module.training = flag


def trace_layers(model: nn.Module, input_shape: Sequence[int]) -> list[LayerCall]:
    """The layers the forward pass calls, in execution order, with their input and output shapes."""
    return trace_graph(model, input_shape).calls


def trace_graph(model: nn.Module, input_shape: Sequence[int]) -> LayerGraph:
    """The forward pass of ``model`` on one input shaped ``input_shape`` as a :class:`LayerGraph`.

    Batch norms that directly follow a convolution are folded into it. An operation without a
    Lipschitz rule (e.g. a product of two branches) is refused with its name, unless the network is
    a chain of modules anyway.
    """
    input_shape = _checked_shape(input_shape)
    x = torch.zeros((1, *input_shape), **placement(model))
    with evaluation_mode(model):
        if next(model.children(), None) is None and type(model).__module__.startswith("torch."):
            return _chain(model, x)  # one of PyTorch's layers on its own
        try:
            graph = _fx_graph(model, x)
        except Refused as e:
            try:
                graph = _chain(model, x)
            except IntriguingError as chain_error:
                raise IntriguingError(f"{chain_error}; torch.fx cannot read it as a graph either: {e}") from None
    return fold_batch_norms(graph)


def _checked_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    try:
        shape = tuple(int(d) for d in input_shape)
    except (TypeError, ValueError):
        shape = ()
    if not shape or any(d < 1 for d in shape) or any(d != s for d, s in zip(shape, input_shape)):
        raise IntriguingError(
            f"input_shape: expected the shape of one input without the batch dimension, e.g. (1, 28, 28), "
            f"got {input_shape!r}"
        )
    return shape


def placement(module: nn.Module) -> dict[str, Any]:
    """The dtype and device of the module's first parameter (float32 on the CPU for parameter-free modules)."""
    parameter = next(module.parameters(), None)
    if parameter is None or not parameter.is_floating_point():
        return {"dtype": torch.float32, "device": torch.device("cpu")}
    return {"dtype": parameter.dtype, "device": parameter.device}


def _run(model: nn.Module, x: torch.Tensor, run: Any) -> Any:
    """``run()`` under no_grad, with a wrong input shape reported as one clear error."""
    try:
        with torch.no_grad():
            return run()
    except (RuntimeError, ValueError, TypeError, IndexError) as e:
        raise IntriguingError(
            f"the model does not accept inputs shaped {tuple(x.shape[1:])} (without the batch dimension): "
            f"{str(e).splitlines()[0] if str(e) else type(e).__name__}"  # torch.fx appends the graph node on more lines
        ) from None


# --- torch.fx ---------------------------------------------------------------------------------------------------


class _LeafTracer(fx.Tracer):
    """Stops at modules without children: those are the layers with a registered bound."""

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return next(module.children(), None) is None


class _Recorder(fx.Interpreter):
    """Runs the traced graph once and keeps every node's value (shapes, constants)."""

    def __init__(self, module: fx.GraphModule):
        super().__init__(module, garbage_collect_values=False)
        self.values: dict[fx.Node, Any] = {}

    def run_node(self, node: fx.Node) -> Any:
        self.values[node] = value = super().run_node(node)
        return value


def _fx_graph(model: nn.Module, x: torch.Tensor) -> LayerGraph:
    try:
        graph = _LeafTracer().trace(model)
    except Exception as e:  # tracing runs the user's forward on proxies: any error means "not traceable"
        raise Refused(f"tracing fails ({type(e).__name__}: {e})") from None
    recorder = _Recorder(fx.GraphModule(model, graph))
    _run(model, x, lambda: recorder.run(x))
    return _Translation(model, recorder.values).graph(graph)


class _Translation:
    """Reads traced nodes into steps: which nodes depend on the input, and by which rule."""

    def __init__(self, model: nn.Module, values: dict[fx.Node, Any]):
        self.model, self.values = model, values
        self.steps: list[Step] = [Step(INPUT)]
        self.index: dict[fx.Node, int] = {}  # variable tensor node -> its step
        self.parts: dict[fx.Node, int] = {}  # variable tuple of pieces -> the step they are pieces of

    def graph(self, graph: fx.Graph) -> LayerGraph:
        placeholders = [node for node in graph.nodes if node.op == "placeholder"]
        self.index[placeholders[0]] = 0  # later placeholders keep their defaults: constants
        for node in graph.nodes:
            if node.op == "output":
                if len(self.steps) == 1:
                    raise IntriguingError("the model's forward pass does nothing to its input: nothing to bound")
                return LayerGraph(tuple(self.steps), self._output(node.args[0]))
            if node.op in ("call_module", "call_function", "call_method") and self._variable_inputs(node):
                self._read(node)
        raise AssertionError("unreachable: an fx graph ends with its output")

    def _variable_inputs(self, node: fx.Node) -> list[fx.Node]:
        return [n for n in node.all_input_nodes if n in self.index or n in self.parts]

    def _output(self, result: Any) -> int:
        if not isinstance(result, fx.Node) or result not in self.index:
            raise Refused(f"the model returns {type(self.values.get(result, result)).__name__}, not one tensor "
                          "computed from its input")
        return self.index[result]

    def _read(self, node: fx.Node) -> None:
        value, label = self.values[node], _label(node)
        if node.target in functional.SHAPE_QUERIES and not isinstance(value, torch.Tensor):
            return  # a shape: the same for every input of this shape
        if node.op == "call_module":
            self._module(node, value)
        elif node.target is operator.getitem and node.args[0] in self.parts:
            self._add(node, Step(SUM, (self.parts[node.args[0]],), (1.0,)))  # a piece: a restriction
        else:
            rule = functional.OPERATIONS.get(node.target)
            if rule is None:
                raise Refused(f"{node.name!r} ({label}) has no Lipschitz rule; make it a module and register its "
                              "bound with intriguing.spectral.register_bound")
            self._translated(node, rule(self._op(node, label)), value)
        mutated = node.args[0] if node.args else None
        if node in self.index and mutated in self.index and self._in_place(node):
            self.index[mutated] = self.index[node]  # later reads of the mutated tensor see the new value

    def _in_place(self, node: fx.Node) -> bool:
        """Whether ``node`` overwrites its first argument (``x += y``, ``x.mul_(2)``, ``ReLU(inplace=True)``)."""
        if node.op == "call_module":
            return getattr(self.model.get_submodule(node.target), "inplace", False) is True
        if node.op == "call_method":
            return node.target.endswith("_") and not node.target.endswith("__")
        if node.target in (operator.iadd, operator.isub, operator.imul, operator.itruediv):
            return True
        try:
            return inspect.signature(node.target).bind(*node.args, **node.kwargs).arguments.get("inplace") is True
        except (TypeError, ValueError):
            return False

    def _module(self, node: fx.Node, value: Any) -> None:
        if node.kwargs or len(node.args) != 1 or node.args[0] not in self.index:
            raise Refused(f"layer {node.target!r} takes other arguments than one tensor")
        self._layer(node, LayerCall(node.target, self.model.get_submodule(node.target), (), ()), node.args[0], value)

    def _translated(self, node: fx.Node, translation: Unary | Merge | Parts, value: Any) -> None:
        variables = set(self._variable_inputs(node))
        if isinstance(translation, Parts):
            if variables != {translation.source} or translation.source not in self.index:
                raise Refused(f"{node.name!r}: pieces of more than one tensor")
            self.parts[node] = self.index[translation.source]
        elif isinstance(translation, Unary):
            if variables != {translation.source} or translation.source not in self.index:
                raise Refused(f"{node.name!r} ({translation.kind}) depends on the input through several arguments")
            call = LayerCall(node.name, translation.module, (), (), translation.kind)
            self._layer(node, call, translation.source, value)
        else:
            sources = [source for source, _ in translation.terms]
            if not variables <= set(sources) or not all(source in self.index for source in sources):
                raise Refused(f"{node.name!r}: an argument depending on the input is not covered by its rule")
            weights = tuple(w for _, w in translation.terms)
            self._add(node, Step(translation.how, tuple(self.index[s] for s in sources), weights))

    def _layer(self, node: fx.Node, call: LayerCall, source: fx.Node, value: Any) -> None:
        if not isinstance(value, torch.Tensor):
            raise Refused(f"layer {call.name!r} returns {type(value).__name__}, not a tensor")
        shapes = tuple(self.values[source].shape[1:]), tuple(value.shape[1:])
        call = LayerCall(call.name, call.module, *shapes, call.kind)
        self._add(node, Step(LAYER, (self.index[source],), (1.0,), call))

    def _add(self, node: fx.Node, step: Step) -> None:
        if not isinstance(self.values[node], torch.Tensor):
            raise Refused(f"{node.name!r} ({_label(node)}) gives {type(self.values[node]).__name__}, which depends "
                          "on the input's values")
        self.index[node] = len(self.steps)
        self.steps.append(step)

    def _op(self, node: fx.Node, label: str) -> functional.Op:
        def constant(a: Any) -> Any:
            return a if a in self.index or a in self.parts else self.values.get(a, a)

        args = fx.node.map_arg(node.args, constant)
        kwargs = fx.node.map_arg(node.kwargs, constant)
        return functional.Op(label, tuple(args), dict(kwargs), lambda a: isinstance(a, fx.Node) and a in self.index,
                             lambda a: self.values[a].numel(), self.values[node].numel()
                             if isinstance(self.values[node], torch.Tensor) else 0)


def _label(node: fx.Node) -> str:
    return node.target if node.op == "call_module" else functional.label(node.target)


# --- chains of modules, with forward hooks ------------------------------------------------------------------------


def _chain(model: nn.Module, x: torch.Tensor) -> LayerGraph:
    """The leaf modules called in order, if each takes the previous one's output unchanged, as a chain graph.

    Anything else (a functional op between modules, a branch, an in-place change of a layer's
    output before the next layer reads it) is refused: the product of per-layer bounds would not
    bound such a network.
    """
    leaves = [(name or type(module).__name__, module) for name, module in model.named_modules()
              if next(module.children(), None) is None]
    calls: list[list[Any]] = []

    def before(name: str):
        return lambda module, inputs: calls.append([name, module, inputs, _versions(inputs), None, None])

    def after(module: nn.Module, inputs: Any, output: Any) -> None:
        entry = next(e for e in reversed(calls) if e[1] is module and e[4] is None)
        entry[4:] = [output, getattr(output, "_version", None)]

    handles = [module.register_forward_pre_hook(before(name)) for name, module in leaves]
    handles += [module.register_forward_hook(after) for _, module in leaves]
    try:
        out = _run(model, x, lambda: model(x))
    finally:
        for handle in handles:
            handle.remove()
    return LayerGraph(tuple([Step(INPUT), *_chain_steps(calls, x, out)]), len(calls))


def _versions(inputs: tuple) -> tuple:
    return tuple(getattr(t, "_version", None) for t in inputs)


def _chain_steps(calls: list[list[Any]], x: torch.Tensor, out: Any) -> list[Step]:
    if not calls:
        raise IntriguingError("the model's forward pass calls no module: nothing to bound")
    previous, version, steps = x, x._version, []
    for i, (name, module, inputs, versions, output, output_version) in enumerate(calls):
        if len(inputs) != 1 or inputs[0] is not previous or versions[0] != version:
            raise IntriguingError(
                f"layer {name!r} ({type(module).__name__}) does not take the previous layer's output: the model "
                "is not a chain of modules (a functional op such as torch.flatten, or a branch, sits between "
                "layers); use modules (e.g. nn.Flatten) so that every step is a layer with a bound"
            )
        if not isinstance(output, torch.Tensor):
            raise IntriguingError(f"layer {name!r} ({type(module).__name__}) returns {type(output).__name__}, "
                                  "not a tensor")
        call = LayerCall(name, module, tuple(inputs[0].shape[1:]), tuple(output.shape[1:]))
        steps.append(Step(LAYER, (i,), (1.0,), call))
        previous, version = output, output_version
    if out is not previous or out._version != version:
        raise IntriguingError(
            f"the model's output is not the output of its last layer {calls[-1][0]!r}: an operation after "
            "the last module is not covered by any bound; make it a module"
        )
    return steps
