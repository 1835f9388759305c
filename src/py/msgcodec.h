/* The form a message takes between workers when the application serializes
 * with pickle (the default): the common exact types (str, bytes, int, float,
 * bool, None and tuples of them) in a small tagged format written and read in
 * C, anything else as a pickle. The same object comes back either way; this
 * only skips the pickler's set-up and tear-down, which cost more than the
 * message for a word or a number. Applications with their own serialize are
 * not affected (their messages go through it). */
#ifndef BETTONG_MSGCODEC_H
#define BETTONG_MSGCODEC_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <stdint.h>

#include "util/buf.h"

/* With GIL. Append obj's encoding to out; dumps(obj, protocol) for what C does
 * not encode. Returns 0, or -1 with a Python exception (out may hold a partial
 * encoding: the caller drops the frame). */
int msgcodec_encode(buf_t *out, PyObject *obj, PyObject *dumps, PyObject *protocol);
/* With GIL. The object encoded in p[0..n), or NULL with a Python exception. */
PyObject *msgcodec_decode(const uint8_t *p, size_t n, PyObject *loads);

#endif
