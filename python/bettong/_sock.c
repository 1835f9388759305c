/* Blocking-socket pieces shared by the client extensions: see _sock.h. */
#include "_sock.h"

#include <errno.h>
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
