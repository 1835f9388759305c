#include "pool/preader.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "util/buf.h"

/* Reads at least this large are made without the GIL. */
#define PREADER_NOGIL (256 * 1024)
/* readline reads the file in pieces of this size. */
#define LINE_CHUNK 256

typedef struct {
    PyObject_HEAD
    int fd;          /* -1 once detached */
    uint64_t size;   /* the readable bytes: [0, size) */
    uint64_t off;    /* next byte to read */
} PReader;

/* pread n bytes at r->off into dst (fewer at the end of the payload). Returns
 * the bytes read, or -1 with a Python exception. */
static Py_ssize_t read_at(PReader *r, char *dst, size_t n)
{
    if (r->fd < 0) {
        PyErr_SetString(PyExc_ValueError, "the payload's descriptor is closed");
        return -1;
    }
    uint64_t left = r->size - r->off;
    if (n > left)
        n = (size_t)left;
    size_t got = 0;
    int err = 0;
    PyThreadState *ts = n >= PREADER_NOGIL ? PyEval_SaveThread() : NULL;
    /* A large destination (the bytes object of a large argument) is fresh
     * memory: backed at once, in huge pages where the system gives them, not
     * a fault per 4 KiB page during the copy (whatever the process's malloc
     * does: a worker forked from its caller has the caller's). */
    buf_prefault(dst, n);
    while (got < n) {
        ssize_t k = pread(r->fd, dst + got, n - got, (off_t)(r->off + got));
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            err = k < 0 ? errno : EIO; /* a sealed payload never gets shorter */
            break;
        }
        got += (size_t)k;
    }
    if (ts)
        PyEval_RestoreThread(ts);
    if (err) {
        errno = err;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    r->off += got;
    return (Py_ssize_t)got;
}

/* read(n=-1) -> bytes: n bytes (fewer at the end); all that is left if n < 0. */
static PyObject *preader_read(PReader *r, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t n = -1;
    if (nargs > 1) {
        PyErr_SetString(PyExc_TypeError, "read() takes at most one argument");
        return NULL;
    }
    if (nargs == 1 && args[0] != Py_None) {
        n = PyLong_AsSsize_t(args[0]);
        if (n == -1 && PyErr_Occurred())
            return NULL;
    }
    uint64_t left = r->size - r->off;
    size_t want = n < 0 || (uint64_t)n > left ? (size_t)left : (size_t)n;
    PyObject *b = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)want);
    if (!b)
        return NULL;
    Py_ssize_t got = read_at(r, PyBytes_AS_STRING(b), want);
    if (got < 0) {
        Py_DECREF(b);
        return NULL;
    }
    if ((size_t)got != want && _PyBytes_Resize(&b, got) < 0)
        return NULL;
    return b;
}

/* readinto(buffer) -> int: fills a writable buffer (fewer bytes at the end). */
static PyObject *preader_readinto(PReader *r, PyObject *arg)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0)
        return NULL;
    Py_ssize_t got = read_at(r, view.buf, (size_t)view.len);
    PyBuffer_Release(&view);
    return got < 0 ? NULL : PyLong_FromSsize_t(got);
}

/* readline() -> bytes: up to and with the next b"\n" (protocols 0-1 use it). */
static PyObject *preader_readline(PReader *r, PyObject *unused)
{
    (void)unused;
    uint64_t start = r->off;
    char chunk[LINE_CHUNK];
    for (;;) {
        Py_ssize_t got = read_at(r, chunk, sizeof chunk);
        if (got < 0)
            return NULL;
        char *nl = memchr(chunk, '\n', (size_t)got);
        if (nl || got == 0) {
            /* Back to just past the newline: the rest is read again later. */
            if (nl)
                r->off -= (uint64_t)(got - (nl + 1 - chunk));
            break;
        }
    }
    size_t n = (size_t)(r->off - start);
    r->off = start;
    PyObject *b = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)n);
    if (!b)
        return NULL;
    if (read_at(r, PyBytes_AS_STRING(b), n) != (Py_ssize_t)n) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_OSError, "the payload changed while it was read");
        Py_DECREF(b);
        return NULL;
    }
    return b;
}

static PyMethodDef preader_methods[] = {
    {"read", (PyCFunction)(void (*)(void))preader_read, METH_FASTCALL, NULL},
    {"readinto", (PyCFunction)preader_readinto, METH_O, NULL},
    {"readline", (PyCFunction)preader_readline, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject PReaderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "bettong.PayloadReader",
    .tp_basicsize = sizeof(PReader),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_methods = preader_methods,
};

PyObject *preader_new(int fd, uint64_t size)
{
    if (!(PReaderType.tp_flags & Py_TPFLAGS_READY) && PyType_Ready(&PReaderType) < 0)
        return NULL;
    PReader *r = PyObject_New(PReader, &PReaderType);
    if (!r)
        return NULL;
    r->fd = fd;
    r->size = size;
    r->off = 0;
    return (PyObject *)r;
}

void preader_detach(PyObject *reader)
{
    if (reader && Py_IS_TYPE(reader, &PReaderType))
        ((PReader *)reader)->fd = -1;
}
