/* See _connerr.h. */
#include "_connerr.h"

#include <errno.h>
#include <string.h>

#include "net/sock.h"

void connerr_connect(const connerr_t *e, PyObject *address, int what, int err, const char *why)
{
    if (what == SOCK_CA_ADDRESS)
        PyErr_Format(PyExc_ValueError, "%s address %R: %s", e->service, address, why);
    else if (what == SOCK_CA_RESOLVE)
        PyErr_Format(PyExc_ConnectionError, "%s", why);
    else
        PyErr_Format(err == ETIMEDOUT ? PyExc_TimeoutError : e->refused_connect,
                     "cannot connect to the %s at %U: %s", e->service, address, why);
}

void connerr_handshake(const connerr_t *e, PyObject *address, int rc, int err)
{
    if (rc == SOCK_HS_EPROOF)
        PyErr_Format(e->auth_error,
                     "the %s at %U could not prove it knows the secret (%s): refused it (the "
                     "secrets differ, or it is not the real %s); nothing it sent was read",
                     e->service, address, e->secret_vars, e->service);
    else if (rc == SOCK_HS_EFORMAT)
        PyErr_Format(e->protocol_error, "%U does not speak the Bettong %s handshake", address,
                     e->service);
    else if (rc == SOCK_HS_ESYSTEM)
        PyErr_Format(PyExc_OSError, "cannot start the handshake with %U: no random bytes or "
                     "out of memory", address);
    else if (err == ECONNRESET)
        PyErr_Format(PyExc_ConnectionError,
                     "the %s at %U closed the connection during the handshake", e->service,
                     address);
    else
        PyErr_Format(err == ETIMEDOUT ? PyExc_TimeoutError : PyExc_ConnectionError,
                     "no answer to the handshake from the %s at %U: %s", e->service, address,
                     strerror(err));
}
