/* Unit tests for src/util/log: level names, filtering, the line format, the role
 * and long messages. stderr is redirected to a temporary file to read lines back. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "util/log.h"

static char captured[16384];

/* Run fn with stderr going to a temporary file; leave its output in `captured`. */
static void capture(void (*fn)(void))
{
    FILE *tmp = tmpfile();
    assert_non_null(tmp);
    fflush(stderr);
    int saved = dup(2);
    assert_true(saved >= 0);
    assert_true(dup2(fileno(tmp), 2) >= 0);
    fn();
    fflush(stderr);
    assert_true(dup2(saved, 2) >= 0);
    close(saved);
    rewind(tmp);
    size_t n = fread(captured, 1, sizeof captured - 1, tmp);
    captured[n] = '\0';
    fclose(tmp);
}

static size_t count_lines(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

static void test_parse_level(void **state)
{
    assert_int_equal(log_parse_level("debug"), LOG_DEBUG);
    assert_int_equal(log_parse_level("info"), LOG_INFO);
    assert_int_equal(log_parse_level("warn"), LOG_WARN);
    assert_int_equal(log_parse_level("error"), LOG_ERROR);
    assert_int_equal(log_parse_level(""), -1);
    assert_int_equal(log_parse_level("warning"), -1);
    assert_int_equal(log_parse_level("INFO"), -1);
    assert_int_equal(log_parse_level("inf"), -1);
    assert_int_equal(log_parse_level("info "), -1);
}

static void emit_all(void)
{
    log_debug("d %d", 1);
    log_info("i %s", "two");
    log_warn("w %c", '3');
    log_error("e %.1f", 4.0);
}

static void test_filtering(void **state)
{
    log_set_role("tester");
    log_set_level(LOG_DEBUG);
    capture(emit_all);
    assert_int_equal(count_lines(captured), 4);
    assert_non_null(strstr(captured, "tester DEBUG: d 1\n"));
    assert_non_null(strstr(captured, "tester INFO: i two\n"));
    assert_non_null(strstr(captured, "tester WARN: w 3\n"));
    assert_non_null(strstr(captured, "tester ERROR: e 4.0\n"));

    log_set_level(LOG_WARN);
    capture(emit_all);
    assert_int_equal(count_lines(captured), 2);
    assert_null(strstr(captured, "DEBUG"));
    assert_null(strstr(captured, "INFO"));
    assert_non_null(strstr(captured, "WARN: w 3\n"));
    assert_non_null(strstr(captured, "ERROR: e 4.0\n"));

    log_set_level(LOG_ERROR);
    capture(emit_all);
    assert_int_equal(count_lines(captured), 1);
    log_set_level(LOG_INFO);
}

static void emit_one(void) { log_info("hello"); }

static void test_line_format(void **state)
{
    log_set_role("worker-3");
    log_set_level(LOG_INFO);
    capture(emit_one);
    /* "HH:MM:SS.mmm role LEVEL: message\n" */
    unsigned hh, mm, ss, ms;
    char role[64], rest[64];
    assert_int_equal(sscanf(captured, "%2u:%2u:%2u.%3u %63s %63[^\n]", &hh, &mm, &ss, &ms, role, rest),
                     6);
    assert_true(hh < 24 && mm < 60 && ss < 61 && ms < 1000);
    assert_string_equal(role, "worker-3");
    assert_string_equal(rest, "INFO: hello");
    assert_int_equal(captured[2], ':');
    assert_int_equal(captured[8], '.');
    assert_int_equal(captured[12], ' ');
    assert_int_equal(count_lines(captured), 1);
}

static void test_long_role_truncated(void **state)
{
    log_set_role("a-role-name-that-is-much-longer-than-the-buffer-holds");
    capture(emit_one);
    /* The role keeps at most 31 characters. */
    assert_non_null(strstr(captured, " a-role-name-that-is-much-longer INFO: hello\n"));
    log_set_role("bettong");
}

static void emit_long(void)
{
    static char big[10000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    log_error("%s", big);
}

static void test_long_message_truncated(void **state)
{
    log_set_level(LOG_INFO);
    capture(emit_long);
    /* One line, cut to the line buffer, still newline-terminated. */
    assert_int_equal(count_lines(captured), 1);
    size_t len = strlen(captured);
    assert_true(len > 4000 && len <= 4096);
    assert_int_equal(captured[len - 1], '\n');
    assert_int_equal(captured[len - 2], 'x');
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_level),
        cmocka_unit_test(test_filtering),
        cmocka_unit_test(test_line_format),
        cmocka_unit_test(test_long_role_truncated),
        cmocka_unit_test(test_long_message_truncated),
    };
    return cmocka_run_group_tests_name("log", tests, NULL, NULL);
}
