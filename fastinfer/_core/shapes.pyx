# cython: language_level=3, boundscheck=False, wraparound=False
"""The JSON shape checker, compiled: runs over every field of every client body.

Owns: a small declarative schema (``Str``, ``Int``, ``Num``, ``Bool``, ``Arr``, ``Obj``,
``OneOf``, ``Tagged``) and the walk that checks a parsed JSON value (orjson's dicts, lists,
strings, numbers) against it, raising ``Invalid`` for the first wrong value with its path
(keys and indexes, innermost first). Same API and behaviour as the reference
``fastinfer._core.ref.shapes``, whose docstring gives the rules; the tests hold the two to the
same verdicts on generated bodies.

Why: the walk is one Python method call per checked value; a long chat history (tens of
messages, their parts, tool calls) cost the gateway several times the body's parse. Here each
shape is a C class, a container calls its items' ``check`` through the vtable, and the leaf
types (``type(value) in leaf``) are tested without a call.

Must not touch: what the fields mean (the gateway's API modules declare the shapes), how an
error is worded for a client (``gateway.validate``), HTTP.
"""
from cpython.dict cimport PyDict_GetItem, PyDict_Next
from cpython.object cimport PyObject

__all__ = ["Arr", "Bool", "Int", "Invalid", "Num", "Obj", "OneOf", "Shape", "Str", "Tagged", "got"]

_GOT_NAMES = {type(None): "null"}
cdef frozenset _NO_LEAF = frozenset()


class Invalid(Exception):
    """A wrong value, raised inside the walk; containers add their key or index as it unwinds."""

    def __init__(self, what: str):
        super().__init__(what)
        self.what = what
        self.path = []   # innermost first


def got(value) -> str:
    """The Python type name of a JSON value, as the messages say it (``null`` for None)."""
    return _GOT_NAMES.get(type(value)) or type(value).__name__


cdef str _short(value):
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _one_of(choices, value) -> str:
    return f"must be one of {', '.join(repr(c) for c in choices)}; got {_short(value)}"


cdef str _range(low, high, value):
    if low is not None and high is not None:
        return f"must be between {low} and {high}; got {_short(value)}"
    if low is not None:
        return f"must be at least {low}; got {_short(value)}"
    return f"must be at most {high}; got {_short(value)}"


cdef int _check_at(Shape shape, value, where) except -1:
    """``shape.check(value)``; an ``Invalid`` leaves with ``where`` (a key or an index) on its path."""
    try:
        shape.check(value)
    except Invalid as e:
        e.path.append(where)
        raise
    return 0


cdef class Shape:
    """One JSON type, and what a value of it must satisfy."""

    cdef readonly tuple types      # the Python types of the JSON values it accepts
    cdef readonly str wanted       # how a message names it ("a string")
    #: types for which the type alone is the whole check: containers skip the call for them
    cdef readonly frozenset leaf

    def __init__(self):
        self.types, self.wanted, self.leaf = (), "", _NO_LEAF

    cpdef check(self, value):
        raise NotImplementedError

    def wrong_type(self, value):
        return Invalid(f"must be {self.wanted}; got {got(value)}")


cdef class Str(Shape):
    cdef readonly frozenset choices
    cdef readonly tuple choice_list
    cdef readonly bint nonempty

    def __init__(self, choices=(), nonempty=False):
        self.types, self.wanted = (str,), "a string"
        self.choices = frozenset(choices)
        self.choice_list = tuple(choices)
        self.nonempty = nonempty
        self.leaf = _NO_LEAF if choices or nonempty else frozenset(self.types)

    cpdef check(self, value):
        if type(value) is not str:
            raise self.wrong_type(value)
        if self.choices and value not in self.choices:
            raise Invalid(_one_of(self.choice_list, value))
        if self.nonempty and not value:
            raise Invalid("must not be empty")


cdef class Int(Shape):
    cdef readonly object min, max

    def __init__(self, min=None, max=None):
        self.types, self.wanted = (int,), "an integer"
        self.min = min
        self.max = max
        self.leaf = frozenset(self.types) if min is None and max is None else _NO_LEAF

    cpdef check(self, value):
        if type(value) is not int:    # bool is a subclass of int, never the same type
            raise self.wrong_type(value)
        if (self.min is not None and value < self.min) or (self.max is not None and value > self.max):
            raise Invalid(_range(self.min, self.max, value))


cdef class Num(Shape):
    cdef readonly object min, max

    def __init__(self, min=None, max=None):
        self.types, self.wanted = (int, float), "a number"
        self.min = min
        self.max = max
        self.leaf = frozenset(self.types) if min is None and max is None else _NO_LEAF

    cpdef check(self, value):
        kind = type(value)
        if kind is not float and kind is not int:
            raise self.wrong_type(value)
        if (self.min is not None and value < self.min) or (self.max is not None and value > self.max):
            raise Invalid(_range(self.min, self.max, value))


cdef class Bool(Shape):
    def __init__(self):
        self.types, self.wanted, self.leaf = (bool,), "a boolean", frozenset((bool,))

    cpdef check(self, value):
        if type(value) is not bool:
            raise self.wrong_type(value)


cdef class Arr(Shape):
    cdef readonly Shape item
    cdef readonly Py_ssize_t min_items

    def __init__(self, Shape item, min_items=0):
        self.types, self.wanted, self.leaf = (list,), "an array", _NO_LEAF
        self.item = item
        self.min_items = min_items

    cpdef check(self, value):
        if type(value) is not list:
            raise self.wrong_type(value)
        cdef list items = <list>value
        if len(items) < self.min_items:
            raise Invalid("must not be empty" if self.min_items == 1 else f"must have at least {self.min_items} items")
        cdef Shape item = self.item
        cdef frozenset leaf = item.leaf
        cdef Py_ssize_t i
        for i in range(len(items)):
            element = items[i]
            if type(element) not in leaf:
                _check_at(item, element, i)


cdef class Obj(Shape):
    """An object: ``required`` keys must be there (and not null), ``optional`` ones are checked when given."""

    cdef readonly tuple required
    cdef readonly dict optional

    def __init__(self, required=None, optional=None):
        self.types, self.wanted = (dict,), "an object"
        self.required = tuple((key, shape, (<Shape>shape).leaf) for key, shape in (required or {}).items())
        self.optional = dict(optional or {})
        self.leaf = frozenset(self.types) if not required and not optional else _NO_LEAF

    cpdef check(self, value):
        if type(value) is not dict:
            raise self.wrong_type(value)
        self.check_fields(<dict>value)

    cpdef check_fields(self, dict value):
        cdef Shape shape
        cdef PyObject *found
        for key, shape_, leaf_ in self.required:
            found = PyDict_GetItem(value, key)
            if found == NULL or <object>found is None:
                e = Invalid("is required")
                e.path.append(key)
                raise e
            field = <object>found
            if type(field) not in <frozenset>leaf_:
                _check_at(<Shape>shape_, field, key)
        cdef dict optional = self.optional
        if not optional:
            return
        cdef Py_ssize_t pos = 0
        cdef PyObject *k
        cdef PyObject *v
        while PyDict_Next(value, &pos, &k, &v):    # a body's keys are few; unknown ones cost one lookup
            found = PyDict_GetItem(optional, <object>k)
            if found == NULL or <object>v is None:
                continue
            shape = <Shape>found
            if type(<object>v) not in shape.leaf:
                _check_at(shape, <object>v, <object>k)


cdef class OneOf(Shape):
    """A value of one of several JSON types (``Str() | Arr(...)``), each with its own shape."""

    cdef readonly dict by_type

    def __init__(self, *shapes):
        self.by_type = {t: shape for shape in shapes for t in (<Shape>shape).types}
        self.types = tuple(self.by_type)
        self.wanted = " or ".join((<Shape>s).wanted for s in shapes)
        self.leaf = frozenset(t for shape in shapes for t in (<Shape>shape).leaf)

    cpdef check(self, value):
        cdef PyObject *found = PyDict_GetItem(self.by_type, type(value))
        if found == NULL:
            raise self.wrong_type(value)
        (<Shape>found).check(value)


cdef class Tagged(Shape):
    """An object whose string ``tag`` key (``type``, ``role``) picks its shape among ``variants``.

    A tag not among them takes ``other``; with no ``other``, it is wrong. A missing tag
    is ``default`` when one is given, else the object is wrong.
    """

    cdef readonly str tag
    cdef readonly dict variants
    cdef readonly object other, default

    def __init__(self, tag, variants, other=None, default=None):
        self.types, self.wanted, self.leaf = (dict,), "an object", _NO_LEAF
        self.tag = tag
        self.variants = dict(variants)
        self.other = other
        self.default = default

    cpdef check(self, value):
        if type(value) is not dict:
            raise self.wrong_type(value)
        kind = (<dict>value).get(self.tag, self.default)
        if type(kind) is not str:
            raise Invalid(f"must be an object with a string '{self.tag}'")
        shape = self.variants.get(kind, self.other)
        if shape is None:
            e = Invalid(_one_of(self.variants, kind))
            e.path.append(self.tag)
            raise e
        (<Obj>shape).check_fields(<dict>value)
