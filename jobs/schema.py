"""The machinery of the run spec's schema: value checks on dataclass fields, the bounds every
count stays within, and the registry of kinds whose fields differ (optimizers by ``name``, probes by
``type``). Imports nothing heavy: the login node validates sweeps without loading torch.
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Generic, Iterator, Mapping, Optional, Sequence, TypeVar


@dataclass(frozen=True)
class Check:
    """Constraints on one field's value beyond its type."""

    gt: Optional[float] = None
    ge: Optional[float] = None
    lt: Optional[float] = None
    le: Optional[float] = None
    choices: tuple[str, ...] = ()
    pattern: str = ""
    pattern_hint: str = ""
    catalog: str = ""  # name of a catalog of known names (models, datasets, optimizers, probes)
    max_items: Optional[int] = None  # of a list

    def bounds(self) -> str:
        """The numeric bounds in words ("> 0 and < 1"); empty without bounds."""
        limits = [(">", self.gt), (">=", self.ge), ("<", self.lt), ("<=", self.le)]
        return " and ".join(f"{sign} {_number_text(limit)}" for sign, limit in limits if limit is not None)

    def describe(self, noun: str = "a number") -> str:
        return f"{noun} {self.bounds()}"

    def within_bounds(self, value: float) -> bool:
        return (
            (self.gt is None or value > self.gt)
            and (self.ge is None or value >= self.ge)
            and (self.lt is None or value < self.lt)
            and (self.le is None or value <= self.le)
        )

    def violation(self, value: Any, known_names: Mapping[str, Sequence[str]]) -> Optional[str]:
        """What is accepted, if ``value`` is not; None when it passes (None always does: "the default")."""
        if value is None:
            return None
        if isinstance(value, list):
            return self.list_violation(value)
        if is_number(value) and not self.within_bounds(value):
            return self.describe()
        if self.choices and value not in self.choices:
            return "one of " + ", ".join(self.choices)
        if self.pattern and isinstance(value, str) and not re.fullmatch(self.pattern, value):
            return self.pattern_hint or f"a string matching {self.pattern}"
        if self.catalog:
            known = known_names.get(self.catalog, ())
            if value not in known:
                return f"a known {self.catalog[:-1]}: " + (
                    ", ".join(sorted(known)) or "(none registered yet)"
                )
        return None

    def list_violation(self, items: list[Any]) -> Optional[str]:
        if self.max_items is not None and len(items) > self.max_items:
            return f"a list of at most {self.max_items} items" + (
                f", each {self.bounds()}" if self.bounds() else ""
            )
        if self.choices and any(item not in self.choices for item in items):
            return "a list of " + ", ".join(self.choices)
        if any(is_number(item) and not self.within_bounds(item) for item in items):
            return self.describe("a list of numbers")
        return None


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number_text(number: float) -> str:
    return str(number) if isinstance(number, int) else f"{number:g}"


CONTROL_CATEGORIES = ("Cc", "Zl", "Zp")  # control characters, line and paragraph separators


def value_problem(value: Any) -> Optional[str]:
    """What is accepted instead of a value no field takes: an infinite or NaN number, a string with
    control characters (a newline, an escape sequence, a NUL); None for any other value."""
    items = value if isinstance(value, list) else [value]
    if any(isinstance(item, float) and not math.isfinite(item) for item in items):
        return "finite numbers" if isinstance(value, list) else "a finite number"
    if any(
        isinstance(item, str) and any(unicodedata.category(c) in CONTROL_CATEGORIES for c in item)
        for item in items
    ):
        return "text without control characters (newlines, tabs, escape sequences, NUL)"
    return None


# Upper bounds no real run comes near; they keep every count far inside SQLite's 64-bit integers.
MAX_STEPS = 10**9  # training steps, and any step count or step number
MAX_SEED = 2**32 - 1
MAX_SAMPLES = 10**8  # batch sizes and sample counts (the largest data set here has 73 257)
MAX_WIDTH = 65536  # units or channels of one hidden layer
MAX_HIDDEN_LAYERS = 1000
MAX_HIDDEN_WEIGHTS = 10**10  # weights between consecutive hidden layers (40 GB as float32)
MAX_LINE_POINTS = 100_000  # points of one line, all enlargements included (the paper's: 169)


def checked(default: Any = dataclasses.MISSING, *, fingerprint: bool = True, **check: Any) -> Any:
    """A dataclass field with a value check (see :class:`Check`)."""
    metadata = {"check": Check(**check), "fingerprint": fingerprint}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def unfingerprinted(default: Any) -> Any:
    """A field that cannot change results: left out of the run id."""
    if dataclasses.is_dataclass(default) and isinstance(default, type):
        return field(default_factory=default, metadata={"fingerprint": False})
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"fingerprint": False})
    return field(default=default, metadata={"fingerprint": False})


Problems = Iterator[tuple[str, Any, str]]  # (key, value found, what is accepted)


class KindFields:
    """Base of the fields of one kind of a plug-in (an optimizer, a probe type): a dataclass."""

    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]  # set by @dataclass on each kind

    def problems(self) -> Problems:
        """Checks across this kind's own fields (keys relative to the kind), after each field's own."""
        return iter(())


Kind = TypeVar("Kind", bound=KindFields)


class SpecKinds(Generic[Kind]):
    """The fields of each kind of one plug-in, a dataclass per kind selected by one key (optimizers
    by ``name``, probes by ``type``), registered with :meth:`register`.

    Sweep files, ``spec.yaml`` and the registry hold the section as one mapping: :meth:`union` is the
    dataclass of every kind's fields, the structured config OmegaConf reads it with, where a field
    of another kind may stand only at its default. A plug-in gets its own kind's dataclass
    (:meth:`typed`). A field two kinds share is declared alike in both (type, default, checks):
    the union has one default for it."""

    def __init__(self, base: type[Kind], selector: str, describe: str) -> None:
        self.base = base  # the fields every kind has, the selector among them
        self.selector = selector  # the key that selects the kind
        self.describe = describe  # the kind in words, "optimizer {}" or "a {} probe"
        self._classes: dict[str, type[Kind]] = {}

    def register(self, name: str) -> Callable[[type[Kind]], type[Kind]]:
        def add(fields_class: type[Kind]) -> type[Kind]:
            if not issubclass(fields_class, self.base):
                raise TypeError(f"{fields_class.__name__} does not derive from {self.base.__name__}")
            if name in self._classes:
                raise ValueError(f"{self.describe.format(name)} is declared twice")
            self._classes[name] = fields_class
            return fields_class

        return add

    def names(self) -> list[str]:
        return sorted(self._classes)

    def field_names(self, name: str) -> tuple[str, ...]:
        """The fields of kind ``name``, its selector included; empty for an unknown kind."""
        fields_class = self._classes.get(name)
        return (
            tuple(spec_field.name for spec_field in dataclasses.fields(fields_class)) if fields_class else ()
        )

    def typed(self, flat: Any) -> Kind:
        """The fields of ``flat``'s kind as that kind's dataclass (``flat``: the union, or the kind's
        own dataclass already). Raises KeyError for an unknown kind (the spec's checks refuse it)."""
        fields_class = self._classes[getattr(flat, self.selector)]
        if type(flat) is fields_class:
            return flat
        return fields_class(**{name: getattr(flat, name) for name in self.field_names(flat_kind(self, flat))})

    def union(self, class_name: str, module: str) -> type:
        """The dataclass of every kind's fields, in the order the kinds first declare them (the
        first kind's base fields first). Raises TypeError where two kinds declare one field unlike."""
        declared: dict[str, tuple[Any, dataclasses.Field]] = {}
        for fields_class in self._classes.values():
            hints = typing.get_type_hints(fields_class)
            for spec_field in dataclasses.fields(fields_class):
                if spec_field.name not in declared:
                    declared[spec_field.name] = (hints[spec_field.name], spec_field)
                elif not _declared_alike(declared[spec_field.name], (hints[spec_field.name], spec_field)):
                    raise TypeError(
                        f"{fields_class.__name__}.{spec_field.name} is declared unlike the field of the same "
                        "name of another kind (type, default, checks): the union holds one default per key"
                    )
        union = dataclasses.make_dataclass(
            class_name,
            [(name, hint, _copied(spec_field)) for name, (hint, spec_field) in declared.items()],
            bases=(self.base,),
        )
        union.__module__ = module
        return union


def flat_kind(kinds: SpecKinds[Any], flat: Any) -> str:
    return str(getattr(flat, kinds.selector))


def _declared_alike(one: tuple[Any, dataclasses.Field], other: tuple[Any, dataclasses.Field]) -> bool:
    (one_type, one_field), (other_type, other_field) = one, other
    return (
        one_type == other_type
        and _default_of(one_field) == _default_of(other_field)
        and dict(one_field.metadata) == dict(other_field.metadata)
    )


def _default_of(spec_field: dataclasses.Field) -> Any:
    if spec_field.default_factory is not dataclasses.MISSING:
        return spec_field.default_factory()
    return spec_field.default


def _copied(spec_field: dataclasses.Field) -> Any:
    if spec_field.default_factory is not dataclasses.MISSING:
        return field(default_factory=spec_field.default_factory, metadata=spec_field.metadata)
    return field(default=spec_field.default, metadata=spec_field.metadata)


def foreign_fields(spec: Any, own: Sequence[str]) -> Problems:
    """(field, value, ``own`` in words) for each field of ``spec`` outside ``own`` that is set to
    something other than its default (a field of another kind)."""
    defaults = type(spec)()
    for spec_field in dataclasses.fields(spec):
        value = getattr(spec, spec_field.name)
        if spec_field.name not in own and value != getattr(defaults, spec_field.name):
            yield spec_field.name, value, ", ".join(sorted(own))


def kind_violations(kinds: SpecKinds[Any], flat: Any, prefix: str) -> Problems:
    """Fields of ``flat`` (a union) set that its kind does not have, then the kind's own cross-field
    checks; nothing for an unknown kind (its selector's catalog check says so)."""
    kind = flat_kind(kinds, flat)
    own = kinds.field_names(kind)
    if not own:
        return
    described = kinds.describe.format(kind)
    for name, value, accepted in foreign_fields(flat, own):
        yield f"{prefix}{name}", value, f"not a field of {described}; its fields: {accepted}"
    for key, value, accepted in kinds.typed(flat).problems():
        yield f"{prefix}{key}", value, accepted
