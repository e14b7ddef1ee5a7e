/* The pipe's record encoding in C (``wire.encode_frame``'s packed frames): ``pack(obj) -> bytes``, ``unpack(data)``.
 *
 * What it is for: the export thread of each vLLM process encodes every record the hooks leave, holding that
 * process's GIL. ``marshal`` did it at ~1.8 us per engine step record (benchmarks/results/cpu/step_record_encode),
 * about half of it writing the record's 17 wall-clock timestamps (ints near 1.8e18: five 15-bit digits each) and
 * the rest looking up every shared object in its reference table. This writes the same plain values with no table
 * of references, each timestamp as its distance from the one before it in the frame (a byte or three), and each
 * string object it has already written in the frame as an index.
 *
 * Values: None, True, False, int (any size), float, str, bytes, list, tuple, dict, of exactly these types (a
 * subclass, a NamedTuple, a set ... : ValueError, and the frame goes through marshal or pickle as before; so does a
 * str that UTF-8 cannot hold, or nesting deeper than MAX_DEPTH). Read back with the same types: a list stays a list
 * and a tuple a tuple.
 *
 * Format: one tag byte, then
 *   'N' 'T' 'F'        None, True, False
 *   'i' zigzag varint  an int in int64
 *   'A' zigzag varint  a time: an int in [TIME_LO, TIME_HI), the frame's last time from here on
 *   'a' zigzag varint  a time as its distance from the frame's last time (less than NEAR away), the last from here on
 *   'I' varint n, n bytes   any other int (little-endian, two's complement)
 *   'f' 8 bytes        a float (IEEE 754 binary64, little-endian: PyFloat_Pack8)
 *   's' varint n, n bytes   a str (UTF-8); the frame's next string index
 *   'r' varint k       the frame's k-th str again (the same object was written before)
 *   'b' varint n, n bytes   bytes
 *   '[' '(' varint n, n values    a list, a tuple
 *   '{' varint n, n key-value pairs    a dict
 * A varint is LEB128 (7 bits a byte, low first); zigzag maps int64 to uint64 (0, -1, 1, -2 ... -> 0, 1, 2, 3 ...).
 *
 * Why by hand: pickle is slower than marshal still, and msgspec's msgpack (a dependency already) cannot carry the
 * 128-bit trace ids the records hold (it stops at 64 bits; with them as strings it wrote a synthetic step record
 * ~1.5x faster than marshal, about what this does: benchmarks/results/cpu/wire_pack). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define MAX_DEPTH 64
#define TIME_LO (1LL << 59)        /* ~1988 to ~2116 as wall-clock ns */
#define TIME_HI (1LL << 62)
#define NEAR (1LL << 40)           /* ~18 minutes */
#define STRING_SLOTS 256           /* strings written in this frame, by object (direct-mapped) */

typedef struct {
    char *buf;
    Py_ssize_t len, cap;
    long long last_time;           /* 0: none yet */
    Py_ssize_t strings;            /* 's' written so far: the next one's index */
    PyObject *slot_obj[STRING_SLOTS];
    Py_ssize_t slot_index[STRING_SLOTS];
} Packer;

static int
grow(Packer *p, Py_ssize_t need)
{
    if (p->len + need <= p->cap)
        return 0;
    Py_ssize_t cap = p->cap * 2;
    while (cap < p->len + need)
        cap *= 2;
    char *b = PyMem_Realloc(p->buf, cap);
    if (b == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    p->buf = b;
    p->cap = cap;
    return 0;
}

static inline int
put_varint(Packer *p, uint64_t v)
{
    if (grow(p, 10) < 0)
        return -1;
    while (v >= 0x80) {
        p->buf[p->len++] = (char)(v | 0x80);
        v >>= 7;
    }
    p->buf[p->len++] = (char)v;
    return 0;
}

static inline uint64_t
zigzag(long long v)
{
    return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
}

static inline int
put_tag_varint(Packer *p, char tag, uint64_t v)
{
    if (grow(p, 11) < 0)
        return -1;
    p->buf[p->len++] = tag;
    return put_varint(p, v);
}

static inline int
put_raw(Packer *p, char tag, const char *data, Py_ssize_t n)
{
    if (put_tag_varint(p, tag, (uint64_t)n) < 0 || grow(p, n) < 0)
        return -1;
    memcpy(p->buf + p->len, data, n);
    p->len += n;
    return 0;
}

static int
refuse(PyObject *v, const char *why)
{
    PyErr_Format(PyExc_ValueError, "_wire.pack: %s (%.80s)", why, Py_TYPE(v)->tp_name);
    return -1;
}

static int
put_big_int(Packer *p, PyObject *v)
{
    int64_t bits = (int64_t)_PyLong_NumBits(v);   /* of its absolute value */
    if (bits < 0)
        return -1;
    Py_ssize_t n = (Py_ssize_t)(bits / 8 + 1);    /* room for the sign bit */
    if (put_tag_varint(p, 'I', (uint64_t)n) < 0 || grow(p, n) < 0)
        return -1;
#if PY_VERSION_HEX >= 0x030D0000
    if (PyLong_AsNativeBytes(v, p->buf + p->len, n, Py_ASNATIVEBYTES_LITTLE_ENDIAN) < 0)
        return -1;
#else
    if (_PyLong_AsByteArray((PyLongObject *)v, (unsigned char *)p->buf + p->len, (size_t)n, 1, 1) < 0)
        return -1;
#endif
    p->len += n;
    return 0;
}

static int
put_int(Packer *p, PyObject *v)
{
    int overflow = 0;
    long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (overflow)
        return put_big_int(p, v);
    if (x == -1 && PyErr_Occurred())
        return -1;
    if (x >= TIME_LO && x < TIME_HI) {
        long long d = x - p->last_time;            /* no overflow: both in [0, TIME_HI) */
        int near = p->last_time != 0 && d < NEAR && d > -NEAR;
        p->last_time = x;
        return near ? put_tag_varint(p, 'a', zigzag(d)) : put_tag_varint(p, 'A', zigzag(x));
    }
    return put_tag_varint(p, 'i', zigzag(x));
}

static int
put_str(Packer *p, PyObject *v)
{
    size_t h = ((uintptr_t)v >> 4) % STRING_SLOTS;
    if (p->slot_obj[h] == v)
        return put_tag_varint(p, 'r', (uint64_t)p->slot_index[h]);
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(v, &n);
    if (s == NULL) {                                /* a lone surrogate: marshal's to write */
        if (!PyErr_ExceptionMatches(PyExc_UnicodeError))
            return -1;
        PyErr_Clear();
        return refuse(v, "a str UTF-8 cannot hold");
    }
    if (put_raw(p, 's', s, n) < 0)
        return -1;
    p->slot_obj[h] = v;                             /* alive while the frame is written: the payload holds it */
    p->slot_index[h] = p->strings++;
    return 0;
}

static int put(Packer *p, PyObject *v, int depth);

/* Items are read without a reference of their own: nothing here runs Python code or makes an object a collection
 * could run code for (the bytes object comes at the end), so the payload cannot change while it is written. */
static int
put_items(Packer *p, char tag, PyObject *seq, int depth)
{
    int is_list = tag == '[';
    Py_ssize_t n = is_list ? PyList_GET_SIZE(seq) : PyTuple_GET_SIZE(seq);
    PyObject **items = is_list ? ((PyListObject *)seq)->ob_item : ((PyTupleObject *)seq)->ob_item;
    if (put_tag_varint(p, tag, (uint64_t)n) < 0)
        return -1;
    for (Py_ssize_t i = 0; i < n; i++)
        if (put(p, items[i], depth + 1) < 0)
            return -1;
    return 0;
}

static int
put_dict(Packer *p, PyObject *d, int depth)
{
    Py_ssize_t pos = 0;
    if (put_tag_varint(p, '{', (uint64_t)PyDict_GET_SIZE(d)) < 0)
        return -1;
    PyObject *k, *v;
    while (PyDict_Next(d, &pos, &k, &v))
        if (put(p, k, depth + 1) < 0 || put(p, v, depth + 1) < 0)
            return -1;
    return 0;
}

static int
put(Packer *p, PyObject *v, int depth)
{
    if (depth > MAX_DEPTH)
        return refuse(v, "nested deeper than MAX_DEPTH");
    if (v == Py_None || v == Py_True || v == Py_False) {
        if (grow(p, 1) < 0)
            return -1;
        p->buf[p->len++] = v == Py_None ? 'N' : v == Py_True ? 'T' : 'F';
        return 0;
    }
    PyTypeObject *t = Py_TYPE(v);
    if (t == &PyLong_Type)
        return put_int(p, v);
    if (t == &PyUnicode_Type)
        return put_str(p, v);
    if (t == &PyTuple_Type)
        return put_items(p, '(', v, depth);
    if (t == &PyList_Type)
        return put_items(p, '[', v, depth);
    if (t == &PyDict_Type)
        return put_dict(p, v, depth);
    if (t == &PyFloat_Type) {
        if (grow(p, 9) < 0)
            return -1;
        p->buf[p->len++] = 'f';
        if (PyFloat_Pack8(PyFloat_AS_DOUBLE(v), p->buf + p->len, 1) < 0)
            return -1;
        p->len += 8;
        return 0;
    }
    if (t == &PyBytes_Type)
        return put_raw(p, 'b', PyBytes_AS_STRING(v), PyBytes_GET_SIZE(v));
    return refuse(v, "not a plain None, bool, int, float, str, bytes, list, tuple or dict");
}

static PyObject *
pack(PyObject *module, PyObject *obj)
{
    Packer *p = PyMem_Calloc(1, sizeof(Packer));
    if (p == NULL)
        return PyErr_NoMemory();
    p->cap = 4096;
    if ((p->buf = PyMem_Malloc(p->cap)) == NULL) {
        PyMem_Free(p);
        return PyErr_NoMemory();
    }
    PyObject *out = put(p, obj, 0) < 0 ? NULL : PyBytes_FromStringAndSize(p->buf, p->len);
    PyMem_Free(p->buf);
    PyMem_Free(p);
    return out;
}

/* -- unpack -------------------------------------------------------------------------------------------------- */
typedef struct {
    const unsigned char *s, *end;
    long long last_time;
    PyObject *strings;             /* a list: the frame's strings by index */
} Reader;

static int
bad(const char *why)
{
    PyErr_Format(PyExc_ValueError, "_wire.unpack: %s", why);
    return -1;
}

static int
get_varint(Reader *r, uint64_t *out)
{
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (r->s >= r->end)
            return bad("truncated");
        unsigned char c = *r->s++;
        v |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80)) {
            *out = v;
            return 0;
        }
    }
    return bad("a varint over 64 bits");
}

static inline long long
unzigzag(uint64_t v)
{
    return (long long)(v >> 1) ^ -(long long)(v & 1);
}

static int
get_length(Reader *r, Py_ssize_t *n)
{
    uint64_t v;
    if (get_varint(r, &v) < 0)
        return -1;
    if (v > (uint64_t)(r->end - r->s))
        return bad("a length past the end");
    *n = (Py_ssize_t)v;
    return 0;
}

static PyObject *get(Reader *r, int depth);

static PyObject *
get(Reader *r, int depth)
{
    if (depth > MAX_DEPTH) {
        bad("nested deeper than MAX_DEPTH");
        return NULL;
    }
    if (r->s >= r->end) {
        bad("truncated");
        return NULL;
    }
    unsigned char tag = *r->s++;
    uint64_t u;
    Py_ssize_t n;
    switch (tag) {
    case 'N':
        Py_RETURN_NONE;
    case 'T':
        Py_RETURN_TRUE;
    case 'F':
        Py_RETURN_FALSE;
    case 'i':
        if (get_varint(r, &u) < 0)
            return NULL;
        return PyLong_FromLongLong(unzigzag(u));
    case 'A':
    case 'a': {
        if (get_varint(r, &u) < 0)
            return NULL;
        long long x = unzigzag(u);
        if (tag == 'a') {
            if (r->last_time == 0 || x >= NEAR || x <= -NEAR) {
                bad("a time's distance with no time before it, or too far");
                return NULL;
            }
            x += r->last_time;
        }
        if (x < TIME_LO || x >= TIME_HI) {
            bad("a time out of its range");
            return NULL;
        }
        r->last_time = x;
        return PyLong_FromLongLong(x);
    }
    case 'I':
        if (get_length(r, &n) < 0)
            return NULL;
        if (n == 0) {
            bad("an int of no bytes");
            return NULL;
        }
        r->s += n;
#if PY_VERSION_HEX >= 0x030D0000
        return PyLong_FromNativeBytes(r->s - n, (size_t)n, Py_ASNATIVEBYTES_LITTLE_ENDIAN);
#else
        return _PyLong_FromByteArray(r->s - n, (size_t)n, 1, 1);
#endif
    case 'f':
        if (r->end - r->s < 8) {
            bad("truncated");
            return NULL;
        }
        r->s += 8;
        {
            double d = PyFloat_Unpack8((const char *)r->s - 8, 1);
            if (d == -1.0 && PyErr_Occurred())
                return NULL;
            return PyFloat_FromDouble(d);
        }
    case 's': {
        if (get_length(r, &n) < 0)
            return NULL;
        PyObject *s = PyUnicode_DecodeUTF8((const char *)r->s, n, "strict");
        if (s == NULL)
            return NULL;
        r->s += n;
        if (PyList_Append(r->strings, s) < 0) {
            Py_DECREF(s);
            return NULL;
        }
        return s;
    }
    case 'r':
        if (get_varint(r, &u) < 0)
            return NULL;
        if (u >= (uint64_t)PyList_GET_SIZE(r->strings)) {
            bad("a string index past the frame's strings");
            return NULL;
        }
        return Py_NewRef(PyList_GET_ITEM(r->strings, (Py_ssize_t)u));
    case 'b':
        if (get_length(r, &n) < 0)
            return NULL;
        r->s += n;
        return PyBytes_FromStringAndSize((const char *)r->s - n, n);
    case '[':
    case '(': {
        if (get_length(r, &n) < 0)      /* each item takes a byte at least */
            return NULL;
        PyObject *seq = tag == '[' ? PyList_New(n) : PyTuple_New(n);
        if (seq == NULL)
            return NULL;
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *item = get(r, depth + 1);
            if (item == NULL) {
                Py_DECREF(seq);
                return NULL;
            }
            if (tag == '[')
                PyList_SET_ITEM(seq, i, item);
            else
                PyTuple_SET_ITEM(seq, i, item);
        }
        return seq;
    }
    case '{': {
        if (get_length(r, &n) < 0)
            return NULL;
        PyObject *d = PyDict_New();
        if (d == NULL)
            return NULL;
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *k = get(r, depth + 1), *v = k ? get(r, depth + 1) : NULL;
            int rc = v ? PyDict_SetItem(d, k, v) : -1;
            Py_XDECREF(k);
            Py_XDECREF(v);
            if (rc < 0) {
                Py_DECREF(d);
                return NULL;
            }
        }
        return d;
    }
    default:
        PyErr_Format(PyExc_ValueError, "_wire.unpack: an unknown tag 0x%02x", tag);
        return NULL;
    }
}

static PyObject *
unpack(PyObject *module, PyObject *data)
{
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    Reader r = {(const unsigned char *)view.buf, (const unsigned char *)view.buf + view.len, 0, PyList_New(0)};
    PyObject *out = NULL;
    if (r.strings != NULL) {
        out = get(&r, 0);
        if (out != NULL && r.s != r.end) {
            Py_CLEAR(out);
            bad("bytes after the value");
        }
    }
    Py_XDECREF(r.strings);
    PyBuffer_Release(&view);
    return out;
}

static PyMethodDef methods[] = {
    {"pack", pack, METH_O, "pack(obj) -> bytes: obj in the packed format (ValueError: a value it does not take)"},
    {"unpack", unpack, METH_O, "unpack(data) -> the value pack wrote (ValueError: not such data)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_wire", NULL, -1, methods};

PyMODINIT_FUNC
PyInit__wire(void)
{
    return PyModule_Create(&module);
}
