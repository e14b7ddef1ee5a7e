/* The device timer's poll in C (hooks/gpu_timing.py, GpuTimer.poll): its pending steps' end events timed in one pass
 * with the GIL released, then turned into samples as the Python loop there does.
 *
 * resolve(elapsed, clear, pending, prev_end, pool, spent, measured, out) -> (prev_end, code, released_ns, head)
 *
 * ``pending``: the timer's deque of steps, each ``(end event, step, launch ns, (anchor event, anchor wall ns), fresh,
 * own)``; an event is any object whose ``cuda_event`` is its handle (an int: torch's ``Event.cuda_event``).
 * ``elapsed`` is the address of ``cudaEventElapsedTime(float *ms, event start, event end)`` and ``clear`` that of
 * ``cudaGetLastError()`` (the loaded CUDA runtime's, through ctypes; or any function of the same signature).
 *
 * 1. With the GIL: the pending steps as they are now, and their two handles each.
 * 2. With the GIL released once for all of them: ``elapsed(&ms, anchor, end)`` for each in order until one returns
 *    non-zero, then ``clear`` (the runtime keeps the code as the thread's last error, as torch clears it after a query
 *    that is not ready). ``released_ns``: the wall time (CLOCK_MONOTONIC) from the release to its return, the wait to
 *    take the GIL back included (the export thread's GIL hold leaves it out: ``Pipeline.export_hold_s``).
 * 3. With the GIL: each step timed, taken off ``pending`` (``popleft``) and placed exactly as ``GpuTimer.poll``'s loop
 *    places it: end = anchor wall + ms (rounded to the ns, ties to even, as ``round``); idle and busy from
 *    ``prev_end`` (None: none) unless the step is ``fresh``; a ``DeviceSample`` tuple appended to ``out``; idle and busy
 *    added to ``measured`` where the idle was measured; its event appended to ``pool`` (``own``) or ``spent``.
 *
 * ``code``: 0 when every step was timed; the code of the call that stopped (600, cudaErrorNotReady: that step has not
 * run yet; any other: ``head`` is that step, which the runtime would not time); -1 when vLLM's thread dropped the head
 * of ``pending`` meanwhile (queue full): the step taken off is put back, ``prev_end`` is None, and the caller looks
 * again.
 *
 * Why: through ctypes one ``cudaEventElapsedTime`` per step holds the GIL for the driver's call (``PyDLL``) or hands
 * it off once per step (``CDLL``), and the loop around it is ~40 bytecodes per step: 5.2-8.9 µs of the export thread's
 * CPU per step on an H100 host, nearly all of it with the GIL held (results/h100/event_times), the GIL that vLLM's
 * thread schedules and launches with.
 *
 * Also ``recycler``, vLLM's step-end event constructor (below). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stddef.h>
#include <time.h>

typedef int (*elapsed_fn)(float *, void *, void *);
typedef int (*clear_fn)(void);

static PyObject *CUDA_EVENT, *POPLEFT, *APPENDLEFT;   /* "cuda_event", "popleft", "appendleft" */

static int
handle_of(PyObject *event, void **out)
{
    PyObject *h = PyObject_GetAttr(event, CUDA_EVENT);
    if (h == NULL)
        return -1;
    *out = PyLong_AsVoidPtr(h);
    Py_DECREF(h);
    return (*out == NULL && PyErr_Occurred()) ? -1 : 0;
}

static int
handles(PyObject *item, void **anchor, void **end)
{
    if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) < 6 || !PyTuple_Check(PyTuple_GET_ITEM(item, 3)) ||
        PyTuple_GET_SIZE(PyTuple_GET_ITEM(item, 3)) < 2) {
        PyErr_SetString(PyExc_TypeError,
                        "resolve: a pending step is (end event, step, launch, (anchor event, anchor wall), fresh, own)");
        return -1;
    }
    if (handle_of(PyTuple_GET_ITEM(item, 0), end) < 0)
        return -1;
    return handle_of(PyTuple_GET_ITEM(PyTuple_GET_ITEM(item, 3), 0), anchor);
}

static int
add_to(PyObject *list, Py_ssize_t i, long long ns)
{
    PyObject *n = PyLong_FromLongLong(ns);
    if (n == NULL)
        return -1;
    PyObject *sum = PyNumber_Add(PyList_GET_ITEM(list, i), n);
    Py_DECREF(n);
    if (sum == NULL)
        return -1;
    return PyList_SetItem(list, i, sum);         /* steals sum */
}

/* Step 3 for one step taken off pending: its sample, its event, its totals into totals[2] (idle, busy: added to
 * ``measured`` once per call); *prev_end and *has_prev updated. */
static int
place(PyObject *item, float ms, long long *prev_end, int *has_prev, PyObject *pool, PyObject *spent,
      long long *totals, PyObject *out)
{
    PyObject *launch_obj = PyTuple_GET_ITEM(item, 2);
    long long launch = PyLong_AsLongLong(launch_obj);
    long long anchor_wall = PyLong_AsLongLong(PyTuple_GET_ITEM(PyTuple_GET_ITEM(item, 3), 1));
    int fresh = PyObject_IsTrue(PyTuple_GET_ITEM(item, 4));
    int own = PyObject_IsTrue(PyTuple_GET_ITEM(item, 5));
    if (PyErr_Occurred() || fresh < 0 || own < 0)
        return -1;
    long long end = anchor_wall + (long long)nearbyint((double)ms * 1e6);
    int prev = *has_prev && !fresh;
    long long idle, start;
    if (!prev || *prev_end >= launch) {          /* no previous step, or the GPU still ran it at launch */
        idle = 0;
        start = prev ? *prev_end : launch;
    }
    else {
        idle = launch - *prev_end;
        start = launch;
    }
    long long busy = end - start > 0 ? end - start : 0;
    PyObject *busy_s = PyFloat_FromDouble((double)busy / 1e9), *idle_s = PyFloat_FromDouble((double)idle / 1e9);
    PyObject *sample = busy_s && idle_s ? PyTuple_Pack(4, PyTuple_GET_ITEM(item, 1), launch_obj, busy_s, idle_s)
                                        : NULL;    /* steps.facts.DeviceSample */
    Py_XDECREF(busy_s);
    Py_XDECREF(idle_s);
    if (sample == NULL)
        return -1;
    int failed = PyList_Append(out, sample);
    Py_DECREF(sample);
    if (failed < 0)
        return -1;
    if (prev) {
        totals[0] += idle;
        totals[1] += busy;
    }
    if (PyList_Append(own ? pool : spent, PyTuple_GET_ITEM(item, 0)) < 0)
        return -1;
    *prev_end = end;
    *has_prev = 1;
    return 0;
}

static PyObject *
resolve(PyObject *self, PyObject *args)
{
    PyObject *elapsed_addr, *clear_addr, *pending, *prev_obj, *pool, *spent, *measured, *out;
    if (!PyArg_ParseTuple(args, "OOOOO!O!O!O!:resolve", &elapsed_addr, &clear_addr, &pending, &prev_obj,
                          &PyList_Type, &pool, &PyList_Type, &spent, &PyList_Type, &measured, &PyList_Type, &out))
        return NULL;
    if (PyList_GET_SIZE(measured) != 2) {
        PyErr_SetString(PyExc_ValueError, "resolve: measured is [idle ns, busy ns]");
        return NULL;
    }
    elapsed_fn elapsed = (elapsed_fn)PyLong_AsVoidPtr(elapsed_addr);
    if (elapsed == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "resolve: elapsed is the address of cudaEventElapsedTime, not 0");
        return NULL;
    }
    clear_fn clear = (clear_fn)PyLong_AsVoidPtr(clear_addr);
    if (clear == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "resolve: clear is the address of cudaGetLastError, not 0");
        return NULL;
    }
    long long prev_end = 0;
    int has_prev = prev_obj != Py_None;
    if (has_prev && (prev_end = PyLong_AsLongLong(prev_obj)) == -1 && PyErr_Occurred())
        return NULL;
    PyObject *snap = PySequence_List(pending);
    if (snap == NULL)
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(snap);
    void **h = PyMem_Malloc(sizeof(void *) * 2 * (n ? n : 1));
    float *ms = PyMem_Malloc(sizeof(float) * (n ? n : 1));
    PyObject *result = NULL;
    if (h == NULL || ms == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++)
        if (handles(PyList_GET_ITEM(snap, i), &h[2 * i], &h[2 * i + 1]) < 0)
            goto done;
    Py_ssize_t got = 0;
    int code = 0;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    Py_BEGIN_ALLOW_THREADS
    for (; got < n; got++) {
        code = elapsed(&ms[got], h[2 * got], h[2 * got + 1]);
        if (code != 0)
            break;
    }
    if (code != 0)
        clear();
    Py_END_ALLOW_THREADS
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long long released = (long long)(t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec);
    PyObject *head = got < n ? PyList_GET_ITEM(snap, got) : Py_None;
    long long totals[2] = {0, 0};
    for (Py_ssize_t i = 0; i < got; i++) {
        PyObject *item = PyObject_CallMethodNoArgs(pending, POPLEFT);
        if (item == NULL)
            goto done;
        if (item != PyList_GET_ITEM(snap, i)) {   /* vLLM's thread dropped the head meanwhile (queue full): */
            PyObject *r = PyObject_CallMethodOneArg(pending, APPENDLEFT, item);   /* the new head back */
            Py_DECREF(item);
            if (r == NULL)
                goto done;
            Py_DECREF(r);
            has_prev = 0;
            code = -1;
            head = Py_None;
            break;
        }
        int failed = place(item, ms[i], &prev_end, &has_prev, pool, spent, totals, out);
        Py_DECREF(item);
        if (failed < 0)
            goto done;                           /* raised: the poller is dropped (Pipeline.add_poller) */
    }
    if ((totals[0] || totals[1]) && (add_to(measured, 0, totals[0]) < 0 || add_to(measured, 1, totals[1]) < 0))
        goto done;
    if (has_prev)
        result = Py_BuildValue("(LiLO)", prev_end, code, released, head);
    else
        result = Py_BuildValue("(OiLO)", Py_None, code, released, head);
done:
    PyMem_Free(h);
    PyMem_Free(ms);
    Py_DECREF(snap);
    return result;
}

/* recycler(Event, free, made, key): ``hooks/end_event.timing_event``'s constructor in C, vLLM's ``torch.cuda.Event`` in
 * the one constructor that makes the step's end event. Called as vLLM calls it (keywords only, not interprocess):
 * the keywords with ``enable_timing=True``; ``free[0]`` (the oldest resolved borrowed event, ``end_event.RECYCLED``)
 * taken off and returned when ``free`` holds its only reference and its attribute ``key`` equals those keywords;
 * else ``Event(**keywords)``, its ``key`` set to them and ``made[0]`` counted up. Any other call goes to ``Event`` as
 * it is. Why in C: the Python closure is ~0.5 µs warm on the CPU machine and read ~2.9 µs per step by py-spy inside
 * vLLM on an H100 host (cold caches between vLLM's steps, results/h100/issue19_c0b6aa4): a call with no Python frame
 * touches less. Only vLLM's thread takes from ``free`` (the export thread appends), as in the Python closure. */
typedef struct {
    PyObject_HEAD
    PyObject *event;
    PyObject *free;
    PyObject *made;
    PyObject *key;
} Recycler;

static PyObject *INTERPROCESS, *ENABLE_TIMING, *EMPTY;

static int
count_made(PyObject *made)
{
    PyObject *n = PyList_GET_ITEM(made, 0), *one = PyLong_FromLong(1), *sum;
    if (one == NULL)
        return -1;
    sum = PyNumber_Add(n, one);
    Py_DECREF(one);
    if (sum == NULL)
        return -1;
    return PyList_SetItem(made, 0, sum);          /* steals sum */
}

static PyObject *
recycler_call(Recycler *self, PyObject *args, PyObject *kwargs)
{
    PyObject *kw, *e, *made_with;
    int same = 0;
    if (PyTuple_GET_SIZE(args) > 0)
        return PyObject_Call(self->event, args, kwargs);
    if (kwargs != NULL) {
        PyObject *ip = PyDict_GetItemWithError(kwargs, INTERPROCESS);      /* borrowed */
        if (ip == NULL && PyErr_Occurred())
            return NULL;
        if (ip != NULL) {
            int t = PyObject_IsTrue(ip);
            if (t < 0)
                return NULL;
            if (t)
                return PyObject_Call(self->event, args, kwargs);
        }
    }
    kw = kwargs != NULL ? PyDict_Copy(kwargs) : PyDict_New();
    if (kw == NULL)
        return NULL;
    if (PyDict_SetItem(kw, ENABLE_TIMING, Py_True) < 0)
        goto fail;
    if (PyList_GET_SIZE(self->free) > 0) {
        e = PyList_GET_ITEM(self->free, 0);
        Py_INCREF(e);                               /* the list's and ours: nothing else holds it */
        if (Py_REFCNT(e) == 2) {
            made_with = PyObject_GetAttr(e, self->key);
            if (made_with == NULL) {
                if (!PyErr_ExceptionMatches(PyExc_AttributeError)) {
                    Py_DECREF(e);
                    goto fail;
                }
                PyErr_Clear();
            } else {
                same = PyObject_RichCompareBool(made_with, kw, Py_EQ);
                Py_DECREF(made_with);
                if (same < 0) {
                    Py_DECREF(e);
                    goto fail;
                }
            }
            /* the attribute read ran no code of ours, but check again that the list still starts with it */
            if (same == 1 && PyList_GET_SIZE(self->free) > 0 && PyList_GET_ITEM(self->free, 0) == e) {
                if (PySequence_DelItem(self->free, 0) < 0) {
                    Py_DECREF(e);
                    goto fail;
                }
                Py_DECREF(kw);
                return e;
            }
        }
        Py_DECREF(e);
    }
    e = PyObject_Call(self->event, EMPTY, kw);
    if (e == NULL)
        goto fail;
    if (PyObject_SetAttr(e, self->key, kw) < 0)
        PyErr_Clear();                              /* an event without a __dict__: never handed out again */
    if (count_made(self->made) < 0) {
        Py_DECREF(e);
        goto fail;
    }
    Py_DECREF(kw);
    return e;
fail:
    Py_DECREF(kw);
    return NULL;
}

static PyObject *
recycler_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *event, *free, *made, *key;
    Recycler *self;
    if (!PyArg_ParseTuple(args, "OO!O!U:recycler", &event, &PyList_Type, &free, &PyList_Type, &made, &key))
        return NULL;
    if (PyList_GET_SIZE(made) != 1) {
        PyErr_SetString(PyExc_ValueError, "recycler: made must be a list of one count");
        return NULL;
    }
    self = (Recycler *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    Py_INCREF(event);
    Py_INCREF(free);
    Py_INCREF(made);
    Py_INCREF(key);
    self->event = event;
    self->free = free;
    self->made = made;
    self->key = key;
    return (PyObject *)self;
}

static int
recycler_traverse(Recycler *self, visitproc visit, void *arg)
{
    Py_VISIT(self->event);
    Py_VISIT(self->free);
    Py_VISIT(self->made);
    Py_VISIT(self->key);
    return 0;
}

static int
recycler_clear(Recycler *self)
{
    Py_CLEAR(self->event);
    Py_CLEAR(self->free);
    Py_CLEAR(self->made);
    Py_CLEAR(self->key);
    return 0;
}

static void
recycler_dealloc(Recycler *self)
{
    PyObject_GC_UnTrack(self);
    recycler_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject RecyclerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "vllm_w2ext.hooks._event_times.recycler",
    .tp_basicsize = sizeof(Recycler),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "recycler(Event, free, made, key): vLLM's step-end event constructor handing out resolved events again "
              "(see _event_times.c and hooks/end_event.py).",
    .tp_new = recycler_new,
    .tp_call = (ternaryfunc)recycler_call,
    .tp_traverse = (traverseproc)recycler_traverse,
    .tp_clear = (inquiry)recycler_clear,
    .tp_dealloc = (destructor)recycler_dealloc,
};

/* borrow_stop(timer, carrier, event_of, pending, spent, timer_stop, max_pending, max_spent): ``GpuTimer.stop_by_result``'s
 * closure in C, ``stop(step, launch, result)`` on vLLM's thread once per recorded step (the engine step's post calls it
 * where the worker runs on its thread): where ``result`` is a ``carrier`` (its type exactly) and borrowing may go on
 * (an anchor, ``timer.borrow``, room in ``pending`` and ``spent``), ``(event_of(result), step, launch, anchor,
 * timer.fresh, False)`` appended to ``pending`` and ``timer.fresh`` set False; else ``timer_stop(step, launch)`` (no
 * carrier) or ``timer_stop(step, launch, event_of(result))``. Why in C: the closure read 2.2 µs per step at batch 1 on
 * an H100 host, timed in place (results/h100/issue19_52efeb7_frees). ``max_pending``/``max_spent`` are the module's
 * bounds when the timer made it. A unit test holds it to ``stop``, branch by branch (tests/unit/test_gpu_timing.py). */
typedef struct {
    PyObject_HEAD
    PyObject *timer, *carrier, *event_of, *pending, *spent, *timer_stop;
    Py_ssize_t max_pending, max_spent;
    vectorcallfunc vectorcall;
} BorrowStop;

static PyObject *ANCHOR, *BORROW, *FRESH, *APPEND;

static PyObject *
borrow_stop_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    BorrowStop *self = (BorrowStop *)op;
    if (kwnames != NULL || PyVectorcall_NARGS(nargsf) != 3) {
        PyErr_SetString(PyExc_TypeError, "stop(step, launch, result)");
        return NULL;
    }
    PyObject *step = args[0], *launch = args[1], *result = args[2];
    if ((PyObject *)Py_TYPE(result) != self->carrier)
        return PyObject_Vectorcall(self->timer_stop, args, 2, NULL);
    PyObject *anchor = PyObject_GetAttr(self->timer, ANCHOR), *ev = NULL, *out = NULL, *fresh = NULL;
    if (anchor == NULL)
        return NULL;
    int borrow = 0;
    Py_ssize_t n_pending = 0, n_spent = 0;
    if (anchor != Py_None) {
        PyObject *b = PyObject_GetAttr(self->timer, BORROW);
        if (b == NULL)
            goto done;
        borrow = PyObject_IsTrue(b);
        Py_DECREF(b);
        if (borrow < 0 || (n_pending = PyObject_Length(self->pending)) < 0 ||
                (n_spent = PyObject_Length(self->spent)) < 0)
            goto done;
    }
    if ((ev = PyObject_CallOneArg(self->event_of, result)) == NULL)
        goto done;
    if (anchor == Py_None || !borrow || n_pending >= self->max_pending || n_spent > self->max_spent) {
        PyObject *stop_args[3] = {step, launch, ev};
        out = PyObject_Vectorcall(self->timer_stop, stop_args, 3, NULL);
        goto done;
    }
    if ((fresh = PyObject_GetAttr(self->timer, FRESH)) == NULL)
        goto done;
    PyObject *entry = PyTuple_Pack(6, ev, step, launch, anchor, fresh, Py_False);
    if (entry == NULL)
        goto done;
    PyObject *r = PyObject_CallMethodOneArg(self->pending, APPEND, entry);
    Py_DECREF(entry);
    if (r == NULL)
        goto done;
    Py_DECREF(r);
    if (PyObject_SetAttr(self->timer, FRESH, Py_False) < 0)
        goto done;
    out = Py_NewRef(Py_None);
done:
    Py_DECREF(anchor);
    Py_XDECREF(ev);
    Py_XDECREF(fresh);
    return out;
}

static PyObject *
borrow_stop_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *timer, *carrier, *event_of, *pending, *spent, *timer_stop;
    Py_ssize_t max_pending, max_spent;
    if (!PyArg_ParseTuple(args, "OO!OOOOnn:borrow_stop", &timer, &PyType_Type, &carrier, &event_of, &pending, &spent,
                          &timer_stop, &max_pending, &max_spent))
        return NULL;
    BorrowStop *self = (BorrowStop *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->timer = Py_NewRef(timer);
    self->carrier = Py_NewRef(carrier);
    self->event_of = Py_NewRef(event_of);
    self->pending = Py_NewRef(pending);
    self->spent = Py_NewRef(spent);
    self->timer_stop = Py_NewRef(timer_stop);
    self->max_pending = max_pending;
    self->max_spent = max_spent;
    self->vectorcall = borrow_stop_vectorcall;
    return (PyObject *)self;
}

static int
borrow_stop_traverse(BorrowStop *self, visitproc visit, void *arg)
{
    Py_VISIT(self->timer);
    Py_VISIT(self->carrier);
    Py_VISIT(self->event_of);
    Py_VISIT(self->pending);
    Py_VISIT(self->spent);
    Py_VISIT(self->timer_stop);
    return 0;
}

static int
borrow_stop_clear(BorrowStop *self)
{
    Py_CLEAR(self->timer);
    Py_CLEAR(self->carrier);
    Py_CLEAR(self->event_of);
    Py_CLEAR(self->pending);
    Py_CLEAR(self->spent);
    Py_CLEAR(self->timer_stop);
    return 0;
}

static void
borrow_stop_dealloc(BorrowStop *self)
{
    PyObject_GC_UnTrack(self);
    borrow_stop_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject BorrowStopType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "vllm_w2ext.hooks._event_times.borrow_stop",
    .tp_basicsize = sizeof(BorrowStop),
    .tp_vectorcall_offset = offsetof(BorrowStop, vectorcall),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "borrow_stop(timer, carrier, event_of, pending, spent, timer_stop, max_pending, max_spent): "
              "GpuTimer.stop_by_result's stop(step, launch, result) in C (see _event_times.c).",
    .tp_new = borrow_stop_new,
    .tp_call = PyVectorcall_Call,
    .tp_traverse = (traverseproc)borrow_stop_traverse,
    .tp_clear = (inquiry)borrow_stop_clear,
    .tp_dealloc = (destructor)borrow_stop_dealloc,
};

static PyMethodDef methods[] = {
    {"resolve", resolve, METH_VARARGS,
     "resolve(elapsed, clear, pending, prev_end, pool, spent, measured, out) -> (prev_end, code, released_ns, head): "
     "the pending steps' end events timed with the GIL released and placed as GpuTimer.poll does (see "
     "_event_times.c)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "vllm_w2ext.hooks._event_times",
    "The device timer's poll: end events timed with the GIL released, placed in C (see _event_times.c).", -1, methods,
};

PyMODINIT_FUNC
PyInit__event_times(void)
{
    PyObject *m;
    CUDA_EVENT = PyUnicode_InternFromString("cuda_event");
    POPLEFT = PyUnicode_InternFromString("popleft");
    APPENDLEFT = PyUnicode_InternFromString("appendleft");
    INTERPROCESS = PyUnicode_InternFromString("interprocess");
    ENABLE_TIMING = PyUnicode_InternFromString("enable_timing");
    EMPTY = PyTuple_New(0);
    ANCHOR = PyUnicode_InternFromString("anchor");
    BORROW = PyUnicode_InternFromString("borrow");
    FRESH = PyUnicode_InternFromString("fresh");
    APPEND = PyUnicode_InternFromString("append");
    if (CUDA_EVENT == NULL || POPLEFT == NULL || APPENDLEFT == NULL || INTERPROCESS == NULL || ENABLE_TIMING == NULL
            || EMPTY == NULL || ANCHOR == NULL || BORROW == NULL || FRESH == NULL || APPEND == NULL
            || PyType_Ready(&RecyclerType) < 0 || PyType_Ready(&BorrowStopType) < 0)
        return NULL;
    m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&RecyclerType);
    if (PyModule_AddObject(m, "recycler", (PyObject *)&RecyclerType) < 0) {
        Py_DECREF(&RecyclerType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&BorrowStopType);
    if (PyModule_AddObject(m, "borrow_stop", (PyObject *)&BorrowStopType) < 0) {
        Py_DECREF(&BorrowStopType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
