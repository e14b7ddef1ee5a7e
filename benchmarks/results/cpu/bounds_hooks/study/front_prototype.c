/* prototype: a hook front in C */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

typedef struct {
    PyObject_HEAD
    char active;
    Py_ssize_t left;
} RunnerBase;

static PyMemberDef runner_members[] = {
    {"active", T_BOOL, offsetof(RunnerBase, active), 0, NULL},
    {"left", T_PYSSIZET, offsetof(RunnerBase, left), 0, NULL},
    {NULL}
};

static PyTypeObject RunnerBaseType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "_front.RunnerBase",
    .tp_basicsize = sizeof(RunnerBase),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_new = PyType_GenericNew,
    .tp_members = runner_members,
};

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    RunnerBase *runner;
    PyObject *fn, *pre, *post, *dict;
} Front;

static PyObject *s_fail, *s_timed, *no_kwargs;

static void contain(RunnerBase *r) {
    PyObject *t, *v, *tb;
    PyErr_Fetch(&t, &v, &tb);
    PyErr_NormalizeException(&t, &v, &tb);
    if (tb) PyException_SetTraceback(v, tb);
    PyObject *x = PyObject_CallMethodOneArg((PyObject *)r, s_fail, v);
    if (x == NULL) PyErr_Clear(); else Py_DECREF(x);
    Py_XDECREF(t); Py_XDECREF(v); Py_XDECREF(tb);
}

static PyObject *
front_call(Front *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    RunnerBase *r = self->runner;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (!r->active || nargs < 1)
        return PyObject_Vectorcall(self->fn, args, nargsf, kwnames);
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    PyObject *t = PyTuple_New(nargs - 1);
    if (t == NULL) return NULL;
    for (Py_ssize_t i = 1; i < nargs; i++) { Py_INCREF(args[i]); PyTuple_SET_ITEM(t, i - 1, args[i]); }
    PyObject *kw;
    if (nkw) {
        kw = PyDict_New();
        if (kw == NULL) { Py_DECREF(t); return NULL; }
        for (Py_ssize_t i = 0; i < nkw; i++)
            if (PyDict_SetItem(kw, PyTuple_GET_ITEM(kwnames, i), args[nargs + i]) < 0) {
                Py_DECREF(t); Py_DECREF(kw); return NULL; }
    } else { kw = no_kwargs; Py_INCREF(kw); }
    if (--r->left == 0) {
        PyObject *a[5] = {(PyObject *)r, self->fn, args[0], t, kw};
        PyObject *res = PyObject_VectorcallMethod(s_timed, a, 5 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
        Py_DECREF(t); Py_DECREF(kw);
        return res;
    }
    PyObject *pa[3] = {args[0], t, kw};
    PyObject *state = PyObject_Vectorcall(self->pre, pa, 3, NULL);
    Py_DECREF(t); Py_DECREF(kw);
    if (state == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_Exception)) return NULL;
        contain(r);
        return PyObject_Vectorcall(self->fn, args, nargsf, kwnames);
    }
    if (state == Py_None || self->post == Py_None) {
        Py_DECREF(state);
        return PyObject_Vectorcall(self->fn, args, nargsf, kwnames);
    }
    PyObject *res = PyObject_Vectorcall(self->fn, args, nargsf, kwnames);
    if (res == NULL) {
        PyObject *et, *ev, *etb;
        PyErr_Fetch(&et, &ev, &etb);
        PyErr_NormalizeException(&et, &ev, &etb);
        if (etb) PyException_SetTraceback(ev, etb);
        PyObject *qa[3] = {state, Py_None, ev};
        PyObject *x = PyObject_Vectorcall(self->post, qa, 3, NULL);
        if (x == NULL) { if (PyErr_ExceptionMatches(PyExc_Exception)) contain(r); else PyErr_Clear(); }
        else Py_DECREF(x);
        Py_DECREF(state);
        PyErr_Restore(et, ev, etb);
        return NULL;
    }
    PyObject *qa[3] = {state, res, Py_None};
    PyObject *x = PyObject_Vectorcall(self->post, qa, 3, NULL);
    Py_DECREF(state);
    if (x == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_Exception)) { Py_DECREF(res); return NULL; }
        contain(r);
    } else Py_DECREF(x);
    return res;
}

static PyObject *
front_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *runner, *fn, *pre, *post;
    if (!PyArg_ParseTuple(args, "O!OOO", &RunnerBaseType, &runner, &fn, &pre, &post)) return NULL;
    Front *self = (Front *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    self->vectorcall = (vectorcallfunc)front_call;
    Py_INCREF(runner); self->runner = (RunnerBase *)runner;
    Py_INCREF(fn); self->fn = fn;
    Py_INCREF(pre); self->pre = pre;
    Py_INCREF(post); self->post = post;
    self->dict = NULL;
    return (PyObject *)self;
}

static int front_traverse(Front *self, visitproc visit, void *arg) {
    Py_VISIT(self->runner); Py_VISIT(self->fn); Py_VISIT(self->pre); Py_VISIT(self->post); Py_VISIT(self->dict);
    return 0;
}
static int front_clear(Front *self) {
    Py_CLEAR(self->runner); Py_CLEAR(self->fn); Py_CLEAR(self->pre); Py_CLEAR(self->post); Py_CLEAR(self->dict);
    return 0;
}
static void front_dealloc(Front *self) {
    PyObject_GC_UnTrack(self); front_clear(self); Py_TYPE(self)->tp_free((PyObject *)self);
}
static PyObject *front_get(PyObject *self, PyObject *obj, PyObject *type) {
    if (obj == NULL || obj == Py_None) { Py_INCREF(self); return self; }
    return PyMethod_New(self, obj);
}

static PyMemberDef front_members[] = {
    {"runner", T_OBJECT, offsetof(Front, runner), READONLY, NULL},
    {"__dictoffset__", T_PYSSIZET, offsetof(Front, dict), READONLY},
    {"__vectorcalloffset__", T_PYSSIZET, offsetof(Front, vectorcall), READONLY},
    {NULL}
};
static PyGetSetDef front_getset[] = {
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict},
    {NULL}
};

static PyTypeObject FrontType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "_front.Front",
    .tp_basicsize = sizeof(Front),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL | Py_TPFLAGS_METHOD_DESCRIPTOR,
    .tp_new = front_new,
    .tp_dealloc = (destructor)front_dealloc,
    .tp_traverse = (traverseproc)front_traverse,
    .tp_clear = (inquiry)front_clear,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(Front, vectorcall),
    .tp_descr_get = front_get,
    .tp_members = front_members,
    .tp_getset = front_getset,
    .tp_dictoffset = offsetof(Front, dict),
};


#include <time.h>
typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *fn, *buf;
    int keep;
} Stamp;

static inline PyObject *now_ns(void) {
    struct timespec ts; clock_gettime(CLOCK_REALTIME, &ts);
    return PyLong_FromLongLong((long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
}

static PyObject *
stamp_call(Stamp *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    PyObject *buf = self->buf;
    PyObject *t = now_ns();
    PyList_Append(buf, t); Py_DECREF(t);
    PyObject *res = PyObject_Vectorcall(self->fn, args, nargsf, kwnames);
    t = now_ns();
    PyList_Append(buf, t); Py_DECREF(t);
    if (res != NULL && self->keep) PyList_Append(buf, res);
    return res;
}
static PyObject *stamp_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    PyObject *fn, *buf; int keep = 0;
    if (!PyArg_ParseTuple(args, "OO!|p", &fn, &PyList_Type, &buf, &keep)) return NULL;
    Stamp *self = (Stamp *)type->tp_alloc(type, 0);
    if (!self) return NULL;
    self->vectorcall = (vectorcallfunc)stamp_call;
    Py_INCREF(fn); self->fn = fn; Py_INCREF(buf); self->buf = buf; self->keep = keep;
    return (PyObject *)self;
}
static int stamp_traverse(Stamp *self, visitproc visit, void *arg) { Py_VISIT(self->fn); Py_VISIT(self->buf); return 0; }
static int stamp_clear(Stamp *self) { Py_CLEAR(self->fn); Py_CLEAR(self->buf); return 0; }
static void stamp_dealloc(Stamp *self) { PyObject_GC_UnTrack(self); stamp_clear(self); Py_TYPE(self)->tp_free((PyObject *)self); }
static PyTypeObject StampType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "_front.Stamp",
    .tp_basicsize = sizeof(Stamp),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL | Py_TPFLAGS_METHOD_DESCRIPTOR,
    .tp_new = stamp_new,
    .tp_dealloc = (destructor)stamp_dealloc,
    .tp_traverse = (traverseproc)stamp_traverse,
    .tp_clear = (inquiry)stamp_clear,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(Stamp, vectorcall),
    .tp_descr_get = front_get,
};

static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "_front", NULL, -1, NULL};

PyMODINIT_FUNC PyInit__front(void) {
    if (PyType_Ready(&StampType) < 0 || PyType_Ready(&RunnerBaseType) < 0 || PyType_Ready(&FrontType) < 0) return NULL;
    s_fail = PyUnicode_InternFromString("fail");
    s_timed = PyUnicode_InternFromString("_timed");
    PyObject *empty = PyDict_New();
    no_kwargs = PyDictProxy_New(empty);
    Py_DECREF(empty);
    PyObject *m = PyModule_Create(&mod);
    if (m == NULL) return NULL;
    Py_INCREF(&RunnerBaseType); PyModule_AddObject(m, "RunnerBase", (PyObject *)&RunnerBaseType);
    Py_INCREF(&FrontType); PyModule_AddObject(m, "Front", (PyObject *)&FrontType);
    Py_INCREF(&StampType); PyModule_AddObject(m, "Stamp", (PyObject *)&StampType);
    return m;
}
