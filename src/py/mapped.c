#include "py/mapped.h"

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/idmap.h"

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22 /* Linux 5.14; older kernels say EINVAL */
#endif

/* The bytes object's header: what comes before its data. */
#define HEAD offsetof(PyBytesObject, ob_sval)

static PyMemAllocatorEx inner; /* the raw allocator we wrap */
static int state;              /* 0: not installed; 1: works; -1: installed, cannot work */
static size_t page;
/* What a new bytes object holds between its variable-size header and its
 * data (the hash not computed yet, -1, in the versions we know), copied from
 * a fresh one rather than naming fields the C API deprecates. */
static unsigned char fresh_tail[HEAD - sizeof(PyVarObject)];

/* Live mapped objects: object address -> its length + 1. Raw frees come with
 * or without the GIL, so a lock; the count lets every other free skip it. */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static idmap_t live;
static atomic_size_t nlive;

/* The probe of mapped_install: the block of PROBE_SIZE bytes the wrapper
 * handed out while probing. */
#define PROBE_SIZE ((size_t)1 << 20)
static int probing;
static void *probe_ptr;

static size_t map_len(size_t len) { return (page + len + 1 + page - 1) & ~(page - 1); }

/* Whether p can be one of ours (the object starts HEAD bytes before a page
 * boundary); then its length, removed from the table when take. */
static int lookup(void *p, size_t *len, int take)
{
    if (atomic_load_explicit(&nlive, memory_order_relaxed) == 0 ||
        ((uintptr_t)p & (page - 1)) != page - HEAD)
        return 0;
    pthread_mutex_lock(&mu);
    void *v = take ? idmap_del(&live, (uintptr_t)p) : idmap_get(&live, (uintptr_t)p);
    if (v && take)
        atomic_fetch_sub(&nlive, 1);
    pthread_mutex_unlock(&mu);
    if (!v)
        return 0;
    *len = (size_t)(uintptr_t)v - 1;
    return 1;
}

static void unmap_object(void *p, size_t len)
{
    munmap((char *)p - (page - HEAD), map_len(len));
}

static void *m_malloc(void *ctx, size_t size)
{
    void *p = inner.malloc(inner.ctx, size);
    if (probing && size == PROBE_SIZE)
        probe_ptr = p;
    return p;
}

static void *m_calloc(void *ctx, size_t nelem, size_t elsize)
{
    return inner.calloc(inner.ctx, nelem, elsize);
}

static void m_free(void *ctx, void *p)
{
    size_t len;
    if (lookup(p, &len, 1))
        unmap_object(p, len);
    else
        inner.free(inner.ctx, p);
}

/* A mapped object resized (bytes resized in place when nothing else holds
 * it): it moves to a normal block, its file's pages are let go. */
static void *m_realloc(void *ctx, void *p, size_t size)
{
    size_t len;
    if (!p || !lookup(p, &len, 0))
        return inner.realloc(inner.ctx, p, size);
    void *q = inner.malloc(inner.ctx, size ? size : 1);
    if (!q)
        return NULL; /* p stays as it was */
    size_t have = HEAD + len + 1;
    memcpy(q, p, size < have ? size : have);
    if (lookup(p, &len, 1))
        unmap_object(p, len);
    return q;
}

/* Whether a large block of the object allocator is the raw allocator's block
 * itself, freed through it: the object allocator adds no header of its own. */
static int probe_object_allocator(void)
{
    probe_ptr = NULL;
    probing = 1;
    void *p = PyObject_Malloc(PROBE_SIZE);
    probing = 0;
    if (!p)
        return 0;
    int same = p == probe_ptr;
    PyObject_Free(p);
    return same;
}

int mapped_install(void)
{
    if (state)
        return state > 0;
    page = (size_t)sysconf(_SC_PAGESIZE);
    idmap_init(&live);
    PyMem_GetAllocator(PYMEM_DOMAIN_RAW, &inner);
    PyMemAllocatorEx wrap = {NULL, m_malloc, m_calloc, m_realloc, m_free};
    PyMem_SetAllocator(PYMEM_DOMAIN_RAW, &wrap);
    PyObject *t = PyBytes_FromStringAndSize(NULL, 2); /* (sizes 0 and 1 are shared) */
    if (!t) {
        PyErr_Clear();
        state = -1;
        return 0;
    }
    memcpy(fresh_tail, (char *)t + sizeof(PyVarObject), sizeof fresh_tail);
    Py_DECREF(t);
    state = probe_object_allocator() && page > HEAD ? 1 : -1;
    return state > 0;
}

PyObject *mapped_bytes(int fd, uint64_t off, size_t len)
{
    if (state <= 0 || off < page || off % page != 0 || len > PY_SSIZE_T_MAX - HEAD - 1)
        return NULL;
    struct stat st;
    if (fstat(fd, &st) < 0 || st.st_size < 0 || (uint64_t)st.st_size <= off + len)
        return NULL; /* (its last byte, the NUL, would not be there: SIGBUS) */
    size_t total = map_len(len);
    char *base = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, (off_t)(off - page));
    if (base == MAP_FAILED)
        return NULL;
    char *data = base + page;
    if (data[len] != 0) {
        munmap(base, total);
        return NULL;
    }
    /* The file's pages in one call rather than a fault per page on first
     * read (a hint: older kernels fault as they go). */
    (void)madvise(data, total - page, MADV_POPULATE_READ);
    PyBytesObject *op = (PyBytesObject *)(data - HEAD);
    pthread_mutex_lock(&mu);
    int rc = idmap_put(&live, (uintptr_t)op, (void *)(uintptr_t)(len + 1));
    if (rc == 0)
        atomic_fetch_add(&nlive, 1);
    pthread_mutex_unlock(&mu);
    if (rc < 0) {
        munmap(base, total);
        return NULL;
    }
    memcpy((char *)op + sizeof(PyVarObject), fresh_tail, sizeof fresh_tail);
    PyObject_InitVar((PyVarObject *)op, &PyBytes_Type, (Py_ssize_t)len);
    return (PyObject *)op;
}

size_t mapped_live(void) { return atomic_load(&nlive); }

/* ------------------------------------------------------------ mapped_file */

typedef struct {
    PyObject_HEAD
    char *p;
    size_t len;
} MappedFile;

static int mf_getbuffer(PyObject *self, Py_buffer *view, int flags)
{
    MappedFile *m = (MappedFile *)self;
    return PyBuffer_FillInfo(view, self, m->p, (Py_ssize_t)m->len, 0, flags);
}

static void mf_dealloc(PyObject *self)
{
    MappedFile *m = (MappedFile *)self;
    if (m->p)
        munmap(m->p, m->len);
    Py_TYPE(self)->tp_free(self);
}

static Py_ssize_t mf_length(PyObject *self) { return (Py_ssize_t)((MappedFile *)self)->len; }

static PyBufferProcs mf_as_buffer = {mf_getbuffer, NULL};
static PySequenceMethods mf_as_sequence = {.sq_length = mf_length};

static PyTypeObject MappedFileType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "bettong.MappedFile",
    .tp_basicsize = sizeof(MappedFile),
    .tp_dealloc = mf_dealloc,
    .tp_as_buffer = &mf_as_buffer,
    .tp_as_sequence = &mf_as_sequence,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A file mapped privately: a result's out-of-band buffers lie in it.",
};

PyObject *mapped_file(int fd, size_t size)
{
    if (!(MappedFileType.tp_flags & Py_TPFLAGS_READY) && PyType_Ready(&MappedFileType) < 0)
        return NULL;
    if (size == 0 || size > PY_SSIZE_T_MAX)
        return PyErr_Format(PyExc_ValueError, "cannot map %zu bytes", size);
    char *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED)
        return PyErr_SetFromErrno(PyExc_OSError);
    (void)madvise(p, size, MADV_POPULATE_READ); /* (a hint, as in mapped_bytes) */
    MappedFile *m = PyObject_New(MappedFile, &MappedFileType);
    if (!m) {
        munmap(p, size);
        return NULL;
    }
    m->p = p;
    m->len = size;
    return (PyObject *)m;
}
