#include "pool/shm.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

/* The seals a payload must carry: its bytes and its size are final. */
#define SHM_SEALS (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE)

int shm_enabled(void)
{
    const char *v = getenv(SHM_ENV_OFF);
    return !v || !v[0] || strcmp(v, "0") == 0;
}

/* Write every byte of the iovecs at the start of fd. */
static int write_all(int fd, const struct iovec *iov, int n)
{
    struct iovec v[64];
    off_t off = 0;
    while (n > 0) {
        int k = n < 64 ? n : 64;
        memcpy(v, iov, (size_t)k * sizeof *v);
        int i = 0;
        while (i < k) {
            ssize_t w = pwritev(fd, v + i, k - i, off);
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0)
                return -1;
            off += w;
            size_t left = (size_t)w;
            while (i < k && left >= v[i].iov_len)
                left -= v[i++].iov_len;
            if (i < k) {
                v[i].iov_base = (char *)v[i].iov_base + left;
                v[i].iov_len -= left;
            }
        }
        iov += k;
        n -= k;
    }
    return 0;
}

int shm_seal(int fd)
{
    int have = fcntl(fd, F_GET_SEALS);
    if (have >= 0 && (have & (SHM_SEALS | F_SEAL_SEAL)) == (SHM_SEALS | F_SEAL_SEAL))
        return 0;
    return fcntl(fd, F_ADD_SEALS, SHM_SEALS | F_SEAL_SEAL) < 0 ? -1 : 0;
}

int shm_fill(int fd, const struct iovec *iov, int n)
{
    errno = 0;
    if (write_all(fd, iov, n) < 0 || shm_seal(fd) < 0) {
        if (!errno)
            errno = EIO;
        return -1;
    }
    return 0;
}

int shm_new(size_t size, int prealloc)
{
    int fd = memfd_create("bettong-payload", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0)
        return -1;
    int rc = prealloc ? fallocate(fd, 0, 0, (off_t)size) : ftruncate(fd, (off_t)size);
    if (rc < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

int shm_create(const struct iovec *iov, int n, size_t total)
{
    /* The size first: the writes then fill pages without growing the file. */
    int fd = shm_new(total, 0);
    if (fd < 0)
        return -1;
    if (shm_fill(fd, iov, n) < 0) {
        int e = errno ? errno : EIO;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

int shm_check(int fd, uint64_t size, char *why, size_t whylen)
{
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        snprintf(why, whylen, "the descriptor sent is not a file");
        return -1;
    }
    if ((uint64_t)st.st_size != size) {
        snprintf(why, whylen, "the file sent holds %lld bytes, the frame says %llu",
                 (long long)st.st_size, (unsigned long long)size);
        return -1;
    }
    int seals = fcntl(fd, F_GET_SEALS);
    if (seals < 0 || (seals & SHM_SEALS) != SHM_SEALS) {
        snprintf(why, whylen, "the file sent is not sealed against changes");
        return -1;
    }
    return 0;
}

int shm_read(int fd, uint64_t off, void *dst, size_t n)
{
    char *p = dst;
    while (n > 0) {
        ssize_t r = pread(fd, p, n, (off_t)off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        p += r;
        off += (uint64_t)r;
        n -= (size_t)r;
    }
    return 0;
}

void *shm_map(int fd, size_t size)
{
    if (size == 0)
        return NULL;
    void *p = mmap(NULL, size, PROT_READ, MAP_SHARED | MAP_POPULATE, fd, 0);
    return p == MAP_FAILED ? NULL : p;
}

static void put_le(uint8_t *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

void shm_obj_head(uint8_t head[SHM_OBJ_HEAD], uint64_t len)
{
    memcpy(head, SHM_OBJ_MAGIC, 8);
    put_le(head + 8, len, 8);
}

size_t shm_obj_iov(struct iovec iov[4], uint8_t head[SHM_OBJ_HEAD], const void *data, size_t len)
{
    static const uint8_t zeros[SHM_OBJ_DATA];
    shm_obj_head(head, len);
    iov[0] = (struct iovec){head, SHM_OBJ_HEAD};
    iov[1] = (struct iovec){(void *)zeros, SHM_OBJ_DATA - SHM_OBJ_HEAD};
    iov[2] = (struct iovec){(void *)data, len};
    iov[3] = (struct iovec){(void *)zeros, 1};
    return SHM_OBJ_DATA + len + 1;
}

size_t shm_oob_iov(uint8_t head[SHM_OBJ_DATA], const struct iovec *parts, int n,
                   struct iovec *out, int *nout)
{
    static const uint8_t zeros[SHM_OBJ_DATA];
    memset(head, 0, SHM_OBJ_DATA);
    memcpy(head, SHM_OOB_MAGIC, 8);
    put_le(head + 8, (uint64_t)(n - 1), 4);
    put_le(head + 16, SHM_OBJ_DATA, 8);
    put_le(head + 24, parts[0].iov_len, 8);
    int k = 0;
    out[k++] = (struct iovec){head, SHM_OBJ_DATA};
    out[k++] = parts[0];
    size_t off = SHM_OBJ_DATA + parts[0].iov_len;
    for (int i = 1; i < n; i++) {
        size_t pad = (SHM_OBJ_DATA - off % SHM_OBJ_DATA) % SHM_OBJ_DATA;
        if (pad)
            out[k++] = (struct iovec){(void *)zeros, pad};
        off += pad;
        put_le(head + 32 + 16 * (i - 1), off, 8);
        put_le(head + 40 + 16 * (i - 1), parts[i].iov_len, 8);
        out[k++] = parts[i];
        off += parts[i].iov_len;
    }
    *nout = k;
    return off;
}

int shm_obj_parse(const uint8_t *head, size_t n, uint64_t size, uint64_t *len)
{
    if (n < SHM_OBJ_HEAD || memcmp(head, SHM_OBJ_MAGIC, 8) != 0)
        return 0;
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)head[8 + i] << (8 * i);
    if (v > size || size - v != SHM_OBJ_DATA + 1)
        return 0;
    *len = v;
    return 1;
}

ssize_t shm_send_fd(int sock, const void *p, size_t n, int fd, int flags)
{
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } ctl;
    memset(&ctl, 0, sizeof ctl);
    struct iovec iov = {(void *)p, n};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
                         .msg_controllen = sizeof ctl.buf};
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof fd);
    ssize_t w;
    do
        w = sendmsg(sock, &msg, MSG_NOSIGNAL | flags);
    while (w < 0 && errno == EINTR);
    return w;
}

void shm_fdq_init(shm_fdq_t *q) { memset(q, 0, sizeof *q); }

static void fdq_push(shm_fdq_t *q, int fd)
{
    if (q->n == SHM_MAX_PENDING) {
        close(fd);
        q->overflow = 1;
        return;
    }
    q->fds[(q->head + q->n) % SHM_MAX_PENDING] = fd;
    q->n++;
}

int shm_fdq_pop(shm_fdq_t *q)
{
    if (q->n == 0)
        return -1;
    int fd = q->fds[q->head];
    q->head = (q->head + 1) % SHM_MAX_PENDING;
    q->n--;
    return fd;
}

void shm_fdq_close(shm_fdq_t *q)
{
    int fd;
    while ((fd = shm_fdq_pop(q)) >= 0)
        close(fd);
}

ssize_t shm_recv(int sock, void *p, size_t n, int flags, shm_fdq_t *q)
{
    union {
        char buf[CMSG_SPACE(SHM_MAX_PENDING * sizeof(int))];
        struct cmsghdr align;
    } ctl;
    struct iovec iov = {p, n};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
                         .msg_controllen = sizeof ctl.buf};
    ssize_t r = recvmsg(sock, &msg, flags | MSG_CMSG_CLOEXEC);
    if (r < 0)
        return r;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < k; i++) {
            int fd;
            memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
            fdq_push(q, fd);
        }
    }
    /* Descriptors that did not fit (the control buffer, or the open-file
     * limit) were closed by the kernel. */
    if (msg.msg_flags & MSG_CTRUNC)
        q->lost = 1;
    return r;
}
