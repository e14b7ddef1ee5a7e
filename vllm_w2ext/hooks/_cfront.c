/* A bounds hook's front in C (hooks/bounds.py, runner._FRONT_SOURCE): the same way through as the Python front's
 * lines 4-12, with no Python frame of its own.
 *
 * BoundsFront(fn, slow, runner, flag, marks, into, keep, first) is set on vLLM's class in place of the method. A call
 * reads the runner's ``flag`` slot (``HookRunner.fast``) and ``marks[0]`` (``recording.PHASE_MARKS``); while the flag
 * is True and no marks are wanted it takes the wall clock (``time.time_ns``'s: CLOCK_REALTIME), calls ``fn``, takes
 * the clock again and hands ``into`` (the hook's buffer's ``append``) the Bounds tuple ``(start, end, kept, error)``
 * the Python front makes: ``kept`` is the method's first argument after self (``keep`` 1; by position or by its name
 * ``first``), its result (``keep`` 2; None when it raised) or None (``keep`` 0), ``error`` what it raised (raised
 * again). Any other call goes to ``slow``, the Python front, with the same arguments. A failure to note the bounds
 * (no memory) drops them: vLLM's call and its result or exception are never touched by it.
 *
 * Why by hand: a Python front is a frame of its own (~2.2k instructions per call above a plain call under callgrind,
 * CPython 3.11, against ~1.1k here: benchmarks/results/cpu/c_front). No library makes a callable that times a call
 * and appends to a buffer without a Python frame (wrapt's C wrapper calls a Python wrapper). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <time.h>

typedef struct {
    PyObject_HEAD
    PyObject *fn;          /* vLLM's method (a plain function) */
    PyObject *slow;        /* the Python front: every call that is not a fast one */
    PyObject *runner;      /* the HookRunner: its ``flag`` slot read at each call */
    Py_ssize_t flag_offset;
    PyObject *marks;       /* a list: marks wanted while marks[0] is true */
    PyObject *into;        /* the buffer's append */
    int keep;              /* 0 nothing, 1 the first argument after self, 2 the result */
    PyObject *first;       /* the first argument's name (str), for a call that passes it by keyword */
    PyObject *dict;        /* __dict__ (functools.update_wrapper, __w2ext_runner__) */
    vectorcallfunc vectorcall;
} BoundsFront;

static inline PyObject *
now_ns(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    return PyLong_FromLongLong((long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
}

static PyObject *
kept_arg(BoundsFront *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (nargs >= 2)
        return args[1];
    if (kwnames != NULL && self->first != Py_None) {
        Py_ssize_t n = PyTuple_GET_SIZE(kwnames);
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *name = PyTuple_GET_ITEM(kwnames, i);
            if (name == self->first)
                return args[nargs + i];
        }
        for (Py_ssize_t i = 0; i < n; i++) {
            int eq = PyUnicode_Compare(PyTuple_GET_ITEM(kwnames, i), self->first) == 0;
            if (PyErr_Occurred())
                PyErr_Clear();
            if (eq)
                return args[nargs + i];
        }
    }
    return Py_None;
}

/* Append (t0, now, kept, error) to the buffer; steals t0. Any failure is cleared (the call's own outcome stands). */
static void
note(BoundsFront *self, PyObject *t0, PyObject *kept, PyObject *error)
{
    PyObject *t1 = t0 != NULL ? now_ns() : NULL;
    PyObject *tup = t1 != NULL ? PyTuple_New(4) : NULL;
    if (tup == NULL) {
        Py_XDECREF(t0);
        Py_XDECREF(t1);
        PyErr_Clear();
        return;
    }
    Py_INCREF(kept);
    Py_INCREF(error);
    PyTuple_SET_ITEM(tup, 0, t0);
    PyTuple_SET_ITEM(tup, 1, t1);
    PyTuple_SET_ITEM(tup, 2, kept);
    PyTuple_SET_ITEM(tup, 3, error);
    PyObject *r = PyObject_CallOneArg(self->into, tup);
    Py_DECREF(tup);
    if (r == NULL)
        PyErr_Clear();
    else
        Py_DECREF(r);
}

static PyObject *
front_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    BoundsFront *self = (BoundsFront *)op;
    PyObject *flag = *(PyObject **)((char *)self->runner + self->flag_offset);
    if (flag != Py_True)
        return PyObject_Vectorcall(self->slow, args, nargsf, kwnames);
    if (PyList_GET_SIZE(self->marks) > 0) {
        PyObject *m = PyList_GET_ITEM(self->marks, 0);
        if (m != Py_False && m != Py_None) {
            int on = PyObject_IsTrue(m);
            if (on != 0) {
                if (on < 0)
                    PyErr_Clear();
                return PyObject_Vectorcall(self->slow, args, nargsf, kwnames);
            }
        }
    }
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject *kept = self->keep == 1 ? kept_arg(self, args, nargs, kwnames) : Py_None;
    Py_INCREF(kept);                  /* the call may drop the caller's last reference to it */
    PyObject *t0 = now_ns();
    if (t0 == NULL)
        PyErr_Clear();
    PyObject *result = PyObject_Vectorcall(self->fn, args, nargsf, kwnames);
    if (result == NULL) {
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        PyErr_NormalizeException(&type, &value, &tb);
        if (tb != NULL && value != NULL)
            PyException_SetTraceback(value, tb);
        if (value != NULL)
            note(self, t0, self->keep == 1 ? kept : Py_None, value);
        else
            Py_XDECREF(t0);
        PyErr_Restore(type, value, tb);
        Py_DECREF(kept);
        return NULL;
    }
    note(self, t0, self->keep == 2 ? result : kept, Py_None);
    Py_DECREF(kept);
    return result;
}

static PyObject *
front_call(PyObject *op, PyObject *args, PyObject *kwargs)
{
    return PyVectorcall_Call(op, args, kwargs);
}

static PyObject *
front_descr_get(PyObject *op, PyObject *obj, PyObject *type)
{
    if (obj == NULL || obj == Py_None) {
        Py_INCREF(op);
        return op;
    }
    return PyMethod_New(op, obj);
}

static int
front_traverse(BoundsFront *self, visitproc visit, void *arg)
{
    Py_VISIT(self->fn);
    Py_VISIT(self->slow);
    Py_VISIT(self->runner);
    Py_VISIT(self->marks);
    Py_VISIT(self->into);
    Py_VISIT(self->first);
    Py_VISIT(self->dict);
    return 0;
}

static int
front_clear(BoundsFront *self)
{
    Py_CLEAR(self->fn);
    Py_CLEAR(self->slow);
    Py_CLEAR(self->runner);
    Py_CLEAR(self->marks);
    Py_CLEAR(self->into);
    Py_CLEAR(self->first);
    Py_CLEAR(self->dict);
    return 0;
}

static void
front_dealloc(BoundsFront *self)
{
    PyObject_GC_UnTrack(self);
    front_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* The offset of ``name``'s slot in ``runner``'s type (a __slots__ member holding an object), or -1 with an error. */
static Py_ssize_t
slot_offset(PyObject *runner, PyObject *name)
{
    PyObject *d = _PyType_Lookup(Py_TYPE(runner), name);
    if (d == NULL || !PyObject_TypeCheck(d, &PyMemberDescr_Type)) {
        PyErr_Format(PyExc_TypeError, "BoundsFront: %R is not a slot of %R", name, Py_TYPE(runner));
        return -1;
    }
    PyMemberDef *m = ((PyMemberDescrObject *)d)->d_member;
    if (m->type != T_OBJECT_EX && m->type != T_OBJECT) {
        PyErr_Format(PyExc_TypeError, "BoundsFront: slot %R does not hold an object", name);
        return -1;
    }
    return m->offset;
}

static PyObject *
front_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *names[] = {"fn", "slow", "runner", "flag", "marks", "into", "keep", "first", NULL};
    PyObject *fn, *slow, *runner, *flag, *marks, *into, *first;
    int keep;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOUO!OiO:BoundsFront", names, &fn, &slow, &runner, &flag,
                                     &PyList_Type, &marks, &into, &keep, &first))
        return NULL;
    if (keep < 0 || keep > 2 || (first != Py_None && !PyUnicode_Check(first))) {
        PyErr_SetString(PyExc_ValueError, "BoundsFront: keep is 0, 1 or 2 and first a str or None");
        return NULL;
    }
    Py_ssize_t offset = slot_offset(runner, flag);
    if (offset < 0)
        return NULL;
    BoundsFront *self = (BoundsFront *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    Py_INCREF(fn); self->fn = fn;
    Py_INCREF(slow); self->slow = slow;
    Py_INCREF(runner); self->runner = runner;
    self->flag_offset = offset;
    Py_INCREF(marks); self->marks = marks;
    Py_INCREF(into); self->into = into;
    self->keep = keep;
    if (first != Py_None) {
        Py_INCREF(first);
        PyUnicode_InternInPlace(&first);
    } else {
        Py_INCREF(first);
    }
    self->first = first;
    self->vectorcall = front_vectorcall;
    return (PyObject *)self;
}

static PyMemberDef front_members[] = {
    {"__w2ext_slow__", T_OBJECT, offsetof(BoundsFront, slow), READONLY, "the Python front"},
    {NULL}
};

static PyObject *
get_fn(BoundsFront *self, void *closure)
{
    Py_INCREF(self->fn);
    return self->fn;
}

/* The method a fast call calls (benchmarks/hook_cost_engine.py times it from a wrapper in its place). */
static int
set_fn(BoundsFront *self, PyObject *value, void *closure)
{
    if (value == NULL || !PyCallable_Check(value)) {
        PyErr_SetString(PyExc_TypeError, "BoundsFront.__w2ext_fn__ must be a callable");
        return -1;
    }
    Py_INCREF(value);
    Py_SETREF(self->fn, value);
    return 0;
}

static PyGetSetDef front_getset[] = {
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict},
    {"__w2ext_fn__", (getter)get_fn, (setter)set_fn, "the method a fast call calls (vLLM's)"},
    {NULL}
};

static PyTypeObject BoundsFrontType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "vllm_w2ext.hooks._cfront.BoundsFront",
    .tp_doc = "A bounds hook's front without a Python frame (hooks/_cfront.c).",
    .tp_basicsize = sizeof(BoundsFront),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL | Py_TPFLAGS_METHOD_DESCRIPTOR,
    .tp_new = front_new,
    .tp_dealloc = (destructor)front_dealloc,
    .tp_traverse = (traverseproc)front_traverse,
    .tp_clear = (inquiry)front_clear,
    .tp_call = front_call,
    .tp_vectorcall_offset = offsetof(BoundsFront, vectorcall),
    .tp_descr_get = front_descr_get,
    .tp_dictoffset = offsetof(BoundsFront, dict),
    .tp_getattro = PyObject_GenericGetAttr,
    .tp_setattro = PyObject_GenericSetAttr,
    .tp_members = front_members,
    .tp_getset = front_getset,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "vllm_w2ext.hooks._cfront",
    "A bounds hook's front without a Python frame (see _cfront.c).", -1, NULL,
};

PyMODINIT_FUNC
PyInit__cfront(void)
{
    if (PyType_Ready(&BoundsFrontType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&BoundsFrontType);
    if (PyModule_AddObject(m, "BoundsFront", (PyObject *)&BoundsFrontType) < 0) {
        Py_DECREF(&BoundsFrontType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
