#include "net/httpd.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/addr.h"
#include "util/log.h"

typedef struct {
    char path[128];
    char content_type[96];
    httpd_page_fn fn;
    void *ctx;
    unsigned flags; /* HTTPD_ANY_ORIGIN */
} route_t;

typedef struct hconn hconn_t;

struct httpd {
    uv_loop_t *loop;
    uv_tcp_t listener;
    char addr[128];
    char what[32];
    route_t routes[HTTPD_MAX_ROUTES];
    size_t nroutes;
    hconn_t *conns;
    size_t nconns;
    int closing;
    int listener_open;
};

struct hconn {
    httpd_t *h;
    hconn_t *prev, *next;
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_write_t wr;
    uv_shutdown_t sd;
    int open_handles; /* closed when both tcp and timer are */
    int answered;
    int closing;
    char peer[128];
    size_t len;
    buf_t out;
    char req[HTTPD_MAX_REQUEST];
};

static void maybe_free(httpd_t *h)
{
    if (h->closing && !h->listener_open && h->nconns == 0)
        free(h);
}

static void on_conn_handle_closed(uv_handle_t *handle)
{
    hconn_t *c = handle->data;
    if (--c->open_handles > 0)
        return;
    httpd_t *h = c->h;
    if (c->prev)
        c->prev->next = c->next;
    else
        h->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    h->nconns--;
    buf_free(&c->out);
    free(c);
    maybe_free(h);
}

static void conn_close(hconn_t *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    uv_close((uv_handle_t *)&c->timer, on_conn_handle_closed);
    uv_close((uv_handle_t *)&c->tcp, on_conn_handle_closed);
}

/* A linger after the answer: bytes the client sent that were not read
 * (an oversized head) would make close() send a reset, which can destroy
 * the answer before the client reads it. So: FIN, read and drop until the
 * client closes, or this long. */
#define HTTPD_LINGER_MS 1000

static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf);
static void on_linger_timeout(uv_timer_t *t) { conn_close(t->data); }

static void on_shutdown(uv_shutdown_t *sd, int status)
{
    hconn_t *c = sd->data;
    if (c->closing)
        return;
    if (status < 0 || uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) {
        conn_close(c);
        return;
    }
    uv_timer_start(&c->timer, on_linger_timeout, HTTPD_LINGER_MS, 0);
}

static void on_written(uv_write_t *wr, int status)
{
    hconn_t *c = wr->data;
    c->sd.data = c;
    if (c->closing)
        return;
    if (status < 0 || uv_shutdown(&c->sd, (uv_stream_t *)&c->tcp, on_shutdown) != 0)
        conn_close(c);
}

static const char *status_text(int status)
{
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 414: return "URI Too Long";
    case 431: return "Request Header Fields Too Large";
    case 505: return "HTTP Version Not Supported";
    default: return "Internal Server Error";
    }
}

/* The answer (head and body) is written once; the connection closes after it. */
static void answer(hconn_t *c, int status, const char *ctype, const buf_t *body,
                   unsigned flags)
{
    if (c->answered || c->closing)
        return;
    c->answered = 1;
    uv_read_stop((uv_stream_t *)&c->tcp);
    uv_timer_stop(&c->timer);
    char head[384];
    size_t blen = body ? buf_unread(body) : 0;
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Cache-Control: no-store\r\n%sConnection: close\r\n\r\n", status,
                     status_text(status), ctype, blen,
                     flags & HTTPD_ANY_ORIGIN ? "Access-Control-Allow-Origin: *\r\n" : "");
    if (buf_append(&c->out, head, (size_t)n) < 0 ||
        (blen && buf_append(&c->out, buf_head(body), blen) < 0)) {
        conn_close(c);
        return;
    }
    uv_buf_t b = uv_buf_init((char *)buf_head(&c->out), (unsigned)buf_unread(&c->out));
    c->wr.data = c;
    if (uv_write(&c->wr, (uv_stream_t *)&c->tcp, &b, 1, on_written) != 0)
        conn_close(c);
}

static void answer_error(hconn_t *c, int status, const char *why)
{
    log_warn("%s: closing connection from %s: %s (answered %d)", c->h->what, c->peer, why,
             status);
    buf_t body;
    buf_init(&body);
    char text[64];
    int n = snprintf(text, sizeof text, "%d %s\n", status, status_text(status));
    buf_append(&body, text, (size_t)n);
    answer(c, status, "text/plain; charset=utf-8", &body, 0);
    buf_free(&body);
}

int httpd_parse_request(const char *head, size_t len, char *path, size_t pathlen)
{
    const char *eol = memchr(head, '\n', len);
    if (!eol)
        return 400;
    size_t line = (size_t)(eol - head);
    if (line && head[line - 1] == '\r')
        line--;
    const char *sp1 = memchr(head, ' ', line);
    if (!sp1 || sp1 == head)
        return 400;
    const char *target = sp1 + 1;
    const char *sp2 = memchr(target, ' ', line - (size_t)(target - head));
    if (!sp2 || sp2 == target)
        return 400;
    const char *version = sp2 + 1;
    size_t vlen = line - (size_t)(version - head);
    for (const char *p = head; p < sp1; p++)
        if (!isupper((unsigned char)*p))
            return 400;
    for (const char *p = target; p < sp2; p++)
        if ((unsigned char)*p <= ' ' || (unsigned char)*p >= 0x7f)
            return 400;
    if (vlen != 8 || memcmp(version, "HTTP/1.", 7) != 0 || !isdigit((unsigned char)version[7]))
        return vlen >= 5 && memcmp(version, "HTTP/", 5) == 0 ? 505 : 400;
    if ((size_t)(sp1 - head) != 3 || memcmp(head, "GET", 3) != 0)
        return 405;
    size_t plen = (size_t)(sp2 - target);
    const char *q = memchr(target, '?', plen);
    if (q)
        plen = (size_t)(q - target);
    if (plen >= pathlen)
        return 414;
    memcpy(path, target, plen);
    path[plen] = '\0';
    return 0;
}

/* The end of the head: a blank line. */
static int head_complete(const char *req, size_t len)
{
    for (size_t i = 0; i + 1 < len; i++)
        if (req[i] == '\n' && (req[i + 1] == '\n' ||
                               (req[i + 1] == '\r' && i + 2 < len && req[i + 2] == '\n')))
            return 1;
    return 0;
}

static void serve(hconn_t *c)
{
    char path[256];
    int status = httpd_parse_request(c->req, c->len, path, sizeof path);
    if (status) {
        answer_error(c, status, "bad request");
        return;
    }
    httpd_t *h = c->h;
    for (size_t i = 0; i < h->nroutes; i++) {
        if (strcmp(h->routes[i].path, path) != 0)
            continue;
        buf_t body;
        buf_init(&body);
        if (h->routes[i].fn(h->routes[i].ctx, &body) == 0)
            answer(c, 200, h->routes[i].content_type, &body, h->routes[i].flags);
        else
            answer_error(c, 500, "the page could not be made");
        buf_free(&body);
        return;
    }
    /* An unknown path is an ordinary answer, not worth a warning each time. */
    log_debug("%s: %s asked for %s: 404", h->what, c->peer, path);
    buf_t body;
    buf_init(&body);
    buf_append(&body, "404 Not Found\n", 14);
    answer(c, 404, "text/plain; charset=utf-8", &body, 0);
    buf_free(&body);
}

static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
    hconn_t *c = handle->data;
    if (c->answered) { /* lingering: what comes is dropped */
        *buf = uv_buf_init(c->req, sizeof c->req);
        return;
    }
    size_t room = sizeof c->req - c->len;
    *buf = uv_buf_init(c->req + c->len, (unsigned)room);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    hconn_t *c = s->data;
    if (c->answered) {
        if (n < 0)
            conn_close(c);
        return;
    }
    if (n < 0) {
        if (n != UV_EOF && !c->answered)
            log_warn("%s: connection from %s: %s", c->h->what, c->peer, uv_strerror((int)n));
        if (!c->answered)
            conn_close(c);
        return;
    }
    if (n == 0 || c->answered)
        return;
    c->len += (size_t)n;
    if (head_complete(c->req, c->len))
        serve(c);
    else if (c->len == sizeof c->req)
        answer_error(c, 431, "request head larger than " "8192 bytes");
}

static void on_timeout(uv_timer_t *t)
{
    hconn_t *c = t->data;
    answer_error(c, 408, "no complete request in time");
}

static void on_connection(uv_stream_t *server, int status)
{
    httpd_t *h = server->data;
    if (status < 0 || h->closing)
        return;
    hconn_t *c = calloc(1, sizeof *c);
    if (!c)
        return;
    c->h = h;
    buf_init(&c->out);
    uv_tcp_init(h->loop, &c->tcp);
    uv_timer_init(h->loop, &c->timer);
    c->tcp.data = c->timer.data = c;
    c->open_handles = 2;
    c->next = h->conns;
    if (h->conns)
        h->conns->prev = c;
    h->conns = c;
    h->nconns++;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        conn_close(c);
        return;
    }
    struct sockaddr_storage peer;
    int plen = sizeof peer;
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&peer, &plen) == 0)
        sockaddr_text((struct sockaddr *)&peer, c->peer, sizeof c->peer);
    else
        snprintf(c->peer, sizeof c->peer, "?");
    if (h->nconns > HTTPD_MAX_CONNS) {
        log_warn("%s: more than %d connections at once: closing the one from %s", h->what,
                 HTTPD_MAX_CONNS, c->peer);
        conn_close(c);
        return;
    }
    uv_timer_start(&c->timer, on_timeout, HTTPD_REQUEST_TIMEOUT_MS, 0);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

/* A bare port, or ":P", is on loopback. */
static void normalise(const char *addr, char *out, size_t outlen)
{
    size_t digits = strspn(addr, "0123456789");
    if (addr[0] && addr[digits] == '\0')
        snprintf(out, outlen, "127.0.0.1:%s", addr);
    else if (addr[0] == ':')
        snprintf(out, outlen, "127.0.0.1%s", addr);
    else
        snprintf(out, outlen, "%s", addr);
}

httpd_t *httpd_start(uv_loop_t *loop, const char *addr, const char *what, char *err,
                     size_t errlen)
{
    char text[300];
    normalise(addr, text, sizeof text);
    struct sockaddr_storage sa;
    char aerr[300];
    if (hostport_lookup(text, &sa, aerr, sizeof aerr) < 0) {
        snprintf(err, errlen, "%s: bad address '%s': %s", what, addr, aerr);
        return NULL;
    }
    httpd_t *h = calloc(1, sizeof *h);
    if (!h) {
        snprintf(err, errlen, "%s: out of memory", what);
        return NULL;
    }
    h->loop = loop;
    snprintf(h->what, sizeof h->what, "%s", what);
    uv_tcp_init(loop, &h->listener);
    h->listener.data = h;
    h->listener_open = 1;
    int rc = uv_tcp_bind(&h->listener, (struct sockaddr *)&sa, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&h->listener, 64, on_connection);
    if (rc != 0) {
        snprintf(err, errlen, "%s: cannot listen on %s: %s", what, text, uv_strerror(rc));
        httpd_close(h);
        return NULL;
    }
    struct sockaddr_storage bound;
    int blen = sizeof bound;
    uv_tcp_getsockname(&h->listener, (struct sockaddr *)&bound, &blen);
    sockaddr_text((struct sockaddr *)&bound, h->addr, sizeof h->addr);
    if (!sockaddr_is_loopback((struct sockaddr *)&bound))
        log_warn("%s: listening beyond loopback (%s): anyone who can reach it can read it",
                 what, h->addr);
    return h;
}

int httpd_route(httpd_t *h, const char *path, const char *content_type, httpd_page_fn fn,
                void *ctx)
{
    return httpd_route_flags(h, path, content_type, fn, ctx, 0);
}

int httpd_route_flags(httpd_t *h, const char *path, const char *content_type, httpd_page_fn fn,
                      void *ctx, unsigned flags)
{
    if (h->nroutes == HTTPD_MAX_ROUTES || strlen(path) >= sizeof h->routes[0].path)
        return -1;
    route_t *r = &h->routes[h->nroutes++];
    snprintf(r->path, sizeof r->path, "%s", path);
    snprintf(r->content_type, sizeof r->content_type, "%s", content_type);
    r->fn = fn;
    r->ctx = ctx;
    r->flags = flags;
    return 0;
}

const char *httpd_addr(const httpd_t *h) { return h->addr; }

static void on_listener_closed(uv_handle_t *handle)
{
    httpd_t *h = handle->data;
    h->listener_open = 0;
    maybe_free(h);
}

void httpd_close(httpd_t *h)
{
    if (!h || h->closing)
        return;
    h->closing = 1;
    for (hconn_t *c = h->conns; c; c = c->next)
        conn_close(c);
    uv_close((uv_handle_t *)&h->listener, on_listener_closed);
}
