/* Unit tests for src/tools/scrape: the body of an HTTP answer is found only
 * in a whole HTTP/1.x 200 answer; anything else is refused with a reason. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "tools/scrape.h"

static void body_is(const char *answer, const char *want)
{
    const char *body;
    size_t len;
    char err[200] = "";
    if (scrape_http_body(answer, strlen(answer), &body, &len, err, sizeof err) != 0)
        fail_msg("refused (%s): %s", err, answer);
    assert_int_equal(len, strlen(want));
    assert_memory_equal(body, want, len);
}

static void refused(const char *answer, const char *want)
{
    const char *body;
    size_t len;
    char err[200] = "";
    if (scrape_http_body(answer, strlen(answer), &body, &len, err, sizeof err) != -1)
        fail_msg("accepted: %s", answer);
    assert_string_equal(err, want);
}

static void test_bodies(void **state)
{
    body_is("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nx 1\n",
            "x 1\n");
    body_is("HTTP/1.0 200 OK\r\n\r\n", "");
    /* Only the first blank line ends the head. */
    body_is("HTTP/1.1 200 OK\r\n\r\n\r\n\r\nx", "\r\n\r\nx");
}

static void test_refusals(void **state)
{
    refused("", "not an HTTP answer (0 bytes that do not start with HTTP/1.)");
    refused("SSH-2.0-OpenSSH_9.2\r\n", "not an HTTP answer (21 bytes that do not start with HTTP/1.)");
    refused("HTTP/1.1 200 OK\r\nContent-Type: te", "an HTTP answer without the end of its head");
    refused("HTTP/1.1 404 Not Found\r\nConnection: close\r\n\r\n",
            "answered 'HTTP/1.1 404 Not Found' (not 200)");
    refused("HTTP/1.1 2000 OK\r\n\r\n", "answered 'HTTP/1.1 2000 OK' (not 200)");
    refused("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nx 1\r\n0\r\n\r\n",
            "a chunked answer (not supported: not a Bettong endpoint?)");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bodies),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
