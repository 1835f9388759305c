#include "tools/scrape.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "net/sock.h"
#include "util/buf.h"

/* Read until the peer closes, at most SCRAPE_MAX_ANSWER bytes, before the deadline. */
static int read_all(int fd, buf_t *in, double deadline, char *err, size_t errlen)
{
    for (;;) {
        int ms = sock_ms_left(deadline);
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int r = ms == 0 ? 0 : poll(&p, 1, ms);
        if (r == 0) {
            snprintf(err, errlen, "no complete answer in time (read %zu bytes)", buf_unread(in));
            return -1;
        }
        if (r < 0) {
            if (errno == EINTR)
                continue;
            snprintf(err, errlen, "poll: %s", strerror(errno));
            return -1;
        }
        if (buf_reserve(in, 65536) < 0) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        ssize_t n = read(fd, in->data + in->len, 65536);
        if (n == 0)
            return 0;
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            snprintf(err, errlen, "read: %s", strerror(errno));
            return -1;
        }
        in->len += (size_t)n;
        if (buf_unread(in) > SCRAPE_MAX_ANSWER) {
            snprintf(err, errlen, "answer larger than %u bytes", SCRAPE_MAX_ANSWER);
            return -1;
        }
    }
}

int scrape_http_body(const char *p, size_t n, const char **body, size_t *len, char *err,
                     size_t errlen)
{
    if (n < 12 || memcmp(p, "HTTP/1.", 7) != 0) {
        snprintf(err, errlen, "not an HTTP answer (%zu bytes that do not start with HTTP/1.)",
                 n);
        return -1;
    }
    const char *head_end = memmem(p, n, "\r\n\r\n", 4);
    if (!head_end) {
        snprintf(err, errlen, "an HTTP answer without the end of its head");
        return -1;
    }
    if (memcmp(p + 8, " 200", 4) != 0 || (p[12] != ' ' && p[12] != '\r')) {
        const char *eol = memchr(p, '\r', n);
        snprintf(err, errlen, "answered '%.*s' (not 200)", (int)(eol - p > 80 ? 80 : eol - p),
                 p);
        return -1;
    }
    /* Our servers close instead of chunking; another server may not. */
    for (const char *q = p; q < head_end; q++)
        if ((*q == 'T' || *q == 't') && (size_t)(head_end - q) >= 26 &&
            strncasecmp(q, "transfer-encoding: chunked", 26) == 0) {
            snprintf(err, errlen, "a chunked answer (not supported: not a Bettong endpoint?)");
            return -1;
        }
    *body = head_end + 4;
    *len = n - (size_t)(*body - p);
    return 0;
}

static int http_get(const char *addr, const char *path, double timeout, buf_t *in, char *err,
                    size_t errlen)
{
    double deadline = sock_now() + timeout;
    int what = 0;
    char why[200];
    int fd = sock_connect_addr(addr, 0, deadline, &what, why, sizeof why);
    if (fd < 0) {
        if (what == SOCK_CA_ADDRESS)
            snprintf(err, errlen, "bad address (want HOST:PORT): %s", why);
        else
            snprintf(err, errlen, "cannot connect: %s", why);
        return -1;
    }
    char req[700];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: %s\r\n"
                     "User-Agent: bettong-top\r\nConnection: close\r\n\r\n", path, addr);
    int rc = -1;
    if (sock_write_all(fd, req, (size_t)n, deadline) < 0)
        snprintf(err, errlen, "cannot send the request: %s",
                 errno == ETIMEDOUT ? "timed out" : strerror(errno));
    else
        rc = read_all(fd, in, deadline, err, errlen);
    close(fd);
    return rc;
}

/* GET path into in, and its body (within in) when the answer is a 200.
 * Returns 0, or -1 with why in err. */
static int get_body(const char *addr, const char *path, double timeout, buf_t *in,
                    const char **body, size_t *len, char *err, size_t errlen)
{
    return http_get(addr, path, timeout, in, err, errlen) < 0 ||
                   scrape_http_body((const char *)buf_head(in), buf_unread(in), body, len, err,
                                    errlen) < 0
               ? -1
               : 0;
}

int scrape_metrics(const char *addr, double timeout, prom_doc_t *doc, char *err, size_t errlen)
{
    buf_t in;
    buf_init(&in);
    const char *body;
    size_t len;
    char why[400];
    int rc = -1;
    if (get_body(addr, "/metrics", timeout, &in, &body, &len, why, sizeof why) < 0)
        snprintf(err, errlen, "%s", why);
    else if (prom_parse(doc, body, len, why, sizeof why) < 0)
        snprintf(err, errlen, "not the Prometheus text format: %s", why);
    else
        rc = 0;
    buf_free(&in);
    return rc;
}

size_t scrape_members_parse(const char *json, size_t len, char (*out)[SCRAPE_ADDR_MAX],
                            size_t cap)
{
    static const char members[] = "\"members\":[", key[] = "\"metrics\":\"";
    const char *end = json + len;
    const char *p = memmem(json, len, members, sizeof members - 1);
    size_t n = 0;
    if (!p)
        return 0;
    const char *close = memchr(p, ']', (size_t)(end - p));
    if (close)
        end = close;
    while (n < cap && (p = memmem(p, (size_t)(end - p), key, sizeof key - 1)) != NULL) {
        p += sizeof key - 1;
        const char *q = memchr(p, '"', (size_t)(end - p));
        if (!q)
            break;
        size_t alen = (size_t)(q - p);
        /* An address has no escapes; "" is a member without an endpoint. */
        if (alen > 0 && alen < SCRAPE_ADDR_MAX && !memchr(p, '\\', alen)) {
            memcpy(out[n], p, alen);
            out[n++][alen] = '\0';
        }
        p = q + 1;
    }
    return n;
}

int scrape_members(const char *addr, double timeout, char (*out)[SCRAPE_ADDR_MAX], size_t cap,
                   size_t *n)
{
    buf_t in;
    buf_init(&in);
    const char *body;
    size_t len;
    char why[400];
    int rc = get_body(addr, "/topology.json", timeout, &in, &body, &len, why, sizeof why);
    *n = rc == 0 ? scrape_members_parse(body, len, out, cap) : 0;
    buf_free(&in);
    return rc;
}
