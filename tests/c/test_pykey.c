/* pykey: routing hashes of Python keys. Equal keys must hash equal, different
 * types must not collide by construction, and the value must not depend on the
 * process (no Python hash() involved). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "py/bridge.h"
#include "pysetup.h"
#include "py/pykey.h"
#include "util/hash.h"

static uint64_t key_hash_of(const char *expr)
{
    PyObject *v = PyRun_String(expr, Py_eval_input, PyEval_GetBuiltins(), NULL);
    assert_non_null(v);
    uint64_t h = 0;
    assert_int_equal(pykey_hash(v, &h), 0);
    Py_DECREF(v);
    return h;
}

static void test_equal_numbers_hash_equal(void **state)
{
    assert_true(key_hash_of("1") == key_hash_of("1.0"));
    assert_true(key_hash_of("1") == key_hash_of("True"));
    assert_true(key_hash_of("0") == key_hash_of("False"));
    assert_true(key_hash_of("-7") == key_hash_of("-7.0"));
    assert_true(key_hash_of("1") != key_hash_of("2"));
    assert_true(key_hash_of("1.5") != key_hash_of("1"));
}

static void test_types_are_kept_apart(void **state)
{
    assert_true(key_hash_of("'1'") != key_hash_of("1"));
    assert_true(key_hash_of("'a'") != key_hash_of("b'a'"));
    assert_true(key_hash_of("None") != key_hash_of("0"));
    assert_true(key_hash_of("('a',)") != key_hash_of("'a'"));
}

static void test_str_hash_is_its_utf8(void **state)
{
    /* The value depends only on the UTF-8 bytes: no per-process randomness. */
    uint64_t a = key_hash_of("'caf\\u00e9'");
    PyObject *s = PyUnicode_FromString("caf\xc3\xa9");
    uint64_t b;
    assert_int_equal(pykey_hash(s, &b), 0);
    Py_DECREF(s);
    assert_true(a == b);
    assert_true(key_hash_of("'abc'") == key_hash_of("'ab' + 'c'"));
}

static void test_big_ints(void **state)
{
    assert_true(key_hash_of("2**100") == key_hash_of("2**100"));
    assert_true(key_hash_of("2**100") != key_hash_of("2**100 + 1"));
    assert_true(key_hash_of("2**63 - 1") != key_hash_of("2**63"));
}

static void test_tuples_and_frozensets(void **state)
{
    assert_true(key_hash_of("('a', 1)") == key_hash_of("('a', 1.0)"));
    assert_true(key_hash_of("('a', 1)") != key_hash_of("(1, 'a')"));
    assert_true(key_hash_of("frozenset({1, 2, 3})") == key_hash_of("frozenset({3, 1, 2})"));
    assert_true(key_hash_of("frozenset({1, 2})") != key_hash_of("frozenset({1, 3})"));
}

static void test_unhashable_key_raises(void **state)
{
    PyObject *lst = PyList_New(0);
    uint64_t h;
    assert_int_equal(pykey_hash(lst, &h), -1);
    assert_non_null(PyErr_Occurred());
    assert_true(PyErr_ExceptionMatches(PyExc_TypeError));
    PyErr_Clear();
    Py_DECREF(lst);
}

static void test_other_types_by_pickle(void **state)
{
    /* A value-like object outside the fast paths still hashes deterministically. */
    uint64_t a = key_hash_of("__import__('decimal').Decimal('1.25')");
    uint64_t b = key_hash_of("__import__('decimal').Decimal('1.25')");
    assert_true(a == b);
}

/* pykey_wallaroo06 of `expr`: the bytes it makes, or NULL with the
 * exception type in *exc (and the exception cleared). */
static PyObject *wkey_of(const char *expr, PyObject **exc)
{
    PyObject *v = PyRun_String(expr, Py_eval_input, PyEval_GetBuiltins(), NULL);
    assert_non_null(v);
    PyObject *k = pykey_wallaroo06(v);
    Py_DECREF(v);
    *exc = NULL;
    if (!k) {
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        *exc = type;
        Py_XDECREF(value);
        Py_XDECREF(tb);
    }
    return k;
}

static void assert_wkey(const char *expr, const char *bytes, size_t n)
{
    PyObject *exc;
    PyObject *k = wkey_of(expr, &exc);
    assert_non_null(k);
    assert_true(PyBytes_CheckExact(k));
    assert_int_equal(PyBytes_GET_SIZE(k), n);
    assert_memory_equal(PyBytes_AS_STRING(k), bytes, n);
    Py_DECREF(k);
}

static void test_wallaroo06_keys_are_bytes(void **state)
{
    /* str as UTF-8 and bytes as they are: "a" and b"a" are one key. */
    assert_wkey("'a'", "a", 1);
    assert_wkey("b'a'", "a", 1);
    assert_wkey("'caf\\u00e9'", "caf\xc3\xa9", 5);
    assert_wkey("b''", "", 0);
    /* An int n is chr(n), as Wallaroo 0.6.1's key_extractor wrapper makes it. */
    assert_wkey("97", "a", 1);
    assert_wkey("0x1F998", "\xf0\x9f\xa6\x98", 4);
    assert_wkey("True", "\x01", 1);
}

static void test_wallaroo06_other_keys_refused(void **state)
{
    PyObject *exc;
    assert_null(wkey_of("1.5", &exc));
    assert_ptr_equal(exc, PyExc_TypeError);
    Py_XDECREF(exc);
    assert_null(wkey_of("('a',)", &exc));
    assert_ptr_equal(exc, PyExc_TypeError);
    Py_XDECREF(exc);
    assert_null(wkey_of("bytearray(b'x')", &exc));
    assert_ptr_equal(exc, PyExc_TypeError);
    Py_XDECREF(exc);
    assert_null(wkey_of("None", &exc));
    assert_ptr_equal(exc, PyExc_TypeError);
    Py_XDECREF(exc);
    assert_null(wkey_of("-1", &exc));
    assert_ptr_equal(exc, PyExc_ValueError);
    Py_XDECREF(exc);
    assert_null(wkey_of("0x110000", &exc));
    assert_ptr_equal(exc, PyExc_ValueError);
    Py_XDECREF(exc);
    assert_null(wkey_of("'\\ud800'", &exc)); /* a lone surrogate has no UTF-8 */
    assert_ptr_equal(exc, PyExc_UnicodeEncodeError);
    Py_XDECREF(exc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_equal_numbers_hash_equal),
        cmocka_unit_test(test_types_are_kept_apart),
        cmocka_unit_test(test_str_hash_is_its_utf8),
        cmocka_unit_test(test_big_ints),
        cmocka_unit_test(test_tuples_and_frozensets),
        cmocka_unit_test(test_unhashable_key_raises),
        cmocka_unit_test(test_other_types_by_pickle),
        cmocka_unit_test(test_wallaroo06_keys_are_bytes),
        cmocka_unit_test(test_wallaroo06_other_keys_refused),
    };
    return cmocka_run_group_tests(tests, py_group_setup, py_group_teardown);
}
