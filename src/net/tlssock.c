#include "net/tlssock.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

/* Send what the engine has to write. */
static int flush_out(tlssock_t *s, double deadline)
{
    buf_t out;
    buf_init(&out);
    int rc = tls_take_out(s->t, &out);
    if (rc == 0)
        rc = sock_write_all(s->fd, buf_head(&out), buf_unread(&out), deadline);
    else
        errno = ENOMEM;
    buf_free(&out);
    return rc;
}

/* Read what arrives (waiting until the deadline) and feed it; plaintext goes
 * to plain. Returns 0, or -1 with errno (ECONNRESET: closed; EPROTO: TLS). */
static int read_some(tlssock_t *s, buf_t *plain, double deadline)
{
    uint8_t b[16384];
    for (;;) {
        ssize_t k = recv(s->fd, b, sizeof b, MSG_DONTWAIT);
        if (k > 0) {
            int rc = tls_feed(s->t, b, (size_t)k, plain);
            if (flush_out(s, deadline) < 0 && rc == 0)
                return -1;
            if (rc < 0) {
                errno = EPROTO;
                return -1;
            }
            return 0;
        }
        if (k == 0) {
            errno = ECONNRESET;
            return -1;
        }
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return -1;
        struct pollfd pfd = {s->fd, POLLIN, 0};
        int pr = poll(&pfd, 1, sock_ms_left(deadline));
        if (pr == 0) {
            errno = ETIMEDOUT;
            return -1;
        }
        if (pr < 0 && errno != EINTR)
            return -1;
    }
}

int tlssock_start(tlssock_t *s, int fd, tls_ctx_t *ctx, double deadline, char *why,
                  size_t whylen)
{
    memset(s, 0, sizeof *s);
    s->fd = fd;
    if (!(s->t = tls_conn_new(ctx))) {
        snprintf(why, whylen, "out of memory");
        return -1;
    }
    buf_t none;
    buf_init(&none);
    int rc = flush_out(s, deadline);
    while (rc == 0 && !tls_ready(s->t))
        rc = read_some(s, &none, deadline);
    /* TLS 1.3 servers may send data right after their Finished: none here, as
     * the service speaks only after our HELLO. */
    buf_free(&none);
    if (rc == 0 && tls_binding(s->t, s->binding) == 0)
        return 0;
    if (errno == EPROTO)
        snprintf(why, whylen, "%s", tls_error(s->t));
    else if (errno == ECONNRESET)
        snprintf(why, whylen, "closed during the TLS handshake (does it listen without TLS?)");
    else
        snprintf(why, whylen, "TLS handshake: %s", strerror(errno));
    return -1;
}

int tlssock_write_all(tlssock_t *s, const void *p, size_t n, double deadline)
{
    if (tls_encrypt(s->t, p, n) < 0) {
        errno = EPROTO;
        return -1;
    }
    return flush_out(s, deadline);
}

int tlssock_read_frame(tlssock_t *s, buf_t *in, uint32_t max, double deadline,
                       const uint8_t **body, size_t *len)
{
    for (;;) {
        int ready = sock_frame_ready(in, max, body, len);
        if (ready != 0)
            return ready > 0 ? 0 : -1;
        if (read_some(s, in, deadline) < 0)
            return -1;
    }
}

static int io_write(void *io, const void *p, size_t n, double deadline)
{
    return tlssock_write_all(io, p, n, deadline);
}

static int io_read(void *io, buf_t *in, uint32_t max, double deadline, const uint8_t **body,
                   size_t *len)
{
    return tlssock_read_frame(io, in, max, deadline, body, len);
}

void tlssock_io(tlssock_t *s, sock_io_t *io)
{
    io->write_all = io_write;
    io->read_frame = io_read;
    io->io = s;
    io->binding = s->binding;
    io->binding_len = TLS_BINDING_LEN;
}

void tlssock_free(tlssock_t *s)
{
    tls_conn_free(s->t);
    s->t = NULL;
}
