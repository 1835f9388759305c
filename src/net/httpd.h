/* A minimal HTTP/1.1 server on a libuv loop, for a service's own endpoints
 * (/metrics, /topology.json, the dashboard's files of net/dashboard.h): GET
 * only, one request per connection (answered with Connection: close), a
 * bounded request (HTTPD_MAX_REQUEST bytes of request line and headers), a
 * bounded number of connections, and a deadline to send the request. A bad or oversized request gets a 4xx answer
 * and a log line, and its connection is closed. Every page is made by a
 * route's callback on the loop thread, so it reads the service's counters
 * without locks; nothing here blocks the loop (writes are queued). */
#ifndef BETTONG_HTTPD_H
#define BETTONG_HTTPD_H

#include <stddef.h>
#include <uv.h>

#include "util/buf.h"

#define HTTPD_MAX_REQUEST 8192
#define HTTPD_MAX_CONNS 64
#define HTTPD_REQUEST_TIMEOUT_MS 5000
#define HTTPD_MAX_ROUTES 16

typedef struct httpd httpd_t;

/* Appends the page's body to out; returns 0, or -1 (answered 500). */
typedef int (*httpd_page_fn)(void *ctx, buf_t *out);

/* Listen on addr ("H:P"; a bare port or ":P" means 127.0.0.1; port 0: one
 * the kernel picks). `what` names the server in logs ("metrics"). Returns a
 * server, or NULL with a message in err. */
httpd_t *httpd_start(uv_loop_t *loop, const char *addr, const char *what, char *err,
                     size_t errlen);
/* Serve path (exact, query string ignored) with fn. Returns 0 or -1 (full). */
int httpd_route(httpd_t *h, const char *path, const char *content_type, httpd_page_fn fn,
                void *ctx);
/* httpd_route_flags' flags. ANY_ORIGIN: the answer carries
 * "Access-Control-Allow-Origin: *", so a page served by another worker's
 * endpoint may read it (the dashboard of a cluster; for read-only pages). */
#define HTTPD_ANY_ORIGIN 1u
int httpd_route_flags(httpd_t *h, const char *path, const char *content_type, httpd_page_fn fn,
                      void *ctx, unsigned flags);
/* The bound address, "host:port". */
const char *httpd_addr(const httpd_t *h);
/* Close the listener and every connection; freed once libuv has let go. */
void httpd_close(httpd_t *h);

/* Parse a request head (for the tests): 0 and the path (NUL-terminated, up to
 * pathlen - 1 bytes, query cut) for a GET; otherwise the HTTP status to
 * answer (400 malformed, 405 not GET, 505 not HTTP/1.x, 414 path too long). */
int httpd_parse_request(const char *head, size_t len, char *path, size_t pathlen);

#endif
