#include "py/arenas.h"

#include <Python.h>
#include <sys/mman.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14; older kernels say EINVAL */
#endif

static PyObjectArenaAllocator inner; /* the arena allocator we wrap */
static int installed;

static void *populated_alloc(void *ctx, size_t size)
{
    (void)ctx;
    void *p = inner.alloc(inner.ctx, size);
    if (p)
        (void)madvise(p, size, MADV_POPULATE_WRITE); /* a hint: faults as before if it fails */
    return p;
}

static void inner_free(void *ctx, void *p, size_t size)
{
    (void)ctx;
    inner.free(inner.ctx, p, size);
}

void arenas_install(void)
{
    if (installed)
        return;
    PyObject_GetArenaAllocator(&inner);
    PyObjectArenaAllocator wrap = {NULL, populated_alloc, inner_free};
    PyObject_SetArenaAllocator(&wrap);
    installed = 1;
}
