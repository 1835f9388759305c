#include "tools/records.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "net/frame.h"
#include "util/buf.h"

#define READ_CHUNK ((size_t)1 << 20)

static int read_all_fd(int fd, buf_t *out, char *err, size_t errlen)
{
    for (;;) {
        if (buf_reserve(out, READ_CHUNK) < 0) {
            snprintf(err, errlen, "out of memory reading input");
            return -1;
        }
        ssize_t n = read(fd, out->data + out->len, out->cap - out->len);
        if (n == 0)
            return 0;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            snprintf(err, errlen, "read: %s", strerror(errno));
            return -1;
        }
        out->len += (size_t)n;
    }
}

static int load_input(const char *path, buf_t *out, char *err, size_t errlen)
{
    if (strcmp(path, "-") == 0)
        return read_all_fd(STDIN_FILENO, out, err, errlen);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "cannot open '%s': %s", path, strerror(errno));
        return -1;
    }
    /* Sizing the buffer up front avoids repeated doubling for big files. */
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0 &&
        buf_reserve(out, (size_t)st.st_size + 1) < 0) {
        snprintf(err, errlen, "out of memory loading '%s'", path);
        close(fd);
        return -1;
    }
    char rerr[256];
    int rc = read_all_fd(fd, out, rerr, sizeof rerr);
    if (rc < 0)
        snprintf(err, errlen, "cannot read '%s': %s", path, rerr);
    close(fd);
    return rc;
}

void records_free(records_t *r)
{
    free(r->data);
    free(r->off);
    memset(r, 0, sizeof *r);
}

static int records_alloc(records_t *r, size_t len, size_t n)
{
    r->data = malloc(len ? len : 1);
    r->off = calloc(n + 1, sizeof *r->off);
    r->len = len;
    r->n = n;
    if (r->data && r->off)
        return 0;
    records_free(r);
    return -1;
}

/* Take over raw's bytes as r's data (the formats that send the file as it is). */
static void adopt_buffer(records_t *r, buf_t *raw, size_t *off, size_t n)
{
    buf_compact(raw);
    r->data = raw->data;
    r->len = raw->len;
    r->off = off;
    r->n = n;
    buf_init(raw);
}

/* The line at p[*pos..len) as Pony's FileLines returns it: up to '\n', a '\r'
 * before that dropped too; a last line without '\n' comes back as it is. */
static void next_line(const uint8_t *p, size_t len, size_t *pos, size_t *start, size_t *llen)
{
    const uint8_t *nl = memchr(p + *pos, '\n', len - *pos);
    *start = *pos;
    if (!nl) {
        *llen = len - *pos;
        *pos = len;
        return;
    }
    *llen = (size_t)(nl - (p + *pos));
    *pos += *llen + 1;
    if (*llen > 0 && p[*start + *llen - 1] == '\r')
        (*llen)--;
}

/* giles skips empty lines (they are neither sent nor counted). */
static int count_lines(const uint8_t *p, size_t len, size_t *n, size_t *bytes, char *err,
                       size_t errlen)
{
    size_t pos = 0, start, llen;
    *n = 0;
    *bytes = 0;
    while (pos < len) {
        next_line(p, len, &pos, &start, &llen);
        if (llen > UINT32_MAX) {
            snprintf(err, errlen, "a line of %zu bytes is too long for a 4-byte length", llen);
            return -1;
        }
        if (llen == 0)
            continue;
        (*n)++;
        *bytes += 4 + llen;
    }
    return 0;
}

static int records_from_lines(const buf_t *raw, records_t *r, char *err, size_t errlen)
{
    const uint8_t *p = buf_head(raw);
    size_t len = buf_unread(raw), n, bytes;
    if (count_lines(p, len, &n, &bytes, err, errlen) < 0)
        return -1;
    if (records_alloc(r, bytes, n) < 0) {
        snprintf(err, errlen, "out of memory framing %zu lines", n);
        return -1;
    }
    size_t pos = 0, out = 0, i = 0, start, llen;
    while (pos < len) {
        next_line(p, len, &pos, &start, &llen);
        if (llen == 0)
            continue;
        r->off[i++] = out;
        frame_put_u32be(r->data + out, (uint32_t)llen);
        memcpy(r->data + out + 4, p + start, llen);
        out += 4 + llen;
    }
    r->off[n] = out;
    return 0;
}

/* Walk already-framed input: *n frames; with off != NULL also their offsets. */
static int scan_frames(const uint8_t *p, size_t len, size_t *off, size_t *n, char *err,
                       size_t errlen)
{
    frame_spec_t spec;
    memset(&spec, 0, sizeof spec);
    /* ">I" is always C-parseable; the return value cannot be -1 here. */
    (void)frame_spec_from_struct(&spec, 4, ">I");
    spec.max_payload = UINT32_MAX;
    size_t pos = 0, i = 0;
    while (pos < len) {
        size_t poff, plen, flen = 0;
        uint64_t declared = 0;
        frame_status st = frame_next(&spec, p + pos, len - pos, &poff, &plen, &flen, &declared);
        if (st != FRAME_OK) {
            snprintf(err, errlen,
                     "truncated record %zu at byte %zu: %zu bytes left, the record needs %s%" PRIu64,
                     i + 1, pos, len - pos, flen ? "" : "at least ", flen ? (uint64_t)flen : 4);
            return -1;
        }
        if (off)
            off[i] = pos;
        pos += flen;
        i++;
    }
    if (off)
        off[i] = pos;
    *n = i;
    return 0;
}

static int records_from_frames(buf_t *raw, records_t *r, char *err, size_t errlen)
{
    size_t n;
    if (scan_frames(buf_head(raw), buf_unread(raw), NULL, &n, err, errlen) < 0)
        return -1;
    size_t *off = calloc(n + 1, sizeof *off);
    if (!off) {
        snprintf(err, errlen, "out of memory indexing %zu records", n);
        return -1;
    }
    /* The input is sent as is, so keep its buffer instead of copying it. */
    adopt_buffer(r, raw, off, n);
    return scan_frames(r->data, r->len, r->off, &n, err, errlen);
}

/* giles' --variable-size reads each frame's payload and skips an empty one
 * before framing it again: the frames minus the empty ones. */
static int drop_empty_frames(records_t *r, char *err, size_t errlen)
{
    size_t keep = 0, bytes = 0;
    for (size_t i = 0; i < r->n; i++)
        if (r->off[i + 1] - r->off[i] > 4) {
            keep++;
            bytes += r->off[i + 1] - r->off[i];
        }
    if (keep == r->n)
        return 0;
    records_t out;
    if (records_alloc(&out, bytes, keep) < 0) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    size_t j = 0, pos = 0;
    for (size_t i = 0; i < r->n; i++) {
        size_t flen = r->off[i + 1] - r->off[i];
        if (flen <= 4)
            continue;
        out.off[j++] = pos;
        memcpy(out.data + pos, r->data + r->off[i], flen);
        pos += flen;
    }
    out.off[keep] = pos;
    records_free(r);
    *r = out;
    return 0;
}

/* The first chunk whose 4-byte header does not announce msg_size - 4 payload
 * bytes, for a note: giles sends it anyway, but a framed receiver will not
 * read what the file's author meant. */
static void check_fixed(const char *path, const records_t *r, size_t msg_size, char *note,
                        size_t notelen)
{
    if (note[0])
        return;
    for (size_t i = 0; i < r->n; i++) {
        size_t clen = r->off[i + 1] - r->off[i];
        const uint8_t *c = r->data + r->off[i];
        uint32_t hdr = clen >= 4 ? ((uint32_t)c[0] << 24 | (uint32_t)c[1] << 16 |
                                    (uint32_t)c[2] << 8 | c[3])
                                 : 0;
        if (clen < msg_size) {
            snprintf(note, notelen,
                     "'%s' is no multiple of --msg-size %zu: its last record is %zu bytes "
                     "(sent like that, as giles does)", path, msg_size, clen);
            return;
        }
        if (msg_size < 4 || hdr != msg_size - 4) {
            snprintf(note, notelen,
                     "record %zu of '%s' does not start with the 4-byte length %zu that "
                     "--msg-size %zu implies (giles sends it anyway)", i + 1, path,
                     msg_size >= 4 ? msg_size - 4 : 0, msg_size);
            return;
        }
    }
}

static int records_from_chunks(buf_t *raw, size_t msg_size, records_t *r, char *err,
                               size_t errlen)
{
    size_t len = buf_unread(raw), n = (len + msg_size - 1) / msg_size;
    size_t *off = calloc(n + 1, sizeof *off);
    if (!off) {
        snprintf(err, errlen, "out of memory indexing %zu records", n);
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        off[i] = i * msg_size;
    off[n] = len;
    adopt_buffer(r, raw, off, n);
    return 0;
}

/* dst followed by src, into dst; src is consumed. */
static int records_concat(records_t *dst, records_t *src)
{
    if (!dst->data) {
        *dst = *src;
        memset(src, 0, sizeof *src);
        return 0;
    }
    records_t out;
    if (records_alloc(&out, dst->len + src->len, dst->n + src->n) < 0)
        return -1;
    memcpy(out.data, dst->data, dst->len);
    if (src->len)
        memcpy(out.data + dst->len, src->data, src->len);
    memcpy(out.off, dst->off, dst->n * sizeof *out.off);
    for (size_t i = 0; i <= src->n; i++)
        out.off[dst->n + i] = dst->len + src->off[i];
    records_free(dst);
    records_free(src);
    *dst = out;
    return 0;
}

static int load_one(const char *path, rec_format fmt, size_t msg_size, records_t *r,
                    char *note, size_t notelen, char *err, size_t errlen)
{
    buf_t raw;
    buf_init(&raw);
    int rc = load_input(path, &raw, err, errlen);
    if (rc == 0) {
        switch (fmt) {
        case REC_LINES:
            rc = records_from_lines(&raw, r, err, errlen);
            break;
        case REC_FRAMED:
            rc = records_from_frames(&raw, r, err, errlen);
            break;
        case REC_VARIABLE:
            rc = records_from_frames(&raw, r, err, errlen);
            if (rc == 0)
                rc = drop_empty_frames(r, err, errlen);
            break;
        case REC_FIXED:
            rc = records_from_chunks(&raw, msg_size, r, err, errlen);
            if (rc == 0)
                check_fixed(path, r, msg_size, note, notelen);
            break;
        }
    }
    buf_free(&raw);
    /* Name the file when several are read (the message may not). */
    if (rc < 0 && strcmp(path, "-") != 0 && !strstr(err, path)) {
        char inner[512];
        snprintf(inner, sizeof inner, "%s", err);
        snprintf(err, errlen, "'%s': %s", path, inner);
    }
    return rc;
}

int records_load(const char *const *paths, size_t npaths, rec_format fmt, size_t msg_size,
                 records_t *r, char *note, size_t notelen, char *err, size_t errlen)
{
    memset(r, 0, sizeof *r);
    note[0] = '\0';
    for (size_t i = 0; i < npaths; i++) {
        records_t one = {0};
        if (load_one(paths[i], fmt, msg_size, &one, note, notelen, err, errlen) < 0) {
            records_free(&one);
            records_free(r);
            return -1;
        }
        if (records_concat(r, &one) < 0) {
            records_free(&one);
            records_free(r);
            snprintf(err, errlen, "out of memory");
            return -1;
        }
    }
    return 0;
}

int records_replicate(records_t *r, size_t min_len)
{
    if (r->n == 0 || r->len >= min_len)
        return 0;
    size_t k = (min_len + r->len - 1) / r->len;
    records_t big;
    if (records_alloc(&big, r->len * k, r->n * k) < 0)
        return -1;
    for (size_t j = 0; j < k; j++) {
        memcpy(big.data + j * r->len, r->data, r->len);
        for (size_t i = 0; i < r->n; i++)
            big.off[j * r->n + i] = j * r->len + r->off[i];
    }
    big.off[big.n] = big.len;
    records_free(r);
    *r = big;
    return 0;
}

size_t records_last_within(const records_t *r, size_t pos, size_t hi, size_t limit)
{
    size_t lo = pos + 1;
    if (r->off[hi] - r->off[pos] <= limit)
        return hi;
    while (lo < hi) {
        size_t mid = lo + (hi - lo + 1) / 2;
        if (r->off[mid] - r->off[pos] <= limit)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}
