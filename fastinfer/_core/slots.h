/* fi_readonly_slots: a compiled class's object fields, read from Python as a __slots__ field is.
 *
 * Cython gives each `cdef public object` field a getset descriptor, and CPython 3.11 cannot
 * specialize an attribute read through one: every `request.headers` or `attempt.replica` in the
 * engine's Python stays a generic read (the type's lookup, the descriptor's call, Cython's getter:
 * some 90 instructions). A __slots__ field is a member descriptor of type T_OBJECT_EX, which 3.11
 * reads in a few (LOAD_ATTR_SLOT). This replaces each named field's getset with such a member at
 * the field's offset, found by setting a marker through the getset on a fresh instance and finding
 * it in the instance's memory (once, at import).
 *
 * The members are read-only: Python can no longer set or delete the field (a deleted one would be
 * a NULL that the class's own C code reads), while the compiled code writes the struct as before.
 * So only fields that no Python code sets may be named; setting one raises AttributeError.
 * A field that is not an object (a bint, a double, a typed class) refuses the marker: TypeError. */
#ifndef FI_SLOTS_H
#define FI_SLOTS_H

#include <Python.h>
#include <structmember.h>

static Py_ssize_t fi_marker_offset(PyTypeObject *type, PyObject *sample, PyGetSetDef *field,
                                   PyObject *marker)
{
    PyObject **words = (PyObject **)sample;
    Py_ssize_t count = type->tp_basicsize / (Py_ssize_t)sizeof(PyObject *), found = -1;
    if (field->set(sample, marker, field->closure) < 0)
        return -1;
    for (Py_ssize_t i = 0; i < count; i++) {
        if (words[i] == marker) {
            if (found >= 0) {
                PyErr_Format(PyExc_RuntimeError, "%s.%s: the marker is in two places", type->tp_name,
                             field->name);
                return -1;
            }
            found = i;
        }
    }
    if (field->set(sample, Py_None, field->closure) < 0)
        return -1;
    if (found < 0)
        PyErr_Format(PyExc_RuntimeError, "%s.%s: not a field of the instance", type->tp_name, field->name);
    return found < 0 ? -1 : found * (Py_ssize_t)sizeof(PyObject *);
}

static int fi_readonly_slots(PyTypeObject *type, PyObject *names)
{
    Py_ssize_t count = PyTuple_GET_SIZE(names);
    /* the members live as long as the type (a compiled module's: as long as the process) */
    PyMemberDef *members = PyMem_Calloc(count, sizeof(PyMemberDef));
    PyObject *made = PyList_New(0);       /* every member made, installed only once all are */
    PyObject *empty = PyTuple_New(0);
    PyObject *sample = NULL, *marker = NULL;
    int result = -1;
    if (members == NULL || made == NULL || empty == NULL)
        goto done;
    if ((sample = type->tp_new(type, empty, NULL)) == NULL)
        goto done;
    if ((marker = PyObject_CallNoArgs((PyObject *)&PyBaseObject_Type)) == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *name = PyTuple_GET_ITEM(names, i), *descr, *member;
        Py_ssize_t offset;
        descr = PyDict_GetItemWithError(type->tp_dict, name);
        if (descr == NULL || Py_TYPE(descr) != &PyGetSetDescr_Type
                || ((PyGetSetDescrObject *)descr)->d_getset->set == NULL) {
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_TypeError, "%s.%U is not a settable compiled field", type->tp_name, name);
            goto done;
        }
        if ((offset = fi_marker_offset(type, sample, ((PyGetSetDescrObject *)descr)->d_getset, marker)) < 0)
            goto done;
        members[i].name = PyUnicode_AsUTF8(name);   /* the string lives on as the type's dict key */
        if (members[i].name == NULL)
            goto done;
        members[i].type = T_OBJECT_EX;
        members[i].offset = offset;
        members[i].flags = READONLY;
        if ((member = PyDescr_NewMember(type, &members[i])) == NULL)
            goto done;
        result = PyList_Append(made, member);
        Py_DECREF(member);
        if (result < 0)
            goto done;
        result = -1;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        /* a dict of a type whose instances are this size cannot fail to take a key it has */
        if (PyDict_SetItem(type->tp_dict, PyTuple_GET_ITEM(names, i), PyList_GET_ITEM(made, i)) < 0)
            Py_FatalError("fi_readonly_slots: a type's dict refused a field it had");
    }
    PyType_Modified(type);
    members = NULL;      /* the type's now */
    result = 0;
done:
    Py_XDECREF(made);    /* before the members it points to go */
    PyMem_Free(members);
    Py_XDECREF(empty);
    Py_XDECREF(sample);
    Py_XDECREF(marker);
    return result;
}

#endif
