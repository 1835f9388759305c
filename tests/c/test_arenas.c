/* arenas: in an interpreter py_start started, a new arena of Python's
 * small-object allocator comes with all its pages present (populated in one
 * call, none left to fault in), while a mapping made the way obmalloc makes
 * them has none; the arenas work (objects made and freed in numbers);
 * installing again wraps nothing more. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <sys/mman.h>
#include <unistd.h>

#include "py/arenas.h"
#include "py/bridge.h"
#include "pysetup.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

#define ARENA (1u << 20)

/* Pages of [p, p + n) in memory now. */
static size_t resident_pages(void *p, size_t n)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE), count = 0;
    unsigned char vec[ARENA / 4096 + 1];
    assert_true(n / page <= sizeof vec);
    assert_int_equal(mincore(p, n, vec), 0);
    for (size_t i = 0; i < n / page; i++)
        count += vec[i] & 1;
    return count;
}

/* Whether this kernel has MADV_POPULATE_WRITE (5.14). */
static int kernel_populates(void)
{
    void *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    int ok = p != MAP_FAILED && madvise(p, 4096, MADV_POPULATE_WRITE) == 0;
    if (p != MAP_FAILED)
        munmap(p, 4096);
    return ok;
}

static void a_new_arena_is_populated(void **state)
{
    if (!kernel_populates())
        skip();
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    /* What obmalloc's own arena allocator does: a fresh mapping, no page in. */
    void *plain = mmap(NULL, ARENA, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(plain != MAP_FAILED);
    assert_int_equal(resident_pages(plain, ARENA), 0);
    munmap(plain, ARENA);

    /* py_start installed it already (as every interpreter the project starts
     * does); installing again changes nothing. */
    PyObjectArenaAllocator first, now;
    PyObject_GetArenaAllocator(&first);
    arenas_install();
    PyObject_GetArenaAllocator(&now);
    assert_ptr_equal(now.alloc, first.alloc);
    void *arena = now.alloc(now.ctx, ARENA);
    assert_non_null(arena);
    assert_int_equal(resident_pages(arena, ARENA), ARENA / page);
    now.free(now.ctx, arena, ARENA);
}

static void objects_live_and_die_in_the_arenas(void **state)
{
    arenas_install();
    PyObject *ns = PyDict_New();
    assert_non_null(ns);
    assert_int_equal(PyDict_SetItemString(ns, "__builtins__", PyEval_GetBuiltins()), 0);
    /* ~40 MB of small objects: many new arenas, then all freed. */
    PyObject *r = PyRun_String("xs = [(i, str(i)) for i in range(400000)]\n"
                               "total = sum(a for a, _ in xs) + len(''.join(b for _, b in xs))\n"
                               "del xs\n",
                               Py_file_input, ns, ns);
    if (!r)
        PyErr_Print();
    assert_non_null(r);
    Py_DECREF(r);
    PyObject *total = PyDict_GetItemString(ns, "total");
    assert_non_null(total);
    assert_true(PyLong_AsLongLong(total) == 79999800000LL + 2288890);
    Py_DECREF(ns);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(a_new_arena_is_populated),
        cmocka_unit_test(objects_live_and_die_in_the_arenas),
    };
    return cmocka_run_group_tests(tests, py_group_setup, py_group_teardown);
}
