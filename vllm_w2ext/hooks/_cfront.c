/* A hook's front in C (runner._FRONT_SOURCE, the Python front): the same ways through, with no Python frame of its own.
 *
 * Front(fn, slow, runner, marks, into, keep, first, pre, post, layout) is set on vLLM's class in place of the method.
 * It reads its runner's slots ``active``, ``left`` and ``fast`` (``HookRunner``) directly, and ``marks[0]``
 * (``recording.PHASE_MARKS``).
 *
 * - A bounds hook (``into``: its buffer's ``append``; hooks/bounds.py): while ``fast`` is True and no marks are wanted
 *   it takes the wall clock (``time.time_ns``'s: CLOCK_REALTIME), calls ``fn``, takes the clock again and notes the
 *   Bounds ``(start, end, kept, error)`` the Python front makes (raw into a Slot, else the tuple to ``into``; see
 *   ``note``): ``kept`` is the method's first argument after
 *   self (``keep`` 1; by position or by its name ``first``), its result (``keep`` 2; None when it raised) or None
 *   (``keep`` 0), ``error`` what it raised (raised again). A failure to note the bounds (no memory) drops them.
 * - Any other hook with a ``layout`` ((required positional parameters, self included; the names of the defaulted
 *   ones; their defaults): a method whose parameters are all positional-or-keyword): off, vLLM's method alone; on,
 *   its countdown to the next timed call, ``pre(instance, args, kwargs)`` with the arguments the Python front hands
 *   it (the required ones after self as a tuple, the defaulted ones by name, or ``_NO_KWARGS``), the method, ``post``;
 *   a fault in ``pre`` or ``post`` goes to ``runner.fail`` and never reaches the call, as there.
 * - Every other call (the timed one, marks, a bounds hook not fast, arguments by keyword) goes to ``slow``, the Python
 *   front, with the same arguments.
 *
 * Every call taken here is timed (``spent``, ``calls``; the plugin's part of it: pre and post, or a bounds hook's
 * clock and append, in ticks of the time-stamp counter, a read's own cost taken out): the direct self-cost counter
 * (``telemetry/selfcost.py``). Read by the export thread; a call passed to ``slow`` is not in it.
 *
 * Why by hand: a Python front is a frame of its own (~2.2k instructions per call above a plain call under callgrind,
 * CPython 3.11, against ~1.1k here for a bounds hook: benchmarks/results/cpu/c_front). No library makes a callable
 * that runs two Python callables around a call without a Python frame of its own (wrapt's C wrapper calls a Python
 * wrapper). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <string.h>
#include <time.h>

typedef struct {
    PyObject_HEAD
    PyObject *fn;          /* vLLM's method (a plain function) */
    PyObject *slow;        /* the Python front: every call not taken here */
    PyObject *runner;      /* the HookRunner, its slots read at each call */
    Py_ssize_t active_off, left_off, fast_off;
    PyObject *marks;       /* a list: marks wanted while marks[0] is true */
    PyObject *into;        /* a bounds hook's buffer's append; NULL: not a bounds hook */
    struct SlotS *slot;    /* the buffer, where it is a Slot (held through ``into``): its calls noted raw */
    int keep;              /* 0 nothing, 1 the first argument after self, 2 the result */
    PyObject *first;       /* the first argument's name (str), for a call that passes it by keyword */
    PyObject *pre, *post;  /* the runner's pre and post (post None: none) */
    Py_ssize_t required;   /* positional parameters without a default, self included; -1: no layout */
    PyObject *kw_names;    /* tuple: the defaulted parameters' names, in order */
    PyObject *kw_defaults; /* tuple: their defaults */
    PyObject *no_kwargs;   /* what pre gets as kwargs when the method has no defaulted parameter */
    PyObject *dict;        /* __dict__ (functools.update_wrapper, __w2ext_runner__) */
    vectorcallfunc vectorcall;
    long long spent;       /* the plugin's part of the calls taken here (ticks: clock()), and how many */
    long long calls;
} Front;

static PyObject *FAIL;     /* "fail" */

#define SLOT(self, off) (*(PyObject **)((char *)(self)->runner + (off)))

/* UNTRACKED_RECORDS: the records the C ways make (the engine step's range list and its data tuple, the front end's
 * iteration range, a request's range) are taken out of Python's cyclic collector once filled. No cycle goes through a
 * record (it holds ids, clock readings, tuples and attribute dicts, and nothing holds it back but the buffer and the
 * hooks' open-range cells), and the records an export interval buffers were walked by every collection on vLLM's
 * thread until the export thread took them: with the export wait stretched to 1 s (VLLM_W2EXT_EXPORT_INTERVAL_MS=auto)
 * that put collections on vLLM's thread from 0.5-0.7 to 1.9-2.2 µs per step at batch 1 on the CPU machine
 * (benchmarks/results/cpu/export_wait). An untracked list or tuple stays so: Python never tracks it again. */

/* The timed sections' clock: the CPU's time-stamp counter where there is one (an instruction: the four reads and
 * their sums add 40-69 ns to a call, benchmarks/results/{cpu/cfront_direct_cost,h100/issue19_580a132}; a
 * clock_gettime read from Python took ~330 ns on the 2-core CI machine, a VM), converted to ns on the export thread by the rate
 * between two (ticks, monotonic ns) readings (``clock()``: the one at import and the current one); else the
 * monotonic clock itself. */
#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
#define TICKS() ((long long)__rdtsc())
#define TICKS_ARE_NS 0
#else
#define TICKS() mono_ns()
#define TICKS_ARE_NS 1
#endif

static long long CLOCK_READ;      /* a tick read's own cost (ticks), taken out of each timed section */
static long long START_TICKS, START_NS;

/* The rate's reference: a clock no time adjustment slews (the monotonic clock is slewed by up to 0.05 %, which
 * over a long run's ticks would move the converted total more than a short section is worth). */
#ifdef CLOCK_MONOTONIC_RAW
#define REFERENCE_CLOCK CLOCK_MONOTONIC_RAW
#else
#define REFERENCE_CLOCK CLOCK_MONOTONIC
#endif

static inline long long
mono_ns(void)
{
    struct timespec ts;
    clock_gettime(REFERENCE_CLOCK, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Python's collections, timed by ``gc_phase`` (hooks/runner.py puts it in ``gc.callbacks`` with the first counting
 * front): GC_TICKS is their time so far. A collection runs wherever an allocation crosses the threshold, and on vLLM's
 * thread in a busy step that is often a hook's small allocation after vLLM's many (its RequestOutputs, per-request
 * lists): the collection then walks vLLM's young objects inside the hook's timed section. Without the plugin it would
 * run a few allocations later all the same, so, like vLLM's frees below, it is not the plugin's work: the direct
 * counter leaves the collections inside a front's timed sections out and counts them apart (``collected()``). A
 * collection on another thread while this one waits for the GIL inside a section is left out the same way. */
static long long GC_TICKS, GC_START, GC_IN_FRONTS, GC_IN_FRONTS_N, GC_COUNT;

/* Add a section that began at ``t0`` (TICKS), when the collections' time read ``g0`` (GC_TICKS), and ends now: less
 * the collections in between (GC_IN_FRONTS). */
static inline void
spend(Front *self, long long t0, long long g0)
{
    long long d = TICKS() - t0 - CLOCK_READ;
    long long g = GC_TICKS - g0;
    if (g > 0) {
        d -= g;
        GC_IN_FRONTS += g;
        GC_IN_FRONTS_N++;
    }
    if (d > 0)
        self->spent += d;
}

/* vLLM's objects the step's post takes out of the bounds buffers (a Bounds tuple keeps the call's SchedulerOutput or
 * its result: ``hooks/bounds.py``). Once vLLM's step has returned, the buffer's is often the last reference (the
 * update's SchedulerOutput, the V1 runner's output), so dropping it frees vLLM's object there: vLLM's own work (without
 * the plugin it runs as the step returns and drops its locals), moved a few µs later, not the plugin's. It was about a
 * fifth of the step hook's former figure on a 2-core CPU machine (benchmarks/results/cpu/released_frees) and 2 µs per
 * step at batch 1, 9-11 at 512 on an H100 host (benchmarks/results/h100/issue19_52efeb7_frees): it grows with the batch
 * (a SchedulerOutput holds per-request lists and dicts). So the C step post and worker_bounds
 * ``bury`` what they take, and a front ``release``s it right after its timed section (``spend``), still inside the
 * hook's call on vLLM's thread: the direct counter leaves vLLM's frees out and counts their time apart (``freed()``),
 * so the benchmark shows both. */
static PyObject *GRAVE;                 /* a list (made at import) */
static long long FREED_TICKS, FREED_CALLS;
#define GRAVE_MAX 64                    /* a post called outside any front (tests, the Python front's timed call) */

/* Keep ``obj`` (a reference stolen; NULL ignored) until the next ``release``. */
static void
bury(PyObject *obj)
{
    if (obj == NULL)
        return;
    if (obj == Py_None) {
        Py_DECREF(obj);
        return;
    }
    if (PyErr_Occurred() || GRAVE == NULL || PyList_GET_SIZE(GRAVE) >= GRAVE_MAX) {
        Py_DECREF(obj);                 /* (an error pending: the caller's to raise; or no room) freed here */
        return;
    }
    if (PyList_Append(GRAVE, obj) < 0)
        PyErr_Clear();                  /* no memory: freed here */
    Py_DECREF(obj);
}

/* Drop what was buried, timed apart (FREED_TICKS). The error indicator is kept as it was (a call's exception may be
 * pending: a dealloc must not see or clear it). */
static inline void
release(void)
{
    if (GRAVE == NULL || PyList_GET_SIZE(GRAVE) == 0)
        return;
    long long m = TICKS();
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (PyList_SetSlice(GRAVE, 0, PyList_GET_SIZE(GRAVE), NULL) < 0)
        PyErr_Clear();
    PyErr_Restore(type, value, tb);
    FREED_TICKS += TICKS() - m;
    FREED_CALLS++;
}

/* -- Slot: a bounds hook's buffer, its last call's Bounds held as raw values ------------------------------------------
 *
 * hooks/bounds.py's buffers hold one call per step: each consumer takes the last call's Bounds once per call it
 * encloses and drops any older ones. A Slot holds just that call, its clock readings as int64 fields and references
 * to what it keeps and what it raised. A C front whose buffer is a Slot writes into it (``slot_put``): no tuple, no
 * int objects and no call to a deque's ``append`` on vLLM's thread per hooked call; the engine step's post and
 * ``worker_bounds`` read the fields (``slot_take``) where the step's values are made into its record. Python sees the
 * deque it replaces, as far as the hooks use one: ``append(bounds)`` (the Python front's), ``extend``, ``pop()`` (the last
 * call's Bounds; it empties the Slot, as the consumers' pop and clear did), ``clear()``, ``len()`` (0 or 1) and
 * ``[0]`` / ``[-1]``. A call noted over one not yet taken replaces it: its objects are freed after the front's timed
 * section (``bury``), as the step's post frees those it takes. */
typedef struct SlotS {
    PyObject_HEAD
    long long start, end;      /* ns (the wall clock: time.time_ns's) */
    PyObject *kept, *error;    /* NULL while empty */
    int full;
} Slot;

static PyTypeObject SlotType;

/* Note a call: ``kept`` and ``error`` borrowed (error None: none). */
static void
slot_put(Slot *s, long long start, long long end, PyObject *kept, PyObject *error)
{
    if (s->full) {
        bury(s->kept);
        bury(s->error);
    }
    Py_INCREF(kept);
    Py_INCREF(error);
    s->start = start;
    s->end = end;
    s->kept = kept;
    s->error = error;
    s->full = 1;
}

/* Take the call it holds, if any (1; ``*kept`` and ``*error`` new references, to be released by the caller), and
 * empty it; 0 when empty. */
static int
slot_take(Slot *s, long long *start, long long *end, PyObject **kept, PyObject **error)
{
    if (!s->full)
        return 0;
    *start = s->start;
    *end = s->end;
    *kept = s->kept;
    *error = s->error;
    s->kept = s->error = NULL;
    s->full = 0;
    return 1;
}

/* Drop the call it holds, if any (also its tp_clear). */
static int
slot_clear(Slot *s)
{
    s->full = 0;
    Py_CLEAR(s->kept);
    Py_CLEAR(s->error);
    return 0;
}

static PyObject *
slot_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    if (PyTuple_GET_SIZE(args) != 0 || (kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0)) {
        PyErr_SetString(PyExc_TypeError, "Slot() takes no arguments");
        return NULL;
    }
    return type->tp_alloc(type, 0);
}

static PyObject *
slot_as_tuple(Slot *s)
{
    return Py_BuildValue("(LLOO)", s->start, s->end, s->kept, s->error);
}

static PyObject *
slot_append(Slot *s, PyObject *bounds)
{
    long long start, end;
    PyObject *kept, *error;
    if (!PyTuple_Check(bounds) || PyTuple_GET_SIZE(bounds) != 4) {
        PyErr_Format(PyExc_TypeError, "Slot.append: expected a Bounds tuple (start, end, kept, error), got %R",
                     bounds);
        return NULL;
    }
    start = PyLong_AsLongLong(PyTuple_GET_ITEM(bounds, 0));
    end = start == -1 && PyErr_Occurred() ? -1 : PyLong_AsLongLong(PyTuple_GET_ITEM(bounds, 1));
    if (PyErr_Occurred())
        return NULL;
    kept = PyTuple_GET_ITEM(bounds, 2);
    error = PyTuple_GET_ITEM(bounds, 3);
    slot_put(s, start, end, kept, error);
    Py_RETURN_NONE;
}

static PyObject *
slot_extend(Slot *s, PyObject *iterable)
{
    PyObject *it = PyObject_GetIter(iterable), *item;
    if (it == NULL)
        return NULL;
    while ((item = PyIter_Next(it)) != NULL) {
        PyObject *r = slot_append(s, item);
        Py_DECREF(item);
        if (r == NULL) {
            Py_DECREF(it);
            return NULL;
        }
        Py_DECREF(r);
    }
    Py_DECREF(it);
    if (PyErr_Occurred())
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
slot_pop(Slot *s, PyObject *unused)
{
    if (!s->full) {
        PyErr_SetString(PyExc_IndexError, "pop from an empty Slot");
        return NULL;
    }
    PyObject *t = slot_as_tuple(s);
    if (t != NULL)
        slot_clear(s);
    return t;
}

static PyObject *
slot_clear_method(Slot *s, PyObject *unused)
{
    slot_clear(s);
    Py_RETURN_NONE;
}

static Py_ssize_t
slot_length(Slot *s)
{
    return s->full;
}

static PyObject *
slot_item(Slot *s, Py_ssize_t i)
{
    if (!s->full || i != 0) {          /* (a negative index arrives with the length added: -1 is 0) */
        PyErr_SetString(PyExc_IndexError, "Slot index out of range");
        return NULL;
    }
    return slot_as_tuple(s);
}

static int
slot_traverse(Slot *s, visitproc visit, void *arg)
{
    Py_VISIT(s->kept);
    Py_VISIT(s->error);
    return 0;
}

static void
slot_dealloc(Slot *s)
{
    PyObject_GC_UnTrack(s);
    slot_clear(s);
    Py_TYPE(s)->tp_free((PyObject *)s);
}

static PyMethodDef slot_methods[] = {
    {"append", (PyCFunction)slot_append, METH_O, "append((start, end, kept, error)): note a call (replacing one)"},
    {"extend", (PyCFunction)slot_extend, METH_O, "append each Bounds in turn (the last one stays)"},
    {"pop", (PyCFunction)slot_pop, METH_NOARGS, "the call noted, as a Bounds tuple; the Slot is empty after it"},
    {"clear", (PyCFunction)slot_clear_method, METH_NOARGS, "drop the call noted, if any"},
    {NULL}
};

static PySequenceMethods slot_as_sequence = {
    .sq_length = (lenfunc)slot_length,
    .sq_item = (ssizeargfunc)slot_item,
};

static PyTypeObject SlotType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "vllm_w2ext.hooks._cfront.Slot",
    .tp_doc = "A bounds hook's buffer: its last call's Bounds as raw values (hooks/_cfront.c).",
    .tp_basicsize = sizeof(Slot),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = slot_new,
    .tp_dealloc = (destructor)slot_dealloc,
    .tp_traverse = (traverseproc)slot_traverse,
    .tp_clear = (inquiry)slot_clear,
    .tp_methods = slot_methods,
    .tp_as_sequence = &slot_as_sequence,
};

/* The Slot behind a buffer (a Slot, or a Slot's bound ``append``), else NULL. */
static Slot *
as_slot(PyObject *obj)
{
    if (obj != NULL && PyCFunction_Check(obj) && PyCFunction_GET_SELF(obj) != NULL)
        obj = PyCFunction_GET_SELF(obj);
    return obj != NULL && Py_IS_TYPE(obj, &SlotType) ? (Slot *)obj : NULL;
}

/* The wall clock (time.time_ns's) as int64; 0 where it cannot be read. */
static inline long long
wall_ns(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0)
        return 0;
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* The least of many back-to-back reads' differences: what one read adds to a section it ends. */
static long long
clock_read(void)
{
    long long best = -1;
    for (int i = 0; i < 2000; i++) {
        long long a = TICKS(), b = TICKS();
        if (best < 0 || b - a < best)
            best = b - a;
    }
    return best > 0 ? best : 0;
}

/* clock() -> ((ticks, ns) at import, (ticks, ns) now): ns per tick is their ratio (1 where the ticks are ns). */
static PyObject *
clock_now(PyObject *module, PyObject *unused)
{
    long long t = TICKS(), n = mono_ns();
    return Py_BuildValue("((LL)(LL))", START_TICKS, START_NS, t, TICKS_ARE_NS ? t : n);
}

static inline PyObject *
now_ns(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    return PyLong_FromLongLong((long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
}

static PyObject *
kept_arg(Front *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
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

/* Note the call that began at ``t0`` (ns, ``wall_ns``) and ends now: into a Slot as raw values (``slot_put``), into any
 * other buffer (the schedule's consumer) as the Bounds tuple (t0, now, kept, error) its ``append`` takes. Any failure
 * is cleared (the call's own outcome stands). */
static void
note(Front *self, long long t0, PyObject *kept, PyObject *error)
{
    if (self->slot != NULL) {
        slot_put(self->slot, t0, wall_ns(), kept, error);
        return;
    }
    PyObject *start = PyLong_FromLongLong(t0);
    PyObject *t1 = start != NULL ? now_ns() : NULL;
    PyObject *tup = t1 != NULL ? PyTuple_New(4) : NULL;
    if (tup == NULL) {
        Py_XDECREF(start);
        Py_XDECREF(t1);
        PyErr_Clear();
        return;
    }
    Py_INCREF(kept);
    Py_INCREF(error);
    PyTuple_SET_ITEM(tup, 0, start);
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

/* The exception being raised, taken (the error indicator cleared), as an instance with its traceback on it. */
static void
fetch_exception(PyObject **type, PyObject **value, PyObject **tb)
{
    PyErr_Fetch(type, value, tb);
    PyErr_NormalizeException(type, value, tb);
    if (*tb != NULL && *value != NULL)
        PyException_SetTraceback(*value, *tb);
}

static PyObject *
bounds_call(Front *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    if (SLOT(self, self->fast_off) != Py_True)
        return PyObject_Vectorcall(self->slow, args, nargsf, kwnames);
    long long m = TICKS(), g = GC_TICKS;
    self->calls++;
    PyObject *kept = self->keep == 1 ? kept_arg(self, args, PyVectorcall_NARGS(nargsf), kwnames) : Py_None;
    Py_INCREF(kept);                  /* the call may drop the caller's last reference to it */
    long long t0 = wall_ns();
    spend(self, m, g);
    PyObject *result = PyObject_Vectorcall(self->fn, args, nargsf, kwnames);
    m = TICKS();
    g = GC_TICKS;
    if (result == NULL) {
        PyObject *type, *value, *tb;
        fetch_exception(&type, &value, &tb);
        if (value != NULL)
            note(self, t0, self->keep == 1 ? kept : Py_None, value);
        PyErr_Restore(type, value, tb);
    } else {
        note(self, t0, self->keep == 2 ? result : kept, Py_None);
    }
    Py_DECREF(kept);
    spend(self, m, g);
    release();
    return result;
}

/* The raised exception (an Exception: the caller checked) to runner.fail, as the Python front's ``except Exception``
 * does; -1 if fail itself raised (it then propagates, as there). */
static int
fail_current(Front *self)
{
    PyObject *type, *value, *tb;
    fetch_exception(&type, &value, &tb);
    PyObject *r = PyObject_CallMethodOneArg(self->runner, FAIL, value != NULL ? value : Py_None);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* Whether a call of ``nargs`` positional arguments and these keywords fits the layout the C front hands ``pre``: the
 * required parameters all by position (self included), at most the defaulted ones after them, and keywords (vLLM's
 * callers pass ``OutputProcessor.process_outputs`` and ``MultiprocExecutor.execute_model`` theirs so) naming
 * defaulted parameters only, each once and none also given by position. Anything else goes the Python front's way,
 * which binds it as Python does (or raises its TypeError). */
static int
call_fits(Front *self, Py_ssize_t nargs, PyObject *kwnames)
{
    Py_ssize_t n_kw = PyTuple_GET_SIZE(self->kw_names);
    if (nargs < self->required || nargs > self->required + n_kw)
        return 0;
    if (kwnames == NULL)
        return 1;
    Py_ssize_t given = PyTuple_GET_SIZE(kwnames);
    unsigned long long seen = 0;
    if (n_kw > 64)
        return 0;
    for (Py_ssize_t j = 0; j < given; j++) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, j);
        Py_ssize_t at = -1;
        for (Py_ssize_t i = 0; i < n_kw && at < 0; i++)     /* interned names: the same object, mostly */
            if (PyTuple_GET_ITEM(self->kw_names, i) == name)
                at = i;
        for (Py_ssize_t i = 0; i < n_kw && at < 0; i++) {
            int eq = PyUnicode_Compare(PyTuple_GET_ITEM(self->kw_names, i), name);
            if (eq == -1 && PyErr_Occurred()) {
                PyErr_Clear();
                return 0;
            }
            if (eq == 0)
                at = i;
        }
        if (at < 0 || self->required + at < nargs || (seen >> at) & 1)
            return 0;
        seen |= 1ULL << at;
    }
    return 1;
}

/* pre's (args, kwargs) for a call that fits the layout (``call_fits``): the required arguments after self as a tuple,
 * every defaulted parameter by name (given by position, by keyword, or its default), as the exact Python front. */
static int
pre_arguments(Front *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, PyObject **pargs,
              PyObject **pkw)
{
    Py_ssize_t req = self->required;
    PyObject *t = PyTuple_New(req - 1);
    if (t == NULL)
        return -1;
    for (Py_ssize_t i = 1; i < req; i++) {
        Py_INCREF(args[i]);
        PyTuple_SET_ITEM(t, i - 1, args[i]);
    }
    Py_ssize_t n_kw = PyTuple_GET_SIZE(self->kw_names);
    if (n_kw == 0) {
        Py_INCREF(self->no_kwargs);
        *pargs = t;
        *pkw = self->no_kwargs;
        return 0;
    }
    PyObject *d = PyDict_New();
    if (d == NULL) {
        Py_DECREF(t);
        return -1;
    }
    for (Py_ssize_t i = 0; i < n_kw; i++) {
        PyObject *v = req + i < nargs ? args[req + i] : PyTuple_GET_ITEM(self->kw_defaults, i);
        if (PyDict_SetItem(d, PyTuple_GET_ITEM(self->kw_names, i), v) < 0)
            goto fail;
    }
    Py_ssize_t given = kwnames != NULL ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t j = 0; j < given; j++)               /* keywords over their defaults (call_fits: known names) */
        if (PyDict_SetItem(d, PyTuple_GET_ITEM(kwnames, j), args[nargs + j]) < 0)
            goto fail;
    *pargs = t;
    *pkw = d;
    return 0;
fail:
    Py_DECREF(t);
    Py_DECREF(d);
    return -1;
}

static PyObject *
hook_call(Front *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    if (SLOT(self, self->active_off) != Py_True)          /* off: vLLM's method alone */
        return PyObject_Vectorcall(self->fn, args, nargsf, kwnames);
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject *left_obj = SLOT(self, self->left_off);
    if (left_obj == NULL || !PyLong_CheckExact(left_obj) || !call_fits(self, nargs, kwnames))
        return PyObject_Vectorcall(self->slow, args, nargsf, kwnames);
    long left = PyLong_AsLong(left_obj);
    if (left <= 1) {                  /* the Python front counts this one down to its timed call */
        if (left == -1 && PyErr_Occurred())
            PyErr_Clear();
        return PyObject_Vectorcall(self->slow, args, nargsf, kwnames);
    }
    long long m = TICKS(), g = GC_TICKS;
    self->calls++;
    PyObject *now_left = PyLong_FromLong(left - 1);
    if (now_left == NULL)
        return NULL;
    SLOT(self, self->left_off) = now_left;
    Py_DECREF(left_obj);
    PyObject *pargs, *pkw;
    if (pre_arguments(self, args, nargs, kwnames, &pargs, &pkw) < 0)
        return NULL;
    PyObject *pre_args[3] = {args[0], pargs, pkw};
    PyObject *state = PyObject_Vectorcall(self->pre, pre_args, 3, NULL);
    Py_DECREF(pargs);
    Py_DECREF(pkw);
    if (state == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_Exception) || fail_current(self) < 0)
            return NULL;
        spend(self, m, g);
        return PyObject_Vectorcall(self->fn, args, nargsf, kwnames);
    }
    if (state == Py_None || self->post == Py_None) {
        Py_DECREF(state);
        spend(self, m, g);
        return PyObject_Vectorcall(self->fn, args, nargsf, kwnames);
    }
    spend(self, m, g);
    PyObject *result = PyObject_Vectorcall(self->fn, args, nargsf, kwnames);
    m = TICKS();
    g = GC_TICKS;
    if (result == NULL) {
        PyObject *type, *value, *tb;
        fetch_exception(&type, &value, &tb);
        PyObject *post_args[3] = {state, Py_None, value != NULL ? value : Py_None};
        PyObject *r = PyObject_Vectorcall(self->post, post_args, 3, NULL);
        Py_DECREF(state);
        spend(self, m, g);
        release();
        if (r == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_Exception) || fail_current(self) < 0) {
                Py_XDECREF(type);            /* post's (or fail's) own exception propagates, as there */
                Py_XDECREF(value);
                Py_XDECREF(tb);
                return NULL;
            }
        } else {
            Py_DECREF(r);
        }
        PyErr_Restore(type, value, tb);
        return NULL;
    }
    PyObject *post_args[3] = {state, result, Py_None};
    PyObject *r = PyObject_Vectorcall(self->post, post_args, 3, NULL);
    Py_DECREF(state);
    spend(self, m, g);
    release();
    if (r == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_Exception) || fail_current(self) < 0) {
            Py_DECREF(result);
            return NULL;
        }
    } else {
        Py_DECREF(r);
    }
    return result;
}

static PyObject *
front_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Front *self = (Front *)op;
    if (PyList_GET_SIZE(self->marks) > 0) {
        PyObject *m = PyList_GET_ITEM(self->marks, 0);
        if (m != Py_False && m != Py_None) {
            int on = PyObject_IsTrue(m);
            if (on != 0) {            /* marks wanted: the Python front's ways (pre and post push and pop them) */
                if (on < 0)
                    PyErr_Clear();
                return PyObject_Vectorcall(self->slow, args, nargsf, kwnames);
            }
        }
    }
    if (self->into != NULL)
        return bounds_call(self, args, nargsf, kwnames);
    if (self->required > 0)
        return hook_call(self, args, nargsf, kwnames);
    return PyObject_Vectorcall(self->slow, args, nargsf, kwnames);
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

/* Every object a Front holds: one list for the collector's traverse and clear. */
#define FRONT_OBJECTS(X) X(fn) X(slow) X(runner) X(marks) X(into) X(first) X(pre) X(post) X(kw_names) \
    X(kw_defaults) X(no_kwargs) X(dict)

static int
front_traverse(Front *self, visitproc visit, void *arg)
{
#define VISIT(field) Py_VISIT(self->field);
    FRONT_OBJECTS(VISIT)
#undef VISIT
    return 0;
}

static int
front_clear(Front *self)
{
#define CLEAR(field) Py_CLEAR(self->field);
    FRONT_OBJECTS(CLEAR)
#undef CLEAR
    return 0;
}

static void
front_dealloc(Front *self)
{
    PyObject_GC_UnTrack(self);
    front_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* The offset of slot ``name`` in ``type`` (a __slots__ member holding an object), or -1 with an error. */
static Py_ssize_t
type_slot_offset(PyTypeObject *type, const char *name)
{
    PyObject *key = PyUnicode_InternFromString(name);
    if (key == NULL)
        return -1;
    PyObject *d = _PyType_Lookup(type, key);
    Py_DECREF(key);
    if (d == NULL || !PyObject_TypeCheck(d, &PyMemberDescr_Type)) {
        PyErr_Format(PyExc_TypeError, "%s has no slot %s", type->tp_name, name);
        return -1;
    }
    PyMemberDef *m = ((PyMemberDescrObject *)d)->d_member;
    if (m->type != T_OBJECT_EX && m->type != T_OBJECT) {
        PyErr_Format(PyExc_TypeError, "%s's slot %s does not hold an object", type->tp_name, name);
        return -1;
    }
    return m->offset;
}

/* -- attributes of the process's Mode and Recorder, read at their slots' offsets --------------------------------
 *
 * Each step the hooks read a few attributes of ``bounds.MODE`` and of the recorder. An attribute lookup touches the
 * type's lookup cache, the descriptor and the instance; inside vLLM each such touch is a cold one, a few hundred ns on
 * the CPU machine (benchmarks/results/cpu/step_post_sections). Both classes have __slots__, so the value is read at
 * its offset in the instance, as ``SLOT_OF`` reads the step state's. An object of another type (a test's subclass)
 * goes through the attribute lookup. slots_setup(mode_type, recorder_type) once. */
static PyTypeObject *MODE_TYPE, *RECORDER_TYPE;
enum { A_READY, A_IN_PROCESS, A_LAST_END, A_DEVICE_STOP, A_BUF, A_CAPACITY, A_NVTX, N_ATTRS };
static const char *ATTR_NAMES[N_ATTRS] = {"ready", "in_process", "last_end", "device_stop", "buf", "capacity",
                                          "nvtx"};
static PyObject *ATTR_KEYS[N_ATTRS];     /* the names, interned at import */
static Py_ssize_t ATTR_OFF[N_ATTRS];

static PyObject *
slots_setup(PyObject *module, PyObject *args)
{
    PyObject *mode_type, *recorder_type;
    if (!PyArg_ParseTuple(args, "O!O!:slots_setup", &PyType_Type, &mode_type, &PyType_Type, &recorder_type))
        return NULL;
    Py_ssize_t off[N_ATTRS];                       /* all found, or nothing changed */
    for (int i = 0; i < N_ATTRS; i++)
        if ((off[i] = type_slot_offset((PyTypeObject *)(i < A_BUF ? mode_type : recorder_type), ATTR_NAMES[i])) < 0)
            return NULL;
    memcpy(ATTR_OFF, off, sizeof(off));
    Py_INCREF(mode_type);
    Py_XSETREF(MODE_TYPE, (PyTypeObject *)mode_type);
    Py_INCREF(recorder_type);
    Py_XSETREF(RECORDER_TYPE, (PyTypeObject *)recorder_type);
    Py_RETURN_NONE;
}

/* obj's attribute ``i`` (a new reference; NULL with an error, AttributeError where unset, as getattr). */
static PyObject *
attr_get(PyObject *obj, int i)
{
    if (Py_TYPE(obj) == (i < A_BUF ? MODE_TYPE : RECORDER_TYPE)) {
        PyObject *v = *(PyObject **)((char *)obj + ATTR_OFF[i]);
        if (v != NULL)
            return Py_NewRef(v);
    }
    return PyObject_GetAttr(obj, ATTR_KEYS[i]);
}

/* obj.name, or NULL with no error where it has no such attribute (getattr(obj, name, None)'s None). */
static PyObject *
attr_or_null(PyObject *obj, PyObject *name)
{
    PyObject *v = PyObject_GetAttr(obj, name);
    if (v == NULL && PyErr_ExceptionMatches(PyExc_AttributeError))
        PyErr_Clear();
    return v;
}

/* obj.<attribute i> = value; 0, or -1 with an error. */
static int
attr_set(PyObject *obj, int i, PyObject *value)
{
    if (Py_TYPE(obj) == (i < A_BUF ? MODE_TYPE : RECORDER_TYPE)) {
        PyObject **slot = (PyObject **)((char *)obj + ATTR_OFF[i]);
        Py_XSETREF(*slot, Py_NewRef(value));
        return 0;
    }
    return PyObject_SetAttr(obj, ATTR_KEYS[i], value);
}

/* Has recorder ``rec`` room for one more record (``Recorder.end``'s check)? 1 (``*buf``: its buffer, a new
 * reference), 0 full, -1 an error. */
static int
recorder_room(PyObject *rec, PyObject **buf)
{
    PyObject *b = attr_get(rec, A_BUF), *cap = b ? attr_get(rec, A_CAPACITY) : NULL;
    if (cap == NULL) {
        Py_XDECREF(b);
        return -1;
    }
    Py_ssize_t n = PyObject_Length(b), c = n < 0 ? -1 : PyLong_AsSsize_t(cap);
    Py_DECREF(cap);
    if (n < 0 || (c == -1 && PyErr_Occurred())) {
        Py_DECREF(b);
        return -1;
    }
    if (n >= c) {
        Py_DECREF(b);
        return 0;
    }
    *buf = b;
    return 1;
}

/* The offset of slot ``name`` in ``runner``'s type, or -1 with an error. */
static Py_ssize_t
slot_offset(PyObject *runner, const char *name)
{
    return type_slot_offset(Py_TYPE(runner), name);
}

static PyObject *
front_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *names[] = {"fn", "slow", "runner", "marks", "into", "keep", "first", "pre", "post", "layout",
                            "no_kwargs", NULL};
    PyObject *fn, *slow, *runner, *marks, *into, *first, *pre, *post, *layout, *no_kwargs;
    int keep;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOO!OiOOOOO:Front", names, &fn, &slow, &runner, &PyList_Type,
                                     &marks, &into, &keep, &first, &pre, &post, &layout, &no_kwargs))
        return NULL;
    if (keep < 0 || keep > 2 || (first != Py_None && !PyUnicode_Check(first))) {
        PyErr_SetString(PyExc_ValueError, "Front: keep is 0, 1 or 2 and first a str or None");
        return NULL;
    }
    Py_ssize_t required = -1;
    PyObject *kw_names = NULL, *kw_defaults = NULL;
    if (layout != Py_None) {
        if (!PyArg_ParseTuple(layout, "nO!O!:Front layout", &required, &PyTuple_Type, &kw_names, &PyTuple_Type,
                              &kw_defaults))
            return NULL;
        if (required < 1 || PyTuple_GET_SIZE(kw_names) != PyTuple_GET_SIZE(kw_defaults)) {
            PyErr_SetString(PyExc_ValueError, "Front: layout is (required >= 1, names, defaults of as many)");
            return NULL;
        }
    }
    Py_ssize_t active_off, left_off, fast_off;
    if ((active_off = slot_offset(runner, "active")) < 0 || (left_off = slot_offset(runner, "left")) < 0 ||
            (fast_off = slot_offset(runner, "fast")) < 0)
        return NULL;
    Front *self = (Front *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->active_off = active_off;
    self->left_off = left_off;
    self->fast_off = fast_off;
    self->keep = keep;
    self->required = required;
    Py_INCREF(fn); self->fn = fn;
    Py_INCREF(slow); self->slow = slow;
    Py_INCREF(runner); self->runner = runner;
    Py_INCREF(marks); self->marks = marks;
    if (into != Py_None) {
        Py_INCREF(into);
        self->into = into;
        self->slot = as_slot(into);
    }
    Py_INCREF(first);
    if (first != Py_None)
        PyUnicode_InternInPlace(&first);
    self->first = first;
    Py_INCREF(pre); self->pre = pre;
    Py_INCREF(post); self->post = post;
    Py_XINCREF(kw_names); self->kw_names = kw_names;
    Py_XINCREF(kw_defaults); self->kw_defaults = kw_defaults;
    Py_INCREF(no_kwargs); self->no_kwargs = no_kwargs;
    self->vectorcall = front_vectorcall;
    return (PyObject *)self;
}

static PyMemberDef front_members[] = {
    {"__w2ext_slow__", T_OBJECT, offsetof(Front, slow), READONLY, "the Python front"},
    {"spent", T_LONGLONG, offsetof(Front, spent), READONLY,
     "the plugin's part of the calls taken here (ticks of clock(), a read's own cost taken out)"},
    {"calls", T_LONGLONG, offsetof(Front, calls), READONLY, "the calls taken here (not passed to the Python front)"},
    {NULL}
};

static PyObject *
get_fn(Front *self, void *closure)
{
    Py_INCREF(self->fn);
    return self->fn;
}

/* The method the front calls (benchmarks/hook_cost_engine.py times it from a wrapper in its place). */
static int
set_fn(Front *self, PyObject *value, void *closure)
{
    if (value == NULL || !PyCallable_Check(value)) {
        PyErr_SetString(PyExc_TypeError, "Front.__w2ext_fn__ must be a callable");
        return -1;
    }
    Py_INCREF(value);
    Py_SETREF(self->fn, value);
    return 0;
}

static PyGetSetDef front_getset[] = {
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict},
    {"__w2ext_fn__", (getter)get_fn, (setter)set_fn, "the method the front calls (vLLM's)"},
    {NULL}
};

static PyTypeObject FrontType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "vllm_w2ext.hooks._cfront.Front",
    .tp_doc = "A hook's front without a Python frame (hooks/_cfront.c).",
    .tp_basicsize = sizeof(Front),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL | Py_TPFLAGS_METHOD_DESCRIPTOR,
    .tp_new = front_new,
    .tp_dealloc = (destructor)front_dealloc,
    .tp_traverse = (traverseproc)front_traverse,
    .tp_clear = (inquiry)front_clear,
    .tp_call = front_call,
    .tp_vectorcall_offset = offsetof(Front, vectorcall),
    .tp_descr_get = front_descr_get,
    .tp_dictoffset = offsetof(Front, dict),
    .tp_getattro = PyObject_GenericGetAttr,
    .tp_setattro = PyObject_GenericSetAttr,
    .tp_members = front_members,
    .tp_getset = front_getset,
};

/* -- worker_bounds: engine_core._worker_bounds in C ------------------------------------------------------------
 *
 * Where the worker runs on the EngineCore's thread, the engine step's post reads the step's execution from the bounds
 * buffers (hooks/bounds.py) into a WorkerBounds tuple (steps.facts). ``engine_core._worker_bounds`` is the definition
 * (and runs where this extension was not built); this is the same, step for step, without its ~110 bytecodes run cold
 * once per step on vLLM's thread (benchmarks/results/cpu/schedule_worker_bounds_c). A unit test holds the two to the same
 * result and side effects on planted buffers (tests/unit/test_worker_bounds_c.py).
 *
 * worker_bounds_setup(executions, forwards, launches, samples, mode, stamp_step) once; then worker_bounds(stamp). */
static PyObject *SP_ZERO, *SP_MINUS_ONE, *SP_ONE;     /* 0, -1, 1 (made at import) */
static PyObject *WB_EXECUTIONS, *WB_FORWARDS, *WB_LAUNCHES, *WB_SAMPLES, *WB_MODE;
static Py_ssize_t WB_STAMP_STEP = -1;
static PyObject *S_FORGET, *S_TOTAL, *S_NAME;

/* Take a buffer's last call (a Slot's fields; every buffer the C hooks read is one: ``bounds.buffer``, made by this
 * extension). 1 with ``*kept`` and ``*error`` new references, 0 when it is empty, -1 with a TypeError for anything
 * else. */
static int
take_bounds(PyObject *buf, long long *start, long long *end, PyObject **kept, PyObject **error)
{
    Slot *slot = as_slot(buf);
    if (slot == NULL) {
        PyErr_Format(PyExc_TypeError, "a bounds buffer read in C must be a _cfront.Slot (bounds.buffer()), not %R",
                     buf);
        return -1;
    }
    return slot_take(slot, start, end, kept, error);
}

/* None, or the name of an error's type (``type(error).__name__``); a new reference. */
static PyObject *
error_name(PyObject *error)
{
    if (error == Py_None) {
        Py_INCREF(Py_None);
        return Py_None;
    }
    return PyObject_GetAttr((PyObject *)Py_TYPE(error), S_NAME);
}

static PyObject *
worker_bounds_setup(PyObject *module, PyObject *args)
{
    PyObject *ex, *fw, *la, *sa, *mode;
    Py_ssize_t stamp_step;
    if (!PyArg_ParseTuple(args, "OOOOOn:worker_bounds_setup", &ex, &fw, &la, &sa, &mode, &stamp_step))
        return NULL;
    Py_INCREF(ex); Py_XSETREF(WB_EXECUTIONS, ex);
    Py_INCREF(fw); Py_XSETREF(WB_FORWARDS, fw);
    Py_INCREF(la); Py_XSETREF(WB_LAUNCHES, la);
    Py_INCREF(sa); Py_XSETREF(WB_SAMPLES, sa);
    Py_INCREF(mode); Py_XSETREF(WB_MODE, mode);
    WB_STAMP_STEP = stamp_step;
    Py_RETURN_NONE;
}

/* A step's execution as its bounds hooks noted it (``read_execution``): raw where a Slot held it. */
typedef struct {
    long long e0, e1, f0, f1, s0, s1;
    PyObject *so, *e_err, *f_kept, *f_err, *l_kept, *l_err, *result, *s_err;   /* taken: buried by its release */
    PyObject *prev, *stop, *total;                                            /* new references */
} Execution;

static void
execution_release(Execution *x)
{
    bury(x->so);                       /* vLLM's objects they keep: freed after the front's timed section */
    bury(x->e_err);
    bury(x->f_kept);
    bury(x->f_err);
    bury(x->l_kept);
    bury(x->l_err);
    bury(x->result);
    bury(x->s_err);
    Py_XDECREF(x->prev);
    Py_XDECREF(x->stop);
    Py_XDECREF(x->total);
}

/* Whether an error taken from a buffer (NULL: nothing taken; None: the call raised nothing) is none. */
static inline int
no_error(PyObject *error)
{
    return error == NULL || error == Py_None;
}

/* ``engine_core._worker_bounds`` up to its WorkerBounds: take the buffers, move Mode's last end on, stop the device
 * timer. 1: ``*x`` filled (release it), 0: nothing executed, or not a step the EngineCore recorded (None; release it
 * too), -1: an error (release it). */
static int
read_execution(PyObject *stamp, Execution *x)
{
    memset(x, 0, sizeof *x);
    if (WB_MODE == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "worker_bounds: worker_bounds_setup was not called");
        return -1;
    }
    long long l0, l1;
    int n = take_bounds(WB_EXECUTIONS, &x->e0, &x->e1, &x->so, &x->e_err);
    if (n <= 0) {
        if (n == 0 && take_bounds(WB_SAMPLES, &x->s0, &x->s1, &x->result, &x->s_err) < 0)   /* a sample with no */
            return -1;                                                      /* execution before it: not recorded */
        return n;
    }
    long long launch_ns = x->e0;
    if ((n = take_bounds(WB_FORWARDS, &x->f0, &x->f1, &x->f_kept, &x->f_err)) < 0)
        return -1;
    if (n > 0)                         /* V1: the forward; on CUDA the device time starts there */
        launch_ns = x->f0;
    if ((n = take_bounds(WB_LAUNCHES, &l0, &l1, &x->l_kept, &x->l_err)) < 0)
        return -1;
    if (n > 0)                         /* V2: the forward's launch */
        launch_ns = l0;
    if (take_bounds(WB_SAMPLES, &x->s0, &x->s1, &x->result, &x->s_err) < 0)
        return -1;
    if (stamp == Py_None) {            /* not a step the EngineCore recorded (as the worker's hooks skip it) */
        PyObject *r = PyObject_CallMethodNoArgs(WB_MODE, S_FORGET);
        if (r == NULL)
            return -1;
        Py_DECREF(r);
        return 0;
    }
    if (!PyTuple_Check(stamp) || WB_STAMP_STEP < 0 || PyTuple_GET_SIZE(stamp) <= WB_STAMP_STEP) {
        PyErr_Format(PyExc_ValueError, "worker_bounds: the stamp %R is not a Stamp tuple", stamp);
        return -1;
    }
    PyObject *last = NULL;
    if ((x->prev = attr_get(WB_MODE, A_LAST_END)) == NULL ||
            (last = PyLong_FromLongLong(x->s0 ? x->s1 : x->e1)) == NULL || attr_set(WB_MODE, A_LAST_END, last) < 0) {
        Py_XDECREF(last);
        return -1;
    }
    Py_DECREF(last);
    if ((x->stop = attr_get(WB_MODE, A_DEVICE_STOP)) == NULL)
        return -1;
    if (x->stop != Py_None && no_error(x->e_err) && no_error(x->s_err)) {   /* as the worker's posts stop it */
        PyObject *launch = PyLong_FromLongLong(launch_ns);
        if (launch == NULL)
            return -1;
        PyObject *stop_args[3] = {PyTuple_GET_ITEM(stamp, WB_STAMP_STEP), launch, x->result ? x->result : Py_None};
        PyObject *r = PyObject_Vectorcall(x->stop, stop_args, 3, NULL);
        Py_DECREF(launch);
        if (r == NULL)
            return -1;
        Py_DECREF(r);
    }
    if ((x->total = PyObject_GetAttr(x->so, S_TOTAL)) == NULL)
        return -1;
    return 1;
}

/* The WorkerBounds tuple of a filled Execution (steps.facts). */
static PyObject *
worker_bounds_tuple(PyObject *stamp, Execution *x)
{
    PyObject *e_name = NULL, *f_name = NULL, *s_name = NULL, *out = NULL;
    if ((e_name = error_name(x->e_err)) != NULL && (f_name = error_name(x->f_err ? x->f_err : Py_None)) != NULL &&
            (s_name = error_name(x->s_err ? x->s_err : Py_None)) != NULL)
        out = Py_BuildValue("(OOOOLLOLLOLLO)", stamp, x->prev, x->stop != Py_None ? Py_True : Py_False, x->total,
                            x->e0, x->e1, e_name, x->f0, x->f1, f_name, x->s0, x->s1, s_name);
    Py_XDECREF(e_name);
    Py_XDECREF(f_name);
    Py_XDECREF(s_name);
    return out;
}

static PyObject *
worker_bounds(PyObject *module, PyObject *stamp)
{
    Execution x;
    int n = read_execution(stamp, &x);
    PyObject *out = n < 0 ? NULL : n == 0 ? Py_NewRef(Py_None) : worker_bounds_tuple(stamp, &x);
    execution_release(&x);
    return out;
}

/* -- step_post: engine_core._step_post's common way in C ------------------------------------------------------
 *
 * The engine step's post on a recorded step that ended without an error, no request left prefilling or preempted
 * where one was freed (``_forget`` would find something to forget), no marks to close,
 * room in the recorder's buffer, its update (if any) without an error, the sampling N unchanged and the worker not
 * about to become bounds hooks: the step's StepRecord and end written here, as ``engine_core._step_post`` writes them,
 * without its ~160 bytecodes run cold once per step on vLLM's thread. Every other step goes to that function (the
 * definition; ``fallback``), before anything is changed. It reads the state object's slots at their offsets
 * (``engine_core._State.__slots__``) and, on each call, ``S``, ``RECORDER``, ``MODE`` and ``UPDATES`` from the module's
 * dict (tests put their own there). A unit test holds the two to the same records and state on planted steps
 * (tests/unit/test_step_post_c.py).
 *
 * step_post_setup(module_dict, state_type, fallback, stamp_attr, stamp_step, nested, data, end, deque_type) once. */
/* The raw StepRecord (steps.facts.RAW_STEP, its field order; RAW_STEP_FIELDS there): int64 values, the worker's from
 * RAW_STEP_WORKER on (zero where it did not run here). The step's post writes it where the record names no error:
 * (facts, the stamp where the worker ran here or None, these values as bytes), and the freed requests' Finished
 * tuples as a fourth item where it freed any, in the range's data. */
#define RAW_STEP_N 21
#define RAW_STEP_WORKER 12
static PyObject *SP_GLOBALS, *SP_FALLBACK, *SP_STAMP_ATTR;
static PyTypeObject *SP_STATE_TYPE, *SP_DEQUE_TYPE;
static Py_ssize_t SP_STAMP_STEP = -1, SP_NESTED, SP_DATA, SP_END, SP_LIST_MIN;
static PyObject *S_S, *S_RECORDER, *S_MODE, *S_UPDATES, *S_RUNNING, *S_WAITING, *S_APPEND, *S_DEQUE_LEN_NAME;
static PyObject *SP_DEQUE_LEN;     /* deque.__len__ (what S.waiting_len holds for a deque) */
enum { O_CURRENT, O_FINISHED, O_SCHED, O_WAITING_LEN, O_PENDING, O_STEP, O_LAST_RECORDED, O_LIGHT_EXECUTED,
       O_LIGHT_TOKENS, O_UPDATE_START, O_UPDATE_END, O_FACTS, O_SCHEDULE_START, O_SCHEDULE_END, O_SAMPLE, O_WANT,
       O_STAMP, O_PREV_STEP_END, O_IDENTITY_DONE, O_WAITING_TYPE, O_LIGHT_AT, O_LIGHT, O_PREFILLING, O_PREEMPTED,
       O_ALL_LINKS, N_OFFSETS };
static const char *OFFSET_NAMES[N_OFFSETS] = {"current", "finished", "sched", "waiting_len", "pending", "step",
    "last_recorded", "light_executed", "light_tokens", "update_start", "update_end", "facts", "schedule_start",
    "schedule_end", "sample", "want", "stamp", "prev_step_end", "identity_done", "waiting_type", "light_at", "light",
    "prefilling", "preempted", "all_links"};
static Py_ssize_t OFF[N_OFFSETS];

#define SLOT_OF(obj, i) (*(PyObject **)((char *)(obj) + OFF[i]))

/* The engine_core module's globals that the step's hooks read on every step (``S``, ``RECORDER``, ``MODE``,
 * ``UPDATES``, ``GATE``, ``PHASE_MARKS``), held here rather than looked up in the module's dict at each call: inside
 * vLLM each lookup runs cold, and the four of the post took 0.4-1.0 us of its 4.6-9.1 on the CPU machine
 * (benchmarks/results/cpu/step_post_sections). step_post_setup takes them from the module's dict; a rebinding from
 * outside (``engine_core.S = ...``, the tests' monkeypatch) reaches them through the module's ``__setattr__``
 * (engine_core._HeldGlobals: ``hold_global``). NULL: none held, the dict is read. */
enum { G_S, G_RECORDER, G_MODE, G_UPDATES, G_GATE, G_PHASE_MARKS, N_HELD };
static PyObject *HELD[N_HELD];
static PyObject *S_GATE, *S_SHUT, *S_PHASE_MARKS, *S_SCHEDULER;
static PyObject **const HELD_KEYS[N_HELD] = {&S_S, &S_RECORDER, &S_MODE, &S_UPDATES, &S_GATE, &S_PHASE_MARKS};

/* The module global ``i`` (borrowed): the one held, else the dict's; NULL where neither (an error set or not). */
static inline PyObject *
global_of(int i)
{
    PyObject *v = HELD[i];
    return v != NULL ? v : PyDict_GetItemWithError(SP_GLOBALS, *HELD_KEYS[i]);
}

/* hold_global(name[, value]): ``name``'s value is now ``value`` (no value: deleted, the dict read from now on). A name
 * not held is ignored. */
static PyObject *
hold_global(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2 || !PyUnicode_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "hold_global(name: str[, value])");
        return NULL;
    }
    for (int i = 0; i < N_HELD; i++) {
        int eq = PyUnicode_Compare(args[0], *HELD_KEYS[i]);
        if (eq == -1 && PyErr_Occurred())
            return NULL;
        if (eq == 0) {
            Py_XSETREF(HELD[i], nargs == 2 ? Py_NewRef(args[1]) : NULL);
            break;
        }
    }
    Py_RETURN_NONE;
}

/* Is ``state`` the hooks' state object, every slot set? (Else a call goes to its definition, which raises as Python
 * would.) */
static int
state_complete(PyObject *state)
{
    if (state == NULL || Py_TYPE(state) != SP_STATE_TYPE)
        return 0;
    for (int i = 0; i < N_OFFSETS; i++)
        if (SLOT_OF(state, i) == NULL)
            return 0;
    return 1;
}

/* Set slot ``i`` to ``value`` (a new reference taken: stolen). */
static inline void
put(PyObject *state, int i, PyObject *value)
{
    PyObject *old = SLOT_OF(state, i);
    SLOT_OF(state, i) = value;
    Py_XDECREF(old);
}

static PyObject *
step_post_setup(PyObject *module, PyObject *args)
{
    PyObject *globals, *state_type, *fallback, *stamp_attr, *deque_type;
    Py_ssize_t stamp_step, nested, data, end;
    if (!PyArg_ParseTuple(args, "O!O!OUnnnnO!:step_post_setup", &PyDict_Type, &globals, &PyType_Type, &state_type,
                          &fallback, &stamp_attr, &stamp_step, &nested, &data, &end, &PyType_Type, &deque_type))
        return NULL;
    for (int i = 0; i < N_OFFSETS; i++)
        if ((OFF[i] = type_slot_offset((PyTypeObject *)state_type, OFFSET_NAMES[i])) < 0)
            return NULL;
    PyObject *dlen = PyObject_GetAttr(deque_type, S_DEQUE_LEN_NAME);
    if (dlen == NULL)
        return NULL;
    Py_XSETREF(SP_DEQUE_LEN, dlen);
    Py_INCREF(globals); Py_XSETREF(SP_GLOBALS, globals);
    for (int i = 0; i < N_HELD; i++) {
        PyObject *v = PyDict_GetItemWithError(globals, *HELD_KEYS[i]);
        if (v == NULL && PyErr_Occurred())
            return NULL;
        Py_XSETREF(HELD[i], Py_XNewRef(v));
    }
    Py_INCREF(state_type); Py_XSETREF(SP_STATE_TYPE, (PyTypeObject *)state_type);
    Py_INCREF(fallback); Py_XSETREF(SP_FALLBACK, fallback);
    Py_INCREF(stamp_attr); Py_XSETREF(SP_STAMP_ATTR, stamp_attr);
    Py_INCREF(deque_type); Py_XSETREF(SP_DEQUE_TYPE, (PyTypeObject *)deque_type);
    SP_STAMP_STEP = stamp_step;
    SP_NESTED = nested;
    SP_DATA = data;
    SP_END = end;
    SP_LIST_MIN = (nested > data ? nested : data) > end ? (nested > data ? nested : data) : end;
    Py_RETURN_NONE;
}

/* len(queue) as S.waiting_len counts it: a deque by deque's own __len__ (its C length), else through waiting_len. */
static Py_ssize_t
waiting_count(PyObject *waiting_len, PyObject *queue)
{
    if (waiting_len == SP_DEQUE_LEN && PyObject_TypeCheck(queue, SP_DEQUE_TYPE))
        return SP_DEQUE_TYPE->tp_as_sequence->sq_length(queue);
    PyObject *n = PyObject_CallOneArg(waiting_len, queue);
    if (n == NULL)
        return -1;
    Py_ssize_t k = PyLong_AsSsize_t(n);
    Py_DECREF(n);
    return k;
}

/* Is every condition of the common way met? 1 yes, 0 no (the fallback runs), -1 an error. ``records``: the module's
 * RECORDER list; ``*buf``: its recorder's buffer where 1 (a new reference); ``ups``: the updates buffer. */
static int
common_way(PyObject *state, PyObject *r, PyObject *result, PyObject *error, PyObject *mode, PyObject *records,
           PyObject **buf, PyObject *ups)
{
    if (!state_complete(state) || !PyList_CheckExact(r) || error != Py_None || PyList_GET_SIZE(r) <= SP_LIST_MIN ||
            PyList_GET_ITEM(r, SP_NESTED) == Py_True)
        return 0;
    PyObject *finished = SLOT_OF(state, O_FINISHED);
    if (!PyList_CheckExact(finished) || SLOT_OF(state, O_SCHED) == Py_None)
        return 0;
    if (PyList_GET_SIZE(finished) != 0) {   /* requests freed: taken here while _forget would find nothing to forget */
        PyObject *prefilling = SLOT_OF(state, O_PREFILLING), *preempted = SLOT_OF(state, O_PREEMPTED);
        if (!PyAnySet_CheckExact(prefilling) || PySet_GET_SIZE(prefilling) != 0 ||
                !PyAnySet_CheckExact(preempted) || PySet_GET_SIZE(preempted) != 0)
            return 0;
    }
    if (result != Py_None && (!PyTuple_Check(result) || PyTuple_GET_SIZE(result) < 2))
        return 0;
    int same = PyObject_RichCompareBool(SLOT_OF(state, O_WANT), SLOT_OF(state, O_SAMPLE), Py_EQ);
    if (same <= 0)
        return same;
    PyObject *ready = attr_get(mode, A_READY);
    if (ready == NULL)
        return -1;
    Py_DECREF(ready);
    if (ready != Py_False)
        return 0;
    if (!PyList_CheckExact(records) || PyList_GET_SIZE(records) < 1 || PyList_GET_ITEM(records, 0) == Py_None)
        return 0;
    Slot *slot = as_slot(ups);
    if (slot == NULL || (slot->full && slot->error != Py_None))   /* not a Slot, or its update failed (an Interval */
        return 0;                                                  /* of its own): the fallback's */
    return recorder_room(PyList_GET_ITEM(records, 0), buf);
}

static PyObject *
step_post(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "step_post(r, result, error)");
        return NULL;
    }
    if (SP_GLOBALS == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "step_post: step_post_setup was not called");
        return NULL;
    }
    PyObject *r = args[0], *result = args[1], *error = args[2];
    PyObject *state = global_of(G_S);
    PyObject *records = state ? global_of(G_RECORDER) : NULL;
    PyObject *mode = records ? global_of(G_MODE) : NULL;
    PyObject *ups = mode ? global_of(G_UPDATES) : NULL;
    if (ups == NULL) {
        if (PyErr_Occurred())
            return NULL;
        return PyObject_Vectorcall(SP_FALLBACK, args, 3, NULL);
    }
    PyObject *buf = NULL;
    int ok = common_way(state, r, result, error, mode, records, &buf, ups);
    if (ok < 0)
        return NULL;
    if (ok == 0)
        return PyObject_Vectorcall(SP_FALLBACK, args, 3, NULL);

    PyObject *running = NULL, *waiting = NULL, *skipped = NULL, *pending = NULL, *stamp = NULL;
    PyObject *batch = NULL, *wb = NULL, *data = NULL, *now = NULL, *appended = NULL, *out = NULL;
    PyObject *u_so = NULL, *u_err = NULL, *u0 = NULL, *u1 = NULL, *freed = NULL;
    Execution x = {0};
    int executed = 0;
    if (result != Py_None && (executed = PyObject_IsTrue(PyTuple_GET_ITEM(result, 1))) < 0) {
        Py_DECREF(buf);
        return NULL;
    }
    Py_INCREF(Py_None);
    put(state, O_CURRENT, Py_None);
    PyObject *finished = SLOT_OF(state, O_FINISHED);     /* the requests freed since the last step (Finished tuples), */
    Py_ssize_t n_freed = PyList_GET_SIZE(finished);      /* taken and the list left empty, as ``_step_post`` does */
    if (n_freed > 0) {
        if ((freed = PyList_AsTuple(finished)) == NULL || PyList_SetSlice(finished, 0, n_freed, NULL) < 0)
            goto done;
    }
    PyObject *sched = SLOT_OF(state, O_SCHED);
    if ((running = PyObject_GetAttr(sched, S_RUNNING)) == NULL || (waiting = PyObject_GetAttr(sched, S_WAITING)) == NULL)
        goto done;
    Py_ssize_t n_running = PyObject_Length(running);
    Py_ssize_t n_waiting = n_running < 0 ? -1 : waiting_count(SLOT_OF(state, O_WAITING_LEN), waiting);
    if (n_waiting < 0 || (pending = PyLong_FromSsize_t(n_running + n_waiting)) == NULL)
        goto done;
    put(state, O_PENDING, Py_NewRef(pending));
    /* SkippedSteps: (light, step - last_recorded - 1 - light, light_tokens) */
    PyObject *light = SLOT_OF(state, O_LIGHT_EXECUTED), *step = SLOT_OF(state, O_STEP);
    long long l = PyLong_AsLongLong(light), st = PyLong_AsLongLong(step),
              last = PyLong_AsLongLong(SLOT_OF(state, O_LAST_RECORDED)),
              l_tokens = PyLong_AsLongLong(SLOT_OF(state, O_LIGHT_TOKENS));
    if (PyErr_Occurred())
        goto done;
    put(state, O_LAST_RECORDED, Py_NewRef(step));
    put(state, O_LIGHT_EXECUTED, Py_NewRef(SP_ZERO));
    put(state, O_LIGHT_TOKENS, Py_NewRef(SP_ZERO));
    long long t_u0 = 0, t_u1 = 0, t_batch = -1;
    int n_ups = take_bounds(ups, &t_u0, &t_u1, &u_so, &u_err);
    if (n_ups < 0)
        goto done;
    if (n_ups > 0) {                   /* this step's update (from its bounds front, or its post) */
        if ((u0 = PyLong_FromLongLong(t_u0)) == NULL || (u1 = PyLong_FromLongLong(t_u1)) == NULL)
            goto done;
        put(state, O_UPDATE_START, Py_NewRef(u0));
        put(state, O_UPDATE_END, Py_NewRef(u1));
        stamp = attr_or_null(u_so, SP_STAMP_ATTR);
        if (stamp == NULL && PyErr_Occurred())
            goto done;
        if (stamp != NULL && stamp != Py_None) {
            PyObject *b = PySequence_GetItem(stamp, SP_STAMP_STEP);
            if (b == NULL)
                goto done;
            t_batch = PyLong_AsLongLong(b);
            Py_DECREF(b);
            if (t_batch == -1 && PyErr_Occurred())
                goto done;
        }
    }
    PyObject *in_process = attr_get(mode, A_IN_PROCESS);
    if (in_process == NULL)
        goto done;
    int inp = PyObject_IsTrue(in_process);
    Py_DECREF(in_process);
    if (inp < 0)
        goto done;
    PyObject *own_stamp = SLOT_OF(state, O_STAMP);
    int n_exec = inp ? read_execution(own_stamp, &x) : 0;
    if (n_exec < 0)
        goto done;
    long long sched0 = PyLong_AsLongLong(SLOT_OF(state, O_SCHEDULE_START)),
              sched1 = PyLong_AsLongLong(SLOT_OF(state, O_SCHEDULE_END)),
              every = PyLong_AsLongLong(SLOT_OF(state, O_SAMPLE));
    if (PyErr_Occurred())
        goto done;
    if (n_exec == 0 || (no_error(x.e_err) && no_error(x.f_err) && no_error(x.s_err))) {
        /* the StepRecord as raw values (steps.facts.RAW_STEP): its facts and the stamp by reference */
        long long v[RAW_STEP_N] = {executed, n_running + n_waiting, l, st - last - 1 - l, l_tokens, sched0, sched1,
                                   t_u0, t_u1, t_batch, every, n_exec > 0};
        if (n_exec > 0) {
            long long prev = PyLong_AsLongLong(x.prev), tokens = PyLong_AsLongLong(x.total);
            if (PyErr_Occurred())
                goto done;
            long long w[] = {prev, x.stop != Py_None, tokens, x.e0, x.e1, x.f0, x.f1, x.s0, x.s1};
            memcpy(v + RAW_STEP_WORKER, w, sizeof w);
        }
        PyObject *raw = PyBytes_FromStringAndSize((const char *)v, sizeof v);
        if (raw == NULL)
            goto done;
        data = freed ? PyTuple_Pack(4, SLOT_OF(state, O_FACTS), n_exec > 0 ? own_stamp : Py_None, raw, freed)
                     : PyTuple_Pack(3, SLOT_OF(state, O_FACTS), n_exec > 0 ? own_stamp : Py_None, raw);
        Py_DECREF(raw);
    } else {                           /* an error to name: the StepRecord tuple, as its definition writes it */
        skipped = Py_BuildValue("(LLL)", l, st - last - 1 - l, l_tokens);
        if (skipped == NULL || (wb = worker_bounds_tuple(own_stamp, &x)) == NULL || (batch = PyLong_FromLongLong(
                t_batch)) == NULL)
            goto done;
        if (freed == NULL && (freed = PyTuple_New(0)) == NULL)     /* StepRecord.finished: none freed in this step */
            goto done;
        data = PyTuple_Pack(12, SLOT_OF(state, O_FACTS), executed ? Py_True : Py_False, freed,
                            pending, skipped, SLOT_OF(state, O_SCHEDULE_START), SLOT_OF(state, O_SCHEDULE_END),
                            u0 ? u0 : SP_ZERO, u1 ? u1 : SP_ZERO, batch, SLOT_OF(state, O_SAMPLE), wb);
    }
    if (data == NULL)
        goto done;
    PyObject_GC_UnTrack(data);                   /* a record: no cycle through it (UNTRACKED_RECORDS) */
    if (PyList_SetItem(r, SP_DATA, data) < 0) {  /* steals data */
        data = NULL;
        goto done;
    }
    data = NULL;
    put(state, O_SCHEDULE_START, Py_NewRef(SP_ZERO));
    put(state, O_FACTS, Py_NewRef(Py_None));
    put(state, O_STAMP, Py_NewRef(Py_None));
    if ((now = now_ns()) == NULL)
        goto done;
    if (PyList_SetItem(r, SP_END, Py_NewRef(now)) < 0)
        goto done;
    put(state, O_PREV_STEP_END, Py_NewRef(now));
    if ((appended = PyObject_CallMethodOneArg(buf, S_APPEND, r)) == NULL)
        goto done;
    out = Py_NewRef(Py_None);
done:
    Py_XDECREF(running);
    Py_XDECREF(waiting);
    Py_XDECREF(skipped);
    Py_XDECREF(pending);
    bury(u_so);                        /* the update's SchedulerOutput: freed after the front's timed section */
    bury(u_err);
    Py_XDECREF(u0);
    Py_XDECREF(u1);
    execution_release(&x);
    Py_XDECREF(stamp);
    Py_XDECREF(batch);
    Py_XDECREF(wb);
    Py_XDECREF(data);
    Py_XDECREF(now);
    Py_XDECREF(buf);
    Py_XDECREF(appended);
    Py_XDECREF(freed);
    return out;
}

/* -- step_pre: engine_core._step_pre's common way in C ---------------------------------------------------------
 *
 * A recorded step's start once the process's identity is set: its scheduler noted, its number counted and its range
 * opened (a list in RangeRecord order, as ``_step_pre`` writes it out), with the gate open, a recorder made and no
 * marks wanted. Every other step (the first, a light one, the gate shut, marks, another waiting queue's type) goes to
 * ``engine_core._step_pre`` (the definition) before anything is changed. It reads the state's slots as step_post does,
 * and ``S``, ``GATE``, ``RECORDER`` and ``PHASE_MARKS`` from the module each call. A unit test holds the two to the
 * same range and state (tests/unit/test_step_post_c.py).
 *
 * step_pre_setup(fallback, getrandbits, name, role, on_thread) once, after step_post_setup. */
static PyObject *SPRE_FALLBACK, *SPRE_GETRANDBITS, *SPRE_NAME, *SPRE_ROLE, *SPRE_ON_THREAD, *SPRE_BITS128,
    *SPRE_BITS64;

static PyObject *
step_pre_setup(PyObject *module, PyObject *args)
{
    PyObject *fallback, *bits, *name, *role, *on_thread;
    if (!PyArg_ParseTuple(args, "OOOOO:step_pre_setup", &fallback, &bits, &name, &role, &on_thread))
        return NULL;
    if (SP_GLOBALS == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "step_pre_setup: step_post_setup first");
        return NULL;
    }
    Py_INCREF(fallback); Py_XSETREF(SPRE_FALLBACK, fallback);
    Py_INCREF(bits); Py_XSETREF(SPRE_GETRANDBITS, bits);
    Py_INCREF(name); Py_XSETREF(SPRE_NAME, name);
    Py_INCREF(role); Py_XSETREF(SPRE_ROLE, role);
    Py_INCREF(on_thread); Py_XSETREF(SPRE_ON_THREAD, on_thread);
    Py_RETURN_NONE;
}

/* getrandbits(bits) or 1 (a new reference): a span or trace id, ``getrandbits`` the module's random source. */
static PyObject *
random_id(PyObject *getrandbits, PyObject *bits)
{
    PyObject *v = PyObject_CallOneArg(getrandbits, bits);
    if (v == NULL)
        return NULL;
    int nonzero = PyObject_IsTrue(v);
    if (nonzero < 0) {
        Py_DECREF(v);
        return NULL;
    }
    if (!nonzero)
        Py_SETREF(v, Py_NewRef(SP_ONE));
    return v;
}

static PyObject *
step_pre(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "step_pre(core, args, kwargs)");
        return NULL;
    }
    if (SPRE_FALLBACK == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "step_pre: step_pre_setup was not called");
        return NULL;
    }
    PyObject *state = global_of(G_S);
    PyObject *gate = state ? global_of(G_GATE) : NULL;
    PyObject *records = gate ? global_of(G_RECORDER) : NULL;
    PyObject *marks = records ? global_of(G_PHASE_MARKS) : NULL;
    if (marks == NULL) {
        if (PyErr_Occurred())
            return NULL;
        return PyObject_Vectorcall(SPRE_FALLBACK, args, 3, NULL);
    }
    if (!state_complete(state) || SLOT_OF(state, O_IDENTITY_DONE) != Py_True ||
            !PyList_CheckExact(records) || PyList_GET_SIZE(records) < 1 || PyList_GET_ITEM(records, 0) == Py_None ||
            !PyList_CheckExact(marks) || PyList_GET_SIZE(marks) < 1)
        return PyObject_Vectorcall(SPRE_FALLBACK, args, 3, NULL);
    int m = PyObject_IsTrue(PyList_GET_ITEM(marks, 0));
    if (m != 0) {
        if (m < 0)
            return NULL;
        return PyObject_Vectorcall(SPRE_FALLBACK, args, 3, NULL);
    }
    PyObject *shut = PyObject_GetAttr(gate, S_SHUT);
    if (shut == NULL)
        return NULL;
    Py_DECREF(shut);
    if (shut != Py_False)
        return PyObject_Vectorcall(SPRE_FALLBACK, args, 3, NULL);
    PyObject *sched = PyObject_GetAttr(args[0], S_SCHEDULER);
    if (sched == NULL) {
        PyErr_Clear();                                 /* the definition raises it, as it would */
        return PyObject_Vectorcall(SPRE_FALLBACK, args, 3, NULL);
    }
    PyObject *waiting = PyObject_GetAttr(sched, S_WAITING);
    if (waiting == NULL) {
        PyErr_Clear();
        Py_DECREF(sched);
        return PyObject_Vectorcall(SPRE_FALLBACK, args, 3, NULL);
    }
    int same_queue = (PyObject *)Py_TYPE(waiting) == SLOT_OF(state, O_WAITING_TYPE);
    Py_DECREF(waiting);
    long long n = PyLong_AsLongLong(SLOT_OF(state, O_STEP)) + 1;
    long long every = PyLong_AsLongLong(SLOT_OF(state, O_SAMPLE));
    PyObject *light_at = SLOT_OF(state, O_LIGHT_AT);
    if (PyErr_Occurred() || !same_queue || every <= 0 || !PyTuple_CheckExact(light_at) ||
            PyTuple_GET_SIZE(light_at) != every) {
        PyErr_Clear();
        Py_DECREF(sched);
        return PyObject_Vectorcall(SPRE_FALLBACK, args, 3, NULL);
    }
    int light = PyObject_IsTrue(PyTuple_GET_ITEM(light_at, n % every));
    if (light != 0) {
        Py_DECREF(sched);
        if (light < 0)
            return NULL;
        return PyObject_Vectorcall(SPRE_FALLBACK, args, 3, NULL);
    }
    /* the common way from here: S.sched, S.step, S.light, the range */
    PyObject *step = PyLong_FromLongLong(n), *trace = NULL, *span = NULL, *now = NULL, *r = NULL;
    if (step == NULL || (trace = random_id(SPRE_GETRANDBITS, SPRE_BITS128)) == NULL ||
            (span = random_id(SPRE_GETRANDBITS, SPRE_BITS64)) == NULL ||
            (now = now_ns()) == NULL || (r = PyList_New(13)) == NULL) {
        Py_DECREF(sched);
        Py_XDECREF(step);
        Py_XDECREF(trace);
        Py_XDECREF(span);
        Py_XDECREF(now);
        return NULL;
    }
    put(state, O_SCHED, sched);                        /* steals sched */
    put(state, O_STEP, Py_NewRef(step));
    put(state, O_LIGHT, Py_NewRef(Py_False));
    PyObject *items[13] = {SPRE_NAME, SPRE_ROLE, trace, span, SP_ZERO, now, SP_ZERO, step, Py_None, Py_None, Py_None,
                           SPRE_ON_THREAD, Py_None};
    for (int i = 0; i < 13; i++)
        PyList_SET_ITEM(r, i, Py_NewRef(items[i]));
    PyObject_GC_UnTrack(r);                            /* UNTRACKED_RECORDS */
    Py_DECREF(step);
    Py_DECREF(trace);
    Py_DECREF(span);
    Py_DECREF(now);
    put(state, O_CURRENT, Py_NewRef(r));
    return r;
}

/* -- the front end's iteration in C: hooks/front.py's front.step and process_outputs hooks, their common ways -------
 *
 * Offline, fully traced, every ``LLMEngine.step`` runs ``front.step``'s pre and post and ``process_outputs``' pre
 * and post: four Python calls a step, ~6.8 and ~4.6 us per step of the front end's hooks on the 2-core CPU machine
 * and 5.1 and 4.5 on an H100 host (benchmarks/results/h100/issue19_layout), run cold between vLLM's work. Their
 * common ways here: a recorded iteration's range opened as ``front._front_step_pre`` writes it out (no marks) and
 * ended in place as ``_front_step_post`` does; the outputs' bounds kept into the step's range (``INTO_STEP``) as
 * ``_process_outputs_pre`` / ``_post`` do. Every other call goes to those functions (the definitions), before
 * anything is changed. The module's lists (``_identity_done``, ``_front_steps``, ``_sample``, ``_light``,
 * ``_generate``, ``_open_step``, ``_outputs_skipped``, ``PHASE_MARKS``, ``RECORDER``) and ``span_bits`` are held from
 * ``front_bind`` on (``front.bind_c``: the module changes them in place; a test that puts its own there binds them
 * again), not looked up in its dict: those were a dozen lookups a step, each a few cold cache lines. A unit test
 * holds each to its definition on planted calls (tests/unit/test_front_c.py).
 *
 * front_setup(step_pre, step_post, outputs_pre, outputs_post, name, role, on_thread, into_step, trace_id, span_id,
 *             end, nested, data) once: the four definitions, then the range's constants; front_bind(cells) then. */
static PyObject *FR_STEP_PRE, *FR_STEP_POST, *FR_OUT_PRE, *FR_OUT_POST, *FR_NAME, *FR_ROLE, *FR_ON_THREAD,
    *FR_INTO_STEP;
static Py_ssize_t FR_TRACE_ID, FR_SPAN_ID, FR_END, FR_NESTED, FR_DATA;
enum { C_IDENTITY_DONE, C_FRONT_STEPS, C_SAMPLE, C_LIGHT, C_GENERATE, C_OPEN_STEP, C_OUTPUTS_SKIPPED, C_PHASE_MARKS,
       C_RECORDER, C_SPAN_BITS, C_OPEN_REQUESTS, C_CAPTURE, N_CELLS };
static PyObject *FR_CELLS[N_CELLS];   /* front_bind's: the module's lists (and span_bits), held, not looked up */
#define RANGE_FIELDS 13                /* wire.RangeRecord's fields: the list front.step's range is */
#define ATTRS_FIELD 8                  /* its attributes' place (wire.ATTRS; the request hooks' tests hold it there) */

static PyObject *
front_setup(PyObject *module, PyObject *args)
{
    PyObject *step_pre, *step_post, *out_pre, *out_post, *name, *role, *on_thread, *into_step;
    Py_ssize_t trace_id, span_id, end, nested, data;
    if (!PyArg_ParseTuple(args, "OOOOUUOO!nnnnn:front_setup", &step_pre, &step_post, &out_pre, &out_post, &name, &role,
                          &on_thread, &PyLong_Type, &into_step, &trace_id, &span_id, &end, &nested, &data))
        return NULL;
    Py_ssize_t idx[5] = {trace_id, span_id, end, nested, data};
    for (int i = 0; i < 5; i++)
        if (idx[i] < 0 || idx[i] >= RANGE_FIELDS) {
            PyErr_SetString(PyExc_ValueError, "front_setup: a field index outside the range record");
            return NULL;
        }
    PyObject *keep[8] = {step_pre, step_post, out_pre, out_post, name, role, on_thread, into_step};
    PyObject **into[8] = {&FR_STEP_PRE, &FR_STEP_POST, &FR_OUT_PRE, &FR_OUT_POST, &FR_NAME, &FR_ROLE, &FR_ON_THREAD,
                          &FR_INTO_STEP};
    for (int i = 0; i < 8; i++) {
        Py_INCREF(keep[i]);
        Py_XSETREF(*into[i], keep[i]);
    }
    FR_TRACE_ID = trace_id;
    FR_SPAN_ID = span_id;
    FR_END = end;
    FR_NESTED = nested;
    FR_DATA = data;
    Py_RETURN_NONE;
}

/* front_bind((identity_done, front_steps, sample, light, generate, open_step, outputs_skipped, phase_marks, recorder,
 * span_bits, open, capture)): the state the calls read, held until bound again (``open``: the open requests' ranges by
 * id; ``capture``: VLLM_W2EXT_CAPTURE_CONTENT's). */
static PyObject *
front_bind(PyObject *module, PyObject *cells)
{
    if (!PyTuple_CheckExact(cells) || PyTuple_GET_SIZE(cells) != N_CELLS) {
        PyErr_Format(PyExc_TypeError, "front_bind: a tuple of %d", N_CELLS);
        return NULL;
    }
    for (int i = 0; i < N_CELLS; i++) {
        PyObject *v = PyTuple_GET_ITEM(cells, i);
        if (i == C_OPEN_REQUESTS ? !PyDict_CheckExact(v) : i != C_SPAN_BITS && !PyList_CheckExact(v)) {
            PyErr_Format(PyExc_TypeError, "front_bind: item %d is not a %s", i, i == C_OPEN_REQUESTS ? "dict" : "list");
            return NULL;
        }
    }
    for (int i = 0; i < N_CELLS; i++)
        Py_XSETREF(FR_CELLS[i], Py_NewRef(PyTuple_GET_ITEM(cells, i)));
    Py_RETURN_NONE;
}

/* The module's one-element list ``i`` (borrowed), or NULL: not bound, or emptied (the call goes to the definition). */
static inline PyObject *
cell(int i)
{
    PyObject *v = FR_CELLS[i];
    return v != NULL && PyList_GET_SIZE(v) >= 1 ? v : NULL;
}

#define CELL(list) PyList_GET_ITEM((list), 0)

#define FRONT_READY(fallback) \
    if (FR_STEP_PRE == NULL || FR_CELLS[C_SPAN_BITS] == NULL) { \
        PyErr_SetString(PyExc_RuntimeError, "front: front_setup and front_bind were not called"); \
        return NULL; \
    } \
    if (nargs != 3) \
        return PyObject_Vectorcall((fallback), args, nargs, NULL);

static PyObject *
front_step_pre(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    FRONT_READY(FR_STEP_PRE)
    PyObject *done = cell(C_IDENTITY_DONE), *steps = cell(C_FRONT_STEPS), *sample = cell(C_SAMPLE);
    PyObject *light = cell(C_LIGHT), *marks = cell(C_PHASE_MARKS), *generate = FR_CELLS[C_GENERATE];
    PyObject *open = cell(C_OPEN_STEP);
    if (!done || !steps || !sample || !light || !marks || !open || CELL(done) != Py_True ||
            !PyLong_CheckExact(CELL(steps)) ||
            !PyLong_CheckExact(CELL(sample)) || !PyTuple_CheckExact(CELL(light)))
        return PyObject_Vectorcall(FR_STEP_PRE, args, 3, NULL);
    int m = PyObject_IsTrue(CELL(marks));
    if (m != 0)
        return m < 0 ? NULL : PyObject_Vectorcall(FR_STEP_PRE, args, 3, NULL);
    long long n = PyLong_AsLongLong(CELL(steps)), every = PyLong_AsLongLong(CELL(sample));
    if (PyErr_Occurred()) {
        PyErr_Clear();
        return PyObject_Vectorcall(FR_STEP_PRE, args, 3, NULL);
    }
    if (every <= 0 || PyTuple_GET_SIZE(CELL(light)) != every || n < 0 || n == LLONG_MAX)
        return PyObject_Vectorcall(FR_STEP_PRE, args, 3, NULL);
    n += 1;
    PyObject *g = PyList_GET_SIZE(generate) ? PyList_GET_ITEM(generate, PyList_GET_SIZE(generate) - 1) : NULL;
    if (g != NULL && (!PyList_CheckExact(g) || PyList_GET_SIZE(g) != RANGE_FIELDS))
        return PyObject_Vectorcall(FR_STEP_PRE, args, 3, NULL);
    int is_light = PyObject_IsTrue(PyTuple_GET_ITEM(CELL(light), n % every));
    if (is_light < 0)
        return NULL;
    /* the common way from here */
    PyObject *count = PyLong_FromLongLong(n);
    if (count == NULL)
        return NULL;
    PyList_SetItem(steps, 0, count);                /* steals count */
    if (is_light)
        Py_RETURN_NONE;
    PyObject *trace = NULL, *span = NULL, *now = NULL, *r = NULL, *parent;
    if (g != NULL) {
        trace = Py_NewRef(PyList_GET_ITEM(g, FR_TRACE_ID));
        parent = PyList_GET_ITEM(g, FR_SPAN_ID);
    } else {
        trace = random_id(FR_CELLS[C_SPAN_BITS], SPRE_BITS128);
        parent = SP_ZERO;
    }
    Py_INCREF(parent);
    if (trace == NULL || (span = random_id(FR_CELLS[C_SPAN_BITS], SPRE_BITS64)) == NULL || (now = now_ns()) == NULL ||
            (r = PyList_New(RANGE_FIELDS)) == NULL) {
        Py_XDECREF(trace);
        Py_XDECREF(span);
        Py_XDECREF(now);
        Py_DECREF(parent);
        return NULL;
    }
    PyObject *items[RANGE_FIELDS] = {FR_NAME, FR_ROLE, trace, span, parent, now, SP_ZERO, SP_MINUS_ONE, Py_None,
                                     Py_None, Py_None, FR_ON_THREAD, Py_None};
    for (int i = 0; i < RANGE_FIELDS; i++)
        PyList_SET_ITEM(r, i, Py_NewRef(items[i]));
    PyObject_GC_UnTrack(r);                            /* UNTRACKED_RECORDS */
    Py_DECREF(trace);
    Py_DECREF(span);
    Py_DECREF(now);
    Py_DECREF(parent);
    PyList_SetItem(open, 0, Py_NewRef(r));
    return r;
}

static PyObject *
front_step_post(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    FRONT_READY(FR_STEP_POST)
    PyObject *r = args[0];
    PyObject *open = cell(C_OPEN_STEP), *records = cell(C_RECORDER);
    if (!open || !records || args[2] != Py_None || !PyList_CheckExact(r) || PyList_GET_SIZE(r) != RANGE_FIELDS ||
            PyList_GET_ITEM(r, FR_NESTED) != FR_ON_THREAD || CELL(records) == Py_None)
        return PyObject_Vectorcall(FR_STEP_POST, args, 3, NULL);
    PyObject *buf = NULL;
    int room = recorder_room(CELL(records), &buf);
    if (room <= 0)                                 /* full: Recorder's own way */
        return room < 0 ? NULL : PyObject_Vectorcall(FR_STEP_POST, args, 3, NULL);
    PyObject *now = now_ns();
    if (now == NULL) {
        Py_DECREF(buf);
        return NULL;
    }
    PyList_SetItem(open, 0, Py_NewRef(Py_None));
    PyList_SetItem(r, FR_END, now);                /* steals now */
    PyObject *appended = PyObject_CallMethodOneArg(buf, S_APPEND, r);
    Py_DECREF(buf);
    if (appended == NULL)
        return NULL;
    Py_DECREF(appended);
    Py_RETURN_NONE;
}

static PyObject *
process_outputs_pre(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    FRONT_READY(FR_OUT_PRE)
    PyObject *call_args = args[1];
    PyObject *open = cell(C_OPEN_STEP), *marks = cell(C_PHASE_MARKS), *skipped = cell(C_OUTPUTS_SKIPPED);
    if (!open || !marks || !skipped)
        return PyObject_Vectorcall(FR_OUT_PRE, args, 3, NULL);
    PyObject *step = CELL(open);
    if (!PyTuple_CheckExact(call_args) || PyTuple_GET_SIZE(call_args) < 1 || !PyList_CheckExact(step) ||
            PyList_GET_SIZE(step) != RANGE_FIELDS || PyList_GET_ITEM(step, FR_DATA) != Py_None)
        return PyObject_Vectorcall(FR_OUT_PRE, args, 3, NULL);
    int m = PyObject_IsTrue(CELL(marks));
    int k = m == 0 ? PyObject_IsTrue(CELL(skipped)) : 0;
    if (m < 0 || k < 0)
        return NULL;
    if (m || k)
        return PyObject_Vectorcall(FR_OUT_PRE, args, 3, NULL);
    Py_ssize_t n = PyObject_Length(PyTuple_GET_ITEM(call_args, 0));
    if (n < 0) {                                   /* the definition's len() raises it */
        PyErr_Clear();
        return PyObject_Vectorcall(FR_OUT_PRE, args, 3, NULL);
    }
    PyObject *now = now_ns(), *count = now ? PyLong_FromSsize_t(n) : NULL;
    if (count == NULL) {
        Py_XDECREF(now);
        return NULL;
    }
    PyObject *state = PyTuple_Pack(4, now, count, step, FR_INTO_STEP);
    Py_DECREF(now);
    Py_DECREF(count);
    return state;
}

static PyObject *
process_outputs_post(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    FRONT_READY(FR_OUT_POST)
    PyObject *state = args[0];
    if (args[2] != Py_None || !PyTuple_CheckExact(state) || PyTuple_GET_SIZE(state) != 4 ||
            PyTuple_GET_ITEM(state, 3) != FR_INTO_STEP)
        return PyObject_Vectorcall(FR_OUT_POST, args, 3, NULL);
    PyObject *parent = PyTuple_GET_ITEM(state, 2);
    if (!PyList_CheckExact(parent) || PyList_GET_SIZE(parent) != RANGE_FIELDS)
        return PyObject_Vectorcall(FR_OUT_POST, args, 3, NULL);
    PyObject *now = now_ns();
    if (now == NULL)
        return NULL;
    PyObject *phase = PyTuple_Pack(3, PyTuple_GET_ITEM(state, 0), now, PyTuple_GET_ITEM(state, 1));  /* OutputsPhase */
    Py_DECREF(now);
    if (phase == NULL)
        return NULL;
    PyList_SetItem(parent, FR_DATA, phase);        /* steals phase */
    Py_RETURN_NONE;
}

/* -- request_start: front._output_add_request_pre's common way in C ----------------------------------------------
 *
 * ``OutputProcessor.add_request``'s pre, once per request: the request's span opened (a range in RangeRecord order,
 * as ``Recorder.begin`` writes a free-standing one), its attributes, its link to the LLM.generate call around it,
 * kept in ``_open``, and its traceparent stamped into the request's ``trace_headers``. With requests joining all
 * through (~2 a step at 512 requests per step) it was the front end's largest hook: 8.6-13.6 us a request on an H100
 * host, the Python run cold between two prompts' processing (benchmarks/results/h100/issue19_af46a15_by_hook). Its
 * common way here: a request with no trace headers of its own, none given to add_request, no HTTP request's, no active
 * OpenTelemetry span in the caller's context (OTel's context variable read directly) and no NVTX range to open; every
 * other request goes to the definition before anything is changed. A unit test holds the two to the same records and
 * state on planted requests (tests/unit/test_front_c.py).
 *
 * request_setup(fallback, name, role, pending_var, incoming_var, otel_var or None, attr_id, attr_max_tokens,
 *               attr_prompt_tokens, add_request_pre, add_request_post, finish_request_pre, attr_completion_tokens)
 *               once, after front_setup (add_request_pre on: the definitions of the hooks below, and the attribute
 *               the finish writes); its state is front_bind's. */
static PyObject *RQ_FALLBACK, *RQ_NAME, *RQ_ROLE, *RQ_PENDING, *RQ_INCOMING, *RQ_OTEL, *RQ_A_ID, *RQ_A_MAX,
    *RQ_A_PROMPT, *RQ_ADD_PRE, *RQ_ADD_POST, *RQ_FINISH, *RQ_A_COMPLETION;
static PyObject *S_REQUEST_ID, *S_TRACE_HEADERS, *S_SAMPLING_PARAMS, *S_MAX_TOKENS, *S_PROMPT_IDS,
    *S_TRACEPARENT;

static PyObject *
request_setup(PyObject *module, PyObject *args)
{
    PyObject *keep[13];
    if (!PyArg_ParseTuple(args, "OUUOOOUUUOOOU:request_setup", &keep[0], &keep[1], &keep[2], &keep[3], &keep[4],
                          &keep[5], &keep[6], &keep[7], &keep[8], &keep[9], &keep[10], &keep[11], &keep[12]))
        return NULL;
    if (!PyContextVar_CheckExact(keep[3]) || !PyContextVar_CheckExact(keep[4]) ||
            (keep[5] != Py_None && !PyContextVar_CheckExact(keep[5]))) {
        PyErr_SetString(PyExc_TypeError, "request_setup: pending, incoming (and otel, unless None): ContextVars");
        return NULL;
    }
    PyObject **into[13] = {&RQ_FALLBACK, &RQ_NAME, &RQ_ROLE, &RQ_PENDING, &RQ_INCOMING, &RQ_OTEL, &RQ_A_ID,
                           &RQ_A_MAX, &RQ_A_PROMPT, &RQ_ADD_PRE, &RQ_ADD_POST, &RQ_FINISH, &RQ_A_COMPLETION};
    for (int i = 0; i < 13; i++)
        Py_XSETREF(*into[i], Py_NewRef(keep[i]));
    Py_RETURN_NONE;
}

/* A context variable's value is true (1), false or unset (0), or -1 with an error. */
static int
var_true(PyObject *var)
{
    PyObject *v = NULL;
    if (PyContextVar_Get(var, NULL, &v) < 0)
        return -1;
    if (v == NULL)
        return 0;
    int t = PyObject_IsTrue(v);
    Py_DECREF(v);
    return t;
}

/* Write v's low 4 * n bits as n lowercase hex digits at out. */
static void
hex_digits(char *out, unsigned long long v, int n)
{
    for (int i = n - 1; i >= 0; i--, v >>= 4)
        out[i] = "0123456789abcdef"[v & 15];
}

/* The W3C traceparent of a sampled span, "00-<32 hex trace id>-<16 hex span id>-01" (propagation.traceparent's
 * format, written here: %-formatting a 128-bit int took ~3.9k instructions a request; a unit test holds the two
 * equal), or NULL with an error (an id that is not an int in range). */
static PyObject *
traceparent(PyObject *trace, PyObject *span)
{
    unsigned long long lo = PyLong_AsUnsignedLongLongMask(trace), s = PyLong_AsUnsignedLongLong(span);
    if (PyErr_Occurred())
        return NULL;
    PyObject *high = PyNumber_Rshift(trace, SPRE_BITS64);
    if (high == NULL)
        return NULL;
    unsigned long long hi = PyLong_AsUnsignedLongLong(high);
    Py_DECREF(high);
    if (PyErr_Occurred())
        return NULL;
    char buf[55] = "00-";
    hex_digits(buf + 3, hi, 16);
    hex_digits(buf + 19, lo, 16);
    buf[35] = '-';
    hex_digits(buf + 36, s, 16);
    memcpy(buf + 52, "-01", 3);
    return PyUnicode_FromKindAndData(PyUnicode_1BYTE_KIND, buf, 55);
}

static PyObject *
traceparent_py(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyLong_Check(args[0]) || !PyLong_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "traceparent(trace_id, span_id): two ints");
        return NULL;
    }
    return traceparent(args[0], args[1]);
}

static PyObject *
request_start(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (RQ_FALLBACK == NULL || FR_CELLS[C_SPAN_BITS] == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "request_start: front_bind and request_setup were not called");
        return NULL;
    }
    if (nargs != 3 || !PyTuple_CheckExact(args[1]) || PyTuple_GET_SIZE(args[1]) < 1)
        return PyObject_Vectorcall(RQ_FALLBACK, args, nargs, NULL);
    PyObject *request = PyTuple_GET_ITEM(args[1], 0), *open = FR_CELLS[C_OPEN_REQUESTS];
    PyObject *records = cell(C_RECORDER), *generate = FR_CELLS[C_GENERATE];
    if (open == NULL || records == NULL || CELL(records) == Py_None)
        return PyObject_Vectorcall(RQ_FALLBACK, args, nargs, NULL);
    PyObject *rid = PyObject_GetAttr(request, S_REQUEST_ID);
    if (rid == NULL)
        return NULL;
    PyObject *pending = NULL, *theirs = NULL, *nvtx = NULL, *out = NULL, *params = NULL, *max_tokens = NULL;
    PyObject *ptoks = NULL, *attrs = NULL, *trace = NULL, *span = NULL, *links = NULL, *r = NULL, *tp = NULL;
    PyObject *headers = NULL, *n_prompt = NULL;
    int known = PyDict_Contains(open, rid);
    if (known != 0) {                               /* a streaming-input continuation of a known request */
        out = known < 0 ? NULL : Py_NewRef(Py_None);
        goto done;
    }
    if (PyContextVar_Get(RQ_PENDING, NULL, &pending) < 0 ||
            ((theirs = attr_or_null(request, S_TRACE_HEADERS)) == NULL && PyErr_Occurred()))
        goto done;
    int own = theirs ? PyObject_IsTrue(theirs) : 0;
    if (own < 0)
        goto done;
    int given = 0;                                  /* the headers given to add_request */
    if (pending != NULL && pending != Py_None) {
        if (!PyList_CheckExact(pending) || PyList_GET_SIZE(pending) != 3)
            given = 1;
        else if ((given = PyObject_IsTrue(PyList_GET_ITEM(pending, 1))) < 0)
            goto done;
    }
    int incoming = own || given ? 1 : var_true(RQ_INCOMING);
    int ambient = incoming ? 1 : RQ_OTEL == Py_None ? 1 : var_true(RQ_OTEL);
    if (incoming < 0 || ambient < 0)
        goto done;
    PyObject *g = PyList_GET_SIZE(generate) ? PyList_GET_ITEM(generate, PyList_GET_SIZE(generate) - 1) : NULL;
    int other = ambient || (g != NULL && (!PyList_CheckExact(g) || PyList_GET_SIZE(g) != RANGE_FIELDS));
    if (!other) {
        if ((nvtx = attr_get(CELL(records), A_NVTX)) == NULL)
            goto done;
        other = nvtx != Py_None;
    }
    if (other) {                                    /* a parent to look for, or an NVTX range: the definition's */
        out = PyObject_Vectorcall(RQ_FALLBACK, args, nargs, NULL);
        goto done;
    }
    /* the common way from here: a root span (no parent), linked to the LLM.generate call around it, if any */
    if ((attrs = PyDict_New()) == NULL || PyDict_SetItem(attrs, RQ_A_ID, rid) < 0 ||
            ((params = attr_or_null(request, S_SAMPLING_PARAMS)) == NULL && PyErr_Occurred()))
        goto done;
    if (params != NULL && params != Py_None) {
        if ((max_tokens = PyObject_GetAttr(params, S_MAX_TOKENS)) == NULL)
            goto done;
        int some = PyObject_IsTrue(max_tokens);
        if (some < 0 || PyDict_SetItem(attrs, RQ_A_MAX, some ? max_tokens : SP_ZERO) < 0)
            goto done;
    }
    if ((ptoks = attr_or_null(request, S_PROMPT_IDS)) == NULL && PyErr_Occurred())
        goto done;
    if (ptoks != NULL && ptoks != Py_None) {
        Py_ssize_t n = PyObject_Length(ptoks);
        if (n < 0 || (n_prompt = PyLong_FromSsize_t(n)) == NULL || PyDict_SetItem(attrs, RQ_A_PROMPT, n_prompt) < 0)
            goto done;
    }
    PyObject *start = pending != NULL && pending != Py_None ? PyList_GET_ITEM(pending, 0) : NULL;
    PyObject *now = start == NULL ? now_ns() : Py_NewRef(start);
    if (now == NULL)
        goto done;
    trace = random_id(FR_CELLS[C_SPAN_BITS], SPRE_BITS128);
    span = trace ? random_id(FR_CELLS[C_SPAN_BITS], SPRE_BITS64) : NULL;
    if (span != NULL && g != NULL) {
        PyObject *ctx = PyTuple_Pack(2, PyList_GET_ITEM(g, FR_TRACE_ID), PyList_GET_ITEM(g, FR_SPAN_ID));
        links = ctx ? PyList_New(1) : NULL;
        if (links != NULL)
            PyList_SET_ITEM(links, 0, ctx);         /* steals ctx */
        else
            Py_XDECREF(ctx);
    }
    if (span == NULL || (g != NULL && links == NULL) || (r = PyList_New(RANGE_FIELDS)) == NULL) {
        Py_DECREF(now);
        goto done;
    }
    PyObject *items[RANGE_FIELDS] = {RQ_NAME, RQ_ROLE, trace, span, SP_ZERO, now, SP_ZERO, SP_MINUS_ONE, attrs,
                                     links ? links : Py_None, Py_None, Py_False, Py_None};
    for (int i = 0; i < RANGE_FIELDS; i++)
        PyList_SET_ITEM(r, i, Py_NewRef(items[i]));
    PyObject_GC_UnTrack(r);                            /* UNTRACKED_RECORDS */
    Py_DECREF(now);
    if (pending != NULL && pending != Py_None && PyList_GET_ITEM(pending, 2) == Py_None &&
            PyList_SetItem(pending, 2, Py_NewRef(r)) < 0)
        goto done;
    if (PyDict_SetItem(open, rid, r) < 0 || (tp = traceparent(trace, span)) == NULL ||
            (headers = PyDict_New()) == NULL || PyDict_SetItem(headers, S_TRACEPARENT, tp) < 0 ||
            PyObject_SetAttr(request, S_TRACE_HEADERS, headers) < 0)
        goto done;
    out = Py_NewRef(Py_None);
done:
    Py_DECREF(rid);
    Py_XDECREF(pending);
    Py_XDECREF(theirs);
    Py_XDECREF(nvtx);
    Py_XDECREF(params);
    Py_XDECREF(max_tokens);
    Py_XDECREF(ptoks);
    Py_XDECREF(n_prompt);
    Py_XDECREF(attrs);
    Py_XDECREF(trace);
    Py_XDECREF(span);
    Py_XDECREF(links);
    Py_XDECREF(r);
    Py_XDECREF(tp);
    Py_XDECREF(headers);
    return out;
}

/* add_request_pre / add_request_post: front._add_request_pre / _add_request_post's common ways in C. Around each
 * LLMEngine.add_request / AsyncLLM.add_request: when the request's input processing started, kept in the ``_pending``
 * context variable for its start hook, and its end written into the request's range after it (the export side makes
 * the front.add_request span of it). Their common ways: no trace headers given to add_request (the incoming HTTP
 * request's, if any, are kept as the definition keeps them) and, after it, a request range still open; every other
 * call goes to the definitions before anything is changed (tests/unit/test_front_c.py). */
static PyObject *
add_request_pre(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (RQ_ADD_PRE == NULL || FR_CELLS[C_SPAN_BITS] == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "add_request_pre: front_bind and request_setup were not called");
        return NULL;
    }
    PyObject *done = cell(C_IDENTITY_DONE);
    if (nargs != 3 || done == NULL || CELL(done) != Py_True || !PyDict_CheckExact(args[2]))
        return PyObject_Vectorcall(RQ_ADD_PRE, args, nargs, NULL);
    PyObject *headers = PyDict_GetItemWithError(args[2], S_TRACE_HEADERS);     /* borrowed */
    if (headers == NULL && PyErr_Occurred())
        return NULL;
    int given = headers ? PyObject_IsTrue(headers) : 0;
    if (given != 0)
        return given < 0 ? NULL : PyObject_Vectorcall(RQ_ADD_PRE, args, nargs, NULL);
    PyObject *incoming = NULL, *now = NULL, *pending = NULL, *token = NULL, *out = NULL;
    if (PyContextVar_Get(RQ_INCOMING, Py_None, &incoming) < 0 || (now = now_ns()) == NULL ||
            (pending = PyList_New(3)) == NULL)
        goto done;
    PyList_SET_ITEM(pending, 0, Py_NewRef(now));
    PyList_SET_ITEM(pending, 1, Py_NewRef(incoming));
    PyList_SET_ITEM(pending, 2, Py_NewRef(Py_None));
    if ((token = PyContextVar_Set(RQ_PENDING, pending)) == NULL)
        goto done;
    out = PyTuple_Pack(2, token, pending);
done:
    Py_XDECREF(incoming);
    Py_XDECREF(now);
    Py_XDECREF(pending);
    Py_XDECREF(token);
    return out;
}

static PyObject *
add_request_post(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (RQ_ADD_POST == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "add_request_post: request_setup was not called");
        return NULL;
    }
    PyObject *state = nargs == 3 ? args[0] : NULL;
    if (state == NULL || !PyTuple_CheckExact(state) || PyTuple_GET_SIZE(state) != 2 ||
            !PyList_CheckExact(PyTuple_GET_ITEM(state, 1)) || PyList_GET_SIZE(PyTuple_GET_ITEM(state, 1)) != 3)
        return PyObject_Vectorcall(RQ_ADD_POST, args, nargs, NULL);
    PyObject *req = PyList_GET_ITEM(PyTuple_GET_ITEM(state, 1), 2);
    if (req != Py_None) {                           /* its range: still open (the common way), or ended already */
        if (!PyList_CheckExact(req) || PyList_GET_SIZE(req) != RANGE_FIELDS)
            return PyObject_Vectorcall(RQ_ADD_POST, args, nargs, NULL);
        int ended = PyObject_IsTrue(PyList_GET_ITEM(req, FR_END));
        if (ended != 0)
            return ended < 0 ? NULL : PyObject_Vectorcall(RQ_ADD_POST, args, nargs, NULL);
    }
    Py_INCREF(req);
    if (PyContextVar_Reset(RQ_PENDING, PyTuple_GET_ITEM(state, 0)) < 0) {
        Py_DECREF(req);
        return NULL;
    }
    if (req != Py_None) {                           /* steps.assemble: the add_request span's end */
        PyObject *now = now_ns();
        if (now == NULL || PyList_SetItem(req, FR_DATA, now) < 0) {
            Py_DECREF(req);
            return NULL;
        }
    }
    Py_DECREF(req);
    Py_RETURN_NONE;
}

/* finish_request_pre: front._finish_request_pre's common way in C. ``OutputProcessor._finish_request``'s pre, once
 * per request: its range taken out of ``_open``, its completion tokens counted (the detokenizer's
 * ``num_output_tokens()``) and the range ended into the recorder's buffer, as ``Recorder.end`` ends a free-standing
 * one. Its common way: prompts not captured, no NVTX range to end, room in the buffer, a detokenizer with that count;
 * any other call goes to the definition before anything is changed (tests/unit/test_front_c.py). */
static PyObject *S_DETOKENIZER, *S_NUM_OUTPUT_TOKENS;

static PyObject *
finish_request_pre(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (RQ_FINISH == NULL || FR_CELLS[C_SPAN_BITS] == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "finish_request_pre: front_bind and request_setup were not called");
        return NULL;
    }
    PyObject *open = FR_CELLS[C_OPEN_REQUESTS], *records = cell(C_RECORDER), *capture = cell(C_CAPTURE);
    if (nargs != 3 || !PyTuple_CheckExact(args[1]) || PyTuple_GET_SIZE(args[1]) < 1 || open == NULL ||
            records == NULL || capture == NULL || CELL(capture) != Py_False || CELL(records) == Py_None)
        return PyObject_Vectorcall(RQ_FINISH, args, nargs, NULL);
    PyObject *state = PyTuple_GET_ITEM(args[1], 0);
    PyObject *rid = PyObject_GetAttr(state, S_REQUEST_ID);
    if (rid == NULL)
        return NULL;
    PyObject *r = PyDict_GetItemWithError(open, rid), *nvtx = NULL, *detok = NULL, *count = NULL, *n = NULL;
    PyObject *buf = NULL, *now = NULL, *appended = NULL, *out = NULL;
    if (r == NULL) {                               /* not a request this process opened a range for */
        out = PyErr_Occurred() ? NULL : Py_NewRef(Py_None);
        goto done;
    }
    Py_INCREF(r);
    int room = -1;
    if ((nvtx = attr_get(CELL(records), A_NVTX)) == NULL ||
            ((detok = attr_or_null(state, S_DETOKENIZER)) == NULL && PyErr_Occurred()) ||
            (detok != NULL && (count = attr_or_null(detok, S_NUM_OUTPUT_TOKENS)) == NULL && PyErr_Occurred()))
        goto done;
    if (nvtx == Py_None && count != NULL && PyList_CheckExact(r) && PyList_GET_SIZE(r) == RANGE_FIELDS &&
            PyList_GET_ITEM(r, FR_NESTED) == Py_False && PyDict_CheckExact(PyList_GET_ITEM(r, ATTRS_FIELD)))
        room = recorder_room(CELL(records), &buf);
    if (room < 0 && PyErr_Occurred())
        goto done;
    if (room <= 0) {                               /* the definition's */
        out = PyObject_Vectorcall(RQ_FINISH, args, nargs, NULL);
        goto done;
    }
    /* the common way from here */
    if (PyDict_DelItem(open, rid) < 0 || (n = PyObject_CallNoArgs(count)) == NULL ||
            PyDict_SetItem(PyList_GET_ITEM(r, ATTRS_FIELD), RQ_A_COMPLETION, n) < 0 || (now = now_ns()) == NULL)
        goto done;
    PyList_SetItem(r, FR_END, now);                /* steals now */
    now = NULL;
    if ((appended = PyObject_CallMethodOneArg(buf, S_APPEND, r)) == NULL)
        goto done;
    out = Py_NewRef(Py_None);
done:
    Py_DECREF(rid);
    Py_XDECREF(r);
    Py_XDECREF(nvtx);
    Py_XDECREF(detok);
    Py_XDECREF(count);
    Py_XDECREF(n);
    Py_XDECREF(buf);
    Py_XDECREF(now);
    Py_XDECREF(appended);
    return out;
}

/* -- free_request_pre: engine_core._free_request_pre in C ------------------------------------------------------
 *
 * ``engine.free_request`` (``Scheduler._free_request(request)``, once per finished request: ~1.4 a step at 512 requests
 * with churn): the request's Finished tuple (id, its status's ``_name_``, output tokens) appended to ``S.finished``,
 * as the definition appends it, without its Python frame. A keyword call, or a state not the hooks' (or its
 * ``finished`` not a list) goes to the definition; an attribute the request lacks raises, as there. A unit test holds
 * the two to the same tuples (tests/unit/test_step_post_c.py).
 *
 * free_request_setup(fallback) once, after step_post_setup. */
static PyObject *FREE_FALLBACK, *S_STATUS, *S_ENUM_NAME;

static PyObject *
free_request_setup(PyObject *module, PyObject *fallback)
{
    if (SP_GLOBALS == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "free_request_setup: step_post_setup first");
        return NULL;
    }
    Py_INCREF(fallback);
    Py_XSETREF(FREE_FALLBACK, fallback);
    Py_RETURN_NONE;
}

static PyObject *
free_request_pre(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (FREE_FALLBACK == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "free_request_pre: free_request_setup was not called");
        return NULL;
    }
    PyObject *state = global_of(G_S);
    if (state == NULL && PyErr_Occurred())
        return NULL;
    if (nargs != 3 || !PyTuple_CheckExact(args[1]) || PyTuple_GET_SIZE(args[1]) < 1 || state == NULL ||
            Py_TYPE(state) != SP_STATE_TYPE || SLOT_OF(state, O_FINISHED) == NULL ||
            !PyList_CheckExact(SLOT_OF(state, O_FINISHED)))
        return PyObject_Vectorcall(FREE_FALLBACK, args, nargs, NULL);
    PyObject *request = PyTuple_GET_ITEM(args[1], 0);
    PyObject *rid = PyObject_GetAttr(request, S_REQUEST_ID), *status = NULL, *name = NULL, *n = NULL, *t = NULL;
    PyObject *out = NULL;
    if (rid == NULL || (status = PyObject_GetAttr(request, S_STATUS)) == NULL ||
            (name = PyObject_GetAttr(status, S_ENUM_NAME)) == NULL ||
            (n = PyObject_GetAttr(request, S_NUM_OUTPUT_TOKENS)) == NULL || (t = PyTuple_Pack(3, rid, name, n)) == NULL)
        goto done;
    PyObject_GC_UnTrack(t);                        /* a record: no cycle through it (UNTRACKED_RECORDS) */
    if (PyList_Append(SLOT_OF(state, O_FINISHED), t) == 0)
        out = Py_NewRef(Py_None);                  /* nothing for a post */
done:
    Py_XDECREF(rid);
    Py_XDECREF(status);
    Py_XDECREF(name);
    Py_XDECREF(n);
    Py_XDECREF(t);
    return out;
}

/* -- scheduled: engine_core.scheduled's common way in C -----------------------------------------------------------
 *
 * ``engine.schedule``'s consumer (its bounds hook's buffer's ``append``, called by the C front once per schedule): on
 * a recorded step whose schedule ended without an error, with no request prefilling or preempted before it and not
 * every id wanted, the schedule is taken here as ``scheduled`` takes it: the bounds kept, the Stamp set on the
 * SchedulerOutput, and the StepFacts: of counts for the steady decode (nothing new or preempted, one token each), else
 * from the module's ``_read_facts`` (new requests, prompt chunks, preemptions: where requests finish and join all
 * through, most steps). Everything else (a light step, a request prefilling or preempted before, an error, marks
 * handed on) goes to ``scheduled`` (the definition) before anything is changed. A fault once it has begun goes to
 * the module's ``_fail_schedule``, as the definition's does. A unit test holds the two to the same state and stamp on
 * planted schedules (tests/unit/test_step_post_c.py).
 *
 * scheduled_setup(fallback, trace_id, span_id, start) once, after step_post_setup. */
static PyObject *SC_FALLBACK, *S_FAIL_SCHEDULE, *S_READ_FACTS, *S_NST, *S_NEW_REQS, *S_PREEMPTED_IDS, *S_FINISHED_IDS;
static Py_ssize_t SC_TRACE_ID = -1, SC_SPAN_ID, SC_START;
/* The last steady decode's StepFacts and its four counts (total, finished, running, waiting): a steady decode with the
 * same counts (every step of a steady batch with no queue moving) takes the same tuple, made once, where each step
 * made a 12-tuple that its record then held until the export thread took it (a collection's count rises with every
 * container made and kept: benchmarks/results/cpu/export_wait). */
static PyObject *SC_STEADY;
static Py_ssize_t SC_STEADY_N[4] = {-1, -1, -1, -1};

static PyObject *
scheduled_setup(PyObject *module, PyObject *args)
{
    PyObject *fallback;
    Py_ssize_t trace_id, span_id, start;
    if (!PyArg_ParseTuple(args, "Onnn:scheduled_setup", &fallback, &trace_id, &span_id, &start))
        return NULL;
    if (SP_GLOBALS == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "scheduled_setup: step_post_setup first");
        return NULL;
    }
    Py_INCREF(fallback); Py_XSETREF(SC_FALLBACK, fallback);
    SC_TRACE_ID = trace_id;
    SC_SPAN_ID = span_id;
    SC_START = start;
    Py_RETURN_NONE;
}

/* Is obj's attribute ``name`` true? 1, 0, or -1 with an error. */
static int
attr_true(PyObject *obj, PyObject *name)
{
    PyObject *v = PyObject_GetAttr(obj, name);
    if (v == NULL)
        return -1;
    int t = PyObject_IsTrue(v);
    Py_DECREF(v);
    return t;
}

static PyObject *
scheduled_c(PyObject *module, PyObject *bounds)
{
    if (SC_FALLBACK == NULL || SC_TRACE_ID < 0) {
        PyErr_SetString(PyExc_RuntimeError, "scheduled: scheduled_setup was not called");
        return NULL;
    }
    PyObject *state = global_of(G_S);
    if (state == NULL) {
        if (PyErr_Occurred())
            return NULL;
        return PyObject_CallOneArg(SC_FALLBACK, bounds);
    }
    if (!state_complete(state) || !PyTuple_CheckExact(bounds) || PyTuple_GET_SIZE(bounds) != 4)
        return PyObject_CallOneArg(SC_FALLBACK, bounds);
    PyObject *t0 = PyTuple_GET_ITEM(bounds, 0), *end = PyTuple_GET_ITEM(bounds, 1), *so = PyTuple_GET_ITEM(bounds, 2);
    PyObject *step = SLOT_OF(state, O_CURRENT), *prefilling = SLOT_OF(state, O_PREFILLING);
    PyObject *preempted = SLOT_OF(state, O_PREEMPTED), *sched = SLOT_OF(state, O_SCHED);
    if (SLOT_OF(state, O_LIGHT) != Py_False || PyTuple_GET_ITEM(bounds, 3) != Py_None || so == Py_None ||
            !PyList_CheckExact(step) || PyList_GET_SIZE(step) <= SC_START || PyList_GET_SIZE(step) <= SC_TRACE_ID ||
            PyList_GET_SIZE(step) <= SC_SPAN_ID || !PyAnySet_Check(prefilling) || PySet_GET_SIZE(prefilling) ||
            !PyAnySet_Check(preempted) || PySet_GET_SIZE(preempted) || SLOT_OF(state, O_ALL_LINKS) != Py_False ||
            sched == Py_None)
        return PyObject_CallOneArg(SC_FALLBACK, bounds);
    /* the steady decode? read before anything is changed (else the definition reads it all again) */
    PyObject *nst = PyObject_GetAttr(so, S_NST), *total = nst ? PyObject_GetAttr(so, S_TOTAL) : NULL;
    PyObject *finished = total ? PyObject_GetAttr(so, S_FINISHED_IDS) : NULL;
    PyObject *running = finished ? PyObject_GetAttr(sched, S_RUNNING) : NULL;
    PyObject *waiting = running ? PyObject_GetAttr(sched, S_WAITING) : NULL;
    PyObject *stamp = NULL, *facts = NULL, *out = NULL, *read_facts = NULL;
    Py_ssize_t n_total = -1, n_nst = -1, n_finished = -1, n_running = -1, n_waiting = -1;
    int steady = -1;                            /* 1 the steady decode, 0 another batch (read_facts), -1 unreadable */
    if (waiting != NULL && PyLong_CheckExact(total) && (n_total = PyLong_AsSsize_t(total)) >= 0 &&
            (n_nst = PyObject_Length(nst)) >= 0) {
        int fresh = n_nst == n_total ? attr_true(so, S_NEW_REQS) : 1;
        int pre = fresh == 0 ? attr_true(so, S_PREEMPTED_IDS) : fresh;
        if (pre == 0) {
            n_finished = PyObject_Length(finished);
            n_running = n_finished >= 0 ? PyObject_Length(running) : -1;
            n_waiting = n_running >= 0 ? waiting_count(SLOT_OF(state, O_WAITING_LEN), waiting) : -1;
            steady = n_waiting >= 0 ? 1 : -1;
        } else if (pre > 0) {                   /* new requests, prompt chunks or preemptions: the facts read by
                                                   the module's _read_facts, as the definition reads them */
            read_facts = Py_XNewRef(PyDict_GetItemWithError(SP_GLOBALS, S_READ_FACTS));
            steady = read_facts != NULL ? 0 : -1;
        }
    }
    if (steady < 0) {                           /* an attribute it could not read: the definition's */
        PyErr_Clear();
        out = PyObject_CallOneArg(SC_FALLBACK, bounds);
        goto done;
    }
    /* the common way from here: a fault goes to fail, as the definition's does */
    stamp = PyTuple_Pack(10, PyList_GET_ITEM(step, SC_TRACE_ID), PyList_GET_ITEM(step, SC_SPAN_ID),
                         SLOT_OF(state, O_STEP), t0, end, SLOT_OF(state, O_UPDATE_START), SLOT_OF(state, O_UPDATE_END),
                         SLOT_OF(state, O_PREV_STEP_END), PyList_GET_ITEM(step, SC_START), SLOT_OF(state, O_PENDING));
    if (stamp == NULL)
        goto fault;
    put(state, O_SCHEDULE_START, Py_NewRef(t0));
    put(state, O_SCHEDULE_END, Py_NewRef(end));
    put(state, O_STAMP, Py_NewRef(stamp));
    if (PyObject_SetAttr(so, SP_STAMP_ATTR, stamp) < 0)
        goto fault;
    if (!steady)
        facts = PyObject_CallOneArg(read_facts, so);
    else if (SC_STEADY != NULL && SC_STEADY_N[0] == n_total && SC_STEADY_N[1] == n_finished &&
             SC_STEADY_N[2] == n_running && SC_STEADY_N[3] == n_waiting)
        facts = Py_NewRef(SC_STEADY);           /* the same counts as the last steady decode: its StepFacts again */
    else if ((facts = Py_BuildValue("(nin()()in()()Onn)", n_total, 0, n_total, 0, n_finished, Py_None,  /* StepFacts */
                                    n_running, n_waiting)) != NULL) {
        PyObject_GC_UnTrack(facts);             /* counts alone: no cycle (UNTRACKED_RECORDS) */
        Py_XSETREF(SC_STEADY, Py_NewRef(facts));
        Py_ssize_t n[4] = {n_total, n_finished, n_running, n_waiting};
        memcpy(SC_STEADY_N, n, sizeof n);
    }
    if (facts == NULL)
        goto fault;
    put(state, O_FACTS, facts);                 /* steals facts */
    out = Py_NewRef(Py_None);
    goto done;
fault: {
        PyObject *type, *value, *tb;
        fetch_exception(&type, &value, &tb);
        Py_XDECREF(type);
        Py_XDECREF(tb);
        PyObject *fail = PyDict_GetItemWithError(SP_GLOBALS, S_FAIL_SCHEDULE);
        out = fail ? PyObject_CallOneArg(fail, value ? value : Py_None) : NULL;
        if (fail == NULL && !PyErr_Occurred())
            PyErr_SetString(PyExc_RuntimeError, "scheduled: the hooks' module has no _fail_schedule");
        Py_XDECREF(value);
    }
done:
    Py_XDECREF(nst);
    Py_XDECREF(total);
    Py_XDECREF(finished);
    Py_XDECREF(running);
    Py_XDECREF(waiting);
    Py_XDECREF(stamp);
    Py_XDECREF(read_facts);
    return out;
}

/* gc_phase(phase, info): gc.callbacks' call at each collection's start and stop: their time into GC_TICKS. */
static PyObject *
gc_phase(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs >= 1 && PyUnicode_Check(args[0])) {
        if (PyUnicode_CompareWithASCIIString(args[0], "start") == 0) {
            GC_START = TICKS();
        } else if (GC_START && PyUnicode_CompareWithASCIIString(args[0], "stop") == 0) {
            GC_TICKS += TICKS() - GC_START;
            GC_START = 0;
            GC_COUNT++;
        }
    }
    Py_RETURN_NONE;
}

/* collected() -> (ticks, sections): the collections inside fronts' timed sections (left out of the direct counter),
 * in its ticks, and how many sections had one. */
static PyObject *
collected(PyObject *module, PyObject *unused)
{
    return Py_BuildValue("(LL)", GC_IN_FRONTS, GC_IN_FRONTS_N);
}

/* collections() -> (ticks, count): every collection gc_phase timed in this process, on any thread, since it was put in
 * gc.callbacks (vLLM's own and those the plugin's allocations set off alike): the own counters'
 * vllm_w2ext_python_gc_seconds_total. */
static PyObject *
collections(PyObject *module, PyObject *unused)
{
    return Py_BuildValue("(LL)", GC_TICKS, GC_COUNT);
}

/* freed() -> (ticks, calls): the time fronts spent releasing what the step's post buried (vLLM's frees, ``bury``), in
 * the direct counter's ticks, and how many releases. */
static PyObject *
freed(PyObject *module, PyObject *unused)
{
    return Py_BuildValue("(LL)", FREED_TICKS, FREED_CALLS);
}

/* release_buried(): drop what posts called outside any front buried (tests: a front does it after its timed section,
 * and a post outside one buries up to GRAVE_MAX before it frees where it takes). */
static PyObject *
release_buried(PyObject *module, PyObject *unused)
{
    release();
    Py_RETURN_NONE;
}

/* Is ``o`` (an exact int) 0? Read in place, no call: its compact value (3.12 on), its size (before). */
static inline int
exact_int_is_zero(PyObject *o)
{
#if PY_VERSION_HEX >= 0x030C0000
    return PyUnstable_Long_IsCompact((PyLongObject *)o) && PyUnstable_Long_CompactValue((PyLongObject *)o) == 0;
#else
    return Py_SIZE(o) == 0;
#endif
}

/* zero_positions(counts): ``steps.facts.zero_positions`` in C, the positions of the items equal to 0, in order.
 * ``read_step`` looks for them in the batch's ``num_output_tokens`` (requests short of their first token) on every
 * step that brings new requests: with requests joining all through, most steps at ~500 requests per step. There
 * ``list.index(0)`` compares each of the batch's counts with 0 through the rich comparison, ~20 ns a request even
 * warm (11.3 µs a step at 512 with two zeros on the CPU machine: benchmarks/results/cpu/read_step_zeros). Here an
 * exact int is read where it lies (``exact_int_is_zero``); anything else is compared as
 * ``list.index`` compares it (``item == 0``, its error raised). A unit test holds it to the definition
 * (tests/unit/test_steps_facts.py). */
static PyObject *
zero_positions(PyObject *module, PyObject *counts)
{
    PyObject *seq = PySequence_Fast(counts, "zero_positions: a sequence of counts");
    if (seq == NULL)
        return NULL;
    PyObject *out = PyList_New(0);
    if (out == NULL) {
        Py_DECREF(seq);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        int zero;
        if (PyLong_CheckExact(item)) {
            zero = exact_int_is_zero(item);
        } else {
            Py_INCREF(item);
            zero = PyObject_RichCompareBool(item, SP_ZERO, Py_EQ);
            Py_DECREF(item);
        }
        if (zero < 0)
            goto fail;
        if (zero) {
            PyObject *at = PyLong_FromSsize_t(i);
            if (at == NULL || PyList_Append(out, at) < 0) {
                Py_XDECREF(at);
                goto fail;
            }
            Py_DECREF(at);
        }
    }
    Py_DECREF(seq);
    return out;
fail:
    Py_DECREF(seq);
    Py_DECREF(out);
    return NULL;
}

static PyMethodDef module_methods[] = {
    {"zero_positions", zero_positions, METH_O,
     "zero_positions(counts): steps.facts.zero_positions in C (the positions of the items equal to 0)"},
    {"release_buried", release_buried, METH_NOARGS,
     "drop what posts called outside any front buried (as a front does after its timed section)"},
    {"gc_phase", (PyCFunction)(void (*)(void))gc_phase, METH_FASTCALL,
     "gc_phase(phase, info): for gc.callbacks, each collection's time (left out of the fronts' direct counter)"},
    {"collections", collections, METH_NOARGS,
     "(ticks, count): every collection timed by gc_phase in this process, any thread"},
    {"collected", collected, METH_NOARGS,
     "(ticks, sections): Python's collections inside fronts' timed sections, left out of their direct counter"},
    {"freed", freed, METH_NOARGS,
     "(ticks, calls): fronts' releases of vLLM's objects the step's post took from the bounds buffers (bury)"},
    {"clock", clock_now, METH_NOARGS,
     "((ticks, ns) at import, (ticks, ns) now): the rate of a Front's ``spent`` ticks in ns"},
    {"worker_bounds_setup", worker_bounds_setup, METH_VARARGS,
     "worker_bounds_setup(executions, forwards, launches, samples, mode, stamp_step): the buffers and the Mode read"},
    {"free_request_setup", free_request_setup, METH_O,
     "free_request_setup(fallback): engine_core._free_request_pre, for the calls free_request_pre does not take"},
    {"free_request_pre", (PyCFunction)(void (*)(void))free_request_pre, METH_FASTCALL,
     "free_request_pre(sched, args, kwargs): engine_core._free_request_pre in C, else that function"},
    {"hold_global", (PyCFunction)(void (*)(void))hold_global, METH_FASTCALL,
     "hold_global(name[, value]): the engine_core global the step's hooks hold is now value (none: deleted)"},
    {"step_post_setup", step_post_setup, METH_VARARGS,
     "step_post_setup(module_dict, state_type, fallback, stamp_attr, stamp_step, nested, data, end, deque_type)"},
    {"step_post", (PyCFunction)(void (*)(void))step_post, METH_FASTCALL,
     "step_post(r, result, error): engine_core._step_post's common way in C, else that function"},
    {"step_pre_setup", step_pre_setup, METH_VARARGS,
     "step_pre_setup(fallback, getrandbits, name, role, on_thread), after step_post_setup"},
    {"step_pre", (PyCFunction)(void (*)(void))step_pre, METH_FASTCALL,
     "step_pre(core, args, kwargs): engine_core._step_pre's common way in C, else that function"},
    {"scheduled_setup", scheduled_setup, METH_VARARGS,
     "scheduled_setup(fallback, trace_id, span_id, start), after step_post_setup"},
    {"scheduled", scheduled_c, METH_O,
     "scheduled(bounds): engine_core.scheduled's common way in C (a recorded step's schedule), else that function"},
    {"slots_setup", slots_setup, METH_VARARGS,
     "slots_setup(mode_type, recorder_type): the slots of bounds.Mode and recording.Recorder the hooks read"},
    {"front_setup", front_setup, METH_VARARGS,
     "front_setup(step_pre, step_post, outputs_pre, outputs_post, name, role, on_thread, into_step, trace_id, "
     "span_id, end, nested, data)"},
    {"front_bind", front_bind, METH_O,
     "front_bind((identity_done, front_steps, sample, light, generate, open_step, outputs_skipped, phase_marks, "
     "recorder, span_bits, open, capture)): the front's state its C calls read"},
    {"finish_request_pre", (PyCFunction)(void (*)(void))finish_request_pre, METH_FASTCALL,
     "finish_request_pre(proc, args, kwargs): front._finish_request_pre's common way in C, else that function"},
    {"request_setup", request_setup, METH_VARARGS,
     "request_setup(fallback, name, role, pending_var, incoming_var, otel_var, attr_id, attr_max_tokens, "
     "attr_prompt_tokens, add_request_pre, add_request_post, finish_request_pre, attr_completion_tokens), after "
     "front_setup"},
    {"traceparent", (PyCFunction)(void (*)(void))traceparent_py, METH_FASTCALL,
     "traceparent(trace_id, span_id): the W3C traceparent the request hook writes (propagation.traceparent's)"},
    {"add_request_pre", (PyCFunction)(void (*)(void))add_request_pre, METH_FASTCALL,
     "add_request_pre(engine, args, kwargs): front._add_request_pre's common way in C, else that function"},
    {"add_request_post", (PyCFunction)(void (*)(void))add_request_post, METH_FASTCALL,
     "add_request_post(state, result, error): front._add_request_post's common way in C, else that function"},
    {"output_add_request_pre", (PyCFunction)(void (*)(void))request_start, METH_FASTCALL,
     "output_add_request_pre(proc, args, kwargs): front._output_add_request_pre's common way in C, else that "
     "function"},
    {"front_step_pre", (PyCFunction)(void (*)(void))front_step_pre, METH_FASTCALL,
     "front_step_pre(engine, args, kwargs): front._front_step_pre's common way in C, else that function"},
    {"front_step_post", (PyCFunction)(void (*)(void))front_step_post, METH_FASTCALL,
     "front_step_post(r, result, error): front._front_step_post's common way in C, else that function"},
    {"process_outputs_pre", (PyCFunction)(void (*)(void))process_outputs_pre, METH_FASTCALL,
     "process_outputs_pre(proc, args, kwargs): front._process_outputs_pre's common way in C, else that function"},
    {"process_outputs_post", (PyCFunction)(void (*)(void))process_outputs_post, METH_FASTCALL,
     "process_outputs_post(state, result, error): front._process_outputs_post's common way in C, else that "
     "function"},
    {"worker_bounds", worker_bounds, METH_O,
     "worker_bounds(stamp): engine_core._worker_bounds in C (a WorkerBounds tuple, or None)"},
    {NULL}
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "vllm_w2ext.hooks._cfront",
    "A hook's front without a Python frame (see _cfront.c).", -1, module_methods,
};

PyMODINIT_FUNC
PyInit__cfront(void)
{
    static const struct { PyObject **name; const char *text; } NAMES[] = {
        {&FAIL, "fail"},
        {&S_FORGET, "forget"},
        {&S_TOTAL, "total_num_scheduled_tokens"},
        {&S_NAME, "__name__"},
        {&S_S, "S"},
        {&S_RECORDER, "RECORDER"},
        {&S_MODE, "MODE"},
        {&S_UPDATES, "UPDATES"},
        {&S_RUNNING, "running"},
        {&S_WAITING, "waiting"},
        {&S_APPEND, "append"},
        {&S_DEQUE_LEN_NAME, "__len__"},
        {&S_GATE, "GATE"},
        {&S_SHUT, "shut"},
        {&S_PHASE_MARKS, "PHASE_MARKS"},
        {&S_SCHEDULER, "scheduler"},
        {&S_NST, "num_scheduled_tokens"},
        {&S_FAIL_SCHEDULE, "_fail_schedule"},
        {&S_READ_FACTS, "_read_facts"},
        {&S_NEW_REQS, "scheduled_new_reqs"},
        {&S_PREEMPTED_IDS, "preempted_req_ids"},
        {&S_FINISHED_IDS, "finished_req_ids"},
        {&S_REQUEST_ID, "request_id"},
        {&S_TRACE_HEADERS, "trace_headers"},
        {&S_SAMPLING_PARAMS, "sampling_params"},
        {&S_MAX_TOKENS, "max_tokens"},
        {&S_PROMPT_IDS, "prompt_token_ids"},
        {&S_TRACEPARENT, "traceparent"},
        {&S_DETOKENIZER, "detokenizer"},
        {&S_NUM_OUTPUT_TOKENS, "num_output_tokens"},
        {&S_STATUS, "status"},
        {&S_ENUM_NAME, "_name_"},
    };
    for (size_t i = 0; i < sizeof(NAMES) / sizeof(NAMES[0]); i++)
        if ((*NAMES[i].name = PyUnicode_InternFromString(NAMES[i].text)) == NULL)
            return NULL;
    for (int i = 0; i < N_ATTRS; i++)
        if ((ATTR_KEYS[i] = PyUnicode_InternFromString(ATTR_NAMES[i])) == NULL)
            return NULL;
    SPRE_BITS128 = PyLong_FromLong(128);
    SPRE_BITS64 = PyLong_FromLong(64);
    SP_ZERO = PyLong_FromLong(0);
    SP_ONE = PyLong_FromLong(1);
    SP_MINUS_ONE = PyLong_FromLong(-1);
    if (!SPRE_BITS128 || !SPRE_BITS64 || !SP_ZERO || !SP_ONE || !SP_MINUS_ONE)
        return NULL;
    CLOCK_READ = clock_read();
    if ((GRAVE = PyList_New(0)) == NULL)
        return NULL;
    START_NS = mono_ns();
    START_TICKS = TICKS_ARE_NS ? START_NS : TICKS();
    if (PyType_Ready(&FrontType) < 0 || PyType_Ready(&SlotType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    PyObject *held = PyTuple_New(N_HELD);          /* HELD: the names hold_global takes (engine_core's one list) */
    for (int i = 0; held != NULL && i < N_HELD; i++)
        PyTuple_SET_ITEM(held, i, Py_NewRef(*HELD_KEYS[i]));
    if (held == NULL || PyModule_AddObjectRef(m, "HELD", held) < 0 ||
            PyModule_AddObjectRef(m, "Front", (PyObject *)&FrontType) < 0 ||
            PyModule_AddObjectRef(m, "Slot", (PyObject *)&SlotType) < 0) {
        Py_XDECREF(held);
        Py_DECREF(m);
        return NULL;
    }
    Py_DECREF(held);
    return m;
}
