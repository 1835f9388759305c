#include "py/pykey.h"

#include <string.h>

#include "util/hash.h"

/* A distinct seed per type keeps "1" (str) and 1 (int) apart. */
enum { SEED_STR = 1, SEED_BYTES, SEED_INT, SEED_FLOAT, SEED_NONE, SEED_TUPLE, SEED_SET,
       SEED_BIGINT, SEED_OTHER };

static uint64_t hash_int64(int64_t v) { return hash_u64((uint64_t)v ^ (uint64_t)SEED_INT * 0x9e3779b97f4a7c15ULL); }

static int hash_bigint(PyObject *key, uint64_t *out)
{
    PyObject *s = PyObject_Str(key);
    if (!s)
        return -1;
    Py_ssize_t n;
    const char *p = PyUnicode_AsUTF8AndSize(s, &n);
    if (!p) {
        Py_DECREF(s);
        return -1;
    }
    *out = hash_bytes(p, (size_t)n, SEED_BIGINT);
    Py_DECREF(s);
    return 0;
}

static int hash_int(PyObject *key, uint64_t *out)
{
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(key, &overflow);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (overflow)
        return hash_bigint(key, out);
    *out = hash_int64(v);
    return 0;
}

static int hash_other(PyObject *key, uint64_t *out)
{
    /* Unusual key types: their pickle. Stable for value-like objects; types with
     * unordered contents beyond sets may route equal keys apart (documented). */
    PyObject *pickle = PyImport_ImportModule("pickle");
    if (!pickle)
        return -1;
    PyObject *data = PyObject_CallMethod(pickle, "dumps", "Oi", key, 4);
    Py_DECREF(pickle);
    if (!data)
        return -1;
    *out = hash_bytes(PyBytes_AS_STRING(data), (size_t)PyBytes_GET_SIZE(data), SEED_OTHER);
    Py_DECREF(data);
    return 0;
}

int pykey_hash(PyObject *key, uint64_t *out)
{
    if (PyUnicode_CheckExact(key) || PyUnicode_Check(key)) {
        Py_ssize_t n;
        const char *p = PyUnicode_AsUTF8AndSize(key, &n);
        if (!p)
            return -1;
        *out = hash_bytes(p, (size_t)n, SEED_STR);
        return 0;
    }
    if (PyLong_Check(key)) /* includes bool: True == 1 as a dict key too */
        return hash_int(key, out);
    if (PyBytes_Check(key)) {
        *out = hash_bytes(PyBytes_AS_STRING(key), (size_t)PyBytes_GET_SIZE(key), SEED_BYTES);
        return 0;
    }
    if (key == Py_None) {
        *out = hash_u64(SEED_NONE);
        return 0;
    }
    if (PyFloat_Check(key)) {
        double d = PyFloat_AS_DOUBLE(key);
        /* 2.0 == 2 as dict keys, so they must land in the same slot. */
        if (d > -9.2e18 && d < 9.2e18 && d == (double)(int64_t)d) {
            *out = hash_int64((int64_t)d);
            return 0;
        }
        uint64_t bits;
        memcpy(&bits, &d, sizeof bits);
        *out = hash_u64(bits ^ SEED_FLOAT);
        return 0;
    }
    if (PyTuple_Check(key)) {
        uint64_t acc = hash_u64(SEED_TUPLE + (uint64_t)PyTuple_GET_SIZE(key));
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(key); i++) {
            uint64_t h;
            if (pykey_hash(PyTuple_GET_ITEM(key, i), &h) < 0)
                return -1;
            acc = hash_combine(acc, h);
        }
        *out = acc;
        return 0;
    }
    if (PyFrozenSet_Check(key)) {
        /* Order-independent: a sum of the element hashes. */
        uint64_t acc = 0;
        PyObject *it = PyObject_GetIter(key), *item;
        if (!it)
            return -1;
        while ((item = PyIter_Next(it))) {
            uint64_t h;
            int rc = pykey_hash(item, &h);
            Py_DECREF(item);
            if (rc < 0) {
                Py_DECREF(it);
                return -1;
            }
            acc += h;
        }
        Py_DECREF(it);
        if (PyErr_Occurred())
            return -1;
        *out = hash_u64(acc ^ SEED_SET);
        return 0;
    }
    if (PyObject_Hash(key) == -1) /* raise TypeError for unhashable keys, as a dict would */
        return -1;
    return hash_other(key, out);
}

PyObject *pykey_wallaroo06(PyObject *key)
{
    if (PyBytes_CheckExact(key))
        return Py_NewRef(key);
    if (PyBytes_Check(key))
        return PyBytes_FromStringAndSize(PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key));
    if (PyUnicode_Check(key))
        return PyUnicode_AsUTF8String(key);
    if (PyLong_Check(key)) {
        long n = PyLong_AsLong(key);
        if (n == -1 && PyErr_Occurred())
            return NULL;
        if (n < 0 || n > 0x10ffff) {
            PyErr_Format(PyExc_ValueError, "key_extractor returned %ld: an int key n stands "
                         "for chr(n), which needs 0 <= n <= 0x10ffff", n);
            return NULL;
        }
        PyObject *s = PyUnicode_FromOrdinal((int)n);
        PyObject *b = s ? PyUnicode_AsUTF8String(s) : NULL;
        Py_XDECREF(s);
        return b;
    }
    PyErr_Format(PyExc_TypeError, "key_extractor must return str, bytes or int, not %.100s",
                 Py_TYPE(key)->tp_name);
    return NULL;
}
