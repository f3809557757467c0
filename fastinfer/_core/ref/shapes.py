"""Pure-Python reference of the JSON shape checker (``fastinfer._core.shapes``).

Owns: a small declarative schema (``Str``, ``Int``, ``Num``, ``Bool``, ``Arr``, ``Obj``,
``OneOf``, ``Tagged``) and the walk that checks a parsed JSON value against it, raising
``Invalid`` for the first wrong value with its path (keys and indexes, innermost first).
Same API and behaviour as the compiled module; the oracle the tests compare it against.
Must not touch: what the fields mean (the gateway's API modules declare the shapes), how an
error is worded for a client (``gateway.validate``), HTTP.

The rules, the same at every depth:
- an unknown key passes (it is forwarded as it is); a known optional key that is
  null counts as absent; a required key must be there and not null;
- JSON true/false is a boolean only, never an integer or a number;
- numbers are checked against their range (``Int(1, 128)``), strings against their
  choices when the API has a closed set.

The walk allocates nothing unless the value is wrong: the path is collected only while an
``Invalid`` unwinds (``_check_at``).
"""
from __future__ import annotations

_GOT_NAMES = {type(None): "null"}


_GOT_NAMES = {type(None): "null"}


class Invalid(Exception):
    """A wrong value, raised inside the walk; containers add their key or index as it unwinds."""

    __slots__ = ("what", "path")

    def __init__(self, what: str):
        super().__init__(what)
        self.what = what
        self.path: list = []   # innermost first


def got(value) -> str:
    """The Python type name of a JSON value, as the messages say it (``null`` for None)."""
    return _GOT_NAMES.get(type(value)) or type(value).__name__


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _check_at(shape: "Shape", value, where) -> None:
    """``shape.check(value)``; an ``Invalid`` leaves with ``where`` (a key or an index) on its path."""
    try:
        shape.check(value)
    except Invalid as e:
        e.path.append(where)
        raise


class Shape:
    """One JSON type, and what a value of it must satisfy."""

    types: tuple = ()     # the Python types of the JSON values it accepts
    wanted = ""           # how a message names it ("a string")
    #: types for which the type alone is the whole check: containers skip the call for them
    leaf: frozenset = frozenset()

    def check(self, value) -> None:
        raise NotImplementedError

    def wrong_type(self, value) -> Invalid:
        return Invalid(f"must be {self.wanted}; got {got(value)}")


class Str(Shape):
    types, wanted = (str,), "a string"

    def __init__(self, choices: tuple[str, ...] = (), nonempty: bool = False):
        self.choices = frozenset(choices)
        self.choice_list = choices
        self.nonempty = nonempty
        self.leaf = frozenset() if choices or nonempty else frozenset(self.types)

    def check(self, value) -> None:
        if type(value) is not str:
            raise self.wrong_type(value)
        if self.choices and value not in self.choices:
            raise Invalid(f"must be one of {', '.join(repr(c) for c in self.choice_list)}; got {_short(value)}")
        if self.nonempty and not value:
            raise Invalid("must not be empty")


class Int(Shape):
    types, wanted = (int,), "an integer"

    def __init__(self, min: int | None = None, max: int | None = None):
        self.min = min
        self.max = max
        self.leaf = frozenset(self.types) if min is None and max is None else frozenset()

    def check(self, value) -> None:
        if type(value) is not int:    # bool is a subclass of int, never the same type
            raise self.wrong_type(value)
        if (self.min is not None and value < self.min) or (self.max is not None and value > self.max):
            raise Invalid(_range(self.min, self.max, value))


class Num(Shape):
    types, wanted = (int, float), "a number"

    def __init__(self, min: float | None = None, max: float | None = None):
        self.min = min
        self.max = max
        self.leaf = frozenset(self.types) if min is None and max is None else frozenset()

    def check(self, value) -> None:
        kind = type(value)
        if kind is not float and kind is not int:
            raise self.wrong_type(value)
        if (self.min is not None and value < self.min) or (self.max is not None and value > self.max):
            raise Invalid(_range(self.min, self.max, value))


def _range(low, high, value) -> str:
    if low is not None and high is not None:
        return f"must be between {low} and {high}; got {_short(value)}"
    if low is not None:
        return f"must be at least {low}; got {_short(value)}"
    return f"must be at most {high}; got {_short(value)}"


class Bool(Shape):
    types, wanted, leaf = (bool,), "a boolean", frozenset((bool,))

    def check(self, value) -> None:
        if type(value) is not bool:
            raise self.wrong_type(value)


class Arr(Shape):
    types, wanted = (list,), "an array"

    def __init__(self, item: Shape, min_items: int = 0):
        self.item = item
        self.min_items = min_items

    def check(self, value) -> None:
        if type(value) is not list:
            raise self.wrong_type(value)
        if len(value) < self.min_items:
            raise Invalid("must not be empty" if self.min_items == 1 else f"must have at least {self.min_items} items")
        item, leaf = self.item, self.item.leaf
        for i, element in enumerate(value):
            if type(element) not in leaf:
                _check_at(item, element, i)


class Obj(Shape):
    """An object: ``required`` keys must be there (and not null), ``optional`` ones are checked when given."""

    types, wanted = (dict,), "an object"

    def __init__(self, required: dict[str, Shape] | None = None, optional: dict[str, Shape] | None = None):
        self.required = tuple((key, shape, shape.leaf) for key, shape in (required or {}).items())
        self.optional = optional or {}
        self.leaf = frozenset(self.types) if not required and not optional else frozenset()

    def check(self, value) -> None:
        if type(value) is not dict:
            raise self.wrong_type(value)
        self.check_fields(value)

    def check_fields(self, value: dict) -> None:
        for key, shape, leaf in self.required:
            field = value.get(key)
            if field is None:
                e = Invalid("is required")
                e.path.append(key)
                raise e
            if type(field) not in leaf:
                _check_at(shape, field, key)
        optional = self.optional
        if not optional:
            return
        for key, field in value.items():   # a body's keys are few; unknown ones cost one lookup
            shape = optional.get(key)
            if shape is not None and field is not None and type(field) not in shape.leaf:
                _check_at(shape, field, key)


class OneOf(Shape):
    """A value of one of several JSON types (``Str() | Arr(...)``), each with its own shape."""

    def __init__(self, *shapes: Shape):
        self.by_type = {t: shape for shape in shapes for t in shape.types}
        self.types = tuple(self.by_type)
        self.wanted = " or ".join(s.wanted for s in shapes)
        self.leaf = frozenset(t for shape in shapes for t in shape.leaf)

    def check(self, value) -> None:
        shape = self.by_type.get(type(value))
        if shape is None:
            raise self.wrong_type(value)
        shape.check(value)


class Tagged(Shape):
    """An object whose string ``tag`` key (``type``, ``role``) picks its shape among ``variants``.

    A tag not among them takes ``other``; with no ``other``, it is wrong. A missing tag
    is ``default`` when one is given, else the object is wrong.
    """

    types, wanted = (dict,), "an object"

    def __init__(self, tag: str, variants: dict[str, Obj], other: Obj | None = None, default: str | None = None):
        self.tag = tag
        self.variants = variants
        self.other = other
        self.default = default

    def check(self, value) -> None:
        if type(value) is not dict:
            raise self.wrong_type(value)
        kind = value.get(self.tag, self.default)
        if type(kind) is not str:
            raise Invalid(f"must be an object with a string '{self.tag}'")
        shape = self.variants.get(kind, self.other)
        if shape is None:
            e = Invalid(f"must be one of {', '.join(repr(v) for v in self.variants)}; got {_short(kind)}")
            e.path.append(self.tag)
            raise e
        shape.check_fields(value)
