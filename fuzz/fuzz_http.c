/* Fuzz target: the metrics endpoint's request parser (net/httpd.c,
 * httpd_parse_request) and the label escaping of util/metrics.c.
 *
 * Input: [0] the size of the path buffer (1..256), then the request head as
 * a client sends it. Checks: a status from the documented set; on 0 (a GET)
 * the path is NUL-terminated within the buffer, holds no '?', no byte <= ' '
 * or >= 0x7f, and is a prefix of the request target after "GET "; the input
 * as a label value escapes to text without a raw newline or an unescaped
 * quote, which unescapes back to the input. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "net/httpd.h"
#include "util/metrics.h"

#define CHECK(c) do { if (!(c)) __builtin_trap(); } while (0)

static void check_request(const uint8_t *data, size_t size)
{
    size_t pathlen = 1 + data[0] % 256;
    const char *head = (const char *)data + 1;
    size_t len = size - 1;
    char *path = malloc(pathlen);
    CHECK(path);
    int rc = httpd_parse_request(head, len, path, pathlen);
    CHECK(rc == 0 || rc == 400 || rc == 405 || rc == 414 || rc == 505);
    if (rc == 0) {
        size_t n = strnlen(path, pathlen);
        CHECK(n < pathlen);
        CHECK(len >= 4 && memcmp(head, "GET ", 4) == 0);
        CHECK(n <= len - 4 && memcmp(head + 4, path, n) == 0);
        for (size_t i = 0; i < n; i++)
            CHECK(path[i] != '?' && (unsigned char)path[i] > ' ' &&
                  (unsigned char)path[i] < 0x7f);
    }
    free(path);
}

static void check_escape(const uint8_t *data, size_t size)
{
    char *value = malloc(size + 1);
    CHECK(value);
    memcpy(value, data, size);
    value[size] = '\0'; /* a label value is a C string: up to the first NUL */
    buf_t b;
    buf_init(&b);
    CHECK(metrics_escape(&b, value) == 0);
    const char *e = (const char *)buf_head(&b);
    size_t elen = buf_unread(&b), out = 0;
    for (size_t i = 0; i < elen; i++) {
        char c = e[i];
        CHECK(c != '\n' && c != '"');
        if (c == '\\') {
            CHECK(i + 1 < elen);
            char next = e[++i];
            CHECK(next == '\\' || next == '"' || next == 'n');
            c = next == 'n' ? '\n' : next;
        }
        CHECK(value[out++] == c);
    }
    CHECK(value[out] == '\0');
    buf_free(&b);
    free(value);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    check_request(data, size);
    check_escape(data, size);
    return 0;
}
