/* mapped: in an embedded interpreter, a bytes object made over a memfd's
 * pages holds the file's bytes without copying them (its data pages are the
 * file's), behaves as any bytes object (equality, hash, slicing), is
 * unmapped when it dies, moves to a normal block when resized in place, and
 * is refused (NULL, no exception, no crash) for a file too short, an offset
 * that is not a whole page, or a missing terminating NUL; and mapped_file
 * gives a writable buffer over a file whose writes stay in this process. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "py/mapped.h"
#include "procmaps.h"
#include "pysetup.h"

#define PAGE 4096
#define LEN (3 * 1000 * 1000 + 7)

/* A memfd of one header page, LEN bytes of a pattern, then `nul` as the
 * terminating byte; sealed as the pool's are. */
static int object_file(size_t len, char nul)
{
    int fd = memfd_create("test-mapped", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, (off_t)(PAGE + len + 1)), 0);
    char *p = mmap(NULL, PAGE + len + 1, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    assert_true(p != MAP_FAILED);
    for (size_t i = 0; i < len; i++)
        p[PAGE + i] = (char)('a' + i % 26);
    p[PAGE + len] = nul;
    munmap(p, PAGE + len + 1);
    assert_int_equal(fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE), 0);
    return fd;
}

static PyObject *expected(size_t len)
{
    PyObject *b = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)len);
    assert_non_null(b);
    for (size_t i = 0; i < len; i++)
        PyBytes_AS_STRING(b)[i] = (char)('a' + i % 26);
    return b;
}

/* Whether the page holding p is a page of the file mapped, not anonymous
 * memory: its data is the memfd's. */
static int in_shared_file_page(const void *p)
{
    int r = mapping_names(p, "memfd:test-mapped");
    assert_true(r >= 0);
    return r;
}

static void test_bytes_over_a_file(void **state)
{
    (void)state;
    assert_true(mapped_install());
    size_t before = mapped_live();
    int fd = object_file(LEN, 0);
    PyObject *b = mapped_bytes(fd, PAGE, LEN);
    close(fd); /* the mapping outlives the descriptor */
    assert_non_null(b);
    assert_true(PyBytes_CheckExact(b));
    assert_int_equal(PyBytes_GET_SIZE(b), LEN);
    assert_int_equal(Py_REFCNT(b), 1);
    assert_true(in_shared_file_page(PyBytes_AS_STRING(b) + LEN / 2));
    assert_int_equal(mapped_live(), before + 1);

    PyObject *e = expected(LEN);
    assert_int_equal(PyObject_RichCompareBool(b, e, Py_EQ), 1);
    Py_hash_t hb = PyObject_Hash(b), he = PyObject_Hash(e);
    assert_true(hb != -1);
    assert_true(hb == he);
    PyObject *slice = PySequence_GetSlice(b, LEN - 3, LEN);
    assert_non_null(slice);
    assert_memory_equal(PyBytes_AS_STRING(slice), PyBytes_AS_STRING(e) + LEN - 3, 3);
    assert_int_equal(PyBytes_AS_STRING(b)[LEN], 0);
    Py_DECREF(slice);
    Py_DECREF(e);

    char *data = PyBytes_AS_STRING(b);
    Py_DECREF(b);
    assert_int_equal(mapped_live(), before);
    unsigned char vec;
    assert_int_equal(mincore((void *)((uintptr_t)data & ~(uintptr_t)(PAGE - 1)), PAGE, &vec), -1);
    assert_int_equal(errno, ENOMEM); /* unmapped */
}

static void test_resized_in_place_moves_to_a_normal_block(void **state)
{
    (void)state;
    size_t before = mapped_live();
    int fd = object_file(LEN, 0);
    PyObject *b = mapped_bytes(fd, PAGE, LEN);
    close(fd);
    assert_non_null(b);
    assert_int_equal(_PyBytes_Resize(&b, 10), 0);
    assert_int_equal(mapped_live(), before);
    assert_false(in_shared_file_page(PyBytes_AS_STRING(b)));
    assert_memory_equal(PyBytes_AS_STRING(b), "abcdefghij", 10);
    Py_DECREF(b);
}

static void test_refused_cases(void **state)
{
    (void)state;
    size_t before = mapped_live();
    int fd = object_file(LEN, 'x'); /* no NUL after the bytes */
    assert_null(mapped_bytes(fd, PAGE, LEN));
    close(fd);
    fd = object_file(LEN, 0);
    assert_null(mapped_bytes(fd, PAGE, LEN + 1));         /* beyond the file */
    assert_null(mapped_bytes(fd, PAGE, LEN + 100000000)); /* far beyond */
    assert_null(mapped_bytes(fd, PAGE / 2, LEN));          /* not a page */
    assert_null(mapped_bytes(fd, 0, LEN));                 /* no room for the header */
    assert_null(mapped_bytes(-1, PAGE, LEN));
    close(fd);
    assert_false(PyErr_Occurred());
    assert_int_equal(mapped_live(), before);
}

static void test_normal_blocks_untouched(void **state)
{
    (void)state;
    /* Large and small blocks of the wrapped allocator still come and go. */
    for (int i = 0; i < 200; i++) {
        PyObject *b = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(PAGE * (i % 7) + i + 600));
        assert_non_null(b);
        memset(PyBytes_AS_STRING(b), i, (size_t)PyBytes_GET_SIZE(b));
        assert_int_equal(_PyBytes_Resize(&b, PyBytes_GET_SIZE(b) * 2), 0);
        Py_DECREF(b);
    }
    assert_int_equal(mapped_install(), 1); /* again: nothing more */
}

static void test_mapped_file_is_a_private_writable_buffer(void **state)
{
    (void)state;
    int fd = object_file(LEN, 0);
    PyObject *m = mapped_file(fd, PAGE + LEN + 1);
    assert_non_null(m);
    assert_int_equal(PyObject_Length(m), PAGE + LEN + 1);
    Py_buffer v;
    assert_int_equal(PyObject_GetBuffer(m, &v, PyBUF_WRITABLE), 0);
    assert_false(v.readonly);
    char *p = v.buf;
    assert_true(in_shared_file_page(p + PAGE + LEN / 2));
    assert_int_equal(p[PAGE + 27], 'a' + 27 % 26);
    p[PAGE] = 'Z'; /* this process's copy of that page */
    char c;
    assert_int_equal(pread(fd, &c, 1, PAGE), 1);
    assert_int_equal(c, 'a'); /* the file's own byte is unchanged */
    PyBuffer_Release(&v);
    Py_DECREF(m);
    assert_null(mapped_file(fd, 0));
    assert_true(PyErr_Occurred());
    PyErr_Clear();
    close(fd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bytes_over_a_file),
        cmocka_unit_test(test_resized_in_place_moves_to_a_normal_block),
        cmocka_unit_test(test_refused_cases),
        cmocka_unit_test(test_normal_blocks_untouched),
        cmocka_unit_test(test_mapped_file_is_a_private_writable_buffer),
    };
    return cmocka_run_group_tests(tests, py_group_setup, py_group_teardown);
}
