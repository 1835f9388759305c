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

#endif
