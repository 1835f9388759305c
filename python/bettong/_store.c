/* bettong._store: the client side of the object store's wire protocol
 * (src/store/sproto.h), for bettong.objects.
 *
 *   Connection(address, secret=b"", name="", timeout=30.0)
 *       Connects to "host:port" ("[v6]:port", ":port" for loopback) and runs the
 *       handshake of src/net/auth.h (net/sock.c: the secret is the key of both
 *       proofs and is never sent), within `timeout` seconds. WELCOME fills
 *       `store_name`; REFUSED raises RefusedError (a PermissionError) with the
 *       store's reason; a store that cannot prove it knows the secret raises
 *       AuthenticationError (a RefusedError) before anything it sent is read.
 *
 *   send(type, *fields) -> req_id
 *       Encodes one request (a fresh request id, then the fields of `type` as
 *       sproto.h lists them) into the output buffer without writing it (the buffer
 *       is written once it holds 256 KiB). Checks an idle connection first, as
 *       request() does. Fields: str16 -> str (or bytes; None is
 *       empty), u64 -> int, rest -> a bytes-like object; PERSIST takes one
 *       sequence of (object_id, class_id, alias or None, state) tuples.
 *   flush()                 writes what send() buffered
 *   request(type, *fields) -> answer
 *       send + flush, then waits for this request's answer; answers to other
 *       requests that arrive meanwhile are kept for recv(). Before the request, a
 *       connection idle for a while (2 ms) is checked: if the store closed it,
 *       StaleConnection (a ConnectionError) is raised and nothing is sent, so the
 *       request may be sent again on a new connection.
 *   ask(type, *fields) -> (True, value) or (False, answer)
 *       request(), for CALL and GET_FIELD: an OK answer whose payload holds no
 *       persistent id is unpickled here (plain pickle.loads, no answer tuple):
 *       (True, value); any other answer, or a payload plain unpickling fails
 *       on, comes back as (False, answer) for the caller to decode.
 *   spin_us                 microseconds (0 to 10000; default
 *       $BETTONG_STORE_SPIN_US, else 50) a request polls the socket for its
 *       answer (non-blocking recv, with sched_yield between tries) before it
 *       blocks in recv(). On a machine whose idle CPUs sleep, an answer that
 *       comes within that time finds the caller awake instead of waking an
 *       idle CPU (about 100 us on some VMs); the price is up to spin_us of CPU
 *       per request whose answer takes longer.
 *   recv(timeout=None) -> list of answers
 *       Flushes, then returns the answers kept by request() and every whole answer
 *       that has arrived, waiting (at most `timeout` seconds: [] then) until there
 *       is at least one. Without a timeout and with no request unanswered it
 *       returns [] at once rather than wait forever.
 *   send_raw(type, body)    a frame of `type` and `body` as it is (no request id)
 *   close()                 shuts the connection down (wakes a blocked thread)
 *   fileno(), closed, pending (requests not answered yet), address, store_name
 *
 * Answers are tuples:
 *   (SMSG_OK, req_id, payload: bytes)
 *   (SMSG_REF, req_id, object_id: str, class_id: int, backend_id: str or None,
 *    replicas: tuple of the backend ids holding replicas, () if none)
 *   (SMSG_BACKEND_LIST, req_id, [(backend_id, name, address), ...])
 *   (SMSG_RAISED, req_id, payload: bytes)
 *   (SMSG_FAILED, req_id, code: int, message: str)
 *   (SMSG_CLASS_BYTES, req_id, payload: bytes)
 *   (type, body: bytes) for any other type (body: the bytes after the type).
 * A connection that the store closed raises ConnectionError; a malformed frame
 * ProtocolError (and closes the connection).
 *
 * Threads: one operation at a time per connection (a mutex, never waited for with
 * the GIL held). Every wait (a blocking recv, or poll when there is a deadline)
 * releases the GIL; what the socket takes or has at once is done without
 * releasing it: a request is one send() and one blocking recv(). While a large send waits for
 * room, answers are read into the input buffer, so the client never stops
 * reading while the store waits for it to.
 *
 * A connection object inherited by a forked child never shuts the socket down
 * (that would cut the parent's connection); the child only closes its copy.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#include "_connerr.h"
#include "net/bconn.h"
#include "net/sock.h"
#include "net/wire.h"
#include "store/sproto.h"
#include "util/buf.h"

/* The store's frame limit (sproto.h: at most 1 GiB): a larger request is refused
 * here with ValueError rather than cut off by the store. */
#ifndef SPROTO_MAX_FRAME
#define SPROTO_MAX_FRAME (1024ull * 1024 * 1024)
#endif
#define READ_CHUNK (256 * 1024)
/* send() writes the buffer once it holds this much. */
#define AUTO_FLUSH (256 * 1024)
/* Largest answer to the handshake: anything bigger is not the store speaking. */
#define MAX_HANDSHAKE_FRAME (64 * 1024)

static PyObject *RefusedError;
static PyObject *AuthenticationError;
static PyObject *ProtocolError;
static PyObject *StaleConnection;
static PyObject *plain_loads; /* pickle.loads */

/* Microseconds a request waits for its answer by polling the socket before it
 * blocks in recv(): the default of Connection.spin_us, from
 * $BETTONG_STORE_SPIN_US, else DEFAULT_SPIN_US. */
#define SPIN_ENV "BETTONG_STORE_SPIN_US"
#define SPIN_MAX_US 10000
#ifndef DEFAULT_SPIN_US
#define DEFAULT_SPIN_US 50
#endif

/* A connection idle this long is checked before a request: a store that restarted
 * meanwhile closed it, and the request is not sent (StaleConnection). */
#define IDLE_CHECK 0.002

typedef struct {
    PyObject_HEAD
    int fd;                 /* bc.fd while open */
    bconn_t bc;             /* the connection, plain or TLS; bc_open: bconn_free at the end */
    int bc_open;
    int closed;
    pid_t pid;              /* the process that connected */
    pthread_mutex_t op_mu;  /* one operation at a time; never waited for with the GIL */
    pthread_mutex_t fd_mu;  /* fd and closed */
    int mu_ok;
    buf_t in;
    buf_t out;
    uint64_t next_req;
    Py_ssize_t pending;     /* requests sent or buffered, not answered */
    double last_io;         /* monotonic time of the last byte read or written */
    double spin;            /* seconds to poll for an answer before blocking (spin_us) */
    PyObject *stash;        /* answers read by request() for other requests */
    PyObject *address;
    PyObject *store_name;
} SConn;

/* ------------------------------------------------------------------ open / close */

static int is_closed(SConn *c)
{
    pthread_mutex_lock(&c->fd_mu);
    int v = c->closed || c->fd < 0;
    pthread_mutex_unlock(&c->fd_mu);
    return v;
}

static PyObject *closed_error(void)
{
    PyErr_SetString(PyExc_ConnectionError, "the connection to the store is closed");
    return NULL;
}

/* Mark closed; shut the socket down (waking a thread blocked on it) unless we are
 * a forked child; close the fd now if no operation is running. */
static void conn_close(SConn *c)
{
    pthread_mutex_lock(&c->fd_mu);
    if (!c->closed) {
        c->closed = 1;
        if (c->fd >= 0 && c->pid == getpid())
            shutdown(c->fd, SHUT_RDWR);
    }
    pthread_mutex_unlock(&c->fd_mu);
    if (pthread_mutex_trylock(&c->op_mu) == 0) {
        pthread_mutex_lock(&c->fd_mu);
        if (c->fd >= 0) {
            close(c->fd);
            c->fd = -1;
        }
        pthread_mutex_unlock(&c->fd_mu);
        pthread_mutex_unlock(&c->op_mu);
    }
}

/* Take the operation lock (releasing the GIL if another thread holds it). */
static int op_begin(SConn *c)
{
    if (!c->mu_ok) {
        PyErr_SetString(PyExc_RuntimeError, "Connection not initialised");
        return -1;
    }
    if (pthread_mutex_trylock(&c->op_mu) != 0) {
        Py_BEGIN_ALLOW_THREADS
        pthread_mutex_lock(&c->op_mu);
        Py_END_ALLOW_THREADS
    }
    if (is_closed(c)) {
        pthread_mutex_unlock(&c->op_mu);
        closed_error();
        return -1;
    }
    return 0;
}

static void op_end(SConn *c)
{
    if (c->in.cap > 4 * READ_CHUNK)
        buf_shrink(&c->in, 4 * READ_CHUNK); /* only when empty: after a large answer */
    pthread_mutex_lock(&c->fd_mu);
    if (c->closed && c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
    pthread_mutex_unlock(&c->fd_mu);
    pthread_mutex_unlock(&c->op_mu);
}

/* A broken stream (malformed frame, peer gone): nothing more can be read from it. */
static void conn_break(SConn *c)
{
    pthread_mutex_lock(&c->fd_mu);
    c->closed = 1;
    if (c->fd >= 0 && c->pid == getpid())
        shutdown(c->fd, SHUT_RDWR);
    pthread_mutex_unlock(&c->fd_mu);
}

static PyObject *io_error(SConn *c, int err)
{
    if (err == EPIPE || err == ECONNRESET || err == ENOTCONN || err == EBADF ||
        err == ESHUTDOWN || err == EPROTO) {
        if (c->closed)
            return closed_error();
        conn_break(c);
        PyErr_Format(PyExc_ConnectionError, "connection to the store lost: %s",
                     err == EPROTO ? "broken TLS stream" : strerror(err));
        return NULL;
    }
    errno = err;
    return PyErr_SetFromErrno(PyExc_OSError);
}

/* ------------------------------------------------------------------ I/O */

/* Read what the socket has into c->in. With wait: block (GIL released) until
 * something comes or the deadline passes; wait == 2: the caller knows nothing can
 * be there yet (it just sent a request), so it waits at once. Returns 1 (read
 * something), 0 (timed out, or nothing there without wait), -1 (exception set). */
static int read_some(SConn *c, int wait, double deadline)
{
    /* Over TLS, plaintext may wait inside bc with nothing on the socket. */
    int try_first = wait != 2 || bconn_buffered(&c->bc) > 0;
    for (;;) {
        if (buf_reserve(&c->in, sock_read_need(&c->in, READ_CHUNK)) < 0) {
            PyErr_NoMemory();
            return -1;
        }
        uint8_t *dst = c->in.data + c->in.len;
        size_t want = c->in.cap - c->in.len;
        ssize_t r = -1;
        int err = EAGAIN;
        if (try_first) {
            r = bconn_recv(&c->bc, dst, want, MSG_DONTWAIT);
            err = errno;
        }
        try_first = 1;
        if (r < 0 && (err == EAGAIN || err == EWOULDBLOCK)) {
            if (!wait)
                return 0;
            int pr;
            int fd = c->fd;
            bconn_t *bc = &c->bc;
            int ms = sock_ms_left(deadline);
            double spin = wait == 2 && ms < 0 ? c->spin : 0;
            Py_BEGIN_ALLOW_THREADS
            if (ms < 0) {
                /* A request just went out: poll for its answer for a while
                 * (spin_us), yielding the CPU to anything else that can run,
                 * so that an answer that comes soon finds this thread awake
                 * (no wake-up of an idle CPU). */
                if (spin > 0) {
                    double end = sock_now() + spin;
                    do {
                        sched_yield();
                        r = bconn_recv(bc, dst, want, MSG_DONTWAIT);
                        err = errno;
                    } while (r < 0 && (err == EAGAIN || err == EWOULDBLOCK) &&
                             sock_now() < end);
                }
                /* No deadline: block in recv() itself. */
                if (spin <= 0 || (r < 0 && (err == EAGAIN || err == EWOULDBLOCK))) {
                    r = bconn_recv(bc, dst, want, 0);
                    err = errno;
                }
                pr = r < 0 && err == EINTR ? -1 : 1;
            } else {
                struct pollfd pfd = {fd, POLLIN, 0};
                pr = poll(&pfd, 1, ms);
                err = errno;
                if (pr > 0) {
                    r = bconn_recv(bc, dst, want, MSG_DONTWAIT);
                    err = errno;
                }
            }
            Py_END_ALLOW_THREADS
            if (pr == 0)
                return 0;
            if (pr < 0) {
                if (err == EINTR) {
                    if (PyErr_CheckSignals() < 0)
                        return -1;
                    continue;
                }
                io_error(c, err);
                return -1;
            }
            if (r < 0 && (err == EAGAIN || err == EWOULDBLOCK))
                continue;
        }
        if (r < 0) {
            if (err == EINTR) {
                if (PyErr_CheckSignals() < 0)
                    return -1;
                continue;
            }
            io_error(c, err);
            return -1;
        }
        if (r == 0) {
            if (c->closed) {
                closed_error();
            } else {
                conn_break(c);
                PyErr_SetString(PyExc_ConnectionError, "the store closed the connection");
            }
            return -1;
        }
        c->in.len += (size_t)r;
        c->last_io = sock_now();
        return 1;
    }
}

/* Write everything in c->out (and, over TLS, the ciphertext still waiting).
 * Called with the GIL and op_mu held; waits (GIL released) when the socket is
 * full, reading answers meanwhile. If a signal handler raises, the bytes not yet
 * written stay in c->out (the next operation writes them), so the stream stays
 * whole. */
static int flush_out(SConn *c)
{
    while (buf_unread(&c->out) > 0 || bconn_unsent(&c->bc) > 0) {
        struct iovec v = {(void *)buf_head(&c->out), buf_unread(&c->out)};
        ssize_t w = v.iov_len > 0 ? bconn_send(&c->bc, &v, 1, MSG_DONTWAIT)
                                  : bconn_flush(&c->bc, MSG_DONTWAIT);
        int err = errno;
        if (w > 0 || (w == 0 && v.iov_len == 0)) {
            buf_consume(&c->out, (size_t)w);
            c->last_io = sock_now();
            continue;
        }
        if (w < 0 && err == EINTR) {
            if (PyErr_CheckSignals() < 0)
                return -1;
            continue;
        }
        if (w < 0 && (err == EAGAIN || err == EWOULDBLOCK)) {
            int pr, fd = c->fd;
            short rev = 0;
            Py_BEGIN_ALLOW_THREADS
            struct pollfd pfd = {fd, POLLOUT | POLLIN, 0};
            pr = poll(&pfd, 1, -1);
            err = errno;
            rev = pfd.revents;
            Py_END_ALLOW_THREADS
            if (pr < 0) {
                if (err == EINTR) {
                    if (PyErr_CheckSignals() < 0)
                        return -1;
                    continue;
                }
                io_error(c, err);
                return -1;
            }
            if ((rev & POLLIN) && read_some(c, 0, 0) < 0)
                return -1;
            continue;
        }
        io_error(c, w < 0 ? err : EPIPE);
        return -1;
    }
    if (c->out.cap > 4 * AUTO_FLUSH)
        buf_shrink(&c->out, 4 * AUTO_FLUSH);
    return 0;
}

/* Before a request on a connection that was idle: if the store closed it (it
 * restarted, or dropped us), raise StaleConnection without sending anything, so
 * that the caller may safely send the request again on a new connection. */
static int check_idle(SConn *c)
{
    if (c->pending > 0 || buf_unread(&c->in) > 0 || buf_unread(&c->out) > 0 ||
        bconn_buffered(&c->bc) > 0)
        return 0;
    if (sock_now() - c->last_io < IDLE_CHECK)
        return 0;
    uint8_t b;
    ssize_t r = recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
        conn_break(c);
        PyErr_SetString(StaleConnection, "the store closed the connection (nothing was sent)");
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ decoding */

static PyObject *text(const uint8_t *p, size_t n)
{
    return PyUnicode_DecodeUTF8(p ? (const char *)p : "", (Py_ssize_t)n, "replace");
}

/* BACKEND_LIST (after its type) as (type, req, [(id, name, address), ...]);
 * NULL with ProtocolError when malformed. */
static PyObject *decode_backends(wire_rd_t *r, uint8_t type, uint64_t *req)
{
    uint64_t id = wire_u64(r);
    uint32_t count = wire_u32(r);
    PyObject *list = r->err ? NULL : PyList_New(0);
    for (uint32_t i = 0; list && i < count; i++) {
        size_t n[3];
        const uint8_t *f[3];
        for (int k = 0; k < 3; k++)
            f[k] = wire_str16(r, &n[k]);
        if (r->err) {
            Py_CLEAR(list);
            break;
        }
        PyObject *t = PyTuple_New(3);
        for (int k = 0; t && k < 3; k++) {
            PyObject *v = text(f[k], n[k]);
            if (!v)
                Py_CLEAR(t);
            else
                PyTuple_SET_ITEM(t, k, v);
        }
        if (!t || PyList_Append(list, t) < 0)
            Py_CLEAR(list);
        Py_XDECREF(t);
    }
    if (!list) {
        if (!PyErr_Occurred())
            PyErr_Format(ProtocolError, "malformed backend list from the store");
        return NULL;
    }
    *req = id;
    return Py_BuildValue("iKN", (int)type, (unsigned long long)id, list);
}

/* REF's replica list: a new tuple of n str, or NULL (malformed, or an
 * exception set). */
static PyObject *decode_replicas(wire_rd_t *r, uint16_t n)
{
    PyObject *t = PyTuple_New(n);
    for (uint16_t i = 0; t && i < n; i++) {
        size_t len = 0;
        const uint8_t *p = wire_str16(r, &len);
        PyObject *v = r->err ? NULL : text(p, len);
        if (!v)
            Py_CLEAR(t);
        else
            PyTuple_SET_ITEM(t, i, v);
    }
    return t;
}

/* One frame body (type byte first) as an answer tuple; *req is its request id
 * (0 for a message that has none). */
static PyObject *decode(const uint8_t *body, size_t len, uint64_t *req)
{
    wire_rd_t r;
    wire_rd_init(&r, body, len);
    uint8_t type = wire_u8(&r);
    *req = 0;
    switch (type) {
    case SMSG_OK:
    case SMSG_RAISED:
    case SMSG_CLASS_BYTES: {
        uint64_t id = wire_u64(&r);
        size_t n = 0;
        const uint8_t *p = wire_rest(&r, &n);
        if (r.err)
            break;
        *req = id;
        return Py_BuildValue("iKy#", (int)type, (unsigned long long)id,
                             p ? (const char *)p : "", (Py_ssize_t)n);
    }
    case SMSG_REF: {
        uint64_t id = wire_u64(&r);
        size_t n = 0, bn = 0;
        const uint8_t *oid = wire_str16(&r, &n);
        uint64_t cid = wire_u64(&r);
        /* the backend that holds it (a store before several backends: none) */
        const uint8_t *backend = r.p < r.end ? wire_str16(&r, &bn) : NULL;
        /* and those holding replicas (a store before replicas: none) */
        uint16_t nrep = r.p < r.end ? wire_u16(&r) : 0;
        if (r.err)
            break;
        PyObject *reps = decode_replicas(&r, nrep);
        if (!reps)
            break;
        *req = id;
        PyObject *s = text(oid, n);
        PyObject *b = s && backend ? text(backend, bn) : Py_NewRef(Py_None);
        if (!s || !b) {
            Py_XDECREF(s);
            Py_XDECREF(b);
            Py_DECREF(reps);
            return NULL;
        }
        return Py_BuildValue("iKNKNN", (int)type, (unsigned long long)id, s,
                             (unsigned long long)cid, b, reps);
    }
    case SMSG_BACKEND_LIST:
        return decode_backends(&r, type, req);
    case SMSG_FAILED: {
        uint64_t id = wire_u64(&r);
        uint8_t code = wire_u8(&r);
        size_t n = 0;
        const uint8_t *msg = wire_str16(&r, &n);
        if (r.err)
            break;
        *req = id;
        PyObject *s = text(msg, n);
        if (!s)
            return NULL;
        return Py_BuildValue("iKiN", (int)type, (unsigned long long)id, (int)code, s);
    }
    default:
        return Py_BuildValue("iy#", (int)type, (const char *)body + 1, (Py_ssize_t)(len - 1));
    }
    PyErr_Format(ProtocolError, "malformed message of type %d (%zu bytes) from the store",
                 (int)type, len);
    return NULL;
}

/* The next whole answer in c->in: 1 (*ans set, a new reference), 0 (none whole
 * yet), -1 (exception set; the connection is broken on a malformed frame). */
static int next_answer(SConn *c, PyObject **ans, uint64_t *req)
{
    size_t un = buf_unread(&c->in);
    if (un < 4)
        return 0;
    const uint8_t *h = buf_head(&c->in);
    uint32_t n = sock_be32(h);
    if (n == 0 || n > SPROTO_MAX_FRAME) {
        conn_break(c);
        PyErr_Format(ProtocolError, "bad frame length %u from the store", n);
        return -1;
    }
    if (un < 4 + (size_t)n)
        return 0;
    PyObject *a = decode(h + 4, n, req);
    buf_consume(&c->in, 4 + (size_t)n);
    if (!a) {
        if (PyErr_ExceptionMatches(ProtocolError))
            conn_break(c);
        return -1;
    }
    if (*req && c->pending > 0)
        c->pending--;
    *ans = a;
    return 1;
}

/* ------------------------------------------------------------------ encoding */

static int put_str16(wire_wr_t *w, PyObject *o, const char *what)
{
    const char *s = "";
    Py_ssize_t n = 0;
    if (o == Py_None) {
        /* empty */
    } else if (PyUnicode_Check(o)) {
        s = PyUnicode_AsUTF8AndSize(o, &n);
        if (!s)
            return -1;
    } else if (PyBytes_Check(o)) {
        s = PyBytes_AS_STRING(o);
        n = PyBytes_GET_SIZE(o);
    } else {
        PyErr_Format(PyExc_TypeError, "%s must be a str, not %.100s", what, Py_TYPE(o)->tp_name);
        return -1;
    }
    if (n > 0xffff) {
        PyErr_Format(PyExc_ValueError, "%s is too long (%zd bytes, at most 65535)", what, n);
        return -1;
    }
    wire_put_str16(w, s, (size_t)n);
    return 0;
}

static int put_u64(wire_wr_t *w, PyObject *o, const char *what)
{
    if (!PyLong_Check(o)) {
        PyErr_Format(PyExc_TypeError, "%s must be an int, not %.100s", what, Py_TYPE(o)->tp_name);
        return -1;
    }
    unsigned long long v = PyLong_AsUnsignedLongLong(o);
    if (v == (unsigned long long)-1 && PyErr_Occurred())
        return -1;
    wire_put_u64(w, (uint64_t)v);
    return 0;
}

/* A bytes-like object's bytes, with a u32 length first when with_len. */
static int put_buffer(wire_wr_t *w, PyObject *o, int with_len, const char *what)
{
    if (PyBytes_Check(o)) {
        size_t n = (size_t)PyBytes_GET_SIZE(o);
        if (with_len) {
            if (n > UINT32_MAX) {
                PyErr_Format(PyExc_ValueError, "%s is too large", what);
                return -1;
            }
            wire_put_u32(w, (uint32_t)n);
        }
        wire_put_bytes(w, PyBytes_AS_STRING(o), n);
        return 0;
    }
    Py_buffer v;
    if (PyObject_GetBuffer(o, &v, PyBUF_SIMPLE) < 0) {
        PyErr_Format(PyExc_TypeError, "%s must be a bytes-like object, not %.100s", what,
                     Py_TYPE(o)->tp_name);
        return -1;
    }
    int rc = 0;
    if (with_len) {
        if ((size_t)v.len > UINT32_MAX) {
            PyErr_Format(PyExc_ValueError, "%s is too large", what);
            rc = -1;
        } else {
            wire_put_u32(w, (uint32_t)v.len);
        }
    }
    if (rc == 0)
        wire_put_bytes(w, v.buf, (size_t)v.len);
    PyBuffer_Release(&v);
    return rc;
}

static int put_persist(wire_wr_t *w, PyObject *items)
{
    PyObject *seq = PySequence_Fast(items, "PERSIST takes a sequence of "
                                           "(object_id, class_id, alias, state) tuples");
    if (!seq)
        return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if ((size_t)n > UINT32_MAX) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_ValueError, "too many objects for one PERSIST");
        return -1;
    }
    wire_put_u32(w, (uint32_t)n);
    PyObject **it = PySequence_Fast_ITEMS(seq);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *t = it[i];
        if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) != 4) {
            PyErr_SetString(PyExc_TypeError,
                            "PERSIST items are (object_id, class_id, alias, state) tuples");
            Py_DECREF(seq);
            return -1;
        }
        if (put_str16(w, PyTuple_GET_ITEM(t, 0), "object_id") < 0 ||
            put_u64(w, PyTuple_GET_ITEM(t, 1), "class_id") < 0 ||
            put_str16(w, PyTuple_GET_ITEM(t, 2), "alias") < 0 ||
            put_buffer(w, PyTuple_GET_ITEM(t, 3), 1, "state") < 0) {
            Py_DECREF(seq);
            return -1;
        }
    }
    Py_DECREF(seq);
    return 0;
}

/* The fields of each request type after its request id: Q u64, s str16, r rest,
 * P PERSIST's list. */
static const char *layout(int type)
{
    switch (type) {
    case SMSG_CLASS: return "Qsr";
    case SMSG_PERSIST: return "P";
    case SMSG_LOOKUP_ALIAS: return "s";
    case SMSG_LOOKUP_ID: return "s";
    case SMSG_CALL: return "ssr";
    case SMSG_GET_FIELD: return "ss";
    case SMSG_SET_FIELD: return "ssr";
    case SMSG_GET_STATE: return "s";
    case SMSG_UPDATE: return "sr";
    case SMSG_ADD_ALIAS: return "ss";
    case SMSG_DELETE_ALIAS: return "s";
    case SMSG_ALIASES: return "s";
    case SMSG_DELETE: return "s";
    case SMSG_GET_CLASS: return "Q";
    case SMSG_BACKENDS: return "";
    case SMSG_MOVE: return "ss";
    case SMSG_REPLICATE: return "ss";
    case SMSG_REPLICA_PUT: return "sQsr";
    case SMSG_REPLICA_DROP: return "s";
    case SMSG_FORWARD: return "ss";
    case SMSG_UNLOAD: return "";
    default: return NULL;
    }
}

/* Append one request to c->out; returns its id, or 0 with an exception set (the
 * buffer is left as it was). args[0] is the type. */
static uint64_t encode(SConn *c, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1) {
        PyErr_SetString(PyExc_TypeError, "expected a message type");
        return 0;
    }
    long type = PyLong_AsLong(args[0]);
    if (type == -1 && PyErr_Occurred())
        return 0;
    const char *lay = layout((int)type);
    if (!lay) {
        PyErr_Format(PyExc_ValueError, "%ld is not a request type of the store protocol", type);
        return 0;
    }
    Py_ssize_t want = (Py_ssize_t)strlen(lay);
    if (nargs - 1 != want) {
        PyErr_Format(PyExc_TypeError, "message type %ld takes %zd fields (%zd given)", type, want,
                     nargs - 1);
        return 0;
    }
    size_t mark = buf_unread(&c->out);
    uint64_t req = c->next_req;
    wire_wr_t w;
    wire_begin(&w, &c->out, (uint8_t)type, SPROTO_MAX_FRAME);
    wire_put_u64(&w, req);
    int rc = 0;
    for (Py_ssize_t i = 0; i < want && rc == 0; i++) {
        PyObject *o = args[1 + i];
        switch (lay[i]) {
        case 'Q': rc = put_u64(&w, o, "class_id"); break;
        case 's': rc = put_str16(&w, o, "a text field"); break;
        case 'r': rc = put_buffer(&w, o, 0, "the payload"); break;
        case 'P': rc = put_persist(&w, o); break;
        }
    }
    if (rc < 0) {
        c->out.len = c->out.off + mark;
        return 0;
    }
    if (wire_end(&w) < 0) {
        c->out.len = c->out.off + mark;
        if (w.err)
            PyErr_NoMemory();
        else
            PyErr_Format(PyExc_ValueError, "the request is larger than a frame may be");
        return 0;
    }
    c->next_req++;
    c->pending++;
    return req;
}

/* ------------------------------------------------------------------ handshake */

/* How this module's connect and handshake failures read (_connerr.h). */
static connerr_t connect_errors(void)
{
    connerr_t e = {.service = "store", .secret_vars = "BETTONG_STORE_SECRET or BETTONG_SECRET",
                   .refused_connect = PyExc_ConnectionRefusedError, .auth_error = AuthenticationError,
                   .protocol_error = ProtocolError};
    return e;
}

/* WELCOME or REFUSED (the handshake's answer). Returns 0 or -1 (exception set). */
static int take_answer(SConn *c, const uint8_t *body, size_t len)
{
    wire_rd_t r;
    wire_rd_init(&r, body, len);
    uint8_t type = wire_u8(&r);
    size_t sl = 0;
    const uint8_t *s = wire_str16(&r, &sl);
    if (r.err || (type != SMSG_WELCOME && type != SMSG_REFUSED)) {
        PyErr_Format(ProtocolError, "unexpected answer (type %d) to the handshake from %U",
                     (int)type, c->address);
        return -1;
    }
    PyObject *str = text(s, sl);
    if (!str)
        return -1;
    if (type == SMSG_REFUSED) {
        PyErr_Format(RefusedError, "the store at %U refused the connection: %U", c->address,
                     str);
        Py_DECREF(str);
        return -1;
    }
    c->store_name = str;
    return 0;
}

static int SConn_init(SConn *c, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"address", "secret", "name", "timeout", NULL};
    PyObject *address;
    Py_buffer secret = {0};
    const char *name = "";
    Py_ssize_t namelen = 0;
    double timeout = 30.0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "U|y*s#d:Connection", kwlist, &address,
                                     &secret, &name, &namelen, &timeout))
        return -1;
    if (c->fd >= 0 || c->address) {
        PyErr_SetString(PyExc_RuntimeError, "Connection already initialised");
        PyBuffer_Release(&secret);
        return -1;
    }
    Py_INCREF(address);
    c->address = address;
    const char *addr = PyUnicode_AsUTF8(address);
    buf_t id;
    buf_init(&id);
    if (!addr)
        goto fail;
    if (sproto_put_identity(&id, name, (size_t)namelen) < 0) {
        PyErr_NoMemory();
        goto fail;
    }
    double deadline = timeout > 0 ? sock_now() + timeout : -1;

    /* Connect and authenticate without the GIL: both block. */
    int opened, what = 0, err = 0, rc = 0;
    char why[400];
    const uint8_t *body = NULL;
    size_t len = 0;
    Py_BEGIN_ALLOW_THREADS
    opened = bconn_open(&c->bc, addr, 0, deadline, &what, why, sizeof why) == 0;
    if (opened)
        rc = bconn_handshake(&c->bc, &c->in, STORE_SERVICE, buf_head(&id), buf_unread(&id),
                             secret.buf, (size_t)secret.len, MAX_HANDSHAKE_FRAME, deadline,
                             SMSG_REFUSED, &body, &len);
    err = errno;
    Py_END_ALLOW_THREADS
    if (!opened) {
        connerr_t e = connect_errors();
        connerr_connect(&e, address, what, err, why);
        goto fail;
    }
    c->bc_open = 1;
    c->fd = c->bc.fd;
    c->closed = 0;
    c->pid = getpid();
    if (rc != 0) {
        connerr_t e = connect_errors();
        connerr_handshake(&e, address, rc, err);
        goto fail;
    }
    if (take_answer(c, body, len) < 0)
        goto fail;
    buf_consume(&c->in, 4 + len);
    c->last_io = sock_now();
    buf_free(&id);
    PyBuffer_Release(&secret);
    return 0;
fail:
    buf_free(&id);
    PyBuffer_Release(&secret);
    conn_close(c);
    return -1;
}

/* $BETTONG_STORE_SPIN_US as seconds (unset, empty or invalid: DEFAULT_SPIN_US). */
static double default_spin(void)
{
    const char *e = getenv(SPIN_ENV);
    char *end;
    long us = e && *e ? strtol(e, &end, 10) : -1;
    if (!e || !*e || *end || us < 0 || us > SPIN_MAX_US)
        us = DEFAULT_SPIN_US;
    return (double)us / 1e6;
}

static PyObject *SConn_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    SConn *c = (SConn *)type->tp_alloc(type, 0);
    if (!c)
        return NULL;
    c->fd = -1;
    c->closed = 1;
    c->next_req = 1;
    c->pid = getpid();
    c->spin = default_spin();
    buf_init(&c->in);
    buf_init(&c->out);
    c->stash = PyList_New(0);
    if (!c->stash) {
        Py_DECREF(c);
        return NULL;
    }
    pthread_mutex_init(&c->op_mu, NULL);
    pthread_mutex_init(&c->fd_mu, NULL);
    c->mu_ok = 1;
    return (PyObject *)c;
}

static void SConn_dealloc(SConn *c)
{
    /* No thread is in a method (each holds a reference): close the fd. Without a
     * shutdown: a forked child's copy must not cut the parent's connection, and
     * our own last close ends the connection anyway. */
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
    if (c->bc_open)
        bconn_free(&c->bc);
    buf_free(&c->in);
    buf_free(&c->out);
    Py_CLEAR(c->stash);
    Py_CLEAR(c->address);
    Py_CLEAR(c->store_name);
    if (c->mu_ok) {
        pthread_mutex_destroy(&c->op_mu);
        pthread_mutex_destroy(&c->fd_mu);
    }
    Py_TYPE(c)->tp_free((PyObject *)c);
}

/* ------------------------------------------------------------------ methods */

static PyObject *SConn_send(SConn *c, PyObject *const *args, Py_ssize_t nargs)
{
    if (op_begin(c) < 0)
        return NULL;
    uint64_t req = check_idle(c) < 0 ? 0 : encode(c, args, nargs);
    if (req && buf_unread(&c->out) >= AUTO_FLUSH && flush_out(c) < 0)
        req = 0; /* the request stays buffered: the next flush writes it */
    op_end(c);
    return req ? PyLong_FromUnsignedLongLong(req) : NULL;
}

static PyObject *SConn_flush(SConn *c, PyObject *unused)
{
    if (op_begin(c) < 0)
        return NULL;
    int rc = flush_out(c);
    op_end(c);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* If the next frame in c->in is a whole OK answer to `want` whose payload holds
 * no persistent id (no BINPERSID 'Q' or PERSID 'P' byte anywhere), consume it
 * and unpickle it with plain pickle.loads: 1 (*value set), else 0 (nothing
 * consumed; a failed unpickling is cleared and left to the caller, which
 * decodes the answer as usual). */
static int plain_ok(SConn *c, uint64_t want, PyObject **value)
{
    size_t un = buf_unread(&c->in);
    if (un < 4 + 9)
        return 0;
    const uint8_t *h = buf_head(&c->in);
    uint32_t n = sock_be32(h);
    if (n < 9 || n > SPROTO_MAX_FRAME || un < 4 + (size_t)n || h[4] != SMSG_OK)
        return 0;
    wire_rd_t r;
    wire_rd_init(&r, h + 5, n - 1);
    if (wire_u64(&r) != want)
        return 0;
    const uint8_t *p = h + 13;
    size_t len = n - 9;
    if (memchr(p, 'Q', len) || memchr(p, 'P', len))
        return 0;
    PyObject *mv = PyMemoryView_FromMemory((char *)p, (Py_ssize_t)len, PyBUF_READ);
    PyObject *v = mv ? PyObject_CallOneArg(plain_loads, mv) : NULL;
    Py_XDECREF(mv);
    if (!v) {
        PyErr_Clear();
        return 0;
    }
    buf_consume(&c->in, 4 + (size_t)n);
    if (c->pending > 0)
        c->pending--;
    *value = v;
    return 1;
}

/* request() and ask(): one request, and its answer (with `plain`: its value
 * when plain_ok takes it, *was_plain set). */
static PyObject *roundtrip(SConn *c, PyObject *const *args, Py_ssize_t nargs, int plain,
                           int *was_plain)
{
    if (op_begin(c) < 0)
        return NULL;
    PyObject *found = NULL;
    uint64_t want = 0;
    if (check_idle(c) < 0)
        goto done;
    want = encode(c, args, nargs);
    if (!want || flush_out(c) < 0)
        goto done;
    int fresh = c->pending == 1 && buf_unread(&c->in) == 0; /* only ours, just sent */
    for (;;) {
        if (plain && plain_ok(c, want, &found)) {
            *was_plain = 1;
            goto done;
        }
        PyObject *a = NULL;
        uint64_t req = 0;
        int rc = next_answer(c, &a, &req);
        if (rc < 0)
            goto done;
        if (rc == 1) {
            if (req == want) {
                found = a;
                goto done;
            }
            int ar = PyList_Append(c->stash, a);
            Py_DECREF(a);
            if (ar < 0)
                goto done;
            continue;
        }
        if (read_some(c, fresh ? 2 : 1, -1) < 0)
            goto done;
        fresh = 0;
    }
done:
    op_end(c);
    return found;
}

static PyObject *SConn_request(SConn *c, PyObject *const *args, Py_ssize_t nargs)
{
    int was_plain = 0;
    return roundtrip(c, args, nargs, 0, &was_plain);
}

static PyObject *SConn_ask(SConn *c, PyObject *const *args, Py_ssize_t nargs)
{
    int was_plain = 0;
    PyObject *r = roundtrip(c, args, nargs, 1, &was_plain);
    if (!r)
        return NULL;
    PyObject *t = PyTuple_Pack(2, was_plain ? Py_True : Py_False, r);
    Py_DECREF(r);
    return t;
}

static PyObject *SConn_recv(SConn *c, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"timeout", NULL};
    PyObject *tobj = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|O:recv", kwlist, &tobj))
        return NULL;
    double deadline = -1;
    if (tobj != Py_None) {
        double t = PyFloat_AsDouble(tobj);
        if (t == -1.0 && PyErr_Occurred())
            return NULL;
        deadline = sock_now() + (t > 0 ? t : 0);
    }
    if (op_begin(c) < 0)
        return NULL;
    PyObject *events = NULL;
    if (flush_out(c) < 0)
        goto done;
    events = c->stash;
    c->stash = PyList_New(0);
    if (!c->stash) {
        c->stash = events;
        events = NULL;
        goto done;
    }
    for (;;) {
        PyObject *a = NULL;
        uint64_t req = 0;
        int rc = next_answer(c, &a, &req);
        if (rc < 0)
            goto fail;
        if (rc == 1) {
            int ar = PyList_Append(events, a);
            Py_DECREF(a);
            if (ar < 0)
                goto fail;
            continue;
        }
        if (PyList_GET_SIZE(events) > 0)
            break;
        if (deadline < 0 && c->pending == 0)
            break; /* nothing to wait for: not forever */
        rc = read_some(c, 1, deadline);
        if (rc < 0)
            goto fail;
        if (rc == 0)
            break; /* timed out */
    }
    goto done;
fail:
    /* Keep what was already taken off the stream for a later recv(). */
    if (PyList_GET_SIZE(events) > 0) {
        PyObject *t = c->stash;
        c->stash = events;
        if (PyList_SetSlice(c->stash, PyList_GET_SIZE(c->stash), PyList_GET_SIZE(c->stash),
                            t) < 0)
            PyErr_Clear();
        Py_DECREF(t);
    } else {
        Py_DECREF(events);
    }
    events = NULL;
done:
    op_end(c);
    return events;
}

static PyObject *SConn_send_raw(SConn *c, PyObject *args)
{
    int type;
    Py_buffer body;
    if (!PyArg_ParseTuple(args, "iy*:send_raw", &type, &body))
        return NULL;
    if (type < 0 || type > 255) {
        PyBuffer_Release(&body);
        return PyErr_Format(PyExc_ValueError, "a message type is a u8");
    }
    if (op_begin(c) < 0) {
        PyBuffer_Release(&body);
        return NULL;
    }
    wire_wr_t w;
    wire_begin(&w, &c->out, (uint8_t)type, SPROTO_MAX_FRAME);
    wire_put_bytes(&w, body.buf, (size_t)body.len);
    int rc = wire_end(&w);
    PyBuffer_Release(&body);
    if (rc < 0)
        PyErr_SetString(PyExc_ValueError, "cannot encode the frame");
    else
        rc = flush_out(c);
    op_end(c);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *SConn_close(SConn *c, PyObject *unused)
{
    if (c->mu_ok)
        conn_close(c);
    Py_RETURN_NONE;
}

static PyObject *SConn_fileno(SConn *c, PyObject *unused)
{
    return PyLong_FromLong(c->closed ? -1 : c->fd);
}

static PyObject *SConn_get_closed(SConn *c, void *unused) { return PyBool_FromLong(c->closed); }

static PyObject *SConn_get_pending(SConn *c, void *unused)
{
    return PyLong_FromSsize_t(c->pending);
}

static PyObject *SConn_get_address(SConn *c, void *unused)
{
    PyObject *o = c->address ? c->address : Py_None;
    Py_INCREF(o);
    return o;
}

static PyObject *SConn_get_store_name(SConn *c, void *unused)
{
    PyObject *o = c->store_name ? c->store_name : Py_None;
    Py_INCREF(o);
    return o;
}

static PyObject *SConn_get_spin_us(SConn *c, void *unused)
{
    return PyLong_FromLong((long)(c->spin * 1e6 + 0.5));
}

static int SConn_set_spin_us(SConn *c, PyObject *v, void *unused)
{
    long us = v ? PyLong_AsLong(v) : -1;
    if (us == -1 && PyErr_Occurred())
        return -1;
    if (us < 0 || us > SPIN_MAX_US) {
        PyErr_Format(PyExc_ValueError, "spin_us is 0 to %d", SPIN_MAX_US);
        return -1;
    }
    c->spin = (double)us / 1e6;
    return 0;
}

static PyObject *SConn_repr(SConn *c)
{
    return PyUnicode_FromFormat("<bettong._store.Connection %R store %R%s>",
                                c->address ? c->address : Py_None,
                                c->store_name ? c->store_name : Py_None,
                                c->closed ? ", closed" : "");
}

static PyMethodDef SConn_methods[] = {
    {"send", (PyCFunction)(void (*)(void))SConn_send, METH_FASTCALL,
     "send(type, *fields) -> req_id: buffer one request."},
    {"flush", (PyCFunction)SConn_flush, METH_NOARGS, "flush(): write the buffered requests."},
    {"request", (PyCFunction)(void (*)(void))SConn_request, METH_FASTCALL,
     "request(type, *fields) -> answer: send one request and wait for its answer."},
    {"ask", (PyCFunction)(void (*)(void))SConn_ask, METH_FASTCALL,
     "ask(type, *fields) -> (True, value) when the answer is OK with a value that\n"
     "plain pickle.loads takes (no persistent id), else (False, answer)."},
    {"recv", (PyCFunction)(void (*)(void))SConn_recv, METH_VARARGS | METH_KEYWORDS,
     "recv(timeout=None) -> list of answers ([] on timeout)."},
    {"send_raw", (PyCFunction)SConn_send_raw, METH_VARARGS,
     "send_raw(type, body): one frame as it is (no request id)."},
    {"close", (PyCFunction)SConn_close, METH_NOARGS, "close(): shut the connection down."},
    {"fileno", (PyCFunction)SConn_fileno, METH_NOARGS, "fileno() -> the socket's fd."},
    {NULL},
};

static PyGetSetDef SConn_getset[] = {
    {"closed", (getter)SConn_get_closed, NULL, "the connection is closed", NULL},
    {"pending", (getter)SConn_get_pending, NULL, "requests not answered yet", NULL},
    {"address", (getter)SConn_get_address, NULL, "the store's address", NULL},
    {"store_name", (getter)SConn_get_store_name, NULL, "the name the store gave", NULL},
    {"spin_us", (getter)SConn_get_spin_us, (setter)SConn_set_spin_us,
     "microseconds to poll for an answer before blocking (0 to 10000)", NULL},
    {NULL},
};

static PyTypeObject SConnType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "bettong._store.Connection",
    .tp_basicsize = sizeof(SConn),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A client connection to a Bettong object store.",
    .tp_new = SConn_new,
    .tp_init = (initproc)SConn_init,
    .tp_dealloc = (destructor)SConn_dealloc,
    .tp_methods = SConn_methods,
    .tp_getset = SConn_getset,
    .tp_repr = (reprfunc)SConn_repr,
};

static struct PyModuleDef moddef = {
    PyModuleDef_HEAD_INIT, "bettong._store",
    "Client side of the Bettong object store protocol (src/store/sproto.h).", -1, NULL,
};

/* The package's own RefusedError / ProtocolError when bettong.errors has them
 * (so that one `except` catches a refusal by the pool or by the store). */
static PyObject *package_error(const char *name)
{
    PyObject *mod = PyImport_ImportModule("bettong.errors");
    if (!mod) {
        PyErr_Clear();
        return NULL;
    }
    PyObject *e = PyObject_GetAttrString(mod, name);
    Py_DECREF(mod);
    if (!e || !PyExceptionClass_Check(e)) {
        PyErr_Clear();
        Py_XDECREF(e);
        return NULL;
    }
    return e;
}

PyMODINIT_FUNC PyInit__store(void)
{
    if (PyType_Ready(&SConnType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&moddef);
    if (!m)
        return NULL;
    RefusedError = package_error("RefusedError");
    if (!RefusedError)
        RefusedError = PyErr_NewExceptionWithDoc(
            "bettong._store.RefusedError",
            "The store refused the connection (a wrong or missing secret, ...).",
            PyExc_PermissionError, NULL);
    AuthenticationError = package_error("AuthenticationError");
    if (!AuthenticationError && RefusedError)
        AuthenticationError = PyErr_NewExceptionWithDoc(
            "bettong._store.AuthenticationError",
            "The store could not prove it knows the shared secret: this client refused it.",
            RefusedError, NULL);
    ProtocolError = package_error("ProtocolError");
    if (!ProtocolError)
        ProtocolError = PyErr_NewExceptionWithDoc(
            "bettong._store.ProtocolError", "The peer broke the store protocol.",
            PyExc_ConnectionError, NULL);
    StaleConnection = PyErr_NewExceptionWithDoc(
        "bettong._store.StaleConnection",
        "The store had closed the idle connection; the request was not sent.",
        PyExc_ConnectionError, NULL);
    if (!RefusedError || !AuthenticationError || !ProtocolError || !StaleConnection)
        goto fail;
    PyObject *pickle = PyImport_ImportModule("pickle");
    plain_loads = pickle ? PyObject_GetAttrString(pickle, "loads") : NULL;
    Py_XDECREF(pickle);
    if (!plain_loads)
        goto fail;
    Py_INCREF(&SConnType);
    if (PyModule_AddObject(m, "Connection", (PyObject *)&SConnType) < 0) {
        Py_DECREF(&SConnType);
        goto fail;
    }
    Py_INCREF(RefusedError);
    Py_INCREF(AuthenticationError);
    Py_INCREF(ProtocolError);
    Py_INCREF(StaleConnection);
    if (PyModule_AddObject(m, "RefusedError", RefusedError) < 0 ||
        PyModule_AddObject(m, "AuthenticationError", AuthenticationError) < 0 ||
        PyModule_AddObject(m, "ProtocolError", ProtocolError) < 0 ||
        PyModule_AddObject(m, "StaleConnection", StaleConnection) < 0)
        goto fail;
    struct {
        const char *name;
        long v;
    } consts[] = {
        {"VERSION", SPROTO_VERSION},
        {"CLASS", SMSG_CLASS},
        {"PERSIST", SMSG_PERSIST},
        {"LOOKUP_ALIAS", SMSG_LOOKUP_ALIAS},
        {"LOOKUP_ID", SMSG_LOOKUP_ID},
        {"CALL", SMSG_CALL},
        {"GET_FIELD", SMSG_GET_FIELD},
        {"SET_FIELD", SMSG_SET_FIELD},
        {"GET_STATE", SMSG_GET_STATE},
        {"UPDATE", SMSG_UPDATE},
        {"ADD_ALIAS", SMSG_ADD_ALIAS},
        {"DELETE_ALIAS", SMSG_DELETE_ALIAS},
        {"ALIASES", SMSG_ALIASES},
        {"DELETE", SMSG_DELETE},
        {"GET_CLASS", SMSG_GET_CLASS},
        {"BACKENDS", SMSG_BACKENDS},
        {"MOVE", SMSG_MOVE},
        {"REPLICATE", SMSG_REPLICATE},
        {"REPLICA_PUT", SMSG_REPLICA_PUT},
        {"REPLICA_DROP", SMSG_REPLICA_DROP},
        {"FORWARD", SMSG_FORWARD},
        {"UNLOAD", SMSG_UNLOAD},
        {"BACKEND_LIST", SMSG_BACKEND_LIST},
        {"OK", SMSG_OK},
        {"REF", SMSG_REF},
        {"RAISED", SMSG_RAISED},
        {"FAILED", SMSG_FAILED},
        {"CLASS_BYTES", SMSG_CLASS_BYTES},
        {"ERR_NOT_FOUND", STORE_ERR_NOT_FOUND},
        {"ERR_ALIAS_TAKEN", STORE_ERR_ALIAS_TAKEN},
        {"ERR_NO_ATTRIBUTE", STORE_ERR_NO_ATTRIBUTE},
        {"ERR_BAD_REQUEST", STORE_ERR_BAD_REQUEST},
        {"ERR_UNKNOWN_CLASS", STORE_ERR_UNKNOWN_CLASS},
        {"ERR_INTERNAL", STORE_ERR_INTERNAL},
    };
    for (size_t i = 0; i < sizeof consts / sizeof consts[0]; i++)
        if (PyModule_AddIntConstant(m, consts[i].name, consts[i].v) < 0)
            goto fail;
    return m;
fail:
    Py_DECREF(m);
    return NULL;
}
