#include "stream/snapshot.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "util/fileio.h"

#define TRAILER_LEN (4 + 1 + 8 + 4)

void snap_begin(buf_t *b, uint64_t n, uint64_t base, int full)
{
    buf_clear(b);
    wire_wr_t w;
    wire_begin(&w, b, SNAP_HEADER, SNAP_MAX_ENTRY);
    wire_put_bytes(&w, SNAP_MAGIC, 8);
    wire_put_u64(&w, n);
    wire_put_u64(&w, base);
    wire_put_u8(&w, full ? 1 : 0);
    wire_end(&w);
}

static uint32_t crc_of(const uint8_t *p, size_t n)
{
    uLong crc = crc32(0L, Z_NULL, 0);
    /* zlib takes a uInt length: feed large buffers in pieces. */
    while (n > 0) {
        uInt part = n > (1u << 30) ? (1u << 30) : (uInt)n;
        crc = crc32(crc, p, part);
        p += part;
        n -= part;
    }
    return (uint32_t)crc;
}

static int read_header(const uint8_t *p, size_t n, snap_info_t *info)
{
    if (n < 4)
        return -1;
    uint32_t len = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
    if (len > n - 4)
        return -1;
    wire_rd_t r;
    wire_rd_init(&r, p + 4, len);
    const uint8_t *magic;
    if (wire_u8(&r) != SNAP_HEADER || !(magic = wire_bytes(&r, 8)) ||
        memcmp(magic, SNAP_MAGIC, 8) != 0)
        return -1;
    info->n = wire_u64(&r);
    info->base = wire_u64(&r);
    info->full = wire_u8(&r);
    return r.err ? -1 : 0;
}

int snap_finish(buf_t *b, snap_info_t *info)
{
    size_t before = buf_unread(b);
    if (read_header(buf_head(b), before, info) < 0)
        return -1;
    info->crc = crc_of(buf_head(b), before);
    wire_wr_t w;
    wire_begin(&w, b, SNAP_TRAILER, SNAP_MAX_ENTRY);
    wire_put_u64(&w, before);
    wire_put_u32(&w, info->crc);
    if (wire_end(&w) < 0)
        return -1;
    info->size = buf_unread(b);
    return 0;
}

void snap_path(char *out, size_t outlen, const char *dir, uint64_t n)
{
    snprintf(out, outlen, "%s/ckpt-%020llu.snap", dir, (unsigned long long)n);
}

int snap_write_file(const char *dir, uint64_t n, const buf_t *b, char *err, size_t errlen)
{
    char path[4200], tmp[4300];
    snap_path(path, sizeof path, dir, n);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "cannot create %s: %s", tmp, strerror(errno));
        return -1;
    }
    const char *what = "write";
    int rc = fd_write_all(fd, buf_head(b), buf_unread(b));
    if (rc == 0 && (what = "fsync", fsync(fd) < 0))
        rc = -1;
    int saved = errno;
    if (close(fd) < 0 && rc == 0) {
        what = "close";
        saved = errno;
        rc = -1;
    }
    if (rc == 0 && rename(tmp, path) < 0) {
        what = "rename";
        saved = errno;
        rc = -1;
    }
    if (rc == 0 && fsync_dir(dir) < 0) {
        what = "fsync of the directory";
        saved = errno;
        rc = -1;
    }
    if (rc < 0) {
        char text[300];
        snprintf(err, errlen, "cannot write checkpoint %llu to %s (%s): %s",
                 (unsigned long long)n, dir, what, fs_strerror(saved, dir, text, sizeof text));
        unlink(tmp);
    }
    return rc;
}

static int read_whole(const char *path, buf_t *b, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || buf_reserve(b, (size_t)st.st_size + 1) < 0) {
        snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno ? errno : ENOMEM));
        close(fd);
        return -1;
    }
    for (;;) {
        if (buf_reserve(b, 65536) < 0) {
            snprintf(err, errlen, "cannot read %s: out of memory", path);
            close(fd);
            return -1;
        }
        ssize_t k = read(fd, b->data + b->len, b->cap - b->len);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0) {
            snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
            close(fd);
            return -1;
        }
        if (k == 0)
            break;
        b->len += (size_t)k;
    }
    close(fd);
    return 0;
}

/* The file's own consistency: header, trailer at the very end, CRC. */
static int check_file(const buf_t *b, snap_info_t *info, const char **why)
{
    const uint8_t *p = buf_head(b);
    size_t n = buf_unread(b);
    if (read_header(p, n, info) < 0) {
        *why = "no valid header";
        return -1;
    }
    if (n < TRAILER_LEN || p[n - TRAILER_LEN + 4] != SNAP_TRAILER) {
        *why = "truncated (no trailer)";
        return -1;
    }
    wire_rd_t r;
    wire_rd_init(&r, p + n - TRAILER_LEN + 5, TRAILER_LEN - 5);
    uint64_t before = wire_u64(&r);
    uint32_t crc = wire_u32(&r);
    if (before != n - TRAILER_LEN) {
        *why = "truncated (sizes disagree)";
        return -1;
    }
    if (crc_of(p, (size_t)before) != crc) {
        *why = "checksum mismatch";
        return -1;
    }
    info->crc = crc;
    info->size = n;
    return 0;
}

int snap_read_file(const char *dir, uint64_t n, const snap_info_t *want, buf_t *b,
                   snap_info_t *info, char *err, size_t errlen)
{
    char path[4200];
    snap_path(path, sizeof path, dir, n);
    buf_clear(b);
    if (read_whole(path, b, err, errlen) < 0)
        return -1;
    const char *why = NULL;
    if (check_file(b, info, &why) == 0 && info->n != n)
        why = "it names another checkpoint";
    else if (!why && want && (want->size != info->size || want->crc != info->crc))
        why = "size or checksum differ from the catalog's";
    if (why) {
        snprintf(err, errlen, "checkpoint file %s is damaged: %s", path, why);
        return -1;
    }
    return 0;
}

void snap_remove_file(const char *dir, uint64_t n)
{
    char path[4200];
    snap_path(path, sizeof path, dir, n);
    (void)unlink(path);
}

void snap_iter_init(snap_iter_t *it, const buf_t *b)
{
    it->p = buf_head(b);
    it->end = buf_head(b) + buf_unread(b);
}

int snap_next(snap_iter_t *it, uint8_t *type, wire_rd_t *fields)
{
    for (;;) {
        if (it->p == it->end)
            return 0;
        if (it->end - it->p < 5)
            return -1;
        const uint8_t *p = it->p;
        uint32_t len = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
        if (len < 1 || len > (size_t)(it->end - p) - 4)
            return -1;
        it->p = p + 4 + len;
        *type = p[4];
        if (*type == SNAP_HEADER)
            continue;
        if (*type == SNAP_TRAILER) {
            it->p = it->end;
            return 0;
        }
        wire_rd_init(fields, p + 5, len - 1);
        return 1;
    }
}
