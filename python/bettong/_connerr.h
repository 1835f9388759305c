/* The Python exceptions for a client extension's failed connect or handshake
 * (net/sock.h's results), shared by bettong._bettong (the pool) and
 * bettong._store (the store): the same causes read the same in both. */
#ifndef BETTONG_PY_CONNERR_H
#define BETTONG_PY_CONNERR_H

#include <Python.h>

typedef struct {
    const char *service;       /* "pool", "store": names the server in messages */
    const char *secret_vars;   /* where the client's secret comes from, for the user */
    PyObject *refused_connect; /* exception type of a refused connect */
    PyObject *auth_error;      /* the server could not prove the secret */
    PyObject *protocol_error;  /* it does not speak the handshake */
} connerr_t;

/* Set the exception for sock_connect_addr's failure (`what`, errno `err`, `why`). */
void connerr_connect(const connerr_t *e, PyObject *address, int what, int err, const char *why);
/* Set the exception for sock_handshake_strict's result rc (errno `err`). */
void connerr_handshake(const connerr_t *e, PyObject *address, int rc, int err);

#endif
