#include "net/bconn.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Plaintext encrypted per bconn_send call (TLS cuts it into 16 KiB records). */
#define SEND_BATCH (64 * 1024)
/* Ciphertext read per recv(2): several records per call when they are there. */
#define RECV_CHUNK (64 * 1024)

const char *bconn_tls_address(const char *addr)
{
    return strncmp(addr, "tls:", 4) == 0 ? addr + 4 : NULL;
}

/* One client context for the process: it holds no per-connection state. */
static pthread_once_t client_once = PTHREAD_ONCE_INIT;
static tls_ctx_t *client_ctx;
static char client_err[200];

static void make_client_ctx(void)
{
    client_ctx = tls_ctx_client(client_err, sizeof client_err);
}

static void init_fields(bconn_t *c, int fd)
{
    memset(c, 0, sizeof *c);
    c->fd = fd;
    pthread_mutex_init(&c->tls_mu, NULL);
    pthread_mutex_init(&c->send_mu, NULL);
    buf_init(&c->wout);
    buf_init(&c->plain);
    buf_init(&c->cin);
    buf_init(&c->stage);
}

void bconn_free(bconn_t *c)
{
    tls_conn_free(c->tls);
    c->tls = NULL;
    buf_free(&c->wout);
    buf_free(&c->plain);
    buf_free(&c->cin);
    buf_free(&c->stage);
    pthread_mutex_destroy(&c->tls_mu);
    pthread_mutex_destroy(&c->send_mu);
}

static int wait_fd(int fd, short events, double deadline)
{
    struct pollfd pfd = {fd, events, 0};
    for (;;) {
        int pr = poll(&pfd, 1, sock_ms_left(deadline));
        if (pr > 0)
            return 0;
        if (pr == 0) {
            errno = ETIMEDOUT;
            return -1;
        }
        if (errno != EINTR)
            return -1;
    }
}

/* ------------------------------------------------------------ sending */

/* Move what the engine has written into wout. send_mu held. */
static int take_engine_out(bconn_t *c)
{
    pthread_mutex_lock(&c->tls_mu);
    int rc = tls_out_pending(c->tls) ? tls_take_out(c->tls, &c->wout) : 0;
    pthread_mutex_unlock(&c->tls_mu);
    if (rc < 0)
        errno = ENOMEM;
    return rc;
}

/* Write wout and whatever the engine has. send_mu held. */
static int drain(bconn_t *c, int flags)
{
    for (;;) {
        if (buf_unread(&c->wout) == 0) {
            buf_clear(&c->wout);
            if (take_engine_out(c) < 0)
                return -1;
            if (buf_unread(&c->wout) == 0)
                return 0;
        }
        ssize_t w = send(c->fd, buf_head(&c->wout), buf_unread(&c->wout),
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0) {
            buf_consume(&c->wout, (size_t)w);
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (flags & MSG_DONTWAIT)
                return -1;
            if (wait_fd(c->fd, POLLOUT, -1) < 0)
                return -1;
            continue;
        }
        if (w == 0)
            errno = EPIPE;
        return -1;
    }
}

static int lock_sender(bconn_t *c, int flags)
{
    if (!(flags & MSG_DONTWAIT)) {
        pthread_mutex_lock(&c->send_mu);
        return 0;
    }
    if (pthread_mutex_trylock(&c->send_mu) == 0)
        return 0;
    errno = EAGAIN;
    return -1;
}

/* Encrypt up to SEND_BATCH bytes of iov: returns the count, or -1. */
static ssize_t encrypt_batch(bconn_t *c, const struct iovec *iov, int cnt)
{
    if (buf_reserve(&c->stage, SEND_BATCH) < 0) {
        errno = ENOMEM;
        return -1;
    }
    size_t n = 0;
    for (int i = 0; i < cnt && n < SEND_BATCH; i++) {
        size_t k = iov[i].iov_len < SEND_BATCH - n ? iov[i].iov_len : SEND_BATCH - n;
        memcpy(c->stage.data + n, iov[i].iov_base, k);
        n += k;
    }
    if (n == 0)
        return 0;
    pthread_mutex_lock(&c->tls_mu);
    int rc = tls_encrypt(c->tls, c->stage.data, n);
    pthread_mutex_unlock(&c->tls_mu);
    if (rc < 0) {
        errno = EPROTO;
        return -1;
    }
    return (ssize_t)n;
}

ssize_t bconn_send(bconn_t *c, const struct iovec *iov, int cnt, int flags)
{
    if (!c->tls) {
        struct msghdr mh = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)cnt};
        return sendmsg(c->fd, &mh, MSG_NOSIGNAL | flags);
    }
    if (lock_sender(c, flags) < 0)
        return -1;
    /* What was taken before goes out first: a full socket takes nothing new. */
    ssize_t taken = -1;
    if (drain(c, flags) == 0) {
        taken = encrypt_batch(c, iov, cnt);
        /* Written as far as the socket takes it now; the rest is bconn_unsent. */
        if (taken > 0 && drain(c, MSG_DONTWAIT) < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
            taken = -1;
    }
    int e = errno;
    pthread_mutex_unlock(&c->send_mu);
    errno = e;
    return taken;
}

size_t bconn_unsent(bconn_t *c)
{
    if (!c->tls)
        return 0;
    pthread_mutex_lock(&c->send_mu);
    size_t n = buf_unread(&c->wout);
    pthread_mutex_lock(&c->tls_mu);
    n += tls_out_pending(c->tls);
    pthread_mutex_unlock(&c->tls_mu);
    pthread_mutex_unlock(&c->send_mu);
    return n;
}

int bconn_flush(bconn_t *c, int flags)
{
    if (!c->tls)
        return 0;
    if (lock_sender(c, flags) < 0)
        return -1;
    int rc = drain(c, flags);
    int e = errno;
    pthread_mutex_unlock(&c->send_mu);
    errno = e;
    return rc;
}

int bconn_write_all(bconn_t *c, const void *p, size_t n, double deadline)
{
    if (!c->tls)
        return sock_write_all(c->fd, p, n, deadline);
    struct iovec v = {(void *)p, n};
    while (v.iov_len > 0 || bconn_unsent(c) > 0) {
        ssize_t k = v.iov_len > 0 ? bconn_send(c, &v, 1, MSG_DONTWAIT) : bconn_flush(c, MSG_DONTWAIT);
        if (k > 0) {
            v.iov_base = (uint8_t *)v.iov_base + k;
            v.iov_len -= (size_t)k;
            continue;
        }
        if (k == 0)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return -1;
        if (wait_fd(c->fd, POLLOUT, deadline) < 0)
            return -1;
    }
    return 0;
}

/* ------------------------------------------------------------ receiving */

/* After a read gave the engine something to send (an alert, a key update):
 * send it now if no sender is busy, else the next send does. */
static void answer_engine(bconn_t *c)
{
    if (pthread_mutex_trylock(&c->send_mu) != 0)
        return;
    (void)drain(c, MSG_DONTWAIT);
    pthread_mutex_unlock(&c->send_mu);
}

/* Read ciphertext once (flags as recv's) and decrypt it into c->plain.
 * Returns 1 (read something; maybe no plaintext yet), 0 (end of stream), -1. */
static int read_cipher(bconn_t *c, int flags)
{
    if (buf_reserve(&c->cin, RECV_CHUNK) < 0) {
        errno = ENOMEM;
        return -1;
    }
    ssize_t k;
    do
        k = recv(c->fd, c->cin.data, c->cin.cap, flags);
    while (k < 0 && errno == EINTR);
    if (k <= 0)
        return (int)k;
    pthread_mutex_lock(&c->tls_mu);
    int rc = tls_feed(c->tls, c->cin.data, (size_t)k, &c->plain);
    size_t out = tls_out_pending(c->tls);
    pthread_mutex_unlock(&c->tls_mu);
    if (out)
        answer_engine(c);
    if (rc < 0) {
        errno = EPROTO;
        return -1;
    }
    return 1;
}

ssize_t bconn_recv(bconn_t *c, void *p, size_t n, int flags)
{
    if (!c->tls) {
        ssize_t k;
        do
            k = recv(c->fd, p, n, flags);
        while (k < 0 && errno == EINTR);
        return k;
    }
    while (buf_unread(&c->plain) == 0) {
        buf_clear(&c->plain);
        int rc = read_cipher(c, flags);
        if (rc <= 0)
            return rc;
    }
    size_t k = buf_unread(&c->plain) < n ? buf_unread(&c->plain) : n;
    memcpy(p, buf_head(&c->plain), k);
    buf_consume(&c->plain, k);
    return (ssize_t)k;
}

static ssize_t recv_cb(void *ctx, void *p, size_t n, int flags)
{
    return bconn_recv(ctx, p, n, flags);
}

int bconn_read_frame(bconn_t *c, buf_t *in, uint32_t max, double deadline, const uint8_t **body,
                     size_t *len)
{
    if (!c->tls)
        return sock_read_frame(c->fd, in, max, deadline, body, len);
    return sock_read_frame_from(recv_cb, c, c->fd, in, max, deadline, body, len);
}

/* ------------------------------------------------------------ opening */

static int start_tls(bconn_t *c, double deadline, char *why, size_t whylen)
{
    pthread_once(&client_once, make_client_ctx);
    if (!client_ctx) {
        snprintf(why, whylen, "no TLS client context: %s", client_err);
        return -1;
    }
    if (!(c->tls = tls_conn_new(client_ctx))) {
        snprintf(why, whylen, "out of memory");
        return -1;
    }
    int rc = 0;
    while (rc >= 0 && !tls_ready(c->tls)) {
        if (bconn_flush(c, MSG_DONTWAIT) < 0 && errno != EAGAIN)
            rc = -1;
        else if (bconn_unsent(c) > 0)
            rc = wait_fd(c->fd, POLLOUT, deadline);
        else if ((rc = read_cipher(c, MSG_DONTWAIT)) == 0)
            errno = ECONNRESET, rc = -1;
        else if (rc < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            rc = wait_fd(c->fd, POLLIN, deadline);
    }
    if (rc >= 0 && tls_binding(c->tls, c->binding) == 0)
        return 0;
    if (errno == EPROTO)
        snprintf(why, whylen, "TLS: %s", tls_error(c->tls));
    else if (errno == ECONNRESET)
        snprintf(why, whylen, "closed during the TLS handshake (does it listen without TLS?)");
    else
        snprintf(why, whylen, "TLS handshake: %s", strerror(errno));
    return -1;
}

int bconn_open(bconn_t *c, const char *addr, int unix_ok, double deadline, int *what, char *why,
               size_t whylen)
{
    const char *tls_addr = bconn_tls_address(addr);
    int fd = sock_connect_addr(tls_addr ? tls_addr : addr, tls_addr ? 0 : unix_ok, deadline,
                               what, why, whylen);
    if (fd < 0)
        return -1;
    init_fields(c, fd);
    if (!tls_addr)
        return 0;
    if (start_tls(c, deadline, why, whylen) == 0)
        return 0;
    int e = errno == EPROTO ? ECONNREFUSED : errno;
    *what = BCONN_CA_TLS;
    bconn_free(c);
    close(fd);
    c->fd = -1;
    errno = e;
    return -1;
}

/* ------------------------------------------------------------ the handshake */

static int io_write(void *io, const void *p, size_t n, double deadline)
{
    return bconn_write_all(io, p, n, deadline);
}

static int io_read(void *io, buf_t *in, uint32_t max, double deadline, const uint8_t **body,
                   size_t *len)
{
    return bconn_read_frame(io, in, max, deadline, body, len);
}

void bconn_io(bconn_t *c, sock_io_t *io)
{
    io->write_all = io_write;
    io->read_frame = io_read;
    io->io = c;
    io->binding = c->tls ? c->binding : NULL;
    io->binding_len = c->tls ? TLS_BINDING_LEN : 0;
}

int bconn_handshake(bconn_t *c, buf_t *in, const char *service, const void *identity,
                    size_t identity_len, const void *secret, size_t secret_len, uint32_t max,
                    double deadline, uint8_t refused_type, const uint8_t **answer,
                    size_t *answer_len)
{
    sock_io_t io;
    bconn_io(c, &io);
    return sock_handshake_strict_io(&io, in, service, identity, identity_len, secret, secret_len,
                                    max, deadline, refused_type, answer, answer_len);
}
