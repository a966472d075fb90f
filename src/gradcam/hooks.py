"""Every hook gradcam registers lives here, scoped to one call and removed in ``finally``.

* :func:`capture_layer` keeps a layer's output as it is (the caller reshapes it to the feature
  maps ``A``, see :mod:`gradcam.reshapes`). With ``detach=True`` it also cuts the autograd graph
  there: everything before the layer runs without recording a graph, the output becomes a leaf
  that requires grad, and the rest of the forward pass records a graph from it.
* :func:`capture_input` keeps the input of a module (CAM checks its head with it).
* :func:`capture_outputs` keeps the outputs of several layers inside the autograd graph, for
  gradients to all of them at once (FullGrad's bias-gradients).
* :func:`replace_output` swaps a layer's output for another tensor (Ablation-CAM feeds the
  rest of the network ablated copies of ``A`` with it).
* :func:`record_outputs` watches the outputs of every submodule during one forward pass; it is
  used to find a default layer and to list a model's spatial layers.
* :func:`rectifier_mode` routes every rectifier called during a forward pass, as a module
  (``nn.ReLU``, ``nn.ReLU6``, ...) or as a function (``F.relu``, ``torch.relu_``,
  ``Tensor.relu``, ...), through :class:`~gradcam.rectifiers.Rectified`, whose backward rule
  (plain, guided, deconv) is chosen when the backward pass runs. No module is replaced.
* :func:`eval_mode` runs a block with the model in eval mode and restores every flag; it also
  records the token grids that modules declare (:func:`token_grids`: torchvision's MViT).

A hook on a module fires for every thread's forward pass, and ``training`` flags are shared,
so two threads explaining one model at once would see each other's hooks and flags: maps from
the other thread's image, a layer "running twice", BatchNorm statistics updated by a flipped
flag. :func:`model_lock` prevents that: :func:`eval_mode`, :func:`record_outputs` and the
engine hold it for the whole call, and every forward pass that gradcam runs with hooks runs
inside one of them. Calls on one model from several threads are therefore safe, and run one
at a time; calls on different models run in parallel.

What gradcam keeps about a model between calls lives on the model, in plain attributes named
``_gradcam_*`` (never parameters, buffers, hooks or flags; no global table keyed by models):
its lock and its token grids here, whether it rejects channels-last input
(:func:`gradcam.engine.run_in_fast_layout`), the class names that
:func:`gradcam.targets.register_class_names` gives it.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any, NoReturn

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from gradcam.errors import GradCAMError, LayerError
from gradcam.rectifiers import Rectified, RectifierState, classify
from gradcam.reshapes import is_pyramid, pyramid_levels, rebuild_pyramid

__all__ = [
    "InputCapture",
    "LayerCapture",
    "ModuleCall",
    "capture_input",
    "capture_layer",
    "capture_outputs",
    "eval_mode",
    "model_lock",
    "record_outputs",
    "rectifier_mode",
    "replace_output",
    "token_grids",
]


#: The attribute under which a module keeps the lock of the model it belongs to.
_LOCK_ATTRIBUTE = "_gradcam_lock"

# Taken only while a model's modules get their lock (the first call on a model, or on a
# wrapper or a module added since): two first calls on one model then agree on its lock.
_ASSIGNING = threading.Lock()


class _ModelLock:
    """The re-entrant lock of one model, kept on each of its modules.

    A shallow copy of a module shares its submodules, and so its lock; a deep copy or a
    pickled model has modules of its own, so the lock is not copied: the copy gets its own on
    its first call (the attribute reads ``None`` until then, and nothing of gradcam's is
    pickled with a model).
    """

    __slots__ = ("lock",)

    def __init__(self) -> None:
        self.lock = threading.RLock()

    def __copy__(self) -> _ModelLock:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> None:
        return None

    def __reduce__(self) -> tuple[type[None], tuple[()]]:
        return type(None), ()


def _model_locks(model: nn.Module) -> list[_ModelLock]:
    """The distinct locks of ``model``'s modules (one, unless it joins models locked apart),
    in a global order; modules without one get one of them (a new one if none has any)."""
    modules = list(model.modules())
    found = [module.__dict__.get(_LOCK_ATTRIBUTE) for module in modules]
    if not all(isinstance(lock, _ModelLock) for lock in found):
        with _ASSIGNING:
            found = [module.__dict__.get(_LOCK_ATTRIBUTE) for module in modules]
            known = [lock for lock in found if isinstance(lock, _ModelLock)]
            shared = known[0] if known else _ModelLock()
            for i, module in enumerate(modules):
                if not isinstance(found[i], _ModelLock):
                    module.__dict__[_LOCK_ATTRIBUTE] = found[i] = shared
    distinct = {id(lock): lock for lock in found if isinstance(lock, _ModelLock)}
    return [distinct[key] for key in sorted(distinct)]


@contextmanager
def model_lock(model: nn.Module) -> Iterator[None]:
    """Hold ``model``'s lock for the block: one thread at a time runs gradcam on it.

    One re-entrant lock per model (a library call inside another on the same model goes on),
    kept on the model itself: each of its modules holds it in its ``_gradcam_lock``
    attribute, given on the first call. A module shared by two models makes them one: a
    wrapper of a model (a VQA model with its question fixed, ``nn.Sequential(normalize,
    model)``) gets the model's lock, so calls on the wrapper and on the model take turns,
    because hooks and ``training`` flags live on the submodules they share; so do calls on
    two parts of one model. Only a block on a module that joins models locked apart takes
    their several locks, in one global order. Nothing else of the model changes (parameters,
    buffers, flags, hooks); a deep copy or a pickle of it leaves the lock behind.

    One Grad-CAM call on ResNet-50 acquires a lock twice (the engine's block and
    :func:`eval_mode`'s, the same lock re-entered), where one lock per submodule, kept in a
    table, took 304 acquisitions (151 modules twice, and the table's guard twice):
    ``benchmarks/count_locks.py``.

    Examples:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
        >>> with model_lock(net), model_lock(net[0]):  # re-entrant, also through a submodule
        ...     net(torch.zeros(1, 3, 8, 8)).shape
        torch.Size([1, 4, 6, 6])
        >>> net._gradcam_lock is net[0]._gradcam_lock  # one lock, kept on the model
        True
    """
    with ExitStack() as stack:
        for lock in _model_locks(model):
            stack.enter_context(lock.lock)
        yield


#: The attribute under which a model keeps the token grids its modules declared in its last
#: forward pass in eval_mode.
_GRIDS_ATTRIBUTE = "_gradcam_token_grids"
_DECLARES: dict[type, bool] = {}


def _declares_grid(module: nn.Module) -> bool:
    """Whether ``module``'s ``forward`` takes a ``thw`` argument (MViT's blocks do)."""
    kind = type(module)
    found = _DECLARES.get(kind)
    if found is None:
        try:
            found = "thw" in inspect.signature(kind.forward).parameters
        except (TypeError, ValueError):
            found = False
        _DECLARES[kind] = found
    return found


def token_grids(model: nn.Module) -> dict[int, tuple[int, ...]]:
    """The token grids ``{token count: (t, h, w)}`` that ``model``'s modules declared during
    the last forward pass run in :func:`eval_mode`.

    A module whose ``forward`` takes a ``thw`` argument, as torchvision's MViT blocks,
    attention and pooling modules do (``block(x, thw)`` returns ``(x, thw)``), states the
    ``(t, h, w)`` grid of the tokens it is given and of the tokens it returns; the tokens
    left over (MViT's class token) lead. :func:`gradcam.reshapes.view_for` reads MViT's token
    layers with it. Empty for models without such modules. The grids are kept on the model
    (its ``_gradcam_token_grids`` attribute), written only for models with such modules.

    Examples:
        >>> class Block(nn.Module):  # as MViT's: tokens and their (t, h, w) in and out
        ...     def forward(self, x, thw):
        ...         return x, thw
        >>> class Net(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.block = Block()
        ...     def forward(self, x):
        ...         return self.block(x, (2, 3, 4))[0]
        >>> net = Net()
        >>> with eval_mode(net):
        ...     _ = net(torch.zeros(1, 1 + 2 * 3 * 4, 8))  # a class token, then 2x3x4 tokens
        >>> token_grids(net)
        {25: (2, 3, 4)}
    """
    return dict(model.__dict__.get(_GRIDS_ATTRIBUTE) or {})


def _record_grids(model: nn.Module, modules: Sequence[nn.Module]) -> list[Any]:
    """Hooks on the modules that declare token grids, filling a fresh record for ``model``."""
    declaring = [m for m in modules if _declares_grid(m)]
    if not declaring:
        return []
    grids: dict[int, tuple[int, ...]] = {}
    model.__dict__[_GRIDS_ATTRIBUTE] = grids

    def note(x: Any, thw: Any) -> None:
        if (
            isinstance(x, Tensor)
            and x.dim() == 3
            and isinstance(thw, (tuple, list))
            and all(isinstance(n, int) for n in thw)
        ):
            grids[int(x.shape[1])] = tuple(thw)

    def before(_module: nn.Module, args: tuple[Any, ...]) -> None:
        if len(args) >= 2:
            note(args[0], args[1])

    def after(_module: nn.Module, _args: Any, output: Any) -> None:
        if isinstance(output, tuple) and len(output) == 2:
            note(*output)

    handles = []
    for module in declaring:
        handles.append(module.register_forward_pre_hook(before))
        handles.append(module.register_forward_hook(after))
    return handles


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Run the block with ``model`` in eval mode, restoring every module's flag afterwards.

    The block holds :func:`model_lock`, so a concurrent call on the same model neither sees
    the flipped flags nor restores them too early. Forward passes in the block record the
    token grids that ``model``'s modules declare (:func:`token_grids`).

    Examples:
        >>> net = torch.nn.Sequential(torch.nn.BatchNorm2d(3)).train()
        >>> with eval_mode(net):
        ...     net[0].training
        False
        >>> net[0].training
        True
    """
    with model_lock(model):
        modules = list(model.modules())
        flags = [m.training for m in modules]
        handles = _record_grids(model, modules)
        try:
            if any(flags):
                model.eval()
            yield
        finally:
            for handle in handles:
                handle.remove()
            if any(flags):
                for module, flag in zip(modules, flags, strict=True):
                    module.training = flag


@dataclass
class LayerCapture:
    """What :func:`capture_layer` (or :func:`replace_output`) saw during one forward pass.

    Attributes:
        name: the layer's dotted name, for error messages.
        output: the layer's raw output (before any reshape to (B, C, h, w)); with
            ``detach=True`` a leaf tensor that requires grad. ``None`` when the layer has not run.
        calls: how many times the layer ran.
        levels: for a layer that outputs a feature pyramid (captured with ``pyramid=True``):
            its ``(level, maps)`` pairs, each maps tensor kept as ``output`` would be; then
            ``output`` stays ``None``.
        pyramid: that output's container (dict, list, ...) holding the kept levels, for a
            reshape callable that reads the whole pyramid.
        foreign: how many times the layer ran in another thread during the block (another
            forward pass of the same model at the same time), left alone and then refused.
    """

    name: str
    output: Tensor | None = None
    calls: int = 0
    levels: tuple[tuple[str, Tensor], ...] = ()
    pyramid: Any = None
    foreign: int = 0


def _check_alone(capture: LayerCapture) -> None:
    """Refuse a call during which another thread ran the same model: the explanation's hooks,
    eval mode and rectifier rules were on the model that thread used too."""
    if capture.foreign:
        raise GradCAMError(
            f"another forward pass of this model ran in another thread at the same time "
            f"(layer {capture.name!r} ran there): run the model and gradcam one after the other "
            "(hold gradcam.hooks.model_lock(model) around your own calls), or give each thread "
            "its own copy of the model"
        )


@dataclass
class InputCapture:
    """What :func:`capture_input` saw during one forward pass.

    Attributes:
        name: the module's dotted name, for error messages.
        input: the first positional input of the module's last call, ``None`` when it has not
            run (or that input is not a tensor).
        calls: how many times the module ran.
    """

    name: str
    input: Tensor | None = None
    calls: int = 0


@contextmanager
def capture_layer(
    layer: nn.Module, name: str, *, detach: bool = True, pyramid: bool = False
) -> Iterator[LayerCapture]:
    """Capture ``layer``'s output during the forward passes in the block.

    With ``detach=True``, call the model with grad mode *disabled*: the hook switches grad mode
    on when the layer runs and makes ``A`` a new leaf, so only the part of the network after the
    layer records a graph (the caller restores grad mode afterwards). With ``detach=False`` the
    graph is left whole, so gradients can also flow on to the input.

    With ``pyramid=True`` a layer that outputs a feature pyramid (a dict or list of
    (B, C_l, h_l, w_l) maps, see :func:`~gradcam.reshapes.pyramid_levels`) is captured level by
    level into ``levels``, each level treated as ``A`` is (a leaf with ``detach=True``), and the
    network goes on with a container of the same type.

    Raises:
        LayerError: if the layer runs more than once, or its output is not a tensor (nor,
            with ``pyramid=True``, a pyramid of 4-D maps); a pyramid met without
            ``pyramid=True`` is refused with the alternatives named.

    Examples:
        >>> with torch.no_grad(), capture_layer(model.features, "features") as cap:
        ...     logits = model(x)
        >>> cap.output.shape, cap.output.requires_grad  # A: a leaf, the graph starts there
        (torch.Size([1, 128, 16, 16]), True)
        >>> torch.autograd.grad(logits[:, 3].sum(), cap.output)[0].shape  # dy^c / dA
        torch.Size([1, 128, 16, 16])
    """
    capture = LayerCapture(name)
    owner = threading.get_ident()

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> Any:
        if threading.get_ident() != owner:  # another thread's forward of the same model
            capture.foreign += 1
            return None
        capture.calls += 1
        if capture.calls > 1:
            raise LayerError(
                f"layer {name!r} runs more than once in one forward pass (a module reused, like "
                "a shared activation); choose a layer that runs once"
            )
        if not isinstance(output, Tensor):
            if pyramid and is_pyramid(output):
                return _capture_levels(capture, output, detach=detach)
            _refuse(name, output)
        activation: Tensor = output
        if detach:
            torch.set_grad_enabled(True)
            activation = output.detach().requires_grad_(True)
        capture.output = activation
        # A clone flows on, not A itself: an in-place op later in the network (ReLU(inplace=True),
        # `out += identity`) then modifies the clone, never the activations we keep.
        return activation.clone()

    handle = layer.register_forward_hook(hook)
    try:
        yield capture
    finally:
        handle.remove()
    _check_alone(capture)


def _refuse(name: str, output: Any) -> NoReturn:
    """Raise the :class:`LayerError` for an output that is not one tensor of feature maps."""
    if is_pyramid(output):
        levels = ", ".join(
            f"{key} {tuple(maps.shape)}"
            for key, maps in (output.items() if isinstance(output, Mapping) else enumerate(output))
        )
        raise LayerError(
            f"layer {name!r} outputs a feature pyramid ({levels}), which only Grad-CAM, its "
            "variants and the gradient-free methods (Eigen-CAM, ...) read, with reshape "
            "'pyramid', 'auto' or 'channels-first'; for this method or reshape choose one "
            "level's module (a stage inside the layer)"
        )
    raise LayerError(
        f"layer {name!r} must output a tensor of feature maps (B, C, h, w), or one that a "
        f"reshape turns into them; got {type(output).__name__}"
    )


def _capture_levels(capture: LayerCapture, output: Any, *, detach: bool) -> Any:
    """Keep each level of a pyramid output as :func:`capture_layer` keeps ``A``; return the
    container of clones that the network goes on with."""
    levels = pyramid_levels(capture.name, output)
    if detach:
        torch.set_grad_enabled(True)
        levels = tuple((key, maps.detach().requires_grad_(True)) for key, maps in levels)
    capture.levels = levels
    capture.pyramid = rebuild_pyramid(output, [maps for _, maps in levels])
    return rebuild_pyramid(output, [maps.clone() for _, maps in levels])


@contextmanager
def capture_input(module: nn.Module, name: str) -> Iterator[InputCapture]:
    """Keep the first positional input of ``module`` (its last call) during the block.

    Examples:
        >>> head = torch.nn.Linear(4, 2)
        >>> with capture_input(head, "head") as seen:
        ...     _ = head(torch.ones(1, 4))
        >>> seen.input.shape, seen.calls
        (torch.Size([1, 4]), 1)
    """
    capture = InputCapture(name)

    def hook(_module: nn.Module, inputs: tuple[Any, ...]) -> None:
        capture.calls += 1
        if inputs and isinstance(inputs[0], Tensor):
            capture.input = inputs[0]

    handle = module.register_forward_pre_hook(hook)
    try:
        yield capture
    finally:
        handle.remove()


@contextmanager
def capture_outputs(layers: Sequence[tuple[nn.Module, str]]) -> Iterator[list[tuple[str, Tensor]]]:
    """Keep every tensor output of ``layers`` during the forward passes in the block.

    Yields a list that fills, in call order, with ``(name, output)`` pairs (a layer that runs
    twice appears twice). The outputs stay in the autograd graph, so gradients can be taken
    to them; a clone flows on, so in-place operations later in the network (``ReLU(inplace)``)
    never change the kept tensors.

    Examples:
        >>> with capture_outputs([(model.features.bn1, "bn1")]) as outputs:
        ...     scores = model(x)[:, 3]
        >>> name, out = outputs[0]
        >>> grad, = torch.autograd.grad(scores.sum(), out)  # d y / d bn1's output
        >>> name, grad.shape
        ('bn1', torch.Size([1, 32, 64, 64]))
    """
    captured: list[tuple[str, Tensor]] = []

    def make_hook(name: str) -> Any:
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> Any:
            if not isinstance(output, Tensor):
                return None
            captured.append((name, output))
            return output.clone()

        return hook

    handles = []
    try:
        for layer, name in layers:
            handles.append(layer.register_forward_hook(make_hook(name)))
        yield captured
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def replace_output(
    layer: nn.Module, name: str, replace: Callable[[Tensor], Tensor]
) -> Iterator[LayerCapture]:
    """Make ``layer`` return ``replace(A)`` instead of its output ``A`` during the block.

    The replacement may have another batch size than ``A``: the rest of the network then runs
    on the replacement's batch (see :class:`~gradcam.methods.ablation_cam.AblationCAM`).

    Raises:
        LayerError: if the layer runs more than once, or its output is not a (B, C, h, w) tensor.

    Examples:
        >>> with torch.no_grad(), replace_output(model.features, "features", torch.zeros_like):
        ...     logits = model(x)  # the head sees all-zero feature maps
        >>> torch.equal(logits[0], model.classifier.bias)  # so only the bias is left
        True
    """
    capture = LayerCapture(name)
    owner = threading.get_ident()

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> Tensor | None:
        if threading.get_ident() != owner:  # another thread's forward of the same model
            capture.foreign += 1
            return None
        capture.calls += 1
        if capture.calls > 1:
            raise LayerError(
                f"layer {name!r} runs more than once in one forward pass (a module reused, like "
                "a shared activation); choose a layer that runs once"
            )
        if not isinstance(output, Tensor) and is_pyramid(output):
            _refuse(name, output)
        if not isinstance(output, Tensor) or output.dim() not in (3, 4, 5):
            shape = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
            raise LayerError(
                f"layer {name!r} must output a (B, C, h, w) tensor of feature maps; got {shape}"
            )
        capture.output = output
        return replace(output)

    handle = layer.register_forward_hook(hook)
    try:
        yield capture
    finally:
        handle.remove()
    _check_alone(capture)


class _RectifierMode(TorchFunctionMode):
    def __init__(self, state: RectifierState) -> None:
        super().__init__()
        self.state = state

    def __torch_function__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        activation = classify(func, args, kwargs)
        if activation is None or not torch.is_grad_enabled():
            return func(*args, **kwargs)
        return Rectified.apply(args[0], activation, self.state)


@contextmanager
def rectifier_mode(state: RectifierState) -> Iterator[RectifierState]:
    """Route every rectifier of the forward passes in the block through ``state``'s rule.

    Active only inside the block and only while grad mode is on (a no-grad forward pass is
    untouched). Works for activation modules and for functional calls inside ``forward``.

    Examples:
        >>> x = torch.tensor([-1.0, 2.0, 3.0], requires_grad=True)
        >>> state = RectifierState()
        >>> with rectifier_mode(state):
        ...     y = (nn.ReLU()(x) * torch.tensor([5.0, 4.0, -6.0])).sum()
        >>> torch.autograd.grad(y, x, retain_graph=True)[0]  # the plain rule
        tensor([ 0.,  4., -6.])
        >>> state.rule = "guided"  # read by the backward pass: negative gradients stop too
        >>> torch.autograd.grad(y, x)[0]
        tensor([0., 4., 0.])
    """
    with _RectifierMode(state):
        yield state


@dataclass(frozen=True)
class ModuleCall:
    """One module call seen by :func:`record_outputs`.

    Attributes:
        name: the module's dotted name.
        module: the module.
        shape: its output's shape, ``None`` when the output is not a tensor.
        output_id: ``id`` of the output (unique during the recording).
        input_id: ``id`` of the first positional input, ``None`` when there is none.
    """

    name: str
    module: nn.Module
    shape: tuple[int, ...] | None
    output_id: int
    input_id: int | None = None


@dataclass
class _Recording:
    calls: list[ModuleCall] = field(default_factory=list)
    keep_alive: list[Any] = field(default_factory=list)


@contextmanager
def record_outputs(model: nn.Module) -> Iterator[list[ModuleCall]]:
    """Record, in completion order, every submodule call during the forward passes in the block.

    Inputs and outputs are kept alive until the block ends so that ``output_id`` and
    ``input_id`` identify a tensor uniquely (a container returning its last child's tensor shares
    that child's id; a module fed another's output has that output's id as ``input_id``).

    Examples:
        >>> with torch.no_grad(), record_outputs(model) as calls:
        ...     _ = model(x)
        >>> [(c.name, c.shape) for c in calls][-3:]
        [('features', (1, 128, 16, 16)), ('pool', (1, 128, 1, 1)), ('classifier', (1, 8))]
    """
    recording = _Recording()
    handles = []

    def make_hook(name: str) -> Any:
        def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
            shape = tuple(output.shape) if isinstance(output, Tensor) else None
            first = inputs[0] if inputs else None
            recording.keep_alive.extend([output, first])
            input_id = None if first is None else id(first)
            recording.calls.append(ModuleCall(name, module, shape, id(output), input_id))

        return hook

    with model_lock(model):
        try:
            for name, module in model.named_modules():
                if name:
                    handles.append(module.register_forward_hook(make_hook(name)))
            yield recording.calls
        finally:
            for handle in handles:
                handle.remove()
            recording.keep_alive.clear()
