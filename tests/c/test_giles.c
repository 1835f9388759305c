/* Unit tests for the giles compatibility pieces of the tools: giles' number
 * syntax (cli_parse_pony_count), the rate text of the summaries, the byte
 * layout of giles' counter sequences (gen), giles' timer rounding (batch), and
 * the line rules of text input (records). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "tools/batch.h"
#include "tools/cli.h"
#include "tools/gen.h"
#include "tools/records.h"

static void test_pony_count(void **state)
{
    (void)state;
    struct {
        const char *s;
        uint64_t v;
    } good[] = {
        {"0", 0},       {"10", 10},     {"100_000_000", 100000000}, {"_1_", 1},
        {"0x3e8", 1000}, {"0X3E8", 1000}, {"0b101", 5},            {"007", 7},
        {"9223372036854775807", INT64_MAX},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        uint64_t v = 99;
        assert_int_equal(cli_parse_pony_count(good[i].s, &v), 0);
        assert_true(v == good[i].v);
    }
    /* "0x" alone is too short for a prefix (Pony): '0' then junk. */
    const char *bad[] = {"", "_", "0x", "-1", "+1", "1x", "0b2", "12 ", "9223372036854775808"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint64_t v;
        assert_int_equal(cli_parse_pony_count(bad[i], &v), -1);
    }
}

static void test_rate_text(void **state)
{
    (void)state;
    char buf[64];
    assert_string_equal(cli_rate_text(buf, sizeof buf, 5, 0), "too short to measure a rate");
    assert_string_equal(cli_rate_text(buf, sizeof buf, 5, CLI_RATE_MIN_NS - 1),
                        "too short to measure a rate");
    assert_string_equal(cli_rate_text(buf, sizeof buf, 5, CLI_RATE_MIN_NS), "5000 records/s");
    assert_string_equal(cli_rate_text(buf, sizeof buf, 3, 2000000000ULL), "2 records/s");
}

static void test_timer_interval(void **state)
{
    (void)state;
    assert_true(batch_timer_interval(1) == BATCH_TIMER_UNIT);
    assert_true(batch_timer_interval(BATCH_TIMER_UNIT * 2 - 1) == BATCH_TIMER_UNIT);
    assert_true(batch_timer_interval(5000000) == 4 * BATCH_TIMER_UNIT);
    assert_true(batch_timer_interval(100000000) == 95 * BATCH_TIMER_UNIT);
}

static void test_gen_u64_layout(void **state)
{
    (void)state;
    gen_t g;
    assert_int_equal(gen_init(&g, GEN_U64, 0xFFFFFFFFFFFFFFFEULL, "ab", 0), 0);
    assert_int_equal(gen_next_size(&g), 14);
    gen_fill(&g, 2, 1 << 20);
    assert_int_equal(g.window.n, 2);
    static const uint8_t want[] = {0, 0, 0, 10, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
                                   'a', 'b', 0, 0, 0, 10, 0, 0, 0, 0, 0, 0, 0, 0, 'a', 'b'};
    /* The second value wrapped to 0, as giles' U64 counter does. */
    assert_int_equal(g.window.len, sizeof want);
    assert_memory_equal(g.window.data, want, sizeof want);
    gen_free(&g);
}

static void test_gen_decimal_framed(void **state)
{
    (void)state;
    gen_t g;
    assert_int_equal(gen_init(&g, GEN_DECIMAL, 8, NULL, 1), 0);
    gen_fill(&g, 3, 1 << 20);
    static const uint8_t want[] = {0, 0, 0, 1, '9', 0, 0, 0, 2, '1', '0', 0, 0, 0, 2, '1', '1'};
    assert_int_equal(g.window.len, sizeof want);
    assert_memory_equal(g.window.data, want, sizeof want);
    /* A byte budget below two records still gives one. */
    gen_fill(&g, 100, 1);
    assert_int_equal(g.window.n, 1);
    assert_int_equal(g.window.len, 6);
    gen_free(&g);
}

static void test_lines_as_giles_reads_them(void **state)
{
    (void)state;
    char path[] = "/tmp/bettong-test-giles-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    static const char text[] = "a\r\n\r\n\nb\r\r\n  \nlast\r";
    assert_int_equal(write(fd, text, sizeof text - 1), (ssize_t)(sizeof text - 1));
    close(fd);
    records_t r;
    char note[128], err[256];
    const char *paths[] = {path};
    assert_int_equal(records_load(paths, 1, REC_LINES, 0, &r, note, sizeof note, err,
                                  sizeof err), 0);
    unlink(path);
    const char *want[] = {"a", "b\r", "  ", "last\r"};
    assert_int_equal(r.n, 4);
    for (size_t i = 0; i < r.n; i++) {
        size_t len = r.off[i + 1] - r.off[i] - 4;
        assert_int_equal(len, strlen(want[i]));
        assert_memory_equal(r.data + r.off[i] + 4, want[i], len);
    }
    assert_string_equal(note, "");
    records_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pony_count),      cmocka_unit_test(test_rate_text),
        cmocka_unit_test(test_timer_interval),  cmocka_unit_test(test_gen_u64_layout),
        cmocka_unit_test(test_gen_decimal_framed), cmocka_unit_test(test_lines_as_giles_reads_them),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
