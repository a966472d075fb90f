"""Following the image through a model: which module outputs are maps of the image alone.

A model Grad-CAM is given may do more than look at the image: a CLIP wrapper also encodes text
prompts, a captioner decodes text that attends to the image, DETR decodes learned queries, a
Faster R-CNN pools features inside proposals. Only some of its layers output what Grad-CAM
needs, a map of each image: :func:`trace_image` runs one forward pass that records the
autograd graph from the pixels and the parameters (fresh leaves standing in for them, so a
frozen model is traced alike) and every module call with its inputs and outputs, and
:class:`ImageFlow` answers, per call:

* **depends on the image**: the pixel tensor is an ancestor of the output in the autograd
  graph (a text tower's outputs are not; neither are proposals, which detectors detach);
* **per image**: the output's dim 0 is the input's batch size ``B`` (not 5 prompts, not 150
  proposals);
* **not mixed**: the output does not also depend on a *non-image input*: a tensor given to a
  module that comes from outside the computation (no autograd history, while everything
  computed from the pixels or the parameters has one), has one entry per image (dim 0 is
  ``B``, or it is one of a list of ``B`` tensors) and is not a parameter or buffer of the
  model, nor on the output of a module given one: token ids and their embeddings, attention
  and pixel masks, zero-initialized object queries, proposals (detectors detach them). Once
  the image meets such an input (cross-attention to text, image and text tokens in one
  sequence, queries attending to the image, features pooled in proposals), what follows is no
  longer a map of the image;
* **on the path to the output**: the model's output depends on it; here and for the cut
  below, the output is what the model returns less the intermediates it returns alongside
  (MONAI's ViT returns its logits and every block's hidden states, Hugging Face models may
  return hidden states): a returned tensor that another returned tensor is computed from;
* **not the output itself**: no score is computed after it, only reshaping and resampling
  (a segmenter's class-logit map, upsampled to the input, is its output, not a feature map);
* **a cut**: every path from the pixels to the output passes through it (the last stage of a
  feature pyramid is not one; the pyramid as a whole is).

:mod:`gradcam.layers` builds the default layer on these answers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from gradcam.hooks import ModuleCall, eval_mode, model_lock

__all__ = ["ImageFlow", "TracedCall", "trace_image"]

Node = Any  # an autograd graph node (``tensor.grad_fn``)

# Autograd nodes that only select, rearrange, copy or resample elements: a layer whose output
# reaches the model's output through these alone *is* the output.
_SHAPE_ONLY = (
    "View",
    "Reshape",
    "UnsafeView",
    "Permute",
    "Transpose",
    "T",
    "Select",
    "Slice",
    "Squeeze",
    "Unsqueeze",
    "Expand",
    "Clone",
    "ToCopy",
    "Alias",
    "AsStrided",
    "Upsample",
    "Unbind",
    "Split",
    "Stack",
    "Cat",
)


def _shape_only(node: Node) -> bool:
    name = type(node).__name__.rstrip("0123456789")
    return name.endswith("Backward") and name[: -len("Backward")].startswith(_SHAPE_ONLY)


@dataclass
class TracedCall:
    """One module call seen by :func:`trace_image`.

    Attributes:
        call: the call as :func:`gradcam.hooks.record_outputs` describes it.
        output: the raw output (a tensor, a dict or list of them, ...).
        outputs: the output's tensors with their graph nodes at the time of the call.
        inputs: the input tensors (positional and keyword, inside lists and dicts) with their
            graph nodes, and whether each came in a list of ``B`` tensors (one per image).
    """

    call: ModuleCall
    output: Any
    outputs: list[tuple[Tensor, Node]]
    inputs: list[tuple[Tensor, Node, bool]] = field(default_factory=list)


def _tensors(obj: Any, depth: int = 0) -> Iterator[Tensor]:
    """The tensors in ``obj`` and its nested lists, tuples and dicts."""
    if isinstance(obj, Tensor):
        yield obj
    elif depth < 4 and isinstance(obj, Mapping):
        for value in obj.values():
            yield from _tensors(value, depth + 1)
    elif depth < 4 and isinstance(obj, (list, tuple)):
        for value in obj:
            yield from _tensors(value, depth + 1)
    elif depth < 4 and dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for item in dataclasses.fields(obj):
            yield from _tensors(getattr(obj, item.name, None), depth + 1)


def _per_image_lists(obj: Any, batch: int, depth: int = 0) -> Iterator[tuple[Tensor, bool]]:
    """:func:`_tensors`, the flag saying whether the tensor is one of a list of ``batch``."""
    if isinstance(obj, Tensor):
        yield obj, False
    elif depth < 4 and isinstance(obj, Mapping):
        for value in obj.values():
            yield from _per_image_lists(value, batch, depth + 1)
    elif depth < 4 and isinstance(obj, (list, tuple)):
        listed = len(obj) == batch and all(isinstance(v, Tensor) for v in obj)
        for value in obj:
            if listed:
                yield value, True
            else:
                yield from _per_image_lists(value, batch, depth + 1)


def _parents(node: Node) -> Iterator[Node]:
    for parent, _ in getattr(node, "next_functions", ()):
        if parent is not None:
            yield parent


class ImageFlow:
    """What :func:`trace_image` saw: the module calls, in completion order, and the autograd
    graph from the pixels to the output (see the module docstring for what it answers).

    Examples:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        ...                     nn.Flatten(), nn.Linear(4, 2))
        >>> with trace_image(net, torch.randn(1, 3, 8, 8)) as flow:
        ...     [(t.call.name, flow.image_map(i)) for i, t in enumerate(flow.traced)]
        [('0', True), ('1', True), ('2', True), ('3', True), ('4', False)]
    """

    def __init__(
        self,
        model: nn.Module,
        traced: list[TracedCall],
        source: Node,
        outputs: list[tuple[Tensor, Node]],
        batch: int,
        parameters: Iterable[Tensor] = (),
    ) -> None:
        self.traced = traced
        self.batch = batch
        self._source = source
        # Cuts and the gradient probe follow the results; what is returned at all (hidden
        # states too) still counts as the output itself.
        self._outputs = _results(outputs)
        owned = {id(t) for t in model.buffers()} | {id(t) for t in parameters}
        parents: dict[Node, list[Node]] = {}
        pending = [n for t in traced for n in self._nodes(t)] + [n for _, n in outputs]
        pending.append(source)
        while pending:
            node = pending.pop()
            if node is None or node in parents:
                continue
            parents[node] = list(_parents(node))
            pending.extend(parents[node])
        children: dict[Node, list[Node]] = {node: [] for node in parents}
        for node, ups in parents.items():
            for up in ups:
                children.setdefault(up, []).append(node)
        self._parents = parents
        self.pixel = _closure([source], children)
        # Non-image inputs: per-image tensors given to a module that are not pixels (nor the
        # model's own parameters), and the outputs of the modules given them (token ids become
        # embeddings there: the ids themselves have no node in the graph).
        roots: list[Node] = []
        pure: set[Node] = set()
        for item in traced:
            other = [
                node
                for tensor, node, listed in item.inputs
                if node is None
                and not tensor.requires_grad
                and (listed or (tensor.dim() >= 1 and tensor.shape[0] == batch))
                and id(tensor) not in owned
                and id(getattr(tensor, "_base", None)) not in owned
            ]
            if not other:
                pure.update(n for _, n in item.outputs if n is not None)
                continue
            roots.extend(n for _, n in item.outputs if n is not None)
        self._nonimage = _closure([n for n in roots if n not in pure], children)
        mixed = self.pixel & self._nonimage
        #: The modules where the image meets other inputs: their output is mixed, no input is.
        self.mixing = [
            item.call.name
            for item in traced
            if any(n in mixed for _, n in item.outputs)
            and not any(n in mixed for _, n, _ in item.inputs)
        ]
        if any(n is not None for _, n in outputs):
            self.upstream = _closure([n for _, n in self._outputs], parents)
            self._output_itself = _closure([n for _, n in outputs], parents, through=_shape_only)
        else:  # an output whose tensors cannot be found: every layer may lead to it
            self.upstream, self._output_itself = set(parents), set()

    @staticmethod
    def _nodes(item: TracedCall) -> Iterator[Node]:
        yield from (n for _, n in item.outputs)
        yield from (n for _, n, _ in item.inputs)

    def _image_node(self, node: Node) -> bool:
        return (
            node is not None
            and node in self.pixel
            and node not in self._nonimage
            and node not in self._output_itself
        )

    def image_map(self, index: int) -> bool:
        """Whether call ``index``'s output is a per-image map of the image alone on the path to
        the output, and not the output itself (the module docstring's first five conditions;
        for a pyramid, every level but the path: one level on it is enough; the layout is
        :mod:`gradcam.reshapes`' business)."""
        outputs = self.traced[index].outputs
        return (
            bool(outputs)
            and all(
                t.dim() >= 1 and t.shape[0] == self.batch and self._image_node(n)
                for t, n in outputs
            )
            and any(n in self.upstream for _, n in outputs)
        )

    def is_cut(self, index: int) -> bool:
        """Whether every path from the pixels to the output passes through call ``index``'s
        output (all its tensors together, for a pyramid)."""
        stop = {n for _, n in self.traced[index].outputs}
        if not any(n is not None for _, n in self._outputs):
            return True  # no output found to follow (see __init__)
        return self._source not in _closure(
            [n for _, n in self._outputs if n not in stop], self._parents, stop=stop
        )

    def reaches_output(self, index: int, prefix: int) -> bool:
        """Whether the output depends on call ``index``'s tokens after the first ``prefix``
        (the patch tokens): a gradient of a random weighting of the outputs (ViT's head reads
        the class token only, so after its last attention no patch token does)."""
        tensor = self.traced[index].outputs[0][0]
        outputs = [t for t, n in self._outputs if n is not None and t.is_floating_point()]
        generator = torch.Generator().manual_seed(0)
        weights = [torch.randn(t.shape, generator=generator).to(t) for t in outputs]
        try:
            (grad,) = torch.autograd.grad(
                outputs, [tensor], weights, allow_unused=True, retain_graph=True
            )
        except RuntimeError:  # the tensor was changed in place since: no verdict, say yes
            return True
        return grad is not None and bool(grad[:, prefix:].ne(0).any())


def _closure(
    start: Iterable[Node],
    edges: Mapping[Node, Sequence[Node]],
    *,
    stop: set[Node] | None = None,
    through: Any = None,
) -> set[Node]:
    """Every node reachable from ``start`` along ``edges``, never entering ``stop``; with
    ``through``, only along nodes it accepts (the nodes just beyond them are reached)."""
    seen: set[Node] = set()
    pending = [n for n in start if n is not None]
    while pending:
        node = pending.pop()
        if node in seen or (stop is not None and node in stop):
            continue
        seen.add(node)
        if through is not None and not through(node):
            continue
        for nxt in edges.get(node, ()):
            pending.append(nxt)
    return seen


def _results(outputs: list[tuple[Tensor, Node]]) -> list[tuple[Tensor, Node]]:
    """The returned tensors that no other returned tensor is computed from: a model that also
    returns intermediates (hidden states) would otherwise make no layer before them a cut.

    Examples:
        >>> x = torch.ones(2, requires_grad=True)
        >>> hidden = x * 2
        >>> [tuple(t.shape) for t, _ in _results([(hidden, hidden.grad_fn),
        ...                                        (hidden.sum(), hidden.sum().grad_fn)])]
        [()]
    """
    nodes = [n for _, n in outputs if n is not None]
    if len(nodes) < 2:
        return outputs
    # Strict ancestors of every returned tensor (a DAG: no node is its own ancestor).
    ancestors = _closure([p for n in nodes for p in _parents(n)], _ParentEdges())
    return [(t, n) for t, n in outputs if n is None or n not in ancestors]


class _ParentEdges(Mapping[Node, Sequence[Node]]):
    """The autograd graph's parent edges, read from the nodes themselves."""

    def __getitem__(self, node: Node) -> Sequence[Node]:
        return list(_parents(node))

    def __iter__(self) -> Iterator[Node]:
        return iter(())

    def __len__(self) -> int:
        return 0


@contextmanager
def trace_image(model: nn.Module, x: Tensor) -> Iterator[ImageFlow]:
    """Run ``model`` once on ``x`` in eval mode, recording the autograd graph from ``x`` and
    from detached copies of the parameters (``torch.func.functional_call``: the model's own
    parameters are untouched), and every module call, and yield what it saw.

    The model's flags are restored afterwards and the graph is freed when the block ends; no
    gradient is accumulated anywhere.

    Examples:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(144, 2))
        >>> with trace_image(net, torch.randn(1, 3, 8, 8)) as flow:
        ...     [t.call.name for t in flow.traced], flow.image_map(0)
        (['0', '1', '2'], True)
    """
    # A caller's no_grad or inference_mode would forbid the graph.
    with torch.inference_mode(False), torch.enable_grad(), _flow(model, x) as flow:
        yield flow


@contextmanager
def _flow(model: nn.Module, x: Tensor) -> Iterator[ImageFlow]:
    batch = int(x.shape[0])
    # A normal tensor (not an inference tensor) with a history: a model may change its input
    # in place, which a leaf forbids.
    leaf = x.detach().clone().requires_grad_(True)
    pixels = leaf.clone()
    # Fresh leaves for the parameters, so that everything computed from them has a history
    # (also in a frozen model): a tensor without one is then an input from outside.
    parameters = {name: p.detach().requires_grad_(True) for name, p in model.named_parameters()}
    traced: list[TracedCall] = []
    names = {module: name for name, module in model.named_modules() if name}

    def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        given = [*args, *kwargs.values()]
        inputs = [(t, t.grad_fn, listed) for a in given for t, listed in _per_image_lists(a, batch)]
        outputs = [(t, t.grad_fn) for t in _tensors(output)]
        first = inputs[0][0] if inputs else None
        shape = tuple(output.shape) if isinstance(output, Tensor) else None
        call = ModuleCall(
            names[module], module, shape, id(output), None if first is None else id(first)
        )
        traced.append(TracedCall(call, output, outputs, inputs))

    # The hooks are put on under the model's lock: another thread's explanation of the same
    # model would otherwise run through them and be recorded as this probe's calls.
    with model_lock(model):
        handles = [module.register_forward_hook(hook, with_kwargs=True) for module in names]
        try:
            with eval_mode(model):
                output = torch.func.functional_call(model, parameters, (pixels,))
        finally:
            for handle in handles:
                handle.remove()
    outputs = [(t, t.grad_fn) for t in _tensors(output)]
    try:
        yield ImageFlow(model, traced, pixels.grad_fn, outputs, batch, parameters.values())
    finally:
        traced.clear()
