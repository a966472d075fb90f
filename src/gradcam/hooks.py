"""Every hook gradcam registers lives here, scoped to one call and removed in ``finally``.

Two hooks exist:

* :func:`capture_layer` cuts the autograd graph at a layer: everything before the layer runs
  without recording a graph, the layer's output becomes a leaf that requires grad, and the rest
  of the forward pass records a graph from there. Gradients are then taken to that leaf only.
* :func:`record_outputs` watches the outputs of every submodule during one forward pass; it is
  used to find a default layer and to list a model's spatial layers.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from gradcam.errors import LayerError

__all__ = ["LayerCapture", "ModuleCall", "capture_layer", "record_outputs"]


@dataclass
class LayerCapture:
    """What :func:`capture_layer` saw during one forward pass.

    Attributes:
        name: the layer's dotted name, for error messages.
        activation: the layer's output ``A`` as a leaf tensor that requires grad, or ``None``
            when the layer has not run.
        calls: how many times the layer ran.
    """

    name: str
    activation: Tensor | None = None
    calls: int = 0


@contextmanager
def capture_layer(layer: nn.Module, name: str) -> Iterator[LayerCapture]:
    """Capture ``layer``'s output as a new autograd leaf during the forward passes in the block.

    Call the model with grad mode *disabled*: the hook switches grad mode on when the layer
    runs, so only the part of the network after the layer records a graph. The caller restores
    grad mode afterwards.

    Raises:
        LayerError: if the layer runs more than once, or its output is not a (B, C, h, w) tensor.

    Example:
        >>> layer = model.layer4
        >>> with torch.no_grad(), capture_layer(layer, "layer4") as cap:
        ...     logits = model(x)
        >>> cap.activation.shape  # (B, C, h, w), requires_grad=True
    """
    capture = LayerCapture(name)

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> Tensor:
        capture.calls += 1
        if capture.calls > 1:
            raise LayerError(
                f"layer {name!r} runs more than once in one forward pass (a module reused, like "
                "a shared activation); choose a layer that runs once"
            )
        if not isinstance(output, Tensor) or output.dim() != 4:
            shape = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
            raise LayerError(
                f"layer {name!r} must output a (B, C, h, w) tensor of feature maps; got {shape}"
            )
        torch.set_grad_enabled(True)
        activation = output.detach().requires_grad_(True)
        capture.activation = activation
        # A clone, not the leaf itself: an in-place op later in the network (ReLU(inplace=True),
        # `out += identity`) may then modify what flows on, never the activations we keep.
        return activation.clone()

    handle = layer.register_forward_hook(hook)
    try:
        yield capture
    finally:
        handle.remove()


@dataclass(frozen=True)
class ModuleCall:
    """One module call seen by :func:`record_outputs`: its name, output shape and reuse count."""

    name: str
    module: nn.Module
    shape: tuple[int, ...] | None
    output_id: int


@dataclass
class _Recording:
    calls: list[ModuleCall] = field(default_factory=list)
    keep_alive: list[Any] = field(default_factory=list)


@contextmanager
def record_outputs(model: nn.Module) -> Iterator[list[ModuleCall]]:
    """Record, in completion order, every submodule call during the forward passes in the block.

    Output tensors are kept alive until the block ends so that ``output_id`` identifies a tensor
    uniquely (a container returning its last child's tensor shares that child's id).

    Example:
        >>> with torch.no_grad(), record_outputs(model) as calls:
        ...     model(x)
        >>> [c.name for c in calls if c.shape and len(c.shape) == 4][-1]
        'layer4'
    """
    recording = _Recording()
    handles = []

    def make_hook(name: str) -> Any:
        def hook(module: nn.Module, _inputs: Any, output: Any) -> None:
            shape = tuple(output.shape) if isinstance(output, Tensor) else None
            recording.keep_alive.append(output)
            recording.calls.append(ModuleCall(name, module, shape, id(output)))

        return hook

    try:
        for name, module in model.named_modules():
            if name:
                handles.append(module.register_forward_hook(make_hook(name)))
        yield recording.calls
    finally:
        for handle in handles:
            handle.remove()
        recording.keep_alive.clear()
