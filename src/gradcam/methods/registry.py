"""The one table of explanation methods: every fact about a method lives in its entry.

A method is registered once, on its class, with :func:`register` (timm's ``register_model``
pattern). The entry states the ``--method`` name, a display title, the kind of map, what the
method needs from the engine, and the paper it comes from; its options are read from the
class's constructor (names, types, defaults) and its docstring (help), so they too have one
home. Everything that lists, builds, describes or parses methods (the CLI, ``explain``, the
demo, ``evaluate``, the vision-language functions) asks this table.

Examples:
    >>> from gradcam.methods.registry import method_spec
    >>> spec = method_spec("counterfactual")
    >>> spec.title, spec.kind, spec.needs.layer_gradients
    ('Counterfactual', 'heatmap', True)
    >>> spec.presets
    {'counterfactual': True}
    >>> spec.ranks  # signals (B, C, L), images (B, C, H, W), volumes and clips (B, C, D, H, W)
    (1, 2, 3)
"""

from __future__ import annotations

import functools
import inspect
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeGuard, TypeVar

from torch import Tensor, nn

from gradcam.errors import GradCAMError
from gradcam.rectifiers import Rule

__all__ = [
    "DEFAULT_METHOD",
    "GRAD_CAM",
    "Kind",
    "MethodSpec",
    "Needs",
    "Option",
    "check_layers",
    "check_method",
    "check_rank",
    "create_method",
    "flag_options",
    "method_spec",
    "method_specs",
    "methods",
    "parse_options",
    "register",
    "resolve_methods",
    "several_layers",
    "takes_layers",
]

#: Grad-CAM's registry name, where code means Grad-CAM itself (the paper's figures, the
#: textual explanations), not whichever method is the default.
GRAD_CAM = "gradcam"

#: The method every command and function uses when none is named: the paper's Grad-CAM.
DEFAULT_METHOD = GRAD_CAM

Kind = Literal["heatmap", "pixel"]
"""``"heatmap"``: one non-negative map per target at the layer's (or the input's) resolution,
in ``result.raw``; ``"pixel"``: a (C, H, W) map per target in input space (gradients)."""

# Constructor parameters that are not options: what every method is built on.
_BUILT_ON = ("self", "module", "layer")

T = TypeVar("T", bound=type)


@dataclass(frozen=True)
class Needs:
    """What a method needs from the model, so that passes can be shared and costs stated.

    Attributes:
        layer: it explains through a layer ``A`` (``--layer`` applies).
        layer_gradients: it needs ``dy^c/dA`` (one batched backward pass to the layer).
        input_rules: it needs ``dy^c/dx`` under these rectifier rules (one backward pass each).
        forwards: extra forward passes beyond the shared one, in words (``""`` for none).
        many_passes: the passes grow with the layer's channels, samples, steps or windows
            (tens to thousands per image), so benchmarks and scripts give it fewer images;
            ``False`` for a method that costs a fixed pass or two per image.
    """

    layer: bool = False
    layer_gradients: bool = False
    input_rules: tuple[Rule, ...] = ()
    forwards: str = ""
    many_passes: bool = False


@dataclass(frozen=True)
class Option:
    """One constructor option of a method, as the CLI and the demo show and parse it.

    Attributes:
        name: the keyword argument.
        annotation: its type (resolved from the constructor's annotations).
        default: its default value.
        help: its description, from the ``Args:`` section of the class docstring.
    """

    name: str
    annotation: Any
    default: Any
    help: str = ""

    def parse(self, text: str) -> Any:
        """Turn the text of ``--option NAME=TEXT`` into a value of the option's type.

        Raises:
            GradCAMError: when the text is not a value of that type.

        Examples:
            >>> Option("window", int | tuple[int, int], 35).parse("35,21")
            (35, 21)
        """
        try:
            return _coerce(self.annotation, text.strip())
        except (TypeError, ValueError):
            raise GradCAMError(
                f"option {self.name}={text!r}: expected {_describe(self.annotation)}"
            ) from None


@dataclass(frozen=True)
class MethodSpec:
    """A method's registry entry.

    Attributes:
        name: the ``--method`` spelling.
        title: the name shown in pictures and the demo.
        kind: ``"heatmap"`` or ``"pixel"`` (see :data:`Kind`).
        needs: what it needs from the engine.
        cls: the class that implements it: ``cls(module, layer, **options)``.
        presets: options fixed by this entry (e.g. ``counterfactual=True``).
        citation: the paper it comes from.
        options: the options a user may set (the constructor's, less ``presets``).
        ranks: the spatial ranks of the inputs it explains: 1 for signals (B, C, L), 2 for
            images (B, C, H, W), 3 for volumes and clips (B, C, D, H, W); the formula is the
            same in each, with sums and means over every spatial axis and linear, bilinear or
            trilinear upsampling. Other ranks are refused with one line naming why
            (:func:`check_rank`).
        multi_layer: it explains through several layers in one call
            (``layer=["layer3", "layer4"]``): one forward pass hooking every layer, one
            batched backward pass to all of them, and the mean of the layers' maps, each
            scaled to [0, 1] and upsampled to the input (pytorch-grad-cam's
            ``target_layers=[a, b]``; see :func:`gradcam.methods.multi_layer.combine_layers`).
    """

    name: str
    title: str
    kind: Kind
    needs: Needs
    cls: type
    presets: Mapping[str, Any] = field(default_factory=dict)
    citation: str = ""
    options: tuple[Option, ...] = ()
    ranks: tuple[int, ...] = (2,)
    multi_layer: bool = False

    def option(self, name: str) -> Option:
        """The option called ``name``.

        Raises:
            GradCAMError: naming the accepted options, for an unknown name.
        """
        for opt in self.options:
            if opt.name == name:
                return opt
        accepted = ", ".join(o.name for o in self.options) or "none"
        raise GradCAMError(f"method {self.name!r} has no option {name!r}; it accepts: {accepted}")

    def create(self, module: nn.Module, layer: Any = None, **options: Any) -> Any:
        """Build the method for ``module`` (``layer`` is ignored by methods that need none)."""
        for name in options:
            self.option(name)
        if several_layers(layer) and len(layer) == 1:
            layer = layer[0]
        if several_layers(layer) and not self.multi_layer:
            raise GradCAMError(_one_layer_only(self.name))
        kwargs = {**self.presets, **options}
        if self.needs.layer:
            return self.cls(module, layer, **kwargs)
        return self.cls(module, **kwargs)


_REGISTRY: dict[str, MethodSpec] = {}


def register(
    name: str,
    *,
    title: str,
    kind: Kind,
    needs: Needs,
    citation: str = "",
    presets: Mapping[str, Any] | None = None,
    ranks: tuple[int, ...] = (2,),
    multi_layer: bool = False,
) -> Callable[[T], T]:
    """Class decorator that adds a method to the table (stack it for presets of one class).

    ``ranks`` are the spatial ranks the method explains (see :attr:`MethodSpec.ranks`);
    ``multi_layer`` says it takes several layers in one call (:attr:`MethodSpec.multi_layer`).

    Examples:
        >>> @register("demo-cam", title="Demo", kind="heatmap", needs=Needs(layer=True))
        ... class DemoCAM:
        ...     '''A demo.
        ...
        ...     Args:
        ...         scale: multiplies the map.
        ...     '''
        ...     def __init__(self, module, layer=None, *, scale: float = 1.0) -> None: ...
        >>> method_spec("demo-cam").options[0].help
        'multiplies the map.'
        >>> _ = _REGISTRY.pop("demo-cam")
    """

    def add(cls: T) -> T:
        if name in _REGISTRY:
            raise ValueError(f"method {name!r} is registered twice")
        fixed = dict(presets or {})
        options = tuple(o for o in _options_of(cls) if o.name not in fixed)
        unknown = set(fixed) - {o.name for o in _options_of(cls)}
        if unknown:
            raise ValueError(f"presets {sorted(unknown)} are not options of {cls.__name__}")
        _REGISTRY[name] = MethodSpec(
            name, title, kind, needs, cls, fixed, citation, options, tuple(ranks), multi_layer
        )
        _name_small_inputs(cls)
        return cls

    return add


# The messages of PyTorch's convolutions and poolings for an input smaller than their window.
_TOO_SMALL = re.compile(
    r"too small|smaller than|greater than actual input size|should be (?:less|at most)", re.I
)


def too_small(exc: RuntimeError, x: Any) -> GradCAMError | None:
    """The one-line error for a model that failed because input ``x`` is smaller than one of
    its convolution or pooling windows, naming the input size; ``None`` for any other error.

    Examples:
        >>> import torch
        >>> try:
        ...     torch.nn.MaxPool2d(4)(torch.zeros(1, 3, 1, 1))
        ... except RuntimeError as exc:
        ...     print(too_small(exc, torch.zeros(1, 3, 1, 1)))
        the input is too small for the model: 1 x 1 pixels (shape (1, 3, 1, 1)); give a larger \
image (Given input size: (3x1x1). Calculated output size: (3x0x0). Output size is too small)
    """
    text = str(exc).strip()
    if not hasattr(x, "shape") or len(x.shape) < 3 or not _TOO_SMALL.search(text):
        return None
    size = " x ".join(str(s) for s in x.shape[2:])
    return GradCAMError(
        f"the input is too small for the model: {size} pixels (shape {tuple(x.shape)}); "
        f"give a larger image ({text.splitlines()[0]})"
    )


def _name_small_inputs(cls: type) -> None:
    """Make a registered method's ``__call__`` refuse an input rank its entry does not list
    (:func:`check_rank`) and turn the model's own failure on a too-small input into
    :func:`too_small`'s one line (once per class, however many entries it has)."""
    call = getattr(cls, "__call__", None)  # noqa: B004 - the method, possibly inherited
    if call is None or getattr(call, "_names_small_inputs", False):
        return

    @functools.wraps(call)
    def checked(self: Any, x: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(x, Tensor) and x.dim() in (3, 4, 5):
            # A rank its entry does not list is refused here, for every method alike.
            check_rank(self, x, "the method is written and tested for the ranks its entry lists")
        try:
            return call(self, x, *args, **kwargs)
        except RuntimeError as exc:
            error = too_small(exc, x)
            if error is None:
                raise
            raise error from exc

    checked._names_small_inputs = True  # type: ignore[attr-defined]
    cls.__call__ = checked  # type: ignore[method-assign]


def several_layers(layer: object) -> TypeGuard[Sequence[Any]]:
    """Whether ``layer`` names several layers: a list or tuple of layers (a resolved layer,
    itself a tuple, is one).

    Examples:
        >>> several_layers(["layer3", "layer4"]), several_layers("layer4")
        (True, False)
    """
    return isinstance(layer, (list, tuple)) and not hasattr(layer, "_fields")


def takes_layers(cls: type) -> bool:
    """Whether the registry entry of ``cls`` (or of its nearest registered base class) declares
    ``multi_layer``; ``False`` for a class without an entry.

    Examples:
        >>> from gradcam.methods import GradCAM, EigenCAM
        >>> takes_layers(GradCAM), takes_layers(EigenCAM)
        (True, False)
    """
    for klass in cls.__mro__:
        spec = next((s for s in _REGISTRY.values() if s.cls is klass), None)
        if spec is not None:
            return spec.multi_layer
    return False


def check_layers(cls: type, layer: object) -> None:
    """Refuse several layers (more than one) for a class whose entry does not declare
    ``multi_layer``, with one line naming the methods that take them.

    Examples:
        >>> from gradcam.methods import EigenCAM
        >>> check_layers(EigenCAM, ["a", "b"])
        Traceback (most recent call last):
        ...
        gradcam.errors.GradCAMError: method 'EigenCAM' explains through one layer: give one ...
    """
    if several_layers(layer) and len(layer) > 1 and not takes_layers(cls):
        raise GradCAMError(_one_layer_only(cls.__name__))


def _one_layer_only(name: str) -> str:
    takers = ", ".join(s.name for s in _REGISTRY.values() if s.multi_layer)
    return (
        f"method {name!r} explains through one layer: give one layer, or choose a method that "
        f"takes several ({takers})"
    )


_LAYOUTS = {1: "(B, C, L) signals", 2: "(B, C, H, W) images", 3: "(B, C, D, H, W) volumes"}


def check_rank(method: object, x: Tensor, why: str) -> None:
    """Raise a one-line :class:`GradCAMError` when the registry says ``method`` (an instance of
    a registered class) does not explain inputs of ``x``'s spatial rank; ``why`` says why.

    Examples:
        >>> import torch
        >>> from gradcam.methods.factorization import DeepFeatureFactorization
        >>> net = torch.nn.Sequential(torch.nn.Conv1d(1, 2, 3), torch.nn.Flatten())
        >>> dff = DeepFeatureFactorization(net, "0")
        >>> check_rank(dff, torch.zeros(1, 1, 8), "its concepts are factorized over (h, w) maps")
        Traceback (most recent call last):
        ...
        gradcam.errors.GradCAMError: Deep Feature Factorization explains (B, C, H, W) images ...
    """
    spec = next((s for s in _REGISTRY.values() if s.cls is type(method)), None)
    rank = x.dim() - 2
    if spec is None or rank in spec.ranks:
        return
    takes = " and ".join(_LAYOUTS[r] for r in spec.ranks)
    raise GradCAMError(
        f"{spec.title} explains {takes} only, not {_LAYOUTS.get(rank, 'inputs')} "
        f"{tuple(x.shape)}: {why}"
    )


def methods() -> list[str]:
    """The names of all methods, as the CLI's ``--method`` takes them, in registration order.

    Examples:
        >>> methods()[:3]
        ['gradcam', 'counterfactual', 'guided-backprop']
    """
    return list(_REGISTRY)


def method_specs() -> list[MethodSpec]:
    """Every method's entry, in the order of :func:`methods`."""
    return list(_REGISTRY.values())


def method_spec(name: str) -> MethodSpec:
    """The entry of the method called ``name``.

    Raises:
        GradCAMError: for an unknown name, listing the known ones.

    Examples:
        >>> method_spec("guided-backprop").kind
        'pixel'
    """
    if name not in _REGISTRY:
        raise GradCAMError(f"unknown method {name!r}; choose from {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def resolve_methods(names: Sequence[str | MethodSpec]) -> list[MethodSpec]:
    """The entries of ``names``, each looked up once, duplicates dropped (first kept).

    Entries already resolved pass through: a command resolves its ``--method`` names once, at
    the boundary, and hands the entries down (options, building, pictures) with no further
    lookup.

    Raises:
        GradCAMError: for an unknown name, listing the known ones.

    Examples:
        >>> [spec.name for spec in resolve_methods(["gradcam++", method_spec("cam"), "cam"])]
        ['gradcam++', 'cam']
    """
    found: dict[str, MethodSpec] = {}
    for name in names:
        spec = name if isinstance(name, MethodSpec) else method_spec(name)
        found.setdefault(spec.name, spec)
    return list(found.values())


def create_method(name: str, module: nn.Module, layer: Any = None, **options: Any) -> Any:
    """Build the method called ``name`` for ``module``, passing ``options`` to it.

    ``layer`` is used by the methods that explain through a layer and ignored by the others.

    Raises:
        GradCAMError: for an unknown name (listing the known ones) or an option the method
            does not take (listing the ones it does).

    Examples:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(),
        ...                           torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        >>> occlusion = create_method("occlusion", net, window=4, stride=2)
        >>> occlusion.window
        (4, 4)
        >>> create_method("occlusion", net, windw=4)
        Traceback (most recent call last):
        ...
        gradcam.errors.GradCAMError: method 'occlusion' has no option 'windw'; it accepts: ...
    """
    return method_spec(name).create(module, layer, **options)


def check_method(name: str, options: Mapping[str, Any] | None = None) -> MethodSpec:
    """The entry of ``name`` once its option names are known to it: for settings objects
    (protocols, jobs) that name a method and its options, checked when they are made, not
    per image.

    Raises:
        GradCAMError: an unknown method, or an option it does not take (listing both).

    Examples:
        >>> check_method("gradcam", {"pooling": "max"}).name
        'gradcam'
        >>> check_method("gradcam", {"window": 3})
        Traceback (most recent call last):
        ...
        gradcam.errors.GradCAMError: method 'gradcam' has no option 'window'; it accepts: ...
    """
    spec = method_spec(name)
    for option in options or {}:
        spec.option(option)
    return spec


def parse_options(names: Sequence[str | MethodSpec], pairs: list[str]) -> dict[str, dict[str, Any]]:
    """Parse ``--option NAME=VALUE`` texts into per-method keyword arguments.

    Each option goes to every method in ``names`` that takes it, typed by that method's entry.

    Raises:
        GradCAMError: for text without ``=``, an option none of the methods take, or a value
            that is not of the option's type.

    Examples:
        >>> parse_options(["occlusion", "gradcam"], ["window=21", "pooling=max"])
        {'occlusion': {'window': 21}, 'gradcam': {'pooling': 'max'}}
    """
    specs = resolve_methods(names)
    parsed: dict[str, dict[str, Any]] = {spec.name: {} for spec in specs}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise GradCAMError(f"--option {pair!r}: expected NAME=VALUE")
        takers = [s for s in specs if any(o.name == key for o in s.options)]
        if not takers:
            accepted = sorted({o.name for s in specs for o in s.options})
            raise GradCAMError(
                f"no chosen method ({', '.join(s.name for s in specs)}) has an option {key!r}; "
                f"they accept: {', '.join(accepted) or 'none'}"
            )
        for spec in takers:
            parsed[spec.name][key] = spec.option(key).parse(text)
    return parsed


def flag_options(names: Sequence[str | MethodSpec], flags: Mapping[str, Any]) -> list[str]:
    """``NAME=VALUE`` texts, for :func:`parse_options`, of the options a command gives by
    their own flags (``gradcam explain --window 21`` is ``--option window=21``).

    A flag is given when its value is not ``None``: ``0`` is a value like any other, which the
    method then refuses if it must be positive (``--window 0`` is not "no window given"). A
    given flag that none of the chosen methods takes is refused rather than ignored.

    Raises:
        GradCAMError: naming the flag and the methods that take it.

    Examples:
        >>> flag_options(["occlusion"], {"window": 0, "stride": None})
        ['window=0']
        >>> flag_options(["gradcam"], {"window": 21})
        Traceback (most recent call last):
        ...
        gradcam.errors.GradCAMError: --window is an option of occlusion; none of the chosen \
methods (gradcam) takes it
    """
    specs = resolve_methods(names)
    pairs = []
    for key, value in flags.items():
        if value is None:
            continue
        if not any(o.name == key for s in specs for o in s.options):
            takers = [s.name for s in method_specs() if any(o.name == key for o in s.options)]
            raise GradCAMError(
                f"--{key.replace('_', '-')} is an option of {', '.join(takers)}; "
                f"none of the chosen methods ({', '.join(s.name for s in specs)}) takes it"
            )
        pairs.append(f"{key}={value}")
    return pairs


def _arg_help(cls: type) -> dict[str, str]:
    """``{name: help}`` from the ``Args:`` sections of a Google-style class docstring and of
    its base classes' (a subclass documents only the options it adds or changes)."""
    helps: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        helps.update(_own_arg_help(klass))
    return helps


def _own_arg_help(cls: type) -> dict[str, str]:
    doc = cls.__doc__ and inspect.cleandoc(cls.__doc__)
    match = re.search(r"^Args:\n((?:[ \t]+.*\n?|\n)+)", doc or "", re.MULTILINE)
    if not match:
        return {}
    helps: dict[str, str] = {}
    current = None
    for line in match.group(1).splitlines():
        item = re.match(r"^ {4}(\w+)(?: \([^)]*\))?: ?(.*)$", line)
        if item:
            current = item.group(1)
            helps[current] = item.group(2).strip()
        elif current and line.strip():
            helps[current] += " " + line.strip()
    return helps


def _options_of(cls: type) -> list[Option]:
    init = cls.__init__  # type: ignore[misc]
    hints = typing.get_type_hints(init)
    helps = _arg_help(cls)
    return [
        Option(p.name, hints.get(p.name, Any), p.default, helps.get(p.name, ""))
        for p in inspect.signature(init).parameters.values()
        if p.name not in _BUILT_ON
        and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        and p.default is not p.empty
    ]


_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def _coerce(annotation: Any, text: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Literal:
        for choice in args:
            if str(choice) == text:
                return choice
        raise ValueError(text)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and text.lower() == "none":
            return None
        for member in args:
            if member is type(None):
                continue
            try:
                return _coerce(member, text)
            except (TypeError, ValueError):
                continue
        raise ValueError(text)
    if origin is tuple:
        parts = [p for p in text.replace("x", ",").split(",") if p.strip()]
        members = args[:1] * len(parts) if len(args) == 2 and args[1] is Ellipsis else args
        if len(members) != len(parts):
            raise ValueError(text)
        return tuple(_coerce(m, p.strip()) for m, p in zip(members, parts, strict=True))
    if annotation is bool:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ValueError(text)
    if annotation in (int, float, str):
        return annotation(text)
    raise TypeError(f"options of type {annotation} cannot be given as text")


def _describe(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args if a is not type(None))
    if origin is tuple:
        return "a comma-separated tuple of " + ", ".join(_describe(a) for a in args)
    if annotation is bool:
        return "true or false"
    return getattr(annotation, "__name__", str(annotation))
