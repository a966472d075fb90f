"""Inference copies of a model with its batch norms folded into the convolutions before them.

A batch norm in eval mode is an affine map per channel, so after a convolution it can be
folded into the convolution's weights (Ioffe & Szegedy's inference form):

``W' = W * gamma / sqrt(var + eps)``, ``b' = (b - mean) * gamma / sqrt(var + eps) + beta``

One operation fewer per block, and no pass over the activations for it: on the project's
2-core CPU (torch 2.15, channels-last, batch 8, no-grad) ResNet-50 runs 1.17x faster and
EfficientNet-B0 1.37x. The perturbation methods (Score-CAM and its variants) run thousands of
such passes per image, on a copy: the user's model is never changed.

The copy is made by ``torch.fx`` (the model's forward traced symbolically); a model that
cannot be traced, or that has nothing to fold, gets no copy, and its own forward pass runs.
The outputs equal the model's to float rounding (about 1e-6 relative), and
:func:`matches` checks that on a real input before a copy is used.

A method that runs such passes keeps its copy itself, in a :class:`FoldedCopy`: made on its
first call, made again when the model's weights change, dropped with the method.
"""

from __future__ import annotations

import copy
import warnings
from collections import Counter

import torch
from torch import Tensor, fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from gradcam.engine import run_in_fast_layout

__all__ = [
    "FoldedCopy",
    "fold_batch_norms",
    "folded_from",
    "matches",
    "state_key",
]

_CONV_OF = {nn.BatchNorm1d: nn.Conv1d, nn.BatchNorm2d: nn.Conv2d, nn.BatchNorm3d: nn.Conv3d}

StateKey = tuple[tuple[int, int, int], ...]
"""What a copy was made from: see :func:`state_key`."""

#: The attribute under which a folded copy keeps the model it was made from.
_SOURCE_ATTRIBUTE = "_gradcam_folded_from"


def fold_batch_norms(model: nn.Module) -> nn.Module | None:
    """An eval-mode copy of ``model`` whose batch norms are folded into the convolutions that
    feed them, or ``None`` when there is nothing to fold or ``torch.fx`` cannot trace it.

    A batch norm is folded when its input is a convolution of the same dimension whose output
    feeds nothing else, and each of them is called once in the forward pass (a module shared
    between two places keeps its weights). Convolutions of any class are kept whole by the
    trace; a subclass that transforms its weights (weight standardization) would be folded
    wrongly, so check a copy with :func:`matches` before using it. The model itself is not
    changed.

    Examples:
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).eval()
        >>> with torch.no_grad():
        ...     _ = model[1].running_mean.uniform_(), model[1].running_var.uniform_(1, 2)
        >>> folded = fold_batch_norms(model)
        >>> [type(m).__name__ for m in folded.modules()][1:]
        ['Conv2d', 'ReLU']
        >>> x = torch.randn(2, 3, 8, 8)
        >>> bool(torch.allclose(folded(x), model(x), atol=1e-5))
        True
        >>> fold_batch_norms(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())) is None
        True
    """
    if not any(type(m) in _CONV_OF for m in model.modules()):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            root = copy.deepcopy(model).eval()
            traced = fx.GraphModule(root, _Tracer().trace(root), type(root).__name__)
    except Exception:  # any model that fx cannot trace runs as it is
        return None
    modules = dict(traced.named_modules())
    calls = Counter(n.target for n in traced.graph.nodes if n.op == "call_module")
    folded = 0
    for node in list(traced.graph.nodes):
        norm = modules.get(node.target) if node.op == "call_module" else None
        if not isinstance(norm, nn.modules.batchnorm._BatchNorm) or type(norm) not in _CONV_OF:
            continue
        source = node.args[0] if len(node.args) == 1 and not node.kwargs else None
        if not isinstance(source, fx.Node) or source.op != "call_module":
            continue
        conv = modules.get(source.target)
        if (
            not isinstance(conv, _CONV_OF[type(norm)])
            or not norm.track_running_stats
            or len(source.users) != 1
            or calls[node.target] != 1
            or calls[source.target] != 1
        ):
            continue
        _replace(traced, str(source.target), fuse_conv_bn_eval(conv, norm))
        node.replace_all_uses_with(source)
        traced.graph.erase_node(node)
        folded += 1
    if not folded:
        return None
    traced.graph.lint()
    traced.delete_all_unused_submodules()
    traced.recompile()
    traced.__dict__[_SOURCE_ATTRIBUTE] = model
    return traced


def folded_from(module: nn.Module) -> nn.Module | None:
    """The model that ``module`` is a :func:`fold_batch_norms` copy of, ``None`` for any other
    module (a counter of a model's passes counts its copy's with it).

    Examples:
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).eval()
        >>> folded_from(fold_batch_norms(model)) is model, folded_from(model)
        (True, None)
    """
    source = module.__dict__.get(_SOURCE_ATTRIBUTE)
    return source if isinstance(source, nn.Module) else None


class _Tracer(fx.Tracer):
    """torch.fx's tracer that keeps convolutions of every class whole: a subclass (TF-style
    "same" padding, weight standardization) may compute from the input's shape, which a
    symbolic trace cannot follow. Folding into such a convolution changes its weights, which
    its forward may transform: :func:`matches` is what tells whether the copy is right."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, nn.modules.conv._ConvNd) or super().is_leaf_module(
            m, module_qualified_name
        )


class FoldedCopy:
    """The :func:`fold_batch_norms` copy of one model, kept by the method that runs it: made on
    first use, made again when the model's weights change (:func:`state_key`), not used after
    it failed its check (:meth:`reject`) until they do; dropped with its owner. Two methods on
    one model keep a copy each.

    Folding is for the perturbation methods' many no-grad passes (Grad-CAM never runs a
    copy): measured idle, ResNet-50's passes 1.17x faster and EfficientNet-B0's 1.37x (above),
    Score-CAM 1.16x and 1.17x (BENCHMARKS.md); with ``benchmarks/bench_speedups.py`` at a
    load average of 13-15 on the 2 cores (one thread, 9 rounds interleaved), one pass of 8
    ResNet-50 copies 6.01 against 6.21 s (1.03x), and 0.95x in a second run at a load of
    15-19: too loaded to tell.

    Not locked: its owner calls it while holding the model's lock (in
    :func:`gradcam.hooks.eval_mode`).

    Examples:
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).eval()
        >>> copies = FoldedCopy(model)
        >>> kept = copies.get()
        >>> copies.get() is kept
        True
        >>> with torch.no_grad():
        ...     _ = model[0].weight.mul_(2)
        >>> copies.get() is kept  # made again from the new weights
        False
        >>> copies.reject()
        >>> copies.get() is None
        True
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._key: StateKey | None = None
        self._copy: nn.Module | None = None

    def get(self) -> nn.Module | None:
        """:func:`fold_batch_norms` of the model's current weights, or ``None`` (nothing to
        fold, or rejected)."""
        key = state_key(self.model)
        if self._key != key:
            self._copy = fold_batch_norms(self.model)
            self._key = key
        return self._copy

    def reject(self) -> None:
        """Use no copy until the model's weights change (its copy did not match it)."""
        self._key, self._copy = state_key(self.model), None

    def checked(self, x: Tensor, output: object) -> tuple[nn.Module | None, object]:
        """:meth:`get` if the copy's output on ``x`` (channels-last on the CPU, as the copies
        run) :func:`matches` ``output``, the model's own on ``x``; else ``None``, and the copy
        is rejected until the model's weights change. Call it under ``no_grad``.

        Returns:
            The copy or ``None``, and the output to compare the copies' outputs with: the
            copy's on ``x``, or ``output`` when there is no copy.

        Examples:
            >>> model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).eval()
            >>> copies, x = FoldedCopy(model), torch.randn(1, 3, 8, 8)
            >>> with torch.no_grad():
            ...     folded, reference = copies.checked(x, model(x))
            >>> folded is copies.get(), bool(torch.allclose(reference, model(x), atol=1e-5))
            (True, True)
            >>> with torch.no_grad():
            ...     copies.checked(x, model(x) + 1.0)[0] is None  # not the model's output
            True
        """
        folded = self.get()
        if folded is None:
            return None, output
        seen = run_in_fast_layout(self.model, x, folded, fast=True)
        if not matches(seen, output):
            self.reject()
            return None, output
        return folded, seen


def _replace(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, module)


def state_key(model: nn.Module) -> StateKey:
    """What a copy of ``model`` was made from: each parameter's and buffer's identity, storage
    and version (which in-place changes under ``torch.no_grad()`` bump). Tensors made under
    ``torch.inference_mode()`` have no version: for them, a stale copy is caught by
    :meth:`FoldedCopy.checked`'s check on every call.

    Examples:
        >>> model = nn.Linear(2, 2)
        >>> before = state_key(model)
        >>> with torch.no_grad():
        ...     _ = model.weight.mul_(2)
        >>> state_key(model) == before
        False
    """
    tensors = [*model.parameters(), *model.buffers()]
    return tuple((id(t), t.data_ptr(), -1 if t.is_inference() else t._version) for t in tensors)


def matches(output: object, reference: object, *, rtol: float = 1e-4) -> bool:
    """Whether ``output`` (a tensor, or a tuple, list or dict of them) equals ``reference`` to
    ``rtol`` of the largest magnitude of each tensor, with the same structure and shapes.

    Examples:
        >>> matches(torch.tensor([1.0, 100.0]), torch.tensor([1.001, 100.0]))
        True
        >>> matches((torch.ones(2),), (torch.ones(3),))
        False
    """
    if isinstance(reference, Tensor):
        if not isinstance(output, Tensor) or output.shape != reference.shape:
            return False
        if not reference.is_floating_point():
            return bool(torch.equal(output, reference))
        scale = float(reference.detach().abs().max()) if reference.numel() else 0.0
        gap = (output.detach().float() - reference.detach().float()).abs()
        if not gap.numel():
            return True
        return bool(torch.isfinite(gap).all()) and float(gap.max()) <= rtol * scale
    if isinstance(reference, (tuple, list)):
        return (
            isinstance(output, (tuple, list))
            and len(output) == len(reference)
            and all(matches(o, r, rtol=rtol) for o, r in zip(output, reference, strict=True))
        )
    if isinstance(reference, dict):
        return (
            isinstance(output, dict)
            and output.keys() == reference.keys()
            and all(matches(output[k], reference[k], rtol=rtol) for k in reference)
        )
    return output == reference
