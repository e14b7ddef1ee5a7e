/* The device timer's end events timed in one pass with the GIL released (hooks/gpu_timing.py, GpuTimer.poll).
 *
 * resolve(elapsed, clear, items) -> (times, code, released_ns)
 *
 * ``items``: the timer's pending steps in order, each a tuple whose item 0 is the step's end event and item 3 its
 * anchor (a tuple whose item 0 is the anchor event); an event is any object whose ``cuda_event`` is its handle (an int:
 * torch's ``Event.cuda_event``). ``elapsed`` is the address of ``cudaEventElapsedTime(float *ms, event start, event
 * end)`` and ``clear`` that of ``cudaGetLastError()`` (the loaded CUDA runtime's, through ctypes; or any function of the
 * same signature). The handles are read first, with the GIL; then, with the GIL released once for all of them,
 * ``elapsed(&ms, anchor, end)`` is called for each item in order until one returns non-zero. ``times``: the
 * milliseconds of the items timed (a prefix of ``items``); ``code``: 0 when every item was timed, else the return code
 * of the call that stopped it (600, cudaErrorNotReady: that step has not run yet), after which ``clear`` was called
 * (the runtime keeps the code as the thread's last error, as torch clears it after a query that is not ready).
 * ``released_ns``: the wall time (CLOCK_MONOTONIC) from the GIL's release to its return, the wait to take it back
 * included (the export thread's GIL hold leaves it out: ``Pipeline.export_hold_s``).
 *
 * Why: one ``cudaEventElapsedTime`` per step through ctypes holds the GIL for the whole driver call (~4-5 µs a step
 * of the export thread's CPU on the H200 host, results/h200/event_cost), on the GIL that vLLM's thread schedules and
 * launches with. Here the driver calls run beside vLLM's thread; what still holds the GIL is reading the handles and
 * the Python loop that turns the times into samples. ctypes releases the GIL around each call only (``CDLL``): a GIL
 * hand-off per step, each a wait for vLLM's thread to let go of it. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <time.h>

typedef int (*elapsed_fn)(float *, void *, void *);
typedef int (*clear_fn)(void);

static PyObject *CUDA_EVENT;   /* "cuda_event" */

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
    if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) < 4 || !PyTuple_Check(PyTuple_GET_ITEM(item, 3)) ||
        PyTuple_GET_SIZE(PyTuple_GET_ITEM(item, 3)) < 1) {
        PyErr_SetString(PyExc_TypeError, "resolve: an item is (end event, _, _, (anchor event, ...), ...)");
        return -1;
    }
    if (handle_of(PyTuple_GET_ITEM(item, 0), end) < 0)
        return -1;
    return handle_of(PyTuple_GET_ITEM(PyTuple_GET_ITEM(item, 3), 0), anchor);
}

static PyObject *
resolve(PyObject *self, PyObject *args)
{
    PyObject *elapsed_addr, *clear_addr, *items;
    if (!PyArg_ParseTuple(args, "OOO:resolve", &elapsed_addr, &clear_addr, &items))
        return NULL;
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
    PyObject *seq = PySequence_Fast(items, "resolve: items is a sequence");
    if (seq == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    void **h = PyMem_Malloc(sizeof(void *) * 2 * (n ? n : 1));
    float *ms = PyMem_Malloc(sizeof(float) * (n ? n : 1));
    PyObject *times = NULL;
    if (h == NULL || ms == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++)
        if (handles(PySequence_Fast_GET_ITEM(seq, i), &h[2 * i], &h[2 * i + 1]) < 0)
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
    PyObject *list = PyList_New(got);
    if (list == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < got; i++) {
        PyObject *f = PyFloat_FromDouble((double)ms[i]);
        if (f == NULL) {
            Py_DECREF(list);
            goto done;
        }
        PyList_SET_ITEM(list, i, f);
    }
    times = Py_BuildValue("(NiL)", list, code, released);
done:
    PyMem_Free(h);
    PyMem_Free(ms);
    Py_DECREF(seq);
    return times;
}

static PyMethodDef methods[] = {
    {"resolve", resolve, METH_VARARGS,
     "resolve(elapsed, clear, items) -> (times, code, released_ns): the items' end events timed from their anchors, the GIL "
     "released (see _event_times.c)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "vllm_w2ext.hooks._event_times",
    "The device timer's end events timed with the GIL released (see _event_times.c).", -1, methods,
};

PyMODINIT_FUNC
PyInit__event_times(void)
{
    CUDA_EVENT = PyUnicode_InternFromString("cuda_event");
    if (CUDA_EVENT == NULL)
        return NULL;
    return PyModule_Create(&module);
}
