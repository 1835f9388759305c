/* shmblock: in an embedded interpreter, a block of 32 MiB or more (a large
 * bytes object, a raw block) lives in a memfd of its own with a bytes object's
 * data on a page boundary; publishing it makes its file an object file (first
 * page the head then zeros, the data after, sealable) without touching what
 * the process sees, and refuses what is not a whole bytes object of ours; a
 * forked child gets its own copy of a shared block (neither side sees the
 * other's writes); realloc keeps a block's content, in its file or moved out
 * once published; calloc gives zeros; freeing unmaps and closes. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "py/shmblock.h"
#include "procmaps.h"
#include "pysetup.h"

#define PAGE 4096
#define BIG ((size_t)40 << 20)
#define HEADLEN 16

static const char head[HEADLEN] = "\0HEADTEST1234567";

/* Whether p is in a mapping of one of the blocks' files. */
static int in_block_file(const void *p)
{
    int r = mapping_names(p, "memfd:bettong-block");
    assert_true(r >= 0);
    return r;
}

static int mapped_at(const void *p)
{
    unsigned char v;
    return mincore((void *)((uintptr_t)p & ~(uintptr_t)(PAGE - 1)), PAGE, &v) == 0;
}

static PyObject *big_bytes(size_t len)
{
    PyObject *b = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)len);
    assert_non_null(b);
    char *d = PyBytes_AS_STRING(b);
    for (size_t i = 0; i < len; i += 4093)
        d[i] = (char)('a' + (i / 4093) % 26);
    return b;
}

static void test_large_bytes_live_in_a_block(void **state)
{
    (void)state;
    shmblock_install();
    size_t live = shmblock_live(), shared = shmblock_shared();
    PyObject *b = big_bytes(BIG);
    char *d = PyBytes_AS_STRING(b);
    assert_int_equal(shmblock_live(), live + 1);
    assert_int_equal(shmblock_shared(), shared + 1);
    assert_int_equal((uintptr_t)d % PAGE, 0);
    assert_true(in_block_file(d));
    assert_true(in_block_file(d + BIG - 1));
    PyObject *small = PyBytes_FromStringAndSize(NULL, 1 << 20);
    assert_non_null(small);
    assert_false(in_block_file(PyBytes_AS_STRING(small)));
    assert_int_equal(shmblock_live(), live + 1);
    Py_DECREF(small);
    Py_DECREF(b);
    assert_int_equal(shmblock_live(), live);
    assert_int_equal(shmblock_shared(), shared);
    assert_false(mapped_at(d + BIG / 2));
}

static void test_publish_makes_an_object_file(void **state)
{
    (void)state;
    shmblock_install();
    PyObject *b = big_bytes(BIG);
    char *d = PyBytes_AS_STRING(b);
    Py_hash_t h = PyObject_Hash(b);
    size_t shared = shmblock_shared();
    int fd = shmblock_publish(d, BIG, head, HEADLEN);
    assert_true(fd >= 0);
    assert_int_equal(shmblock_shared(), shared - 1);
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    assert_int_equal((size_t)st.st_size, PAGE + BIG + 1);
    /* The file: the head, zeros, the data, the NUL. */
    static char page0[PAGE];
    assert_int_equal(pread(fd, page0, PAGE, 0), PAGE);
    assert_memory_equal(page0, head, HEADLEN);
    for (size_t i = HEADLEN; i < PAGE; i++)
        assert_int_equal(page0[i], 0);
    char got[64];
    assert_int_equal(pread(fd, got, sizeof got, PAGE), (ssize_t)sizeof got);
    assert_memory_equal(got, d, sizeof got);
    assert_int_equal(pread(fd, got, 1, PAGE + BIG), 1);
    assert_int_equal(got[0], 0);
    /* No shared writable mapping is left: it can be sealed. */
    assert_int_equal(fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE), 0);
    assert_int_equal(pwrite(fd, "x", 1, PAGE), -1);
    /* The object is unchanged here, and what is written here stays here. */
    assert_true(PyBytes_CheckExact(b));
    assert_int_equal(PyBytes_GET_SIZE(b), BIG);
    assert_int_equal(PyObject_Hash(b), h);
    char was = d[0];
    d[0] = (char)(was + 1);
    assert_int_equal(pread(fd, got, 1, PAGE), 1);
    assert_int_equal(got[0], was);
    d[0] = was;
    /* Published again: the same file. */
    assert_int_equal(shmblock_publish(d, BIG, head, HEADLEN), fd);
    Py_DECREF(b);
    assert_int_equal(fcntl(fd, F_GETFD), -1);
    assert_int_equal(errno, EBADF);
}

static void test_publish_refuses_what_is_not_a_whole_bytes_block(void **state)
{
    (void)state;
    shmblock_install();
    PyObject *small = PyBytes_FromStringAndSize(NULL, 2 << 20);
    assert_non_null(small);
    assert_int_equal(shmblock_publish(PyBytes_AS_STRING(small), 2 << 20, head, HEADLEN), -1);
    Py_DECREF(small);
    PyObject *b = big_bytes(BIG);
    char *d = PyBytes_AS_STRING(b);
    assert_int_equal(shmblock_publish(d, BIG - 1, head, HEADLEN), -1); /* not all of it */
    assert_int_equal(shmblock_publish(d + PAGE, BIG - PAGE, head, HEADLEN), -1);
    assert_int_equal(shmblock_publish(d, BIG, head, PAGE), -1); /* a head too long */
    Py_DECREF(b);
    /* A raw block of the same size without its NUL. */
    char *raw = PyMem_RawMalloc(BIG + 33);
    assert_non_null(raw);
    raw[32 + BIG] = 1;
    assert_int_equal(shmblock_publish(raw + 32, BIG, head, HEADLEN), -1);
    PyMem_RawFree(raw);
}

/* The child: its block still 'a' after the parent wrote 'b'; then it writes
 * its own. Exit 0 when so. */
static void child_checks(char *p, int go)
{
    char c;
    if (read(go, &c, 1) != 1)
        _exit(2);
    if (p[0] != 'a')
        _exit(3);
    p[1] = 'c';
    _exit(0);
}

static void test_a_forked_child_gets_its_own_copy(void **state)
{
    (void)state;
    shmblock_install();
    char *p = PyMem_RawMalloc(BIG);
    assert_non_null(p);
    assert_true(in_block_file(p));
    p[0] = 'a';
    p[1] = 'a';
    size_t shared = shmblock_shared();
    int go[2];
    assert_int_equal(pipe(go), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(go[1]);
        child_checks(p, go[0]);
    }
    close(go[0]);
    p[0] = 'b';
    assert_int_equal(write(go[1], "g", 1), 1);
    close(go[1]);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_int_equal(p[1], 'a');
    /* This process keeps its block as it was. */
    assert_int_equal(shmblock_shared(), shared);
    assert_true(in_block_file(p));
    PyMem_RawFree(p);
}

static void test_realloc_keeps_the_content(void **state)
{
    (void)state;
    shmblock_install();
    size_t live = shmblock_live();
    char *p = PyMem_RawMalloc(BIG);
    assert_non_null(p);
    p[0] = 'x';
    p[BIG - 1] = 'y';
    p = PyMem_RawRealloc(p, 2 * BIG);
    assert_non_null(p);
    assert_true(in_block_file(p + 2 * BIG - 1));
    assert_int_equal(shmblock_live(), live + 1);
    assert_int_equal(p[0], 'x');
    assert_int_equal(p[BIG - 1], 'y');
    p[2 * BIG - 1] = 'z';
    p = PyMem_RawRealloc(p, BIG);
    assert_non_null(p);
    assert_int_equal(p[0], 'x');
    assert_int_equal(p[BIG - 1], 'y');
    PyMem_RawFree(p);
    assert_int_equal(shmblock_live(), live);
}

static void test_realloc_of_a_published_block_moves_it(void **state)
{
    (void)state;
    shmblock_install();
    size_t live = shmblock_live();
    PyObject *b = big_bytes(BIG);
    char *d = PyBytes_AS_STRING(b);
    char first = d[0];
    int fd = shmblock_publish(d, BIG, head, HEADLEN);
    assert_true(fd >= 0);
    char *obj = d - offsetof(PyBytesObject, ob_sval);
    char *moved = PyMem_RawRealloc(obj, BIG + 4096);
    assert_non_null(moved);
    assert_ptr_not_equal(moved, obj);
    assert_int_equal(moved[offsetof(PyBytesObject, ob_sval)], first);
    assert_int_equal(fcntl(fd, F_GETFD), -1); /* the old block's file let go */
    /* (moved is a raw block now, not an object: freed as one) */
    PyMem_RawFree(moved);
    assert_int_equal(shmblock_live(), live);
}

static void test_calloc_gives_zeros(void **state)
{
    (void)state;
    shmblock_install();
    char *p = PyMem_RawCalloc(BIG / 8, 8);
    assert_non_null(p);
    assert_true(in_block_file(p));
    for (size_t i = 0; i < BIG; i += 65521)
        assert_int_equal(p[i], 0);
    PyMem_RawFree(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_large_bytes_live_in_a_block),
        cmocka_unit_test(test_publish_makes_an_object_file),
        cmocka_unit_test(test_publish_refuses_what_is_not_a_whole_bytes_block),
        cmocka_unit_test(test_a_forked_child_gets_its_own_copy),
        cmocka_unit_test(test_realloc_keeps_the_content),
        cmocka_unit_test(test_realloc_of_a_published_block_moves_it),
        cmocka_unit_test(test_calloc_gives_zeros),
    };
    return cmocka_run_group_tests(tests, py_group_setup, py_group_teardown);
}
