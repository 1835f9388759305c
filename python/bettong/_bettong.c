/* bettong._bettong: the client side of the task pool's wire protocol
 * (src/pool/proto.h), for the Python package `bettong`.
 *
 * One type, Connection, and a few constants.
 *
 *   Connection(address, secret=b"", name="", timeout=30.0)
 *       Connects to "unix:/path" (or a plain "/path") or "host:port" ("[v6]:port")
 *       and runs the handshake of src/net/auth.h (net/sock.c: the secret is the
 *       key of both proofs and is never sent), within `timeout` seconds. WELCOME
 *       fills `peer_id` and `workers`; REFUSED raises RefusedError (a
 *       PermissionError) with the pool's reason; a pool that cannot prove it knows
 *       the secret raises AuthenticationError (a RefusedError) before anything it
 *       sent is read.
 *
 *   send_func(func_id, payload)          one FUNC message
 *   send_calls(func_id, timeout_ms, retries, call_ids, payloads, near=None)
 *       CALLS messages for every payload, preferring workers near the store
 *       backend named `near` (a str of at most 63 bytes; None: no preference) (a sequence of bytes-like objects, each a
 *       pickled (args, kwargs); a payload may also be a tuple of bytes-like
 *       objects, sent one after the other as one payload). call_ids is an int (the first id; the others
 *       follow it: first, first+1, ...) or a sequence as long as payloads. The
 *       items are cut into frames of about 8 MiB; everything goes out in one
 *       sendmsg() series under the sender lock. Payloads of 8 KiB and more are not
 *       copied: they are written from the caller's objects (writev). On a
 *       Unix socket whose pool takes descriptors, a payload of SHM_MIN (1 MiB)
 *       or more goes as a CALLS_FD of its own: written into a sealed memfd
 *       and the descriptor sent (pool/shm.h).
 *   cancel(call_ids)                     CANCEL for one id or a sequence of ids
 *   forget(func_id)                      FORGET
 *   status()                             STATUS (the reply arrives through recv)
 *   recv(timeout=None) -> list
 *       Blocks (GIL released) until at least one message has arrived, or the
 *       timeout (seconds) passes ([] then). Returns every whole message that is
 *       buffered, as tuples:
 *         (MSG_RESULT, call_id, status, worker_id, attempts, submitted_us,
 *          started_us, finished_us, worker_near: str or None, payload: bytes)
 *         (MSG_CANCELLED, call_id, cancelled: bool)
 *         (MSG_STATUS_REPLY, workers, queued, running)
 *         (type, body: bytes) for any other type.
 *       A RESULT_FD (the payload in a memfd, pool/shm.h) gives the same
 *       tuple as a RESULT, and the descriptor is closed at once: a bytes
 *       result's object file is mapped as that bytes (the eleventh item,
 *       True, as below), an out-of-band file's payload is its private
 *       mapping (futures unpickle over it), any other payload is read with
 *       one pread.
 *       A RESULT of 64 KiB or more is read from the socket straight into its
 *       bytes object. When such a result is a successful one whose payload is a
 *       pickled bytes object (protocol 5: the common big result), the bytes are
 *       read straight into the bytes object the caller gets, not into a pickle
 *       to be copied out of again: that event has an eleventh item, True, and
 *       its tenth is the result itself.
 *       Raises ConnectionError when the pool closed the connection
 *       (or close() was called), ProtocolError on a malformed frame.
 *   close()                              shuts the socket down (wakes a blocked
 *                                        recv) and closes it once no thread uses it
 *   fileno(), closed, peer_id, workers, address
 *   shm_results, shm_calls: results received and calls sent as memfds so far
 *   shm_spare: bytes of the memfd made ready for the next large call
 *       (pool/shmspare.h: after a call of N bytes went as a memfd, a thread
 *       of the connection allocates another of N bytes while it runs; freed
 *       after SHM_SPARE_IDLE_MS unused and by close())
 *
 * And for futures.ChunkItem (the futures of a chunked map's items):
 * chunk_items(cls, chunks, k, n) makes the items of a map's chunks in one go,
 * chunk_runs(cls, fs) cuts a list into runs of one chunk's items, gc_track(obj).
 *
 * And for FunctionExecutor.call_async (_hot.h): CallIds, a connection's call id
 * counter, and HotCall, the submit side of a call_async on a prepared function.
 *
 * Threads: any number of senders (one sender lock: frames never interleave), and
 * one receiving thread at a time (a second concurrent recv raises RuntimeError).
 * Calls that would block release the GIL; a send the socket takes at once, or a
 * read of bytes already there, is done without releasing it (no thread switch per
 * small message). The sender lock is never waited for with the GIL held. A send
 * interrupted by a signal whose handler raises (Ctrl-C) after part of a frame
 * went out leaves the stream unusable, so the connection is shut down.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "_connerr.h"
#include "_hot.h"
#include "net/bconn.h"
#include "net/sock.h"
#include "pool/proto.h"
#include "pool/shm.h"
#include "pool/shmspare.h"
#include "py/mapped.h"
#include "util/buf.h"

/* Payloads from this size are written from the caller's buffer, not copied. */
#define SMALL_PAYLOAD (8 * 1024)
/* A CALLS frame is closed once it holds this much (unless it has one item). */
#define CALLS_FRAME_SOFT (8u * 1024 * 1024)
/* A RESULT frame this large is read straight into its bytes object. */
#define BIG_RESULT (64 * 1024)
#define READ_CHUNK (256 * 1024)
/* type + call_id + status + worker + attempts + three times; then str16
 * worker_near (at most PROTO_PLACE_MAX bytes) before the payload */
#define RESULT_FIXED (1 + 8 + 1 + 4 + 4 + 8 + 8 + 8)
#define RESULT_HEAD_MAX (RESULT_FIXED + 2 + PROTO_PLACE_MAX)
/* The pool's answers to the handshake are small; anything longer is not a pool. */
#define HANDSHAKE_MAX (64 * 1024)

#ifndef IOV_MAX
#define IOV_MAX 1024
#endif

static PyObject *RefusedError;
static PyObject *AuthenticationError;
static PyObject *ProtocolError;

typedef struct {
    PyObject_HEAD
    int fd;        /* bc.fd while open */
    bconn_t bc;    /* the connection, plain or TLS; bc_open: bconn_free at the end */
    int bc_open;
    int closed;    /* close() was called: no new use of fd */
    int users;     /* threads using fd with the GIL released */
    int receiving; /* a recv() is running */
    pthread_mutex_t mu;      /* fd, closed, users */
    pthread_mutex_t send_mu; /* one writer at a time; never taken with the GIL held */
    buf_t in;
    /* A large RESULT being read straight into its payload object. */
    PyObject *big;      /* bytes of the payload's full size, or NULL */
    size_t big_have;    /* bytes of it already read */
    uint8_t big_head[RESULT_HEAD_MAX];
    /* A successful result that is one pickled bytes object (PROTO 5, BINBYTES
     * len, the bytes, MEMOIZE, STOP) is read straight into the bytes object the
     * caller gets: `big` holds the value, and the two closing opcodes are read
     * into big_tail. */
    int big_raw;
    uint8_t big_tail[2];
    size_t big_tail_have;
    uint32_t peer_id;
    uint32_t workers;
    /* Large results come as memfds (pool/shm.h): the pool's WELCOME said so.
     * Descriptors received ahead of their RESULT_FD frames wait in fdq (the
     * receiving thread's). */
    int fds;
    shm_fdq_t fdq;
    uint64_t shm_results, shm_calls; /* payloads that came / went as memfds */
    /* The next CALLS_FD's memfd, made ready while a call runs (pool/shmspare.h);
     * stopped by close(), freed by dealloc. */
    shm_spare_t spare;
    PyObject *address;
    /* The last worker_near seen, as a str (owned), so that results from the
     * same place share one object instead of decoding it each time. */
    PyObject *near_str;
    uint8_t near_bytes[PROTO_PLACE_MAX];
    size_t near_len;
} Conn;

/* ------------------------------------------------------------------ fd users */

/* Returns the fd for use without the GIL, or -1 if the connection is closed. */
static int fd_enter(Conn *c)
{
    int fd = -1;
    pthread_mutex_lock(&c->mu);
    if (!c->closed && c->fd >= 0) {
        c->users++;
        fd = c->fd;
    }
    pthread_mutex_unlock(&c->mu);
    return fd;
}

static void fd_leave(Conn *c)
{
    pthread_mutex_lock(&c->mu);
    if (--c->users == 0 && c->closed && c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
    pthread_mutex_unlock(&c->mu);
}

static void conn_shutdown(Conn *c)
{
    shm_spare_stop(&c->spare); /* (not another one made for a closed connection) */
    pthread_mutex_lock(&c->mu);
    if (!c->closed) {
        c->closed = 1;
        if (c->fd >= 0) {
            shutdown(c->fd, SHUT_RDWR);
            if (c->users == 0) {
                close(c->fd);
                c->fd = -1;
            }
        }
    }
    pthread_mutex_unlock(&c->mu);
}

static PyObject *closed_error(void)
{
    PyErr_SetString(PyExc_ConnectionError, "connection to the pool is closed");
    return NULL;
}

/* ------------------------------------------------------------------ sending */

typedef struct {
    const uint8_t *ext; /* NULL: a range of the frame buffer */
    size_t off;
    size_t len;
} seg_t;

typedef struct {
    buf_t b;
    seg_t *segs;
    size_t nsegs, capsegs;
    size_t seg_start; /* start of the buffer bytes not yet in a segment */
} out_t;

static void out_init(out_t *o)
{
    buf_init(&o->b);
    o->segs = NULL;
    o->nsegs = o->capsegs = 0;
    o->seg_start = 0;
}

static void out_free(out_t *o)
{
    buf_free(&o->b);
    PyMem_RawFree(o->segs);
}

static int out_push(out_t *o, const uint8_t *ext, size_t off, size_t len)
{
    if (len == 0)
        return 0;
    if (o->nsegs == o->capsegs) {
        size_t cap = o->capsegs ? o->capsegs * 2 : 16;
        seg_t *s = PyMem_RawRealloc(o->segs, cap * sizeof *s);
        if (!s)
            return -1;
        o->segs = s;
        o->capsegs = cap;
    }
    o->segs[o->nsegs++] = (seg_t){ext, off, len};
    return 0;
}

/* Close the current run of buffer bytes into a segment. */
static int out_flush_buf(out_t *o)
{
    int rc = out_push(o, NULL, o->seg_start, o->b.len - o->seg_start);
    o->seg_start = o->b.len;
    return rc;
}

/* Reference `len` bytes at `p` without copying them. */
static int out_ext(out_t *o, const void *p, size_t len)
{
    if (out_flush_buf(o) < 0)
        return -1;
    return out_push(o, p, 0, len);
}

static void put_len_at(buf_t *b, size_t at, uint32_t n)
{
    uint8_t *p = b->data + at;
    p[0] = (uint8_t)(n >> 24);
    p[1] = (uint8_t)(n >> 16);
    p[2] = (uint8_t)(n >> 8);
    p[3] = (uint8_t)n;
}

/* Write every iovec (and, over TLS, the ciphertext still waiting). Blocking
 * mode: called without the GIL, with send_mu held; returns 0, -1 with errno, or
 * -2 for EINTR. Non-blocking mode (MSG_DONTWAIT, may hold the GIL): also
 * returns 1 when the socket is full. The iovecs left are kept in *iovp / *cntp
 * either way, to go on from there. */
static int send_iov(bconn_t *bc, struct iovec **iovp, size_t *cntp, int nonblock)
{
    struct iovec *iov = *iovp;
    size_t cnt = *cntp;
    int rc = 0;
    int fd = bc->fd;
    while (cnt > 0 || bconn_unsent(bc) > 0) {
        ssize_t w;
        if (cnt > 0)
            w = bconn_send(bc, iov, cnt > IOV_MAX ? IOV_MAX : (int)cnt,
                           nonblock ? MSG_DONTWAIT : 0);
        else
            w = bconn_flush(bc, nonblock ? MSG_DONTWAIT : 0);
        if (w < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                if (nonblock) {
                    rc = 1;
                    break;
                }
                struct pollfd pfd = {fd, POLLOUT, 0};
                poll(&pfd, 1, -1);
                continue;
            }
            rc = errno == EINTR ? -2 : -1;
            break;
        }
        size_t n = (size_t)w;
        while (cnt > 0 && n >= iov->iov_len) {
            n -= iov->iov_len;
            iov++;
            cnt--;
        }
        if (cnt > 0 && n > 0) {
            iov->iov_base = (uint8_t *)iov->iov_base + n;
            iov->iov_len -= n;
        }
    }
    *iovp = iov;
    *cntp = cnt;
    return rc;
}

/* Send what `o` holds as one unit. GIL held on entry and exit. When the sender
 * lock is free and the socket takes everything at once (the usual case), the GIL
 * is never released: no thread switch for a small message. */
static PyObject *out_send(Conn *c, out_t *o)
{
    if (out_flush_buf(o) < 0)
        return PyErr_NoMemory();
    if (o->nsegs == 0)
        Py_RETURN_NONE;
    struct iovec *iov_all = PyMem_RawMalloc(o->nsegs * sizeof *iov_all);
    if (!iov_all)
        return PyErr_NoMemory();
    size_t total = 0;
    for (size_t i = 0; i < o->nsegs; i++) {
        seg_t *s = &o->segs[i];
        iov_all[i].iov_base = (void *)(s->ext ? s->ext : o->b.data + s->off);
        iov_all[i].iov_len = s->len;
        total += s->len;
    }
    if (fd_enter(c) < 0) {
        PyMem_RawFree(iov_all);
        return closed_error();
    }
    struct iovec *iov = iov_all;
    size_t cnt = o->nsegs;
    int rc = 1, err = 0, interrupted = 0;
    /* Never wait for send_mu with the GIL held: its holder may want the GIL. */
    int locked = pthread_mutex_trylock(&c->send_mu) == 0;
    if (locked) {
        rc = send_iov(&c->bc, &iov, &cnt, 1);
        err = errno;
    }
    if (rc == 1 || rc == -2) { /* full, interrupted, or someone else is sending */
        PyThreadState *ts = PyEval_SaveThread();
        if (!locked)
            pthread_mutex_lock(&c->send_mu);
        locked = 1;
        for (;;) {
            rc = send_iov(&c->bc, &iov, &cnt, 0);
            err = errno;
            if (rc != -2)
                break;
            /* EINTR: let Python's signal handlers run (Ctrl-C). Taking the GIL
             * with send_mu held is safe: nobody waits for send_mu holding it. */
            PyEval_RestoreThread(ts);
            if (PyErr_CheckSignals() < 0)
                interrupted = 1;
            ts = PyEval_SaveThread();
            if (interrupted)
                break;
        }
        PyEval_RestoreThread(ts);
    }
    if (locked)
        pthread_mutex_unlock(&c->send_mu);
    fd_leave(c);
    PyMem_RawFree(iov_all);
    if (interrupted) {
        /* Part of a frame may be out: the stream cannot be used any more. */
        size_t left = 0;
        for (size_t i = 0; i < cnt; i++)
            left += iov[i].iov_len;
        if (left != total)
            conn_shutdown(c);
        return NULL;
    }
    if (rc < 0) {
        errno = err;
        if (err == EPIPE || err == ECONNRESET || err == ENOTCONN || err == EBADF ||
            err == EPROTO) {
            PyErr_Format(PyExc_ConnectionError, "connection to the pool lost: %s",
                         err == EPROTO ? "broken TLS stream" : strerror(err));
            return NULL;
        }
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------ receiving */

/* The length of a RESULT's head (fixed fields and worker_near, from the type
 * byte) in the len bytes at body; 0 if they do not hold it all yet, -1 if the
 * near is longer than any pool sends. */
static long result_head_len(const uint8_t *body, size_t len)
{
    if (len < RESULT_FIXED + 2)
        return 0;
    size_t n = ((size_t)body[RESULT_FIXED] << 8) | body[RESULT_FIXED + 1];
    if (n > PROTO_PLACE_MAX)
        return -1;
    return len < RESULT_FIXED + 2 + n ? 0 : (long)(RESULT_FIXED + 2 + n);
}

/* The worker_near of a RESULT head as a new reference: None for none. */
static PyObject *near_object(Conn *c, const uint8_t *head)
{
    size_t n = ((size_t)head[RESULT_FIXED] << 8) | head[RESULT_FIXED + 1];
    const uint8_t *p = head + RESULT_FIXED + 2;
    if (n == 0)
        Py_RETURN_NONE;
    if (!c->near_str || c->near_len != n || memcmp(c->near_bytes, p, n) != 0) {
        PyObject *str = PyUnicode_DecodeUTF8((const char *)p, (Py_ssize_t)n, "replace");
        if (!str)
            return NULL;
        Py_XSETREF(c->near_str, str);
        memcpy(c->near_bytes, p, n);
        c->near_len = n;
    }
    Py_INCREF(c->near_str);
    return c->near_str;
}

/* The RESULT tuple from its head (body from the type byte: see result_head_len)
 * and payload (a new reference that is stolen). raw: the payload is the result
 * itself, not its pickle (the tuple then has an eleventh item, True). */
static PyObject *result_tuple_ex(Conn *c, const uint8_t *fixed, PyObject *payload, int raw)
{
    proto_rd_t r;
    proto_rd_init(&r, fixed, RESULT_FIXED);
    uint8_t type = proto_u8(&r);
    uint64_t call_id = proto_u64(&r);
    uint8_t status = proto_u8(&r);
    uint32_t worker = proto_u32(&r);
    uint32_t attempts = proto_u32(&r);
    uint64_t sub = proto_u64(&r);
    uint64_t start = proto_u64(&r);
    uint64_t fin = proto_u64(&r);
    PyObject *t = PyTuple_New(raw ? 11 : 10);
    if (!t) {
        Py_DECREF(payload);
        return NULL;
    }
    PyObject *v[9] = {
        PyLong_FromLong(type == MSG_RESULT_FD ? MSG_RESULT : type), /* one event for both */
        PyLong_FromUnsignedLongLong(call_id),
        PyLong_FromLong(status),
        PyLong_FromUnsignedLong(worker),
        PyLong_FromUnsignedLong(attempts),
        PyLong_FromUnsignedLongLong(sub),
        PyLong_FromUnsignedLongLong(start),
        PyLong_FromUnsignedLongLong(fin),
        near_object(c, fixed),
    };
    for (int i = 0; i < 9; i++) {
        if (!v[i]) {
            for (int j = i; j < 9; j++)
                Py_XDECREF(v[j]);
            Py_DECREF(payload);
            Py_DECREF(t);
            return NULL;
        }
        PyTuple_SET_ITEM(t, i, v[i]);
    }
    PyTuple_SET_ITEM(t, 9, payload);
    if (raw) {
        Py_INCREF(Py_True);
        PyTuple_SET_ITEM(t, 10, Py_True);
    }
    /* Ints, a str or None, a bytes: it can be in no reference cycle, so the
     * cycle collector need not walk it (a future holds it for its stats: a
     * map's worth of them would otherwise be walked by every collection). */
    PyObject_GC_UnTrack(t);
    return t;
}

static PyObject *result_tuple(Conn *c, const uint8_t *fixed, PyObject *payload)
{
    return result_tuple_ex(c, fixed, payload, 0);
}

/* Pickle protocol 5 of one bytes object: PROTO 5, BINBYTES (u32 little-endian
 * length), the bytes, then MEMOIZE and STOP. */
#define RAW_HEAD 7
#define RAW_TAIL 2
static const uint8_t raw_tail[RAW_TAIL] = {0x94, '.'};

/* n bytes at off of the memfd fd in a new bytes object: one copy, made
 * without the GIL. */
static PyObject *bytes_of_fd(int fd, uint64_t off, uint64_t n)
{
    PyObject *b = n <= PY_SSIZE_T_MAX ? PyBytes_FromStringAndSize(NULL, (Py_ssize_t)n) : NULL;
    if (!b)
        return PyErr_Occurred() ? NULL : PyErr_NoMemory();
    int rc;
    Py_BEGIN_ALLOW_THREADS
    buf_prefault(PyBytes_AS_STRING(b), (size_t)n);
    rc = shm_read(fd, off, PyBytes_AS_STRING(b), (size_t)n);
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        Py_DECREF(b);
        PyErr_Format(ProtocolError, "cannot read a result of %llu bytes from its shared memory: %s",
                     (unsigned long long)n, strerror(errno));
        return NULL;
    }
    return b;
}

/* The payload of a RESULT_FD from its memfd (pool/shm.h):
 * - an object file: the result itself, its pages mapped as the bytes object
 *   (py/mapped.h), else read into it (*raw set);
 * - an out-of-band file: its private mapping (py/mapped.h mapped_file), over
 *   which futures unpickle, else its bytes;
 * - anything else: the pickle, read.
 * The descriptor is closed by the caller, so nothing outlives the event.
 * Returns a new reference. */
static PyObject *payload_of_fd(int fd, uint64_t size, uint8_t status, int *raw)
{
    uint8_t head[SHM_OBJ_HEAD];
    uint64_t objlen;
    *raw = 0;
    int got = status == CALL_OK && size >= SHM_OBJ_HEAD && shm_read(fd, 0, head, SHM_OBJ_HEAD) == 0;
    if (got && shm_obj_parse(head, SHM_OBJ_HEAD, size, &objlen)) {
        *raw = 1;
        PyObject *b = mapped_bytes(fd, SHM_OBJ_DATA, (size_t)objlen);
        return b ? b : bytes_of_fd(fd, SHM_OBJ_DATA, objlen);
    }
    if (got && memcmp(head, SHM_OOB_MAGIC, 8) == 0) {
        PyObject *m = mapped_file(fd, (size_t)size);
        if (m)
            return m;
        PyErr_Clear();
    }
    return bytes_of_fd(fd, 0, size);
}

/* RESULT_FD: RESULT's head, then u64 size; the payload in the oldest
 * descriptor received. */
static PyObject *result_of_fd(Conn *c, const uint8_t *body, size_t len)
{
    long head = result_head_len(body, len);
    if (head <= 0 || len != (size_t)head + 8) {
        PyErr_Format(ProtocolError, "malformed RESULT_FD (%zu bytes)", len);
        return NULL;
    }
    proto_rd_t r;
    proto_rd_init(&r, body + head, 8);
    uint64_t size = proto_u64(&r);
    int fd = shm_fdq_pop(&c->fdq);
    if (fd < 0) {
        PyErr_SetString(ProtocolError, "RESULT_FD came without a descriptor");
        return NULL;
    }
    char why[160];
    PyObject *payload = NULL;
    int raw = 0;
    if (size > PROTO_MAX_FRAME || shm_check(fd, size, why, sizeof why) < 0) {
        if (size > PROTO_MAX_FRAME)
            snprintf(why, sizeof why, "a payload of %llu bytes", (unsigned long long)size);
        PyErr_Format(ProtocolError, "RESULT_FD: %s", why);
    } else {
        payload = payload_of_fd(fd, size, body[9], &raw);
    }
    close(fd);
    if (!payload)
        return NULL;
    c->shm_results++;
    return result_tuple_ex(c, body, payload, raw);
}

/* One decoded frame body (type byte first) as an event tuple. */
static PyObject *decode_frame(Conn *c, const uint8_t *body, size_t len)
{
    proto_rd_t r;
    proto_rd_init(&r, body, len);
    uint8_t type = proto_u8(&r);
    switch (type) {
    case MSG_RESULT: {
        long head = result_head_len(body, len);
        if (head <= 0)
            break;
        PyObject *payload = PyBytes_FromStringAndSize((const char *)body + head,
                                                      (Py_ssize_t)(len - (size_t)head));
        if (!payload)
            return NULL;
        return result_tuple(c, body, payload);
    }
    case MSG_RESULT_FD:
        if (!c->fds)
            break;
        return result_of_fd(c, body, len);
    case MSG_CANCELLED: {
        uint64_t id = proto_u64(&r);
        uint8_t dropped = proto_u8(&r);
        if (r.err)
            break;
        return Py_BuildValue("iKO", (int)type, (unsigned long long)id,
                             dropped ? Py_True : Py_False);
    }
    case MSG_STATUS_REPLY: {
        uint32_t w = proto_u32(&r), q = proto_u32(&r), run = proto_u32(&r);
        if (r.err)
            break;
        return Py_BuildValue("ikkk", (int)type, (unsigned long)w, (unsigned long)q,
                             (unsigned long)run);
    }
    default:
        return Py_BuildValue("iy#", (int)type, (const char *)body + 1,
                             (Py_ssize_t)(len - 1));
    }
    PyErr_Format(ProtocolError, "malformed message of type %d (%zu bytes)", (int)type, len);
    return NULL;
}

/* Append every whole frame in c->in to `events`. Returns 0 or -1. */
static int drain_frames(Conn *c, PyObject *events)
{
    while (buf_unread(&c->in) >= 4) {
        const uint8_t *h = buf_head(&c->in);
        uint32_t n = sock_be32(h);
        if (n == 0 || n > PROTO_MAX_FRAME) {
            PyErr_Format(ProtocolError, "bad frame length %u from the pool", n);
            return -1;
        }
        if (buf_unread(&c->in) < 4 + (size_t)n)
            break;
        PyObject *ev = decode_frame(c, h + 4, n);
        buf_consume(&c->in, 4 + (size_t)n);
        if (!ev)
            return -1;
        int rc = PyList_Append(events, ev);
        Py_DECREF(ev);
        if (rc < 0)
            return -1;
    }
    return 0;
}

/* If the partial frame at the head of c->in is a large RESULT, move it into a
 * bytes object that the rest is read into: the payload, or (a successful result
 * that is a pickled bytes object) the result itself. Returns 0 or -1. */
static int maybe_start_big(Conn *c)
{
    size_t un = buf_unread(&c->in);
    if (c->big || un < 4 + RESULT_FIXED + 2)
        return 0;
    const uint8_t *h = buf_head(&c->in);
    uint32_t n = sock_be32(h);
    if (h[4] != MSG_RESULT || n < BIG_RESULT || un >= 4 + (size_t)n)
        return 0;
    long head = result_head_len(h + 4, un - 4);
    if (head < 0) {
        PyErr_Format(ProtocolError, "RESULT with a worker locality longer than %d bytes",
                     PROTO_PLACE_MAX);
        return -1;
    }
    if (head == 0 || un < 4 + (size_t)head + RAW_HEAD)
        return 0;
    size_t plen = n - (size_t)head;
    const uint8_t *p = h + 4 + head;
    size_t avail = un - 4 - (size_t)head; /* < plen: the frame is not whole */
    uint32_t rawlen = (uint32_t)p[3] | ((uint32_t)p[4] << 8) | ((uint32_t)p[5] << 16) |
                      ((uint32_t)p[6] << 24);
    int raw = h[4 + 9] == CALL_OK && p[0] == 0x80 && p[1] == 5 && p[2] == 'B' &&
              (size_t)rawlen + RAW_HEAD + RAW_TAIL == plen;
    size_t size = raw ? rawlen : plen;
    PyObject *b = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)size);
    if (!b)
        return -1;
    /* fresh memory about to be filled: backed at once, not fault by fault */
    buf_prefault(PyBytes_AS_STRING(b), size);
    memcpy(c->big_head, h + 4, (size_t)head);
    size_t have = avail, tail = 0;
    if (raw) {
        have = avail - RAW_HEAD;
        if (have > size) {
            tail = have - size;
            have = size;
        }
        memcpy(PyBytes_AS_STRING(b), p + RAW_HEAD, have);
        memcpy(c->big_tail, p + RAW_HEAD + have, tail);
    } else {
        memcpy(PyBytes_AS_STRING(b), p, have);
    }
    buf_consume(&c->in, un);
    buf_shrink(&c->in, 4 * READ_CHUNK);
    c->big = b;
    c->big_have = have;
    c->big_raw = raw;
    c->big_tail_have = tail;
    return 0;
}

/* The event of a large RESULT read to its end. */
static PyObject *finish_big(Conn *c)
{
    PyObject *value = c->big;
    c->big = NULL;
    if (!c->big_raw)
        return result_tuple(c, c->big_head, value);
    if (memcmp(c->big_tail, raw_tail, RAW_TAIL) == 0)
        return result_tuple_ex(c, c->big_head, value, 1);
    /* Not the pickle it looked like: give the pickle back, whole. */
    Py_ssize_t len = PyBytes_GET_SIZE(value);
    PyObject *pk = PyBytes_FromStringAndSize(NULL, len + RAW_HEAD + RAW_TAIL);
    if (!pk) {
        Py_DECREF(value);
        return NULL;
    }
    uint8_t *q = (uint8_t *)PyBytes_AS_STRING(pk);
    q[0] = 0x80;
    q[1] = 5;
    q[2] = 'B';
    for (int i = 0; i < 4; i++)
        q[3 + i] = (uint8_t)((uint64_t)len >> (8 * i));
    memcpy(q + RAW_HEAD, PyBytes_AS_STRING(value), (size_t)len);
    memcpy(q + RAW_HEAD + len, c->big_tail, RAW_TAIL);
    Py_DECREF(value);
    return result_tuple(c, c->big_head, pk);
}

/* ------------------------------------------------------------------ the type */

/* How this module's connect and handshake failures read (_connerr.h). */
static connerr_t connect_errors(void)
{
    connerr_t e = {.service = "pool", .secret_vars = "BETTONG_SECRET",
                   .refused_connect = PyExc_ConnectionError, .auth_error = AuthenticationError,
                   .protocol_error = ProtocolError};
    return e;
}

/* WELCOME or REFUSED (the handshake's answer). Returns 0 or -1 (exception set). */
static int take_answer(Conn *c, const uint8_t *body, size_t len)
{
    proto_rd_t r;
    proto_rd_init(&r, body, len);
    uint8_t type = proto_u8(&r);
    if (type == MSG_WELCOME) {
        c->peer_id = proto_u32(&r);
        c->workers = proto_u32(&r);
        /* A pool of an older build ends here: no descriptors then. */
        c->fds = r.p < r.end && (proto_u8(&r) & PROTO_TAKES_FDS);
        if (!r.err)
            return 0;
        PyErr_SetString(ProtocolError, "malformed WELCOME");
        return -1;
    }
    if (type == MSG_REFUSED) {
        size_t rl = 0;
        const uint8_t *reason = proto_str16(&r, &rl);
        PyObject *msg = PyUnicode_DecodeUTF8(reason ? (const char *)reason : "", (Py_ssize_t)rl,
                                             "replace");
        if (msg) {
            PyErr_Format(RefusedError, "the pool at %U refused the connection: %U", c->address,
                         msg);
            Py_DECREF(msg);
        }
        return -1;
    }
    PyErr_Format(ProtocolError, "unexpected message %d in answer to the handshake", (int)type);
    return -1;
}

static int Conn_init(Conn *c, PyObject *args, PyObject *kw)
{
    /* parent_task: connect as the sub-call client of that running task, with
     * its token as `secret` (pool/subcall.h); 0: an ordinary client. */
    static char *kwlist[] = {"address", "secret", "name", "timeout", "parent_task", NULL};
    PyObject *address;
    Py_buffer secret = {0};
    const char *name = "";
    Py_ssize_t namelen = 0;
    double timeout = 30.0;
    unsigned long long parent_task = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "U|y*s#dK:Connection", kwlist, &address,
                                     &secret, &name, &namelen, &timeout, &parent_task))
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
    /* On a Unix socket large results may come as descriptors (pool/shm.h). */
    int local = (strncmp(addr, "unix:", 5) == 0 || addr[0] == '/') && shm_enabled();
    if ((parent_task ? proto_put_subcall_identity(&id, (uint32_t)getpid(), name,
                                                  (size_t)namelen, parent_task)
                     : proto_put_identity(&id, ROLE_CLIENT, (uint32_t)getpid(), name,
                                          (size_t)namelen, NULL, 0)) < 0 ||
        proto_put_identity_flags(&id, local ? PROTO_TAKES_FDS : 0) < 0) {
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
    opened = bconn_open(&c->bc, addr, 1, deadline, &what, why, sizeof why) == 0;
    if (opened)
        rc = bconn_handshake(&c->bc, &c->in, POOL_SERVICE, buf_head(&id), buf_unread(&id),
                             secret.buf, (size_t)secret.len, HANDSHAKE_MAX, deadline,
                             MSG_REFUSED, &body, &len);
    err = errno;
    Py_END_ALLOW_THREADS
    if (!opened) {
        connerr_t e = connect_errors();
        connerr_connect(&e, address, what, err, why);
        goto fail;
    }
    c->bc_open = 1;
    c->fd = c->bc.fd;
    if (rc != 0) {
        connerr_t e = connect_errors();
        connerr_handshake(&e, address, rc, err);
        goto fail;
    }
    if (take_answer(c, body, len) < 0)
        goto fail;
    buf_consume(&c->in, 4 + len);
    buf_free(&id);
    PyBuffer_Release(&secret);
    return 0;
fail:
    buf_free(&id);
    PyBuffer_Release(&secret);
    conn_shutdown(c);
    return -1;
}

static PyObject *Conn_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    Conn *c = (Conn *)type->tp_alloc(type, 0);
    if (!c)
        return NULL;
    c->fd = -1;
    shm_fdq_init(&c->fdq);
    shm_spare_init(&c->spare, SHM_SPARE_IDLE_MS);
    pthread_mutex_init(&c->mu, NULL);
    pthread_mutex_init(&c->send_mu, NULL);
    buf_init(&c->in);
    return (PyObject *)c;
}

static void Conn_dealloc(Conn *c)
{
    conn_shutdown(c);
    /* No thread can be using fd: a method call holds a reference. */
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
    if (c->bc_open)
        bconn_free(&c->bc);
    buf_free(&c->in);
    shm_fdq_close(&c->fdq);
    shm_spare_close(&c->spare);
    Py_CLEAR(c->big);
    Py_CLEAR(c->near_str);
    Py_CLEAR(c->address);
    pthread_mutex_destroy(&c->mu);
    pthread_mutex_destroy(&c->send_mu);
    Py_TYPE(c)->tp_free((PyObject *)c);
}

/* send_func(func_id, payload) */
static PyObject *Conn_send_func(Conn *c, PyObject *args)
{
    unsigned long long func_id;
    Py_buffer p;
    if (!PyArg_ParseTuple(args, "Ky*:send_func", &func_id, &p))
        return NULL;
    if ((uint64_t)p.len + 9 > PROTO_MAX_FRAME) {
        PyBuffer_Release(&p);
        return PyErr_Format(PyExc_ValueError, "the pickled function is too large (%zd bytes)",
                            p.len);
    }
    out_t o;
    out_init(&o);
    proto_wr_t w;
    proto_begin(&w, &o.b, MSG_FUNC);
    proto_put_u64(&w, func_id);
    PyObject *res = NULL;
    if (w.err)
        goto oom;
    put_len_at(&o.b, w.start, (uint32_t)(1 + 8 + p.len));
    if (p.len < SMALL_PAYLOAD) {
        if (buf_append(&o.b, p.buf, (size_t)p.len) < 0)
            goto oom;
    } else if (out_ext(&o, p.buf, (size_t)p.len) < 0) {
        goto oom;
    }
    res = out_send(c, &o);
    goto done;
oom:
    PyErr_NoMemory();
done:
    out_free(&o);
    PyBuffer_Release(&p);
    return res;
}

/* The buffers of one call's payload: a bytes-like object, or a tuple of them
 * (written one after the other: a pickle whose large middle part is the
 * caller's object itself, not a copy of it). */
typedef struct {
    Py_ssize_t first; /* its first view */
    Py_ssize_t nviews;
    uint64_t len;
} item_t;

/* send_calls(func_id, timeout_ms, retries, call_ids, payloads, near=None) */
/* Protocol 5's pickle of ((b,), {}) after b's bytes (FRAME 8, then MEMOIZE,
 * TUPLE1, MEMOIZE, EMPTY_DICT, MEMOIZE, TUPLE2, MEMOIZE, STOP): the tail of
 * the three pieces _serial.bytes_arg_payload makes of a call whose one
 * argument is a large bytes object. */
static const uint8_t bytes_arg_tail[] = {0x95, 8, 0, 0, 0, 0, 0, 0, 0, 0x94,
                                         0x85, 0x94, '}', 0x94, 0x86, 0x94, '.'};

/* Whether the n views are (head, b, tail) of ((b,), {}), b a bytes object. */
static int is_bytes_arg(const Py_buffer *views, Py_ssize_t n)
{
    if (n != 3 || views[0].len != RAW_HEAD || views[2].len != sizeof bytes_arg_tail ||
        !views[1].obj || !PyBytes_CheckExact(views[1].obj))
        return 0;
    const uint8_t *h = views[0].buf;
    uint64_t len = (uint64_t)h[3] | ((uint64_t)h[4] << 8) | ((uint64_t)h[5] << 16) |
                   ((uint64_t)h[6] << 24);
    return h[0] == 0x80 && h[1] == 5 && h[2] == 'B' && len == (uint64_t)views[1].len &&
           memcmp(views[2].buf, bytes_arg_tail, sizeof bytes_arg_tail) == 0;
}

/* One call whose arguments (the n views) go in a memfd (pool/shm.h): a
 * CALLS_FD frame with the descriptor attached. The memfd is made and sent
 * without the GIL (the views stay held). Returns 0, 1 if no memfd could be
 * made (nothing was sent), or -1 with an exception. */
static int send_call_fd(Conn *c, uint64_t func_id, uint32_t timeout_ms, uint16_t retries,
                        const char *near, size_t near_len, uint64_t call_id,
                        const Py_buffer *views, Py_ssize_t n, uint64_t size)
{
    /* One bytes argument goes as an object file (pool/shm.h): the worker
     * maps it as that argument. */
    int obj = is_bytes_arg(views, n);
    uint8_t objhead[SHM_OBJ_HEAD];
    struct iovec *iov = PyMem_Malloc((size_t)(obj ? 4 : n ? n : 1) * sizeof *iov);
    if (iov && obj)
        size = shm_obj_iov(iov, objhead, views[1].buf, (size_t)views[1].len);
    buf_t b;
    buf_init(&b);
    proto_wr_t w;
    proto_begin(&w, &b, MSG_CALLS_FD);
    proto_put_u64(&w, func_id);
    proto_put_u32(&w, timeout_ms);
    proto_put_u16(&w, retries);
    proto_put_str16(&w, near ? near : "", near_len);
    proto_put_u64(&w, call_id);
    proto_put_u64(&w, size);
    if (!iov || proto_end(&w) < 0) {
        PyMem_Free(iov);
        buf_free(&b);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t q = 0; !obj && q < n; q++)
        iov[q] = (struct iovec){views[q].buf, (size_t)views[q].len};
    if (obj)
        n = 4;
    int sock = fd_enter(c);
    if (sock < 0) {
        PyMem_Free(iov);
        buf_free(&b);
        closed_error();
        return -1;
    }
    int rc = 0, err = 0, made = 1;
    Py_BEGIN_ALLOW_THREADS
    int mfd = shm_spare_take(&c->spare, (size_t)size);
    if (mfd >= 0 && shm_fill(mfd, iov, (int)n) < 0) {
        int e = errno;
        close(mfd);
        mfd = -1;
        errno = e;
    }
    if (mfd < 0) {
        made = 0;
        err = errno;
    } else {
        pthread_mutex_lock(&c->send_mu);
        ssize_t sent;
        for (;;) {
            sent = shm_send_fd(sock, buf_head(&b), buf_unread(&b), mfd, 0);
            if (sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                struct pollfd pfd = {sock, POLLOUT, 0};
                poll(&pfd, 1, -1);
                continue;
            }
            break;
        }
        err = errno;
        close(mfd);
        if (sent <= 0) {
            rc = -1;
        } else if ((size_t)sent < buf_unread(&b)) {
            struct iovec rest = {(void *)(buf_head(&b) + sent), buf_unread(&b) - (size_t)sent};
            struct iovec *rp = &rest;
            size_t cnt = 1;
            while ((rc = send_iov(&c->bc, &rp, &cnt, 0)) == -2)
                ;
            err = errno;
        }
        pthread_mutex_unlock(&c->send_mu);
    }
    Py_END_ALLOW_THREADS
    fd_leave(c);
    PyMem_Free(iov);
    buf_free(&b);
    if (!made)
        return 1; /* (out of memory or descriptors: the socket path instead) */
    if (rc < 0) {
        PyErr_Format(PyExc_ConnectionError, "connection to the pool lost: %s", strerror(err));
        return -1;
    }
    return 0;
}

static PyObject *Conn_send_calls(Conn *c, PyObject *args)
{
    unsigned long long func_id;
    unsigned long timeout_ms;
    unsigned int retries;
    PyObject *ids_obj, *payloads_obj;
    const char *near = NULL;
    Py_ssize_t near_len = 0;
    if (!PyArg_ParseTuple(args, "KkIOO|z#:send_calls", &func_id, &timeout_ms, &retries, &ids_obj,
                          &payloads_obj, &near, &near_len))
        return NULL;
    if (near_len > PROTO_PLACE_MAX)
        return PyErr_Format(PyExc_ValueError, "a store backend name of %zd bytes: at most %d",
                            near_len, PROTO_PLACE_MAX);
    if (timeout_ms > UINT32_MAX)
        timeout_ms = UINT32_MAX;
    if (retries > UINT16_MAX)
        return PyErr_Format(PyExc_ValueError, "retries must be at most %u", UINT16_MAX);

    PyObject *payloads = PySequence_Fast(payloads_obj, "payloads must be a sequence");
    if (!payloads)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(payloads);
    PyObject *ids = NULL;
    uint64_t first = 0;
    int consecutive = PyLong_Check(ids_obj);
    if (consecutive) {
        first = PyLong_AsUnsignedLongLong(ids_obj);
        if (PyErr_Occurred()) {
            Py_DECREF(payloads);
            return NULL;
        }
    } else {
        ids = PySequence_Fast(ids_obj, "call_ids must be an int or a sequence");
        if (!ids) {
            Py_DECREF(payloads);
            return NULL;
        }
        if (PySequence_Fast_GET_SIZE(ids) != n) {
            Py_DECREF(payloads);
            Py_DECREF(ids);
            return PyErr_Format(PyExc_ValueError, "%zd call ids for %zd payloads",
                                PySequence_Fast_GET_SIZE(ids), n);
        }
    }

    PyObject **objs = PySequence_Fast_ITEMS(payloads);
    Py_ssize_t nviews = 0;
    for (Py_ssize_t k = 0; k < n; k++)
        nviews += PyTuple_Check(objs[k]) ? PyTuple_GET_SIZE(objs[k]) : 1;

    PyObject *res = NULL;
    Py_ssize_t got = 0; /* views taken */
    Py_buffer *views = PyMem_Calloc((size_t)(nviews ? nviews : 1), sizeof *views);
    item_t *items = PyMem_Calloc((size_t)(n ? n : 1), sizeof *items);
    uint64_t *idv = PyMem_Malloc((size_t)(n ? n : 1) * sizeof *idv);
    out_t o;
    out_init(&o);
    if (!views || !idv || !items) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *obj = objs[k];
        int tup = PyTuple_Check(obj);
        Py_ssize_t parts = tup ? PyTuple_GET_SIZE(obj) : 1;
        items[k].first = got;
        items[k].nviews = parts;
        for (Py_ssize_t q = 0; q < parts; q++) {
            if (PyObject_GetBuffer(tup ? PyTuple_GET_ITEM(obj, q) : obj, &views[got],
                                   PyBUF_SIMPLE) < 0)
                goto done;
            items[k].len += (uint64_t)views[got].len;
            got++;
        }
        if (items[k].len + 64 > PROTO_MAX_FRAME) {
            PyErr_Format(PyExc_ValueError,
                         "the arguments of call %zd are too large to send (%llu bytes pickled)",
                         k, (unsigned long long)items[k].len);
            goto done;
        }
        if (consecutive) {
            idv[k] = first + (uint64_t)k;
        } else {
            idv[k] = PyLong_AsUnsignedLongLong(PySequence_Fast_GET_ITEM(ids, k));
            if (PyErr_Occurred())
                goto done;
        }
    }

    Py_ssize_t i = 0;
    int fd_ok = 1; /* memfds can be made */
    while (i < n) {
        if (c->fds && fd_ok && items[i].len >= SHM_MIN) {
            /* Large arguments go as a memfd, after what is gathered so far. */
            PyObject *sent = out_send(c, &o);
            if (!sent)
                goto done;
            Py_DECREF(sent);
            out_free(&o);
            out_init(&o);
            int rc = send_call_fd(c, func_id, (uint32_t)timeout_ms, (uint16_t)retries, near,
                                  (size_t)near_len, idv[i], &views[items[i].first],
                                  items[i].nviews, items[i].len);
            if (rc < 0)
                goto done;
            if (rc == 0) {
                c->shm_calls++;
                i++;
            } else {
                fd_ok = 0; /* this one and the rest go on the socket */
            }
            continue;
        }
        /* Items [i, j) go in this frame. */
        Py_ssize_t j = i;
        uint64_t size = 1 + 8 + 4 + 2 + 2 + (uint64_t)near_len + 4;
        while (j < n) {
            uint64_t add = 12 + items[j].len;
            if (j > i && (size + add > CALLS_FRAME_SOFT ||
                          (c->fds && fd_ok && items[j].len >= SHM_MIN)))
                break;
            size += add;
            j++;
        }
        proto_wr_t w;
        proto_begin(&w, &o.b, MSG_CALLS);
        proto_put_u64(&w, func_id);
        proto_put_u32(&w, (uint32_t)timeout_ms);
        proto_put_u16(&w, (uint16_t)retries);
        proto_put_str16(&w, near ? near : "", (size_t)near_len);
        proto_put_u32(&w, (uint32_t)(j - i));
        if (w.err)
            goto oom;
        put_len_at(&o.b, w.start, (uint32_t)size);
        for (Py_ssize_t k = i; k < j; k++) {
            uint8_t h[12];
            uint64_t id = idv[k];
            uint32_t len = (uint32_t)items[k].len;
            for (int b = 0; b < 8; b++)
                h[b] = (uint8_t)(id >> (56 - 8 * b));
            h[8] = (uint8_t)(len >> 24);
            h[9] = (uint8_t)(len >> 16);
            h[10] = (uint8_t)(len >> 8);
            h[11] = (uint8_t)len;
            if (buf_append(&o.b, h, 12) < 0)
                goto oom;
            for (Py_ssize_t q = 0; q < items[k].nviews; q++) {
                Py_buffer *v = &views[items[k].first + q];
                if (v->len < SMALL_PAYLOAD) {
                    if (buf_append(&o.b, v->buf, (size_t)v->len) < 0)
                        goto oom;
                } else if (out_ext(&o, v->buf, (size_t)v->len) < 0) {
                    goto oom;
                }
            }
        }
        i = j;
    }
    res = out_send(c, &o);
    goto done;
oom:
    PyErr_NoMemory();
done:
    out_free(&o);
    if (views)
        for (Py_ssize_t k = 0; k < got; k++)
            PyBuffer_Release(&views[k]);
    PyMem_Free(views);
    PyMem_Free(items);
    PyMem_Free(idv);
    Py_DECREF(payloads);
    Py_XDECREF(ids);
    return res;
}

/* A run of small fixed messages, each `type` + one u64. */
static PyObject *send_u64s(Conn *c, msg_type type, PyObject *obj)
{
    out_t o;
    out_init(&o);
    PyObject *res = NULL, *seq = NULL;
    if (PyLong_Check(obj)) {
        uint64_t v = PyLong_AsUnsignedLongLong(obj);
        if (PyErr_Occurred())
            goto done;
        proto_wr_t w;
        proto_begin(&w, &o.b, type);
        proto_put_u64(&w, v);
        if (proto_end(&w) < 0)
            goto oom;
    } else {
        seq = PySequence_Fast(obj, "expected an int or a sequence of ints");
        if (!seq)
            goto done;
        for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
            uint64_t v = PyLong_AsUnsignedLongLong(PySequence_Fast_GET_ITEM(seq, i));
            if (PyErr_Occurred())
                goto done;
            proto_wr_t w;
            proto_begin(&w, &o.b, type);
            proto_put_u64(&w, v);
            if (proto_end(&w) < 0)
                goto oom;
        }
    }
    res = out_send(c, &o);
    goto done;
oom:
    PyErr_NoMemory();
done:
    Py_XDECREF(seq);
    out_free(&o);
    return res;
}

static PyObject *Conn_cancel(Conn *c, PyObject *ids) { return send_u64s(c, MSG_CANCEL, ids); }

static PyObject *Conn_forget(Conn *c, PyObject *ids) { return send_u64s(c, MSG_FORGET, ids); }

static PyObject *Conn_status(Conn *c, PyObject *unused)
{
    out_t o;
    out_init(&o);
    proto_wr_t w;
    proto_begin(&w, &o.b, MSG_STATUS);
    PyObject *res = proto_end(&w) < 0 ? PyErr_NoMemory() : out_send(c, &o);
    out_free(&o);
    return res;
}

/* bconn_recv, or on a connection that passes descriptors a recvmsg that
 * keeps them (c->fdq). */
static ssize_t conn_recv(Conn *c, void *dst, size_t want, int flags)
{
    if (c->fds)
        return shm_recv(c->bc.fd, dst, want, flags, &c->fdq);
    return bconn_recv(&c->bc, dst, want, flags);
}

static PyObject *recv_loop(Conn *c, double deadline, PyObject *events)
{
    for (;;) {
        if (c->big && c->big_have == (size_t)PyBytes_GET_SIZE(c->big) &&
            (!c->big_raw || c->big_tail_have == RAW_TAIL)) {
            PyObject *ev = finish_big(c);
            if (!ev || PyList_Append(events, ev) < 0) {
                Py_XDECREF(ev);
                return NULL;
            }
            Py_DECREF(ev);
        }
        if (!c->big && drain_frames(c, events) < 0)
            return NULL;
        if (PyList_GET_SIZE(events) > 0)
            return events;
        if (maybe_start_big(c) < 0)
            return NULL;

        /* Where the next read goes. */
        uint8_t *dst;
        size_t want;
        if (c->big && c->big_have < (size_t)PyBytes_GET_SIZE(c->big)) {
            dst = (uint8_t *)PyBytes_AS_STRING(c->big) + c->big_have;
            want = (size_t)PyBytes_GET_SIZE(c->big) - c->big_have;
        } else if (c->big) {
            dst = c->big_tail + c->big_tail_have;
            want = RAW_TAIL - c->big_tail_have;
        } else {
            if (buf_reserve(&c->in, sock_read_need(&c->in, READ_CHUNK)) < 0)
                return PyErr_NoMemory();
            dst = c->in.data + c->in.len;
            want = c->in.cap - c->in.len;
        }

        int fd = fd_enter(c);
        if (fd < 0)
            return closed_error();
        /* What is already there is read without letting go of the GIL. */
        ssize_t r = conn_recv(c, dst, want, MSG_DONTWAIT);
        int pr = 1, err = errno;
        if (r < 0 && (err == EAGAIN || err == EWOULDBLOCK)) {
            Py_BEGIN_ALLOW_THREADS
            struct pollfd pfd = {fd, POLLIN, 0};
            pr = poll(&pfd, 1, sock_ms_left(deadline));
            if (pr > 0)
                r = conn_recv(c, dst, want, 0);
            err = errno;
            Py_END_ALLOW_THREADS
        }
        fd_leave(c);
        if (c->fdq.overflow) {
            PyErr_Format(ProtocolError, "the pool sent more than %d descriptors ahead of their "
                         "frames", SHM_MAX_PENDING);
            return NULL;
        }
        if (c->fdq.lost) {
            PyErr_SetString(PyExc_OSError, "a result's shared memory could not be received "
                            "(the process's open-file limit reached?)");
            return NULL;
        }
        if (pr < 0 || (pr > 0 && r < 0)) {
            if (err == EINTR) {
                if (PyErr_CheckSignals() < 0)
                    return NULL;
                continue;
            }
            if (err == ECONNRESET || err == ENOTCONN || err == EBADF || err == EPROTO) {
                PyErr_Format(PyExc_ConnectionError, "connection to the pool lost: %s",
                             err == EPROTO ? "broken TLS stream" : strerror(err));
                return NULL;
            }
            errno = err;
            return PyErr_SetFromErrno(PyExc_OSError);
        }
        if (pr == 0)
            return events; /* timed out: [] */
        if (r == 0) {
            if (c->closed)
                return closed_error();
            PyErr_SetString(PyExc_ConnectionError, "the pool closed the connection");
            return NULL;
        }
        if (c->big && c->big_have < (size_t)PyBytes_GET_SIZE(c->big))
            c->big_have += (size_t)r;
        else if (c->big)
            c->big_tail_have += (size_t)r;
        else
            c->in.len += (size_t)r;
    }
}

static PyObject *Conn_recv(Conn *c, PyObject *args, PyObject *kw)
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
    if (c->receiving)
        return PyErr_Format(PyExc_RuntimeError, "recv() is already running in another thread");
    PyObject *events = PyList_New(0);
    if (!events)
        return NULL;
    c->receiving = 1;
    PyObject *res = recv_loop(c, deadline, events);
    c->receiving = 0;
    if (!res)
        Py_DECREF(events);
    return res;
}

static PyObject *Conn_close(Conn *c, PyObject *unused)
{
    conn_shutdown(c);
    Py_RETURN_NONE;
}

static PyObject *Conn_fileno(Conn *c, PyObject *unused)
{
    return PyLong_FromLong(c->closed ? -1 : c->fd);
}

static PyObject *Conn_get_closed(Conn *c, void *unused) { return PyBool_FromLong(c->closed); }

static PyObject *Conn_get_peer_id(Conn *c, void *unused)
{
    return PyLong_FromUnsignedLong(c->peer_id);
}

static PyObject *Conn_get_shm_results(Conn *c, void *unused)
{
    return PyLong_FromUnsignedLongLong(c->shm_results);
}

static PyObject *Conn_get_shm_calls(Conn *c, void *unused)
{
    return PyLong_FromUnsignedLongLong(c->shm_calls);
}

static PyObject *Conn_get_shm_spare(Conn *c, void *unused)
{
    size_t n;
    Py_BEGIN_ALLOW_THREADS /* (its lock is held while a spare is closed) */
    n = shm_spare_bytes(&c->spare);
    Py_END_ALLOW_THREADS
    return PyLong_FromSize_t(n);
}

static PyObject *Conn_get_workers(Conn *c, void *unused)
{
    return PyLong_FromUnsignedLong(c->workers);
}

static PyObject *Conn_get_address(Conn *c, void *unused)
{
    if (!c->address)
        Py_RETURN_NONE;
    Py_INCREF(c->address);
    return c->address;
}

static PyObject *Conn_repr(Conn *c)
{
    return PyUnicode_FromFormat("<bettong._bettong.Connection %R peer %u, %u workers%s>",
                                c->address ? c->address : Py_None, c->peer_id, c->workers,
                                c->closed ? ", closed" : "");
}

static PyMethodDef Conn_methods[] = {
    {"send_func", (PyCFunction)Conn_send_func, METH_VARARGS,
     "send_func(func_id, payload): one FUNC message."},
    {"send_calls", (PyCFunction)Conn_send_calls, METH_VARARGS,
     "send_calls(func_id, timeout_ms, retries, call_ids, payloads, near=None): CALLS "
     "messages."},
    {"cancel", (PyCFunction)Conn_cancel, METH_O, "cancel(call_id or ids): CANCEL messages."},
    {"forget", (PyCFunction)Conn_forget, METH_O, "forget(func_id or ids): FORGET messages."},
    {"status", (PyCFunction)Conn_status, METH_NOARGS, "status(): a STATUS message."},
    {"recv", (PyCFunction)(void (*)(void))Conn_recv, METH_VARARGS | METH_KEYWORDS,
     "recv(timeout=None) -> list of event tuples ([] on timeout)."},
    {"close", (PyCFunction)Conn_close, METH_NOARGS, "close(): shut the connection down."},
    {"fileno", (PyCFunction)Conn_fileno, METH_NOARGS, "fileno() -> the socket's fd."},
    {NULL},
};

static PyGetSetDef Conn_getset[] = {
    {"closed", (getter)Conn_get_closed, NULL, "close() was called", NULL},
    {"peer_id", (getter)Conn_get_peer_id, NULL, "the id the pool gave this client", NULL},
    {"workers", (getter)Conn_get_workers, NULL, "workers in the pool at WELCOME", NULL},
    {"shm_results", (getter)Conn_get_shm_results, NULL,
     "results that came as shared memory (a memfd) so far", NULL},
    {"shm_calls", (getter)Conn_get_shm_calls, NULL,
     "calls whose arguments went as shared memory (a memfd) so far", NULL},
    {"shm_spare", (getter)Conn_get_shm_spare, NULL,
     "bytes of the memfd made ready for the next large call (0: none)", NULL},
    {"address", (getter)Conn_get_address, NULL, "the pool's address", NULL},
    {NULL},
};

static PyTypeObject ConnType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "bettong._bettong.Connection",
    .tp_basicsize = sizeof(Conn),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A client connection to a Bettong task pool.",
    .tp_new = Conn_new,
    .tp_init = (initproc)Conn_init,
    .tp_dealloc = (destructor)Conn_dealloc,
    .tp_methods = Conn_methods,
    .tp_getset = Conn_getset,
    .tp_repr = (reprfunc)Conn_repr,
};

static PyObject *mod_now_us(PyObject *m, PyObject *unused)
{
    return PyLong_FromUnsignedLongLong(proto_now_us());
}

/* The offset of an object slot (a member descriptor of __slots__) of cls. */
static Py_ssize_t slot_offset(PyTypeObject *cls, const char *name)
{
    PyObject *d = PyObject_GetAttrString((PyObject *)cls, name);
    if (!d)
        return -1;
    Py_ssize_t off = -1;
    if (Py_IS_TYPE(d, &PyMemberDescr_Type)) {
        PyMemberDef *md = ((PyMemberDescrObject *)d)->d_member;
        if (md->type == T_OBJECT_EX && !(md->flags & READONLY))
            off = md->offset;
    }
    Py_DECREF(d);
    if (off < 0)
        PyErr_Format(PyExc_TypeError, "%s.%s is not an object slot", cls->tp_name, name);
    return off;
}

/* The offsets of a chunk item class's slots _chunk and _index: 0, or -1 with
 * an exception. */
static int item_slots(PyTypeObject *cls, Py_ssize_t *off_chunk, Py_ssize_t *off_index)
{
    *off_chunk = slot_offset(cls, "_chunk");
    if (*off_chunk < 0)
        return -1;
    *off_index = slot_offset(cls, "_index");
    return *off_index < 0 ? -1 : 0;
}

/* A new, empty cls object. For a class whose __new__ is object's, just its
 * memory (PyType_GenericNew): object.__new__ would also give it an array of
 * inline attribute values sized for every attribute the class's instances have
 * held (a second allocation per item, larger than the item: about a fifth of
 * the cost of making 200,000 of them), while an item holds only its two slots.
 * An attribute stored on it later finds no such array and gets a dict, as
 * after vars(obj). */
static PyObject *new_item(PyTypeObject *cls, PyObject *noargs)
{
    if (cls->tp_new == PyBaseObject_Type.tp_new)
        return PyType_GenericNew(cls, noargs, NULL);
    return cls->tp_new(cls, noargs, NULL);
}

/* chunk_items(cls, chunks, k, n) -> [cls(), ...]: the n items of consecutive
 * chunks of k items (the last may have fewer), in order: new instances of cls (a
 * class with the slots _chunk and _index, and no __init__ to run) whose _chunk is
 * chunks[i // k] and _index i % k. The futures of a chunked map's items: made
 * here, they cost an allocation each instead of a Python call.
 *
 * They are left untracked by the cycle collector: a map of 200,000 items would
 * otherwise add 200,000 containers that every full collection walks (most of the
 * cost of making them). That is sound only while such an item is not part of a
 * reference cycle: it refers to its chunk and its index only, nothing the chunk
 * holds refers back to it, and the class tracks an item again (gc_track) before
 * anything else is stored on it.
 *
 * The collector is off while they are made: each new item counts as a young
 * object though it is untracked at once, and a map making them a chunk at a time
 * ran ~270 young collections, ~25 middle ones and a full one, a quarter of its
 * time. Made all at once with the collector off, they bring one young collection. */
static PyObject *mod_chunk_items(PyObject *m, PyObject *args)
{
    PyTypeObject *cls;
    PyObject *chunks;
    Py_ssize_t k, n;
    if (!PyArg_ParseTuple(args, "O!O!nn:chunk_items", &PyType_Type, &cls, &PyList_Type,
                          &chunks, &k, &n))
        return NULL;
    if (k <= 0 || n < 0 || (n + k - 1) / k != PyList_GET_SIZE(chunks))
        return PyErr_Format(PyExc_ValueError, "%zd items in chunks of %zd are not %zd chunks",
                            n, k, PyList_GET_SIZE(chunks));
    if (!PyType_IsSubtype(cls, &PyBaseObject_Type) || cls->tp_new == NULL)
        return PyErr_Format(PyExc_TypeError, "cannot make %s objects", cls->tp_name);
    Py_ssize_t off_chunk, off_index;
    if (item_slots(cls, &off_chunk, &off_index) < 0)
        return NULL;
    PyObject *noargs = PyTuple_New(0);
    if (!noargs)
        return NULL;
    PyObject *out = PyList_New(n);
    if (!out) {
        Py_DECREF(noargs);
        return NULL;
    }
    int collecting = PyGC_Disable();
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *index = PyLong_FromSsize_t(i % k);
        if (!index)
            goto fail;
        PyObject *o = new_item(cls, noargs);
        if (!o) {
            Py_DECREF(index);
            goto fail;
        }
        if (!PyObject_TypeCheck(o, cls)) {
            Py_DECREF(index);
            Py_DECREF(o);
            PyErr_Format(PyExc_TypeError, "%s() made another type", cls->tp_name);
            goto fail;
        }
        PyObject *chunk = PyList_GET_ITEM(chunks, i / k);
        Py_INCREF(chunk);
        *(PyObject **)((char *)o + off_chunk) = chunk;   /* fresh slots: NULL */
        *(PyObject **)((char *)o + off_index) = index;   /* the slot owns it */
        PyObject_GC_UnTrack(o);
        PyList_SET_ITEM(out, i, o);
    }
    if (collecting)
        PyGC_Enable();
    Py_DECREF(noargs);
    return out;
fail:
    if (collecting)
        PyGC_Enable();
    Py_DECREF(noargs);
    Py_DECREF(out);   /* the unset entries are NULL: list_dealloc skips them */
    return NULL;
}

/* gc_track(obj): have the cycle collector track obj again (see chunk_items). */
static PyObject *mod_gc_track(PyObject *m, PyObject *o)
{
    if (PyObject_IS_GC(o) && !PyObject_GC_IsTracked(o))
        PyObject_GC_Track(o);
    Py_RETURN_NONE;
}

/* The length of the run of one chunk's items in fs from start on (cls objects,
 * see chunk_items, with the same _chunk and _index going up by one): 0 when
 * fs[start] is not such an item; -1 with an exception set. */
static Py_ssize_t run_at(PyObject *fs, Py_ssize_t start, PyTypeObject *cls, Py_ssize_t off_chunk,
                         Py_ssize_t off_index)
{
    Py_ssize_t n = PyList_GET_SIZE(fs);
    PyObject *f0 = PyList_GET_ITEM(fs, start);
    if (!PyObject_TypeCheck(f0, cls))
        return 0;
    PyObject *chunk = *(PyObject **)((char *)f0 + off_chunk);
    PyObject *idx = *(PyObject **)((char *)f0 + off_index);
    if (!chunk || !idx || !PyLong_Check(idx))
        return 0;
    Py_ssize_t first = PyLong_AsSsize_t(idx);
    if (first == -1 && PyErr_Occurred())
        return -1;
    Py_ssize_t i = start + 1;
    for (; i < n; i++) {
        PyObject *f = PyList_GET_ITEM(fs, i);
        if (!PyObject_TypeCheck(f, cls) || *(PyObject **)((char *)f + off_chunk) != chunk)
            break;
        PyObject *k = *(PyObject **)((char *)f + off_index);
        if (!k || !PyLong_Check(k))
            break;
        Py_ssize_t v = PyLong_AsSsize_t(k);
        if (v == -1 && PyErr_Occurred())
            return -1;
        if (v != first + (i - start))
            break;
    }
    return i - start;
}

/* chunk_runs(cls, fs) -> [n, ...]: the list fs cut into runs, in order: n > 0 for
 * a run of n items of one chunk (see run_at), 0 for one future that is not in
 * such a run. One walk of the list, for all the waiting and collecting a map's
 * results takes (the items are 200,000 objects the cache does not hold: every
 * further walk is ~1.5 ms). */
static PyObject *mod_chunk_runs(PyObject *m, PyObject *args)
{
    PyTypeObject *cls;
    PyObject *fs;
    if (!PyArg_ParseTuple(args, "O!O!:chunk_runs", &PyType_Type, &cls, &PyList_Type, &fs))
        return NULL;
    Py_ssize_t off_chunk, off_index;
    if (item_slots(cls, &off_chunk, &off_index) < 0)
        return NULL;
    PyObject *out = PyList_New(0);
    if (!out)
        return NULL;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(fs);) {
        Py_ssize_t r = run_at(fs, i, cls, off_chunk, off_index);
        PyObject *len = r < 0 ? NULL : PyLong_FromSsize_t(r);
        if (!len || PyList_Append(out, len) < 0) {
            Py_XDECREF(len);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(len);
        i += r ? r : 1;
    }
    return out;
}

static PyObject *mod_mapped_live(PyObject *self, PyObject *unused)
{
    return PyLong_FromSize_t(mapped_live());
}

static PyObject *mod_mapped_enabled(PyObject *self, PyObject *unused)
{
    return PyBool_FromLong(mapped_install());
}

static PyMethodDef mod_methods[] = {
    {"mapped_live", mod_mapped_live, METH_NOARGS,
     "Large results alive in this process whose bytes are a memfd's pages (py/mapped.h)."},
    {"mapped_enabled", mod_mapped_enabled, METH_NOARGS,
     "Whether large results can be taken as mappings (False under Python's debug "
     "allocator hooks: they are copied then)."},
    {"gc_track", mod_gc_track, METH_O, "gc_track(obj): the cycle collector tracks obj again."},
    {"chunk_runs", mod_chunk_runs, METH_VARARGS,
     "chunk_runs(cls, fs): the list fs as runs: n > 0 for n items of one chunk, 0 for one "
     "future outside such a run."},
    {"now_us", mod_now_us, METH_NOARGS, "Microseconds since the epoch (the pool's clock)."},
    {"chunk_items", mod_chunk_items, METH_VARARGS,
     "chunk_items(cls, chunks, k, n): the n items of chunks of k items, cls objects with "
     "_chunk = chunks[i // k], _index = i % k."},
    {NULL},
};

static struct PyModuleDef moddef = {
    PyModuleDef_HEAD_INIT, "bettong._bettong",
    "Client side of the Bettong task pool protocol (src/pool/proto.h).", -1, mod_methods,
};

PyMODINIT_FUNC PyInit__bettong(void)
{
    if (PyType_Ready(&ConnType) < 0)
        return NULL;
    /* Before any connection, with no thread of ours running yet: large
     * results are then taken as mappings (py/mapped.h). */
    mapped_install();
    PyObject *m = PyModule_Create(&moddef);
    if (!m)
        return NULL;
    RefusedError = PyErr_NewExceptionWithDoc(
        "bettong._bettong.RefusedError",
        "The pool refused the connection (a wrong or missing secret, ...).",
        PyExc_PermissionError, NULL);
    /* A RefusedError: code that does not retry a refusal does not retry this. */
    AuthenticationError = RefusedError ? PyErr_NewExceptionWithDoc(
        "bettong._bettong.AuthenticationError",
        "The server could not prove it knows the shared secret (the secrets differ, or it "
        "is not the real service): this client refused it before reading anything it sent.",
        RefusedError, NULL) : NULL;
    ProtocolError = PyErr_NewExceptionWithDoc(
        "bettong._bettong.ProtocolError", "The peer broke the pool protocol.",
        PyExc_ConnectionError, NULL);
    if (!RefusedError || !AuthenticationError || !ProtocolError)
        goto fail;
    Py_INCREF(&ConnType);
    if (PyModule_AddObject(m, "Connection", (PyObject *)&ConnType) < 0) {
        Py_DECREF(&ConnType);
        goto fail;
    }
    if (hot_add_types(m) < 0)
        goto fail;
    Py_INCREF(RefusedError);
    Py_INCREF(AuthenticationError);
    Py_INCREF(ProtocolError);
    if (PyModule_AddObject(m, "RefusedError", RefusedError) < 0 ||
        PyModule_AddObject(m, "AuthenticationError", AuthenticationError) < 0 ||
        PyModule_AddObject(m, "ProtocolError", ProtocolError) < 0)
        goto fail;
    struct {
        const char *name;
        long v;
    } consts[] = {
        {"PROTO_VERSION", PROTO_VERSION},
        {"MAX_FRAME", (long)PROTO_MAX_FRAME},
        {"MSG_RESULT", MSG_RESULT},
        {"MSG_CANCELLED", MSG_CANCELLED},
        {"MSG_STATUS_REPLY", MSG_STATUS_REPLY},
        {"CALL_OK", CALL_OK},
        {"CALL_RAISED", CALL_RAISED},
        {"CALL_WORKER_DIED", CALL_WORKER_DIED},
        {"CALL_TIMEOUT", CALL_TIMEOUT},
        {"CALL_CANCELLED", CALL_CANCELLED},
        {"CALL_ERROR", CALL_ERROR},
    };
    for (size_t i = 0; i < sizeof consts / sizeof consts[0]; i++)
        if (PyModule_AddIntConstant(m, consts[i].name, consts[i].v) < 0)
            goto fail;
    return m;
fail:
    Py_DECREF(m);
    return NULL;
}
