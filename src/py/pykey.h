/* A hash of a Python partition key that is the same in every process, whatever
 * PYTHONHASHSEED is, so that every worker routes a key to the same slot. Keys that
 * compare equal in Python hash equal here for the usual key types (str, bytes,
 * int, bool, integral float, None, tuples and frozensets of those). */
#ifndef BETTONG_PYKEY_H
#define BETTONG_PYKEY_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

/* With GIL. Returns 0 and sets *out, or -1 with a Python exception set (an
 * unhashable key or a failed pickle of an unusual key type). */
int pykey_hash(PyObject *key, uint64_t *out);

/* With GIL. A Wallaroo 0.6 key (what a key_extractor returned) as the bytes
 * Wallaroo keys by: a str as UTF-8 (so "a" and b"a" are one key), bytes as
 * they are, an int n as chr(n) in UTF-8 (Wallaroo 0.6.1's wrapper calls chr).
 * A new reference, or NULL with an exception (TypeError for any other type,
 * ValueError for an int chr() refuses). */
PyObject *pykey_wallaroo06(PyObject *key);

#endif
