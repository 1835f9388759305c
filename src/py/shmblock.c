#include "py/shmblock.h"

#include <Python.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14; older kernels say EINVAL */
#endif

/* A bytes object's header: what comes before its data. */
#define HEAD offsetof(PyBytesObject, ob_sval)

typedef struct block {
    struct block *next;
    void *p;     /* what the allocator handed out: the file's offset LEAD */
    size_t size; /* bytes asked for */
    int fd;      /* its memfd; -1 once a forked child made it memory of its own */
    int shared;  /* a shared mapping of the file still (not published) */
    int published; /* its file is an object file (shmblock_publish) */
} block_t;

static PyMemAllocatorEx inner; /* the raw allocator we wrap */
static int installed;
static size_t page;
/* The blocks (a few: each is 32 MiB or more). Raw frees come with or without
 * the GIL, so a lock, which fork() also takes (see the fork handlers); the
 * count lets every other free skip it. */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static block_t *blocks;
static atomic_size_t nlive;
static size_t nshared;                    /* under mu */
static int fork_pipe[2] = {-1, -1};       /* the child's "copied", to the parent */

static size_t lead(void) { return page - HEAD; }
static size_t map_len(size_t size) { return (lead() + size + page - 1) & ~(page - 1); }
static char *base_of(const block_t *b) { return (char *)b->p - lead(); }

/* Whether p can be a block (it starts LEAD into a page, as the blocks do). */
static int maybe_ours(const void *p)
{
    return atomic_load_explicit(&nlive, memory_order_relaxed) != 0 &&
           ((uintptr_t)p & (page - 1)) == lead();
}

/* The block at p, unlinked from the list when take (mu held). */
static block_t *find(const void *p, int take)
{
    for (block_t **at = &blocks; *at; at = &(*at)->next) {
        block_t *b = *at;
        if (b->p != p)
            continue;
        if (take) {
            *at = b->next;
            nshared -= (size_t)b->shared;
            atomic_fetch_sub(&nlive, 1);
        }
        return b;
    }
    return NULL;
}

static void drop(block_t *b)
{
    munmap(base_of(b), map_len(b->size));
    if (b->fd >= 0)
        close(b->fd);
    free(b);
}

static void *populate_part(void *part)
{
    struct iovec *v = part;
    (void)madvise(v->iov_base, v->iov_len, MADV_POPULATE_WRITE);
    return NULL;
}

/* The pages of [base, base + len) allocated in one call rather than a fault
 * each (a hint: older kernels fault as they go), the second half by a thread
 * of its own: two threads allocate a file's pages faster than one (100 MB
 * here: 29 ms against 41). */
static void populate(char *base, size_t len)
{
    size_t half = (len / 2) & ~(page - 1);
    struct iovec part = {base + half, len - half};
    sigset_t all, was;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &was); /* (signals stay the other threads') */
    pthread_t th;
    int helped = pthread_create(&th, NULL, populate_part, &part) == 0;
    pthread_sigmask(SIG_SETMASK, &was, NULL);
    (void)madvise(base, helped ? half : len, MADV_POPULATE_WRITE);
    if (helped)
        pthread_join(th, NULL);
}

/* A new block of size bytes, its pages allocated; NULL when it cannot be
 * made (the caller falls back to the inner allocator). */
static void *new_block(size_t size)
{
    if (size > (size_t)PY_SSIZE_T_MAX - 2 * page)
        return NULL;
    block_t *b = malloc(sizeof *b);
    if (!b)
        return NULL;
    /* Under the lock from the file's making to its listing: a fork meanwhile
     * would not know to copy it. */
    pthread_mutex_lock(&mu);
    b->fd = memfd_create("bettong-block", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    char *base = MAP_FAILED;
    if (b->fd >= 0 && ftruncate(b->fd, (off_t)(lead() + size)) == 0)
        base = mmap(NULL, map_len(size), PROT_READ | PROT_WRITE, MAP_SHARED, b->fd, 0);
    if (base == MAP_FAILED) {
        pthread_mutex_unlock(&mu);
        if (b->fd >= 0)
            close(b->fd);
        free(b);
        return NULL;
    }
    b->p = base + lead();
    b->size = size;
    b->shared = 1;
    b->published = 0;
    b->next = blocks;
    blocks = b;
    nshared++;
    atomic_fetch_add(&nlive, 1);
    pthread_mutex_unlock(&mu);
    populate(base, map_len(size));
    return b->p;
}

/* The block's pages copied into anonymous memory at the same place, its file
 * let go (mu held). */
static int make_own(block_t *b)
{
    size_t len = map_len(b->size);
    char *q = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (q == MAP_FAILED)
        return -1;
    memcpy(q, base_of(b), len);
    if (mremap(q, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, base_of(b)) == MAP_FAILED) {
        munmap(q, len);
        return -1;
    }
    close(b->fd);
    b->fd = -1;
    b->shared = 0;
    nshared--;
    return 0;
}

static void *s_malloc(void *ctx, size_t size)
{
    void *p = size >= SHMBLOCK_MIN ? new_block(size) : NULL;
    return p ? p : inner.malloc(inner.ctx, size);
}

static void *s_calloc(void *ctx, size_t nelem, size_t elsize)
{
    /* A new file's pages are zeros. */
    void *p = NULL;
    if (elsize && nelem <= SIZE_MAX / elsize && nelem * elsize >= SHMBLOCK_MIN)
        p = new_block(nelem * elsize);
    return p ? p : inner.calloc(inner.ctx, nelem, elsize);
}

static void s_free(void *ctx, void *p)
{
    block_t *b = NULL;
    if (maybe_ours(p)) {
        pthread_mutex_lock(&mu);
        b = find(p, 1);
        pthread_mutex_unlock(&mu);
    }
    if (b)
        drop(b);
    else
        inner.free(inner.ctx, p);
}

/* A shared block grown or shrunk in its file (mu held): its new address, or
 * NULL (the block unchanged). */
static void *resize_shared(block_t *b, size_t size)
{
    off_t want = (off_t)(lead() + size);
    if (size > b->size && ftruncate(b->fd, want) < 0)
        return NULL;
    char *nb = mremap(base_of(b), map_len(b->size), map_len(size), MREMAP_MAYMOVE);
    if (nb == MAP_FAILED) {
        if (size > b->size)
            (void)ftruncate(b->fd, (off_t)(lead() + b->size));
        return NULL;
    }
    if (size < b->size)
        (void)ftruncate(b->fd, want); /* (the pages past the end let go) */
    b->p = nb + lead();
    b->size = size;
    return b->p;
}

static void *s_realloc(void *ctx, void *p, size_t size)
{
    if (!p)
        return s_malloc(ctx, size);
    if (!maybe_ours(p))
        return inner.realloc(inner.ctx, p, size);
    pthread_mutex_lock(&mu);
    block_t *b = find(p, 0);
    void *q = NULL;
    size_t have = b ? b->size : 0;
    if (b && b->shared && size > 0 && size <= (size_t)PY_SSIZE_T_MAX - 2 * page)
        q = resize_shared(b, size);
    pthread_mutex_unlock(&mu);
    if (!b)
        return inner.realloc(inner.ctx, p, size);
    if (q)
        return q;
    /* A published block (its file sealed), or one a resize failed for: moved. */
    q = s_malloc(ctx, size ? size : 1);
    if (!q)
        return NULL; /* p stays as it was */
    memcpy(q, p, size < have ? size : have);
    s_free(ctx, p);
    return q;
}

/* ------------------------------------------------------------ fork */

static void before_fork(void)
{
    pthread_mutex_lock(&mu);
    if (!nshared)
        return;
    if (pipe2(fork_pipe, O_CLOEXEC) == 0)
        return;
    /* No way to wait for the child: then this process lets go of the files
     * itself (its blocks can no longer be published, nothing else changes). */
    fork_pipe[0] = fork_pipe[1] = -1;
    for (block_t *b = blocks; b; b = b->next)
        if (b->shared)
            (void)make_own(b);
}

static void after_fork_parent(void)
{
    if (fork_pipe[0] >= 0) {
        /* Until the child has its own copies (or is gone: end of file). */
        close(fork_pipe[1]);
        char c;
        ssize_t r;
        do
            r = read(fork_pipe[0], &c, 1);
        while (r < 0 && errno == EINTR);
        close(fork_pipe[0]);
        fork_pipe[0] = fork_pipe[1] = -1;
    }
    pthread_mutex_unlock(&mu);
}

static void after_fork_child(void)
{
    int failed = 0;
    for (block_t *b = blocks; b; b = b->next)
        if (b->shared && make_own(b) < 0)
            failed = 1;
    if (fork_pipe[1] >= 0) {
        if (!failed)
            (void)!write(fork_pipe[1], "c", 1);
        close(fork_pipe[0]);
        close(fork_pipe[1]);
        fork_pipe[0] = fork_pipe[1] = -1;
    }
    pthread_mutex_unlock(&mu);
    if (failed) {
        /* It would share memory with its parent: it must not run. */
        static const char msg[] = "bettong: a process forked from a worker could not copy "
                                  "its parent's shared memory; it exits\n";
        (void)!write(2, msg, sizeof msg - 1);
        _exit(127);
    }
}

/* ------------------------------------------------------------ publish */

/* The block's file made an object file (mu held; b shared): the block the
 * process's private view of it first, its first page the process's own
 * copy, then the file's first page head and zeros. */
static int publish_shared(block_t *b, const void *head, size_t headlen)
{
    char *base = base_of(b);
    if (mmap(base, map_len(b->size), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED, b->fd,
             0) == MAP_FAILED)
        return -1; /* (the shared mapping is still there) */
    b->shared = 0;
    nshared--;
    /* A write to the page's unused start: this process's copy of it, with the
     * object's header, from now on. */
    *(volatile char *)base = *(volatile char *)base;
    char *first = calloc(1, page);
    if (!first)
        return -1;
    memcpy(first, head, headlen);
    ssize_t w = pwrite(b->fd, first, page, 0);
    free(first);
    if (w != (ssize_t)page)
        return -1;
    b->published = 1;
    return b->fd;
}

int shmblock_publish(const void *data, size_t len, const void *head, size_t headlen)
{
    const char *obj = (const char *)data - HEAD;
    if (!installed || headlen > lead() || len > (size_t)PY_SSIZE_T_MAX || !maybe_ours(obj))
        return -1;
    int fd = -1;
    pthread_mutex_lock(&mu);
    block_t *b = find(obj, 0);
    if (b && b->fd >= 0 && b->size == HEAD + len + 1 && ((const char *)data)[len] == 0) {
        if (b->published)
            fd = b->fd; /* its file is that object file already */
        else if (b->shared)
            fd = publish_shared(b, head, headlen);
    }
    pthread_mutex_unlock(&mu);
    return fd;
}

size_t shmblock_live(void) { return atomic_load(&nlive); }

size_t shmblock_shared(void)
{
    pthread_mutex_lock(&mu);
    size_t n = nshared;
    pthread_mutex_unlock(&mu);
    return n;
}

void shmblock_install(void)
{
    if (installed)
        return;
    page = (size_t)sysconf(_SC_PAGESIZE);
    if (page <= HEAD || pthread_atfork(before_fork, after_fork_parent, after_fork_child) != 0)
        return;
    PyMem_GetAllocator(PYMEM_DOMAIN_RAW, &inner);
    PyMemAllocatorEx wrap = {NULL, s_malloc, s_calloc, s_realloc, s_free};
    PyMem_SetAllocator(PYMEM_DOMAIN_RAW, &wrap);
    installed = 1;
}
