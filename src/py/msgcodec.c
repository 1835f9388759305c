#include "py/msgcodec.h"

#include <string.h>

/* Tags: one byte in front of each value. */
enum {
    TAG_PICKLE = 'p', /* the rest is a pickle */
    TAG_STR = 's',    /* u32 length, UTF-8 */
    TAG_BYTES = 'b',  /* u32 length, bytes */
    TAG_INT = 'i',    /* 8 bytes, big-endian two's complement */
    TAG_FLOAT = 'f',  /* 8 bytes, IEEE 754 big-endian */
    TAG_TRUE = 'T',
    TAG_FALSE = 'F',
    TAG_NONE = 'N',
    TAG_TUPLE = 't',  /* u32 count, then the items */
};

#define MAX_DEPTH 8

static void put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int put_tagged(buf_t *out, uint8_t tag, const void *p, size_t n, int with_len)
{
    uint8_t hdr[5] = {tag};
    if (with_len) {
        if (n > UINT32_MAX) {
            PyErr_SetString(PyExc_OverflowError, "message field too large to forward");
            return -1;
        }
        put_u32(hdr + 1, (uint32_t)n);
    }
    size_t h = with_len ? 5 : 1;
    if (buf_reserve(out, h + n) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    memcpy(out->data + out->len, hdr, h);
    memcpy(out->data + out->len + h, p, n);
    out->len += h + n;
    return 0;
}

static int put_u64(buf_t *out, uint8_t tag, uint64_t v)
{
    uint8_t b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(v >> (56 - 8 * i));
    return put_tagged(out, tag, b, 8, 0);
}

/* A pickle can only be the whole message (its length is the rest). */
static int put_pickle(buf_t *out, PyObject *obj, PyObject *dumps, PyObject *protocol)
{
    PyObject *args[2] = {obj, protocol};
    PyObject *data = PyObject_Vectorcall(dumps, args, 2, NULL);
    if (!data)
        return -1;
    int rc = PyBytes_Check(data) ? put_tagged(out, TAG_PICKLE, PyBytes_AS_STRING(data),
                                              (size_t)PyBytes_GET_SIZE(data), 0)
                                 : (PyErr_SetString(PyExc_TypeError, "dumps() returned no bytes"), -1);
    Py_DECREF(data);
    return rc;
}

/* 1: encoded; 0: not a type C encodes (nothing appended); -1: error. */
static int put_simple(buf_t *out, PyObject *obj, int depth)
{
    if (PyUnicode_CheckExact(obj)) {
        Py_ssize_t n;
        const char *s = PyUnicode_AsUTF8AndSize(obj, &n);
        if (!s) {
            PyErr_Clear(); /* e.g. lone surrogates: pickle copes */
            return 0;
        }
        return put_tagged(out, TAG_STR, s, (size_t)n, 1) < 0 ? -1 : 1;
    }
    if (PyLong_CheckExact(obj)) {
        int overflow;
        long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
        if (overflow || (v == -1 && PyErr_Occurred())) {
            PyErr_Clear();
            return 0;
        }
        return put_u64(out, TAG_INT, (uint64_t)v) < 0 ? -1 : 1;
    }
    if (PyBytes_CheckExact(obj))
        return put_tagged(out, TAG_BYTES, PyBytes_AS_STRING(obj), (size_t)PyBytes_GET_SIZE(obj),
                          1) < 0 ? -1 : 1;
    if (PyFloat_CheckExact(obj)) {
        double d = PyFloat_AS_DOUBLE(obj);
        uint64_t bits;
        memcpy(&bits, &d, 8);
        return put_u64(out, TAG_FLOAT, bits) < 0 ? -1 : 1;
    }
    if (obj == Py_None || obj == Py_True || obj == Py_False) {
        uint8_t tag = obj == Py_None ? TAG_NONE : obj == Py_True ? TAG_TRUE : TAG_FALSE;
        return buf_append(out, &tag, 1) < 0 ? (PyErr_NoMemory(), -1) : 1;
    }
    if (PyTuple_CheckExact(obj) && depth < MAX_DEPTH) {
        size_t start = buf_unread(out); /* relative: appends may compact */
        Py_ssize_t n = PyTuple_GET_SIZE(obj);
        uint8_t hdr[5] = {TAG_TUPLE};
        put_u32(hdr + 1, (uint32_t)n);
        if (buf_append(out, hdr, 5) < 0) {
            PyErr_NoMemory();
            return -1;
        }
        for (Py_ssize_t i = 0; i < n; i++) {
            int rc = put_simple(out, PyTuple_GET_ITEM(obj, i), depth + 1);
            if (rc <= 0) {
                out->len = out->off + start; /* the whole tuple goes to pickle instead */
                return rc;
            }
        }
        return 1;
    }
    return 0;
}

int msgcodec_encode(buf_t *out, PyObject *obj, PyObject *dumps, PyObject *protocol)
{
    int rc = put_simple(out, obj, 0);
    if (rc != 0)
        return rc < 0 ? -1 : 0;
    return put_pickle(out, obj, dumps, protocol);
}

typedef struct {
    const uint8_t *p, *end;
} reader_t;

static PyObject *corrupt(void)
{
    PyErr_SetString(PyExc_ValueError, "corrupt message from another worker");
    return NULL;
}

static PyObject *get_value(reader_t *r, int depth)
{
    if (r->p >= r->end || depth > MAX_DEPTH)
        return corrupt();
    uint8_t tag = *r->p++;
    size_t left = (size_t)(r->end - r->p);
    switch (tag) {
    case TAG_NONE: Py_RETURN_NONE;
    case TAG_TRUE: Py_RETURN_TRUE;
    case TAG_FALSE: Py_RETURN_FALSE;
    case TAG_INT:
    case TAG_FLOAT: {
        if (left < 8)
            return corrupt();
        uint64_t v = 0;
        for (int i = 0; i < 8; i++)
            v = v << 8 | r->p[i];
        r->p += 8;
        if (tag == TAG_INT)
            return PyLong_FromLongLong((long long)v);
        double d;
        memcpy(&d, &v, 8);
        return PyFloat_FromDouble(d);
    }
    case TAG_STR:
    case TAG_BYTES:
    case TAG_TUPLE: {
        if (left < 4)
            return corrupt();
        uint32_t n = get_u32(r->p);
        r->p += 4;
        left -= 4;
        if (tag == TAG_TUPLE) {
            if (n > left)
                return corrupt();
            PyObject *t = PyTuple_New(n);
            for (uint32_t i = 0; t && i < n; i++) {
                PyObject *item = get_value(r, depth + 1);
                if (!item) {
                    Py_CLEAR(t);
                    break;
                }
                PyTuple_SET_ITEM(t, i, item);
            }
            return t;
        }
        if (n > left)
            return corrupt();
        const char *s = (const char *)r->p;
        r->p += n;
        return tag == TAG_STR ? PyUnicode_DecodeUTF8(s, n, "strict")
                              : PyBytes_FromStringAndSize(s, n);
    }
    default:
        return corrupt();
    }
}

PyObject *msgcodec_decode(const uint8_t *p, size_t n, PyObject *loads)
{
    if (n > 0 && p[0] == TAG_PICKLE) {
        PyObject *view = PyMemoryView_FromMemory((char *)p + 1, (Py_ssize_t)(n - 1), PyBUF_READ);
        PyObject *obj = view ? PyObject_CallOneArg(loads, view) : NULL;
        Py_XDECREF(view);
        return obj;
    }
    reader_t r = {p, p + n};
    PyObject *obj = get_value(&r, 0);
    if (obj && r.p != r.end) {
        Py_DECREF(obj);
        return corrupt();
    }
    return obj;
}
