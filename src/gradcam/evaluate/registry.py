"""The one table of evaluation protocols: every fact about a protocol lives in its entry.

A protocol is registered once, on its class, with :func:`register_protocol`. The class
gives its name (``name``), what a dataset must hold for it (``needs``) and its settings (its
dataclass fields: names, types, defaults, and the help of :func:`~gradcam.evaluate.base.setting`);
the registration adds a title, the paper it comes from, and the layout of its summary table.
The CLI (``gradcam evaluate``: choices, flags, which protocols need labels or take a layer),
the runner and the docs' tables read this table; adding a protocol is one class and one
registration.

Examples:
    >>> spec = protocol_spec("pointing")
    >>> spec.needs, spec.takes_layer, spec.method_field
    (('labels', 'boxes or masks'), True, 'method')
    >>> spec.option("tolerance").default
    15.0
    >>> protocol_names()  # doctest: +NORMALIZE_WHITESPACE
    ['localization', 'pointing', 'faithfulness', 'sanity', 'ablations', 'seeds',
     'road', 'confidence']
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from gradcam.errors import GradCAMError
from gradcam.evaluate.base import Protocol
from gradcam.methods.registry import Option

__all__ = [
    "METHOD_FIELDS",
    "ProtocolSpec",
    "create_protocol",
    "flag",
    "protocol_names",
    "protocol_spec",
    "protocol_specs",
    "protocol_table",
    "register_protocol",
]

#: Settings that name the explanation methods a protocol runs: ``method`` (one run per
#: method), ``methods`` (one run over them all); ``options`` holds their method options.
METHOD_FIELDS = ("method", "methods")

P = TypeVar("P", bound=type[Protocol])


@dataclass(frozen=True)
class ProtocolSpec:
    """A protocol's registry entry.

    Attributes:
        name: the ``gradcam evaluate`` spelling (the class's ``name``).
        cls: the class: ``cls(**settings)``.
        title: what it measures, in a few words.
        citation: where it comes from (the paper's section).
        summary: the columns of its summary table, in order; ``<method>`` stands for one
            column per method the protocol ran.
        options: its settings (the dataclass fields), with types, defaults and help.
    """

    name: str
    cls: type[Protocol]
    title: str
    citation: str
    summary: tuple[str, ...]
    options: tuple[Option, ...]

    @property
    def needs(self) -> tuple[str, ...]:
        """What a dataset must hold: ``"labels"``, boxes and/or masks (the class's ``needs``)."""
        return self.cls.needs

    @property
    def needs_labels(self) -> bool:
        """Whether the protocol scores against the dataset's class labels."""
        return "labels" in self.cls.needs

    @property
    def takes_layer(self) -> bool:
        """Whether the protocol explains at a chosen ``layer``."""
        return any(o.name == "layer" for o in self.options)

    @property
    def method_field(self) -> str | None:
        """``"method"``, ``"methods"`` or ``None``: how the protocol names its methods."""
        names = {o.name for o in self.options}
        return next((f for f in METHOD_FIELDS if f in names), None)

    def option(self, name: str) -> Option:
        """The setting called ``name``.

        Raises:
            GradCAMError: naming the protocol's settings, for an unknown name.
        """
        for opt in self.options:
            if opt.name == name:
                return opt
        accepted = ", ".join(o.name for o in self.options) or "none"
        raise GradCAMError(f"protocol {self.name!r} has no setting {name!r}; it has: {accepted}")

    def create(self, **settings: Any) -> Protocol:
        """The protocol with ``settings`` (the others at their defaults), checked.

        Raises:
            GradCAMError: an unknown setting, or a value the protocol refuses.
        """
        for name in settings:
            self.option(name)
        return self.cls(**settings)


_REGISTRY: dict[str, ProtocolSpec] = {}


def register_protocol(*, title: str, citation: str, summary: tuple[str, ...]) -> Callable[[P], P]:
    """Class decorator that adds a protocol (a :class:`~gradcam.evaluate.base.Protocol`
    dataclass) to the table, under the class's ``name``.

    Examples:
        >>> from gradcam.evaluate.base import setting
        >>> @register_protocol(title="Demo", citation="none", summary=("images",))
        ... @dataclasses.dataclass(frozen=True)
        ... class Demo(Protocol):
        ...     name = "demo"
        ...     steps: int = dataclasses.field(default=3, metadata=setting("how many steps"))
        >>> protocol_spec("demo").option("steps").help
        'how many steps'
        >>> _ = _REGISTRY.pop("demo")
    """

    def add(cls: P) -> P:
        name = cls.name
        if name in _REGISTRY:
            raise ValueError(f"protocol {name!r} is registered twice")
        if not dataclasses.is_dataclass(cls):
            raise ValueError(f"protocol {cls.__name__} is not a dataclass")
        _REGISTRY[name] = ProtocolSpec(name, cls, title, citation, summary, _options_of(cls))
        return cls

    return add


def _options_of(cls: type[Protocol]) -> tuple[Option, ...]:
    hints = typing.get_type_hints(cls)
    options = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        options.append(Option(f.name, hints.get(f.name, Any), default, f.metadata.get("help", "")))
    return tuple(options)


def flag(spec: ProtocolSpec, option: Option) -> str:
    """The ``gradcam evaluate`` flag of a setting: ``--NAME`` with dashes, unless the field
    names another (see :func:`~gradcam.evaluate.base.setting`)."""
    for f in dataclasses.fields(spec.cls):
        if f.name == option.name and f.metadata.get("flag"):
            return str(f.metadata["flag"])
    return "--" + option.name.replace("_", "-")


def protocol_names() -> list[str]:
    """The registered protocols' names, in registration order."""
    return list(_REGISTRY)


def protocol_specs() -> list[ProtocolSpec]:
    """Every registered protocol's entry, in registration order."""
    return list(_REGISTRY.values())


def protocol_spec(name: str) -> ProtocolSpec:
    """The entry of the protocol called ``name``.

    Raises:
        GradCAMError: naming the registered protocols, for an unknown name.

    Examples:
        >>> protocol_spec("occlusion")
        Traceback (most recent call last):
        gradcam.errors.GradCAMError: unknown protocol 'occlusion'; choose from localization, ...
    """
    if name not in _REGISTRY:
        raise GradCAMError(f"unknown protocol {name!r}; choose from {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def create_protocol(name: str, **settings: Any) -> Protocol:
    """The protocol called ``name`` with ``settings`` (the rest at their defaults).

    Raises:
        GradCAMError: an unknown protocol or setting, or a value the protocol refuses.

    Examples:
        >>> create_protocol("localization", threshold=0.3).threshold
        0.3
    """
    return protocol_spec(name).create(**settings)


def protocol_table() -> str:
    """The registered protocols as a Markdown table (name, what it needs, its settings with
    their defaults, its summary columns), as the docs show it.

    Examples:
        >>> print(protocol_table().splitlines()[0])
        | protocol | measures | needs | settings (default) | summary columns |
    """
    lines = [
        "| protocol | measures | needs | settings (default) | summary columns |",
        "|---|---|---|---|---|",
    ]
    for spec in protocol_specs():
        settings = ", ".join(f"`{o.name}` ({o.default!r})" for o in spec.options)
        lines.append(
            f"| `{spec.name}` | {spec.title} ({spec.citation}) | "
            f"{', '.join(spec.needs) or 'images only'} | {settings} | "
            f"{', '.join(f'`{c}`' for c in spec.summary)} |"
        )
    return "\n".join(lines)
