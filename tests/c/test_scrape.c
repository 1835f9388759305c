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

/* The metrics addresses a worker's topology page lists for its cluster. */
static void test_members(void **state)
{
    char out[4][SCRAPE_ADDR_MAX];
    const char *page = "{\"service\":\"stream\",\"pipelines\":[{\"metrics\":\"no:1\"}],"
                       "\"members\":[{\"index\":0,\"state\":\"active\",\"name\":\"w1\","
                       "\"metrics\":\"127.0.0.1:9001\"},{\"index\":1,\"name\":\"w2\","
                       "\"metrics\":\"\"},{\"name\":\"w3\",\"metrics\":\"h:9\"}],"
                       "\"after\":{\"metrics\":\"no:2\"}}";
    assert_int_equal(scrape_members_parse(page, strlen(page), out, 4), 2);
    assert_string_equal(out[0], "127.0.0.1:9001");
    assert_string_equal(out[1], "h:9");
    /* At most cap; a page without members (a pool, one worker) has none. */
    assert_int_equal(scrape_members_parse(page, strlen(page), out, 1), 1);
    assert_int_equal(scrape_members_parse("{\"service\":\"pool\"}", 18, out, 4), 0);
    /* Cut short inside a string: what was whole is kept. */
    assert_int_equal(scrape_members_parse(page, (size_t)(strstr(page, "h:9") - page + 1), out,
                                          4), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bodies),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_members),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
