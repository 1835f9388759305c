#include "py/hugealloc.h"

#include <Python.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

static PyMemAllocatorEx inner; /* the raw allocator we wrap */
static int installed;

/* The mapping glibc made for a block of size bytes at p. */
static void advise(void *p, size_t size)
{
    if (!p || size < HUGEALLOC_MIN)
        return;
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t start = (uintptr_t)p & ~(page - 1);
    uintptr_t end = ((uintptr_t)p + size + page - 1) & ~(page - 1);
    (void)madvise((void *)start, end - start, MADV_HUGEPAGE); /* a hint: may fail */
}

static void *huge_malloc(void *ctx, size_t size)
{
    void *p = inner.malloc(inner.ctx, size);
    advise(p, size);
    return p;
}

static void *huge_calloc(void *ctx, size_t nelem, size_t elsize)
{
    /* calloc's pages come zeroed from the kernel: advised after, they are
     * still untouched (glibc does not write a fresh mapping's pages). */
    void *p = inner.calloc(inner.ctx, nelem, elsize);
    if (elsize && nelem <= SIZE_MAX / elsize)
        advise(p, nelem * elsize);
    return p;
}

static void *huge_realloc(void *ctx, void *ptr, size_t size)
{
    void *p = inner.realloc(inner.ctx, ptr, size);
    advise(p, size);
    return p;
}

static void huge_free(void *ctx, void *ptr) { inner.free(inner.ctx, ptr); }

void hugealloc_install(void)
{
    if (installed)
        return;
    PyMem_GetAllocator(PYMEM_DOMAIN_RAW, &inner);
    PyMemAllocatorEx wrap = {NULL, huge_malloc, huge_calloc, huge_realloc, huge_free};
    PyMem_SetAllocator(PYMEM_DOMAIN_RAW, &wrap);
    installed = 1;
}
