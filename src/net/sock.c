/* Blocking sockets for clients: see sock.h. */
#include "net/sock.h"

#include "net/auth.h"

#include <errno.h>
#include <stdio.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

double sock_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int sock_ms_left(double deadline)
{
    if (deadline < 0)
        return -1;
    double left = deadline - sock_now();
    if (left <= 0)
        return 0;
    double ms = left * 1000.0 + 0.999;
    return ms > (double)INT_MAX ? INT_MAX : (int)ms;
}

size_t sock_read_need(const buf_t *in, size_t chunk)
{
    size_t need = chunk;
    size_t un = buf_unread(in);
    if (un >= 4) {
        size_t frame = 4 + (size_t)sock_be32(buf_head(in));
        if (frame > un && frame - un > need)
            need = frame - un;
    }
    return need;
}

int sock_parse_unix(const char *s, struct sockaddr_un *un)
{
    const char *path = NULL;
    if (strncmp(s, "unix:", 5) == 0)
        path = s + 5;
    else if (s[0] == '/')
        path = s;
    if (!path)
        return 0;
    memset(un, 0, sizeof *un);
    un->sun_family = AF_UNIX;
    if (strlen(path) == 0 || strlen(path) >= sizeof un->sun_path)
        return -1;
    strcpy(un->sun_path, path);
    return 1;
}

int sock_parse_hostport(const char *s, char *host, size_t hostlen, char *port, size_t portlen)
{
    if (strncmp(s, "tcp:", 4) == 0)
        s += 4;
    const char *colon = strrchr(s, ':');
    if (!colon || colon[1] == '\0')
        return SOCK_EFORMAT;
    size_t hl = (size_t)(colon - s);
    const char *hs = s;
    if (hl >= 2 && hs[0] == '[' && hs[hl - 1] == ']') {
        hs++;
        hl -= 2;
    }
    if (hl == 0) {
        hs = "127.0.0.1";
        hl = strlen(hs);
    }
    if (hl >= hostlen || strlen(colon + 1) >= portlen)
        return SOCK_ETOOLONG;
    memcpy(host, hs, hl);
    host[hl] = '\0';
    strcpy(port, colon + 1);
    return 0;
}

int sock_connect_deadline(const struct sockaddr *sa, socklen_t len, double deadline)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, sa, len) < 0) {
        if (errno != EINPROGRESS && errno != EINTR) {
            int e = errno;
            close(fd);
            errno = e;
            return -1;
        }
        for (;;) {
            struct pollfd pfd = {fd, POLLOUT, 0};
            int pr = poll(&pfd, 1, sock_ms_left(deadline));
            if (pr < 0 && errno == EINTR)
                continue;
            if (pr <= 0) {
                int e = pr == 0 ? ETIMEDOUT : errno;
                close(fd);
                errno = e;
                return -1;
            }
            break;
        }
        int soerr = 0;
        socklen_t sl = sizeof soerr;
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
        if (soerr) {
            close(fd);
            errno = soerr;
            return -1;
        }
    }
    /* A blocking socket: reads and writes that must not wait say MSG_DONTWAIT; a
     * wait without a deadline may be a blocking recv() (one system call, not
     * poll() then recv()). */
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0)
        fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    if (sa->sa_family != AF_UNIX) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    return fd;
}

int sock_connect_host(const char *host, const char *port, double deadline, int *gai)
{
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_family = AF_UNSPEC;
    *gai = getaddrinfo(host, port, &hints, &res);
    if (*gai != 0)
        return -1;
    int fd = -1, err = 0;
    for (int pass = 0; pass < 2 && fd < 0; pass++)
        for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
            if ((pass == 0) != (ai->ai_family == AF_INET))
                continue;
            fd = sock_connect_deadline(ai->ai_addr, ai->ai_addrlen, deadline);
            err = errno;
        }
    freeaddrinfo(res);
    errno = err;
    return fd;
}

int sock_connect_addr(const char *addr, int unix_ok, double deadline, int *what, char *why,
                      size_t whylen)
{
    struct sockaddr_un un;
    int u = unix_ok ? sock_parse_unix(addr, &un) : 0;
    if (u < 0) {
        *what = SOCK_CA_ADDRESS;
        snprintf(why, whylen, "bad unix socket path (empty, or longer than %zu bytes)",
                 sizeof un.sun_path - 1);
        return -1;
    }
    if (u > 0) {
        int fd = sock_connect_deadline((struct sockaddr *)&un, sizeof un, deadline);
        int e = errno;
        *what = SOCK_CA_CONNECT;
        snprintf(why, whylen, "%s", strerror(e));
        errno = e;
        return fd;
    }
    char host[256], port[32];
    int rc = sock_parse_hostport(addr, host, sizeof host, port, sizeof port);
    if (rc < 0) {
        *what = SOCK_CA_ADDRESS;
        snprintf(why, whylen, "%s", rc == SOCK_ETOOLONG ? "too long"
                                    : unix_ok ? "not 'host:port' or 'unix:/path'"
                                              : "not 'host:port'");
        return -1;
    }
    int gai = 0;
    int fd = sock_connect_host(host, port, deadline, &gai);
    int e = errno;
    if (fd < 0 && gai != 0) {
        *what = SOCK_CA_RESOLVE;
        snprintf(why, whylen, "cannot resolve %s: %s", host, gai_strerror(gai));
    } else {
        *what = SOCK_CA_CONNECT;
        snprintf(why, whylen, "%s", strerror(e));
    }
    errno = e;
    return fd;
}

/* Wait until fd is ready for `events` or the deadline passes. Returns 0 or -1
 * with errno (ETIMEDOUT). */
static int wait_ready(int fd, short events, double deadline)
{
    for (;;) {
        struct pollfd pfd = {fd, events, 0};
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

int sock_write_all(int fd, const void *p, size_t n, double deadline)
{
    const uint8_t *q = p;
    while (n > 0) {
        ssize_t k = send(fd, q, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (k > 0) {
            q += k;
            n -= (size_t)k;
            continue;
        }
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
            return -1;
        if (wait_ready(fd, POLLOUT, deadline) < 0)
            return -1;
    }
    return 0;
}

int sock_frame_ready(const buf_t *in, uint32_t max, const uint8_t **body, size_t *len)
{
    size_t un = buf_unread(in);
    if (un < 4)
        return 0;
    uint32_t n = sock_be32(buf_head(in));
    if (n == 0 || n > max) {
        errno = EMSGSIZE;
        return -1;
    }
    if (un < 4 + (size_t)n)
        return 0;
    *body = buf_head(in) + 4;
    *len = n;
    return 1;
}

static ssize_t plain_recv(void *ctx, void *p, size_t n, int flags)
{
    return recv(*(int *)ctx, p, n, flags);
}

int sock_read_frame(int fd, buf_t *in, uint32_t max, double deadline, const uint8_t **body,
                    size_t *len)
{
    return sock_read_frame_from(plain_recv, &fd, fd, in, max, deadline, body, len);
}

int sock_read_frame_from(sock_recv_fn *recv_fn, void *ctx, int fd, buf_t *in, uint32_t max,
                         double deadline, const uint8_t **body, size_t *len)
{
    for (;;) {
        size_t un = buf_unread(in);
        int ready = sock_frame_ready(in, max, body, len);
        if (ready != 0)
            return ready > 0 ? 0 : -1;
        /* Room for what this frame still needs, but never more than what has
         * arrived so far (or 64 KiB): a declared length alone does not make us
         * allocate, and a large frame still takes few reallocations. */
        size_t want = sock_read_need(in, 4096);
        size_t cap = un > 65536 ? un : 65536;
        if (buf_reserve(in, want < cap ? want : cap) < 0) {
            errno = ENOMEM;
            return -1;
        }
        ssize_t k = recv_fn(ctx, in->data + in->len, in->cap - in->len, MSG_DONTWAIT);
        if (k > 0) {
            in->len += (size_t)k;
            continue;
        }
        if (k == 0) {
            errno = ECONNRESET;
            return -1;
        }
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return -1;
        if (wait_ready(fd, POLLIN, deadline) < 0)
            return -1;
    }
}

/* The plain socket's I/O for the handshake. */
static int plain_write(void *io, const void *p, size_t n, double deadline)
{
    return sock_write_all(*(int *)io, p, n, deadline);
}

static int plain_read(void *io, buf_t *in, uint32_t max, double deadline, const uint8_t **body,
                      size_t *len)
{
    return sock_read_frame(*(int *)io, in, max, deadline, body, len);
}

/* The handshake; *proved says whether the answer came after the server's proof
 * was checked (1) or instead of the challenge (0). */
static int handshake(const sock_io_t *io, buf_t *in, const char *service, const void *identity,
                     size_t identity_len, const void *secret, size_t secret_len, uint32_t max,
                     double deadline, const uint8_t **answer, size_t *answer_len, int *proved)
{
    auth_session_t s;
    buf_t out;
    buf_init(&out);
    int rc = SOCK_HS_ESYSTEM;
    const uint8_t *body;
    size_t len;
    if (max < AUTH_MAX_FRAME)
        max = AUTH_MAX_FRAME;
    if (auth_client_hello(&s, &out, service, identity, identity_len) != AUTH_OK ||
        auth_set_binding(&s, io->binding, io->binding_len) != AUTH_OK)
        goto done;
    rc = SOCK_HS_EIO;
    if (io->write_all(io->io, buf_head(&out), buf_unread(&out), deadline) < 0 ||
        io->read_frame(io->io, in, max, deadline, &body, &len) < 0)
        goto done;
    buf_consume(&out, buf_unread(&out));
    int ar = auth_client_answer(&s, body, len, secret, secret_len, &out);
    if (ar == AUTH_EFORMAT) {
        /* Not a challenge: the service refused the HELLO itself. */
        *proved = 0;
        *answer = body;
        *answer_len = len;
        rc = 0;
        goto done;
    }
    if (ar != AUTH_OK) {
        rc = ar == AUTH_EPROOF ? SOCK_HS_EPROOF : SOCK_HS_ESYSTEM;
        goto done;
    }
    buf_consume(in, 4 + len);
    rc = SOCK_HS_EIO;
    if (io->write_all(io->io, buf_head(&out), buf_unread(&out), deadline) < 0 ||
        io->read_frame(io->io, in, max, deadline, answer, answer_len) < 0)
        goto done;
    *proved = 1;
    rc = 0;
done:;
    int e = errno; /* the caller reads it for SOCK_HS_EIO */
    auth_session_clear(&s);
    buf_free(&out);
    errno = e;
    return rc;
}

int sock_handshake_io(const sock_io_t *io, buf_t *in, const char *service, const void *identity,
                      size_t identity_len, const void *secret, size_t secret_len, uint32_t max,
                      double deadline, const uint8_t **answer, size_t *answer_len)
{
    int proved;
    return handshake(io, in, service, identity, identity_len, secret, secret_len, max, deadline,
                     answer, answer_len, &proved);
}

int sock_handshake(int fd, buf_t *in, const char *service, const void *identity,
                   size_t identity_len, const void *secret, size_t secret_len, uint32_t max,
                   double deadline, const uint8_t **answer, size_t *answer_len)
{
    int proved;
    sock_io_t io = {plain_write, plain_read, &fd, NULL, 0};
    return handshake(&io, in, service, identity, identity_len, secret, secret_len, max, deadline,
                     answer, answer_len, &proved);
}

int sock_handshake_strict_io(const sock_io_t *io, buf_t *in, const char *service,
                             const void *identity, size_t identity_len, const void *secret,
                             size_t secret_len, uint32_t max, double deadline,
                             uint8_t refused_type, const uint8_t **answer, size_t *answer_len)
{
    int proved = 0;
    int rc = handshake(io, in, service, identity, identity_len, secret, secret_len, max,
                       deadline, answer, answer_len, &proved);
    /* A frame over the limit is not this protocol: retrying will not help. */
    if (rc == SOCK_HS_EIO && errno == EMSGSIZE)
        return SOCK_HS_EFORMAT;
    if (rc == 0 && !proved && (*answer_len == 0 || (*answer)[0] != refused_type))
        return SOCK_HS_EPROOF;
    return rc;
}

int sock_handshake_strict(int fd, buf_t *in, const char *service, const void *identity,
                          size_t identity_len, const void *secret, size_t secret_len,
                          uint32_t max, double deadline, uint8_t refused_type,
                          const uint8_t **answer, size_t *answer_len)
{
    sock_io_t io = {plain_write, plain_read, &fd, NULL, 0};
    return sock_handshake_strict_io(&io, in, service, identity, identity_len, secret,
                                    secret_len, max, deadline, refused_type, answer, answer_len);
}
