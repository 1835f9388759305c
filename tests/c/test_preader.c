/* preader: pickle.load through the pread reader of a memfd gives back what was
 * pickled, in every protocol (0-1 read lines; 4-5 read frames and put a large
 * bytes straight into its object); a payload cut short fails the load; a
 * detached reader reads nothing; the descriptor's own offset never moves. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "pool/preader.h"
#include "pool/shm.h"
#include "py/bridge.h"

/* The value every test pickles: a large bytes, text with newlines, numbers. */
static const char VALUE[] =
    "((b'\\x00\\n' * 1500000, 'line\\none\\n\\u00e9' * 1000, 12345678901234567890, -7, 2.5,"
    "  [None, True, b'x' * 100], {'k': bytearray(b'\\n' * 300000)}), {'a': 1})";

static PyObject *ns; /* the tests' globals (owned) */

static PyObject *eval(const char *expr)
{
    PyObject *v = PyRun_String(expr, Py_eval_input, ns, ns);
    if (!v)
        PyErr_Print();
    return v;
}

/* A sealed memfd holding the bytes object b. */
static int memfd_of(PyObject *b)
{
    struct iovec iov = {PyBytes_AS_STRING(b), (size_t)PyBytes_GET_SIZE(b)};
    int fd = shm_create(&iov, 1, iov.iov_len);
    assert_true(fd >= 0);
    return fd;
}

static int setup(void **state)
{
    char err[512];
    static char *argv[] = {"test_preader", NULL};
    if (py_start(1, argv, NULL, err, sizeof err) < 0)
        return -1;
    py_gil_enter();
    ns = PyDict_New();
    if (!ns || PyDict_SetItemString(ns, "__builtins__", PyEval_GetBuiltins()) < 0)
        return -1;
    PyObject *m = PyImport_ImportModule("pickle");
    if (!m || PyDict_SetItemString(ns, "pickle", m) < 0)
        return -1;
    Py_DECREF(m);
    return 0;
}

static int teardown(void **state)
{
    Py_CLEAR(ns);
    py_gil_leave();
    py_stop();
    return 0;
}

static void test_every_protocol_loads_back(void **state)
{
    for (int proto = 0; proto <= 5; proto++) {
        char expr[64];
        snprintf(expr, sizeof expr, "pickle.dumps(value, %d)", proto);
        PyObject *value = eval(VALUE);
        assert_non_null(value);
        assert_int_equal(PyDict_SetItemString(ns, "value", value), 0);
        PyObject *p = eval(expr);
        assert_non_null(p);
        int fd = memfd_of(p);
        PyObject *reader = preader_new(fd, (uint64_t)PyBytes_GET_SIZE(p));
        assert_non_null(reader);
        assert_int_equal(PyDict_SetItemString(ns, "reader", reader), 0);
        PyObject *same = eval("pickle.load(reader) == value");
        assert_true(same == Py_True);
        /* the descriptor's own offset is where it was */
        assert_int_equal(lseek(fd, 0, SEEK_CUR), 0);
        preader_detach(reader);
        Py_DECREF(reader);
        Py_XDECREF(same);
        Py_DECREF(p);
        Py_DECREF(value);
        close(fd);
    }
}

static void test_short_payload_and_detached_reader_fail(void **state)
{
    PyObject *value = eval(VALUE);
    assert_non_null(value);
    assert_int_equal(PyDict_SetItemString(ns, "value", value), 0);
    PyObject *p = eval("pickle.dumps(value, 5)");
    assert_non_null(p);
    int fd = memfd_of(p);
    /* a reader of all but the last bytes: the load fails, nothing else */
    PyObject *reader = preader_new(fd, (uint64_t)PyBytes_GET_SIZE(p) - 1);
    assert_non_null(reader);
    assert_int_equal(PyDict_SetItemString(ns, "reader", reader), 0);
    PyObject *r = PyRun_String("pickle.load(reader)", Py_eval_input, ns, ns);
    assert_null(r);
    assert_true(PyErr_ExceptionMatches(PyExc_Exception));
    PyErr_Clear();
    Py_DECREF(reader);
    /* detached: every read raises */
    reader = preader_new(fd, (uint64_t)PyBytes_GET_SIZE(p));
    assert_non_null(reader);
    preader_detach(reader);
    assert_int_equal(PyDict_SetItemString(ns, "reader", reader), 0);
    r = PyRun_String("reader.read(10)", Py_eval_input, ns, ns);
    assert_null(r);
    assert_true(PyErr_ExceptionMatches(PyExc_ValueError));
    PyErr_Clear();
    Py_DECREF(reader);
    Py_DECREF(p);
    Py_DECREF(value);
    close(fd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_protocol_loads_back),
        cmocka_unit_test(test_short_payload_and_detached_reader_fail),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
