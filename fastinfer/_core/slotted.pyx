# cython: language_level=3, boundscheck=False, wraparound=False
"""Records of the request path made and read in C: a ``__slots__`` dataclass's instance without its
``__init__``, and its fields without the generic attribute lookup.

Owns: ``record_maker(cls)``, for a ``@dataclass(slots=True)`` without ``__post_init__``: a
``RecordMaker`` that, called with values for the first fields (positional, in the fields' order),
returns a new ``cls`` holding them and every other field's default (a ``default_factory``'s fresh
value) — what ``cls(*values)`` returns, made by writing the slots where the class keeps them
(each field's member descriptor says where) instead of running the generated ``__init__``. A maker
is called through vectorcall: no tuple of the values is made for the call.

And ``SlotFields(*names)``, ``operator.attrgetter`` for such records, for compiled callers
(``slotted.pxd``): ``of(obj)`` reads each field at its slot's offset, found once for the type last
seen (the access line reads the request's records with it).

Why: the engine's request and result, and the gateway's record of a data request, are made once
a request each; their ``__init__``s are Python functions of one assignment per field, 120 opcodes
and three frames a request between them, while the values are already at hand. The class stays the
plain dataclass (its repr, equality, keyword construction for everyone else); only the request
path's calls take the maker.

Must not touch: what the fields mean (the class says); a class whose construction does more than
assign (``__post_init__``, its own ``__new__`` or ``__init__``): refused. The references are
``ref/slotted.py`` (the maker) and ``operator.attrgetter`` (``SlotFields``).
"""
from cpython.object cimport PyObject, PyTypeObject
from cpython.ref cimport Py_INCREF, Py_XDECREF
from cpython.tuple cimport PyTuple_GET_ITEM, PyTuple_GET_SIZE, PyTuple_New, PyTuple_SET_ITEM
from libc.string cimport memcpy, memset

import dataclasses
import inspect

cdef extern from "Python.h":
    ctypedef PyObject *(*vectorcallfunc)(PyObject *callable, PyObject *const *args, size_t nargsf,
                                         PyObject *kwnames) except NULL
    ctypedef struct TypeCallSlots "PyTypeObject":
        Py_ssize_t tp_vectorcall_offset
        unsigned long tp_flags
    unsigned long Py_TPFLAGS_HAVE_VECTORCALL
    Py_ssize_t PyVectorcall_NARGS(size_t nargsf)
    void PyType_Modified(PyTypeObject *cls)
    PyObject **PySequence_Fast_ITEMS(object tuple_or_list)
    ctypedef struct PyMemberDef:
        Py_ssize_t offset
        int type
        int flags
    ctypedef struct PyMemberDescrObject:
        PyMemberDef *d_member
    PyTypeObject PyMemberDescr_Type
    PyObject *PyType_GenericAlloc(PyTypeObject *cls, Py_ssize_t items) except NULL
    int T_OBJECT_EX
    int READONLY

DEF MAX_FIELDS = 32


cdef class RecordMaker:
    """``cls`` made from positional values and its defaults (``record_maker``). Called through
    vectorcall (``_vectorcalled``, below): the values are read where the caller keeps them, with no
    tuple made and unmade around them, as a ``tp_call`` would."""

    cdef vectorcallfunc vectorcall      # where the type's tp_vectorcall_offset points
    cdef type cls
    cdef Py_ssize_t count, required
    cdef Py_ssize_t offsets[MAX_FIELDS]
    cdef tuple defaults             # per field: its default (None where a factory or nothing gives it)
    cdef tuple factories            # per field: its default_factory, or None
    cdef readonly tuple names

    def __cinit__(self):
        self.vectorcall = _vectorcalled

    def __init__(self, type cls, tuple names, Py_ssize_t required, tuple defaults, tuple factories):
        cdef PyMemberDef *member
        cdef Py_ssize_t i
        if not (len(names) == len(defaults) == len(factories)) or not 0 <= required <= len(names):
            raise ValueError("names, defaults and factories must be as long as each other")
        if len(names) > MAX_FIELDS:
            raise ValueError(f"{cls.__name__}: more than {MAX_FIELDS} fields")
        if cls.__new__ is not object.__new__:
            raise TypeError(f"{cls.__name__} has its own __new__: a record maker would bypass it")
        if set(names) != set(_slots_of(cls)):
            raise TypeError(f"{cls.__name__}: the fields {names} are not exactly its slots {_slots_of(cls)}")
        memset(self.offsets, 0, sizeof(self.offsets))
        for i, name in enumerate(names):
            member = _object_slot(cls, name)
            if member == NULL:
                raise TypeError(f"{cls.__name__}.{name} is not a slot")
            if member.flags & READONLY:
                raise TypeError(f"{cls.__name__}.{name} is not a writable object slot")
            self.offsets[i] = member.offset
        self.cls = cls
        self.names = names
        self.count = len(names)
        self.required = required
        self.defaults = defaults
        self.factories = factories

    def __call__(self, *values):
        # what a caller without vectorcall gets (``PyObject_Call`` with a tuple uses the vectorcall)
        return self._make(<PyObject *const *>PySequence_Fast_ITEMS(values), PyTuple_GET_SIZE(values))

    cdef object _make(self, PyObject *const *values, Py_ssize_t given):
        cdef Py_ssize_t i
        cdef PyTypeObject *cls = <PyTypeObject *>self.cls
        cdef PyObject *made
        cdef PyObject **slot
        cdef object value
        if self.cls is None:
            raise TypeError("a RecordMaker not initialized")
        if given < self.required or given > self.count:
            raise TypeError(f"{self.cls.__name__}: {given} values for {self.required} to {self.count} fields")
        made = PyType_GenericAlloc(cls, 0)      # a dataclass's allocator (its __new__ is object's)
        record = <object>made       # the reference tp_alloc returned: the record owns it from here
        Py_XDECREF(made)            # (the <object> cast took one of its own)
        for i in range(self.count):
            if i < given:
                value = <object>values[i]
            else:
                factory = <object>PyTuple_GET_ITEM(self.factories, i)
                value = factory() if factory is not None else <object>PyTuple_GET_ITEM(self.defaults, i)
            slot = <PyObject **>((<char *>made) + self.offsets[i])
            Py_INCREF(value)
            Py_XDECREF(slot[0])     # NULL in a fresh instance
            slot[0] = <PyObject *>value
        return record


cdef PyObject *_vectorcalled(PyObject *maker, PyObject *const *args, size_t nargsf, PyObject *kwnames) except NULL:
    """A call of a ``RecordMaker``: positional values only, as ``__call__`` takes them."""
    if kwnames is not NULL and PyTuple_GET_SIZE(<object>kwnames):
        raise TypeError(f"{(<RecordMaker>maker).cls.__name__}: values are given by position, not by keyword")
    made = (<RecordMaker>maker)._make(args, PyVectorcall_NARGS(nargsf))
    Py_INCREF(made)         # the caller's reference (``made`` gives its own back as the function returns)
    return <PyObject *>made


cdef _enable_vectorcall():
    """``RecordMaker`` called through its instances' ``vectorcall`` field (found in a sample's memory)."""
    cdef RecordMaker sample = RecordMaker.__new__(RecordMaker)
    cdef TypeCallSlots *slots = <TypeCallSlots *>RecordMaker
    slots.tp_vectorcall_offset = <Py_ssize_t>(<char *>&sample.vectorcall - <char *><PyObject *>sample)
    slots.tp_flags |= Py_TPFLAGS_HAVE_VECTORCALL
    PyType_Modified(<PyTypeObject *>RecordMaker)


_enable_vectorcall()


cdef class SlotFields:
    """``operator.attrgetter(*names)`` for the request path's records (a ``__slots__`` class, a
    slotted dataclass), for compiled callers: ``of(obj)`` is the named fields' values, a tuple, each
    read where the instance keeps it, at the offsets found for the type last seen. Cython reads an
    untyped object's attribute the generic way (the type's lookup, the member descriptor's call:
    ~150 instructions under valgrind); this is the interpreter's own ``LOAD_ATTR_SLOT`` for C.
    An object of a type whose fields are not all object slots is read with ``getattr``, as is a
    field not set (which raises what ``attrgetter`` would). The reference is ``operator.attrgetter``."""

    def __init__(self, *names):
        if not names or len(names) > MAX_FIELDS:
            raise ValueError(f"1 to {MAX_FIELDS} field names, not {len(names)}")
        if not all(type(name) is str for name in names):
            raise TypeError("field names are strings")
        self.names = names
        self.count = len(names)
        self.seen = None

    def __call__(self, obj):
        return self.of(obj)

    cpdef tuple of(self, obj):
        cdef Py_ssize_t i
        cdef PyObject *value
        if type(obj) is not self.seen and not self._learn(type(obj)):
            return tuple([getattr(obj, name) for name in self.names])
        values = PyTuple_New(self.count)
        for i in range(self.count):
            value = (<PyObject **>((<char *><PyObject *>obj) + self.offsets[i]))[0]
            if value == NULL:       # a slot never set, or deleted: the AttributeError getattr raises
                return tuple([getattr(obj, name) for name in self.names])
            Py_INCREF(<object>value)
            PyTuple_SET_ITEM(values, i, <object>value)
        return values

    cdef bint _learn(self, type cls) except -1:
        """Keep ``cls``'s offsets of the fields if each is an object slot (a member descriptor that
        no subclass's attribute of the same name hides): True; else False, nothing kept."""
        cdef Py_ssize_t offsets[MAX_FIELDS]
        cdef PyMemberDef *member
        cdef Py_ssize_t i
        for i in range(self.count):
            member = _object_slot(cls, self.names[i])
            if member == NULL:
                return False
            offsets[i] = member.offset
        memcpy(self.offsets, offsets, sizeof(offsets))
        self.seen = cls
        return True


cdef PyMemberDef *_object_slot(type cls, str name) except? NULL:
    """The member of ``cls``'s ``name`` if it is an object slot (``T_OBJECT_EX``: a ``__slots__``
    field) found first along its MRO, else NULL."""
    cdef object descr = None
    cdef PyMemberDef *member
    for klass in cls.__mro__:
        descr = klass.__dict__.get(name)
        if descr is not None:
            break
    if descr is None or (<PyObject *>descr).ob_type != &PyMemberDescr_Type:
        return NULL
    member = (<PyMemberDescrObject *>descr).d_member
    return member if member.type == T_OBJECT_EX else NULL


def _slots_of(type cls) -> tuple:
    names = []
    for klass in cls.__mro__:
        names += [n for n in klass.__dict__.get("__slots__", ()) if n not in ("__weakref__", "__dict__")]
    return tuple(names)


def record_maker(cls) -> RecordMaker:
    """The ``RecordMaker`` of ``cls``, a ``@dataclass(slots=True)`` without ``__post_init__``."""
    if not dataclasses.is_dataclass(cls) or "__slots__" not in cls.__dict__:
        raise TypeError(f"{cls.__name__} is not a dataclass with slots")
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__} has a __post_init__: a record maker would bypass it")
    fields = [f for f in dataclasses.fields(cls) if f.init]
    if len(fields) != len(dataclasses.fields(cls)):
        raise TypeError(f"{cls.__name__} has fields its __init__ does not take")
    # what its __init__ takes positionally must be the fields, in order: a keyword-only field or an
    # InitVar (a parameter that is no field) would make the same values mean something else
    taken = list(inspect.signature(cls.__init__).parameters.values())[1:]
    if [(p.name, p.kind) for p in taken] != [(f.name, inspect.Parameter.POSITIONAL_OR_KEYWORD) for f in fields]:
        raise TypeError(f"{cls.__name__}'s __init__ takes other than its fields, positionally")
    required = 0
    while required < len(fields) and fields[required].default is dataclasses.MISSING \
            and fields[required].default_factory is dataclasses.MISSING:
        required += 1
    return RecordMaker(cls, tuple(f.name for f in fields), required,
                       tuple(None if f.default is dataclasses.MISSING else f.default for f in fields),
                       tuple(None if f.default_factory is dataclasses.MISSING else f.default_factory
                             for f in fields))
