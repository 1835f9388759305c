/* Unit tests for src/stream/external's frame decoding: Wallaroo 0.6's and
 * 0.4's external messages (the clean shutdown that utils/cluster_shutdown
 * sends, a print with its text), and bodies that are neither. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "stream/external.h"

static void test_clean_shutdown_06(void **state)
{
    /* 00 00 00 02 | 00 03: the body is what follows the length. */
    static const uint8_t body[] = {0x00, 0x03};
    int version = 0;
    unsigned id = 0;
    const uint8_t *p = NULL;
    size_t n = 99;
    assert_int_equal(external_decode(body, sizeof body, &version, &id, &p, &n), 0);
    assert_int_equal(version, 6);
    assert_int_equal(id, EXT06_CLEAN_SHUTDOWN);
    assert_int_equal(n, 0);
}

static void test_print_06_and_04(void **state)
{
    static const uint8_t b06[] = {0x00, 0x01, 'h', 'i'};
    static const uint8_t b04[] = {0x01, 0x00, 0x0b, 0x00, 0x00, 0x00, 0x02, 'h', 'i'};
    int version;
    unsigned id;
    const uint8_t *p;
    size_t n;
    assert_int_equal(external_decode(b06, sizeof b06, &version, &id, &p, &n), 0);
    assert_int_equal(version, 6);
    assert_int_equal(id, EXT06_PRINT);
    assert_int_equal(n, 2);
    assert_memory_equal(p, "hi", 2);
    assert_int_equal(external_decode(b04, sizeof b04, &version, &id, &p, &n), 0);
    assert_int_equal(version, 4);
    assert_int_equal(id, EXT04_PRINT);
    assert_int_equal(n, 2);
    assert_memory_equal(p, "hi", 2);
}

static void test_clean_shutdown_04_with_reason(void **state)
{
    static const uint8_t body[] = {0x01, 0x00, 0x0d, 0x00, 0x00, 0x00, 0x03, 'b', 'y', 'e'};
    int version;
    unsigned id;
    const uint8_t *p;
    size_t n;
    assert_int_equal(external_decode(body, sizeof body, &version, &id, &p, &n), 0);
    assert_int_equal(version, 4);
    assert_int_equal(id, EXT04_CLEAN_SHUTDOWN);
    assert_int_equal(n, 3);
    assert_memory_equal(p, "bye", 3);
}

static void test_neither(void **state)
{
    static const uint8_t empty[1] = {0};
    static const uint8_t one[] = {0x00};
    static const uint8_t hello[] = {0xf0, 0x01, 0x00};
    /* 0.4 with a string length that does not match the frame's */
    static const uint8_t bad04[] = {0x01, 0x00, 0x0d, 0x00, 0x00, 0x00, 0x05, 'b', 'y', 'e'};
    static const uint8_t short04[] = {0x01, 0x00, 0x0d, 0x00};
    int version;
    unsigned id;
    const uint8_t *p;
    size_t n;
    assert_int_equal(external_decode(empty, 0, &version, &id, &p, &n), -1);
    assert_int_equal(external_decode(one, sizeof one, &version, &id, &p, &n), -1);
    assert_int_equal(external_decode(hello, sizeof hello, &version, &id, &p, &n), -1);
    assert_int_equal(external_decode(bad04, sizeof bad04, &version, &id, &p, &n), -1);
    assert_int_equal(external_decode(short04, sizeof short04, &version, &id, &p, &n), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_clean_shutdown_06),
        cmocka_unit_test(test_print_06_and_04),
        cmocka_unit_test(test_clean_shutdown_04_with_reason),
        cmocka_unit_test(test_neither),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
