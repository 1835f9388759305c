#include "tools/eosink.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "net/frame.h"
#include "net/wire.h"
#include "stream/eoproto.h"
#include "util/hash.h"
#include "util/fileio.h"
#include "util/log.h"

#define STATE_MAGIC "bettong-eostate 1"
#define SPOOL_MAGIC 0x454f5350u /* "EOSP" */
#define SPOOL_HEADER 28         /* magic u32, epoch u64, length u64, checksum u64 */
#define ESC_MAX (3 * EO_NAME_MAX + 1)

/* One epoch's output bytes. */
typedef struct {
    uint64_t epoch;
    buf_t data;
} epoch_t;

/* Epochs in ascending order. */
typedef struct {
    epoch_t *v;
    size_t n, cap;
} epochs_t;

typedef struct {
    char *name; /* as the engine sent it (NUL-terminated for logs) */
    size_t name_len;
    uint64_t committed; /* last epoch in the output */
    uint64_t prepared;  /* last epoch held durably (>= committed) */
    epochs_t held;      /* prepared, not committed: what the spool holds */
    epochs_t open;      /* receiving 'D', not ended yet: memory only */
    char *spool_path;
    int spool_fd; /* -1 until first needed */
    eoconn_t *conn;
} writer_t;

struct eoconn {
    int fd;
    char peer[64];
    writer_t *w;  /* after 'W' */
    int replaced; /* a newer connection took over the writer */
};

struct eosink {
    char *path, *state_path, *dir, *base;
    int framed;
    frame_spec_t spec;
    int fd;          /* the output */
    uint64_t length; /* the output's committed length */
    writer_t **writers;
    size_t nwriters, cap;
    int failed;
};

/* ------------------------------------------------------------ small helpers */

static void put_be(uint8_t *p, uint64_t v, int n)
{
    for (int i = n - 1; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

static uint64_t get_be(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

static char *str_concat(const char *a, const char *b, const char *c)
{
    size_t n = strlen(a) + strlen(b) + strlen(c) + 1;
    char *s = malloc(n);
    if (s)
        snprintf(s, n, "%s%s%s", a, b, c);
    return s;
}

/* A writer name as a file-name suffix: safe bytes kept, the rest %XX. */
static void name_escape(const char *name, size_t n, char *out)
{
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)name[i];
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
            ch == '-' || ch == '_' || ch == '.') {
            *out++ = (char)ch;
        } else {
            *out++ = '%';
            *out++ = hex[ch >> 4];
            *out++ = hex[ch & 15];
        }
    }
    *out = '\0';
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Back from name_escape; returns the length or -1 if `esc` is not one. */
static int name_unescape(const char *esc, char *out)
{
    size_t n = 0;
    for (const char *p = esc; *p; p++) {
        if (n >= EO_NAME_MAX)
            return -1;
        if (*p != '%') {
            out[n++] = *p;
            continue;
        }
        int hi = hex_digit(p[1]), lo = hi < 0 ? -1 : hex_digit(p[2]);
        if (lo < 0)
            return -1;
        out[n++] = (char)(hi << 4 | lo);
        p += 2;
    }
    out[n] = '\0';
    return n == 0 ? -1 : (int)n;
}

/* fsync the directory, so a created or renamed entry survives a crash. */
static int sync_dir(const eosink_t *s) { return fsync_dir(s->dir); }

static void fail(eosink_t *s, const char *what, const char *path)
{
    log_error("%s %s: %s; stopping (committed output stays as it is)", what, path,
              strerror(errno));
    s->failed = 1;
}

/* ------------------------------------------------------------ epoch lists */

static epoch_t *epochs_find(epochs_t *l, uint64_t epoch)
{
    for (size_t i = 0; i < l->n; i++)
        if (l->v[i].epoch == epoch)
            return &l->v[i];
    return NULL;
}

/* Add an empty epoch after the others (callers keep the order ascending). */
static epoch_t *epochs_push(epochs_t *l, uint64_t epoch)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 4;
        epoch_t *v = realloc(l->v, cap * sizeof *v);
        if (!v)
            return NULL;
        l->v = v;
        l->cap = cap;
    }
    epoch_t *e = &l->v[l->n++];
    e->epoch = epoch;
    buf_init(&e->data);
    return e;
}

/* Remove the epochs with keep(epoch) false; returns how many went. */
static size_t epochs_drop_range(epochs_t *l, uint64_t lo, uint64_t hi)
{
    size_t j = 0, dropped = 0;
    for (size_t i = 0; i < l->n; i++) {
        if (l->v[i].epoch >= lo && l->v[i].epoch <= hi) {
            buf_free(&l->v[i].data);
            dropped++;
        } else {
            l->v[j++] = l->v[i];
        }
    }
    l->n = j;
    return dropped;
}

static void epochs_free(epochs_t *l)
{
    epochs_drop_range(l, 0, UINT64_MAX);
    free(l->v);
    memset(l, 0, sizeof *l);
}

/* ------------------------------------------------------------ writers */

static writer_t *writer_find(eosink_t *s, const char *name, size_t n)
{
    for (size_t i = 0; i < s->nwriters; i++)
        if (s->writers[i]->name_len == n && memcmp(s->writers[i]->name, name, n) == 0)
            return s->writers[i];
    return NULL;
}

static writer_t *writer_get(eosink_t *s, const char *name, size_t n)
{
    writer_t *w = writer_find(s, name, n);
    if (w)
        return w;
    if (s->nwriters == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 8;
        writer_t **v = realloc(s->writers, cap * sizeof *v);
        if (!v)
            return NULL;
        s->writers = v;
        s->cap = cap;
    }
    char esc[ESC_MAX];
    name_escape(name, n, esc);
    w = calloc(1, sizeof *w);
    if (!w || !(w->name = malloc(n + 1)) ||
        !(w->spool_path = str_concat(s->path, ".eospool.", esc))) {
        if (w)
            free(w->name);
        free(w);
        return NULL;
    }
    memcpy(w->name, name, n);
    w->name[n] = '\0';
    w->name_len = n;
    w->spool_fd = -1;
    s->writers[s->nwriters++] = w;
    return w;
}

static void writer_free(writer_t *w)
{
    epochs_free(&w->held);
    epochs_free(&w->open);
    if (w->spool_fd >= 0)
        close(w->spool_fd);
    free(w->spool_path);
    free(w->name);
    free(w);
}

/* ------------------------------------------------------------ spools */

static uint64_t spool_checksum(uint64_t epoch, const uint8_t *p, size_t n)
{
    /* An empty epoch has no buffer at all (p may be NULL). */
    uint64_t seed = hash_combine(epoch, n);
    return n ? hash_bytes(p, n, seed) : seed;
}

static int spool_write_entry(int fd, const epoch_t *e)
{
    uint8_t h[SPOOL_HEADER];
    size_t n = buf_unread(&e->data);
    put_be(h, SPOOL_MAGIC, 4);
    put_be(h + 4, e->epoch, 8);
    put_be(h + 12, n, 8);
    put_be(h + 20, spool_checksum(e->epoch, buf_head(&e->data), n), 8);
    if (fd_write_all(fd, h, sizeof h) < 0)
        return -1;
    return fd_write_all(fd, buf_head(&e->data), n);
}

static int spool_open(eosink_t *s, writer_t *w)
{
    if (w->spool_fd >= 0)
        return 0;
    int existed = access(w->spool_path, F_OK) == 0;
    w->spool_fd = open(w->spool_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (w->spool_fd < 0)
        return -1;
    return existed ? 0 : sync_dir(s);
}

/* Make an ended epoch durable. */
static int spool_append(eosink_t *s, writer_t *w, const epoch_t *e)
{
    if (spool_open(s, w) < 0 || spool_write_entry(w->spool_fd, e) < 0 || fsync(w->spool_fd) < 0) {
        fail(s, "cannot write the spool", w->spool_path);
        return -1;
    }
    return 0;
}

/* Rewrite the spool to hold exactly w->held (after a commit or an abort):
 * emptied in place, or replaced whole through a rename, so a crash leaves
 * either the old or the new spool, never a mix. */
static int spool_rewrite(eosink_t *s, writer_t *w)
{
    if (w->held.n == 0) {
        if (spool_open(s, w) < 0 || ftruncate(w->spool_fd, 0) < 0 || fsync(w->spool_fd) < 0) {
            fail(s, "cannot empty the spool", w->spool_path);
            return -1;
        }
        return 0;
    }
    char *tmp = str_concat(w->spool_path, ".tmp", "");
    int fd = tmp ? open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644) : -1;
    int rc = fd < 0 ? -1 : 0;
    for (size_t i = 0; rc == 0 && i < w->held.n; i++)
        rc = spool_write_entry(fd, &w->held.v[i]);
    if (rc == 0)
        rc = fsync(fd);
    if (fd >= 0 && close(fd) < 0)
        rc = -1;
    if (rc == 0)
        rc = rename(tmp, w->spool_path);
    if (rc == 0)
        rc = sync_dir(s);
    if (rc == 0 && w->spool_fd >= 0) {
        close(w->spool_fd);
        w->spool_fd = -1;
    }
    if (rc == 0)
        rc = spool_open(s, w);
    if (rc < 0)
        fail(s, "cannot rewrite the spool", tmp ? tmp : w->spool_path);
    free(tmp);
    return rc;
}

static int read_file(const char *path, buf_t *out)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    for (;;) {
        if (buf_reserve(out, 1 << 16) < 0) {
            close(fd);
            errno = ENOMEM;
            return -1;
        }
        ssize_t n = read(fd, out->data + out->len, out->cap - out->len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            int e = errno;
            close(fd);
            errno = e;
            return n < 0 ? -1 : 0;
        }
        out->len += (size_t)n;
    }
}

/* Parse spool entries into w->held (epochs after the committed one); the
 * first entry that is cut short or fails its checksum ends the spool (a crash
 * while it was appended). Returns the length of the good prefix. */
static size_t spool_parse(writer_t *w, const uint8_t *p, size_t len, int *bad)
{
    size_t pos = 0;
    *bad = 0;
    while (pos < len) {
        if (len - pos < SPOOL_HEADER || get_be(p + pos, 4) != SPOOL_MAGIC) {
            *bad = 1;
            break;
        }
        uint64_t epoch = get_be(p + pos + 4, 8), n = get_be(p + pos + 12, 8);
        const uint8_t *data = p + pos + SPOOL_HEADER;
        if (n > len - pos - SPOOL_HEADER ||
            get_be(p + pos + 20, 8) != spool_checksum(epoch, data, (size_t)n)) {
            *bad = 1;
            break;
        }
        int newer = w->held.n == 0 || epoch > w->held.v[w->held.n - 1].epoch;
        if (epoch > w->committed && newer) {
            epoch_t *e = epochs_push(&w->held, epoch);
            if (!e || buf_append(&e->data, data, (size_t)n) < 0)
                return (size_t)-1;
        }
        pos += SPOOL_HEADER + (size_t)n;
    }
    return pos;
}

static int spool_load(eosink_t *s, writer_t *w, char *err, size_t errlen)
{
    buf_t raw;
    buf_init(&raw);
    if (read_file(w->spool_path, &raw) < 0) {
        snprintf(err, errlen, "cannot read %s: %s", w->spool_path, strerror(errno));
        buf_free(&raw);
        return -1;
    }
    int bad;
    size_t good = spool_parse(w, buf_head(&raw), buf_unread(&raw), &bad);
    size_t total = buf_unread(&raw);
    buf_free(&raw);
    if (good == (size_t)-1) {
        snprintf(err, errlen, "out of memory loading %s", w->spool_path);
        return -1;
    }
    if (w->held.n > 0)
        w->prepared = w->held.v[w->held.n - 1].epoch;
    if (bad) {
        /* Later appends must not land after the torn bytes. */
        log_warn("%s: dropping a torn or corrupt tail of %zu bytes", w->spool_path,
                 total - good);
        if (spool_open(s, w) < 0 || ftruncate(w->spool_fd, (off_t)good) < 0 ||
            fsync(w->spool_fd) < 0) {
            snprintf(err, errlen, "cannot cut %s: %s", w->spool_path, strerror(errno));
            return -1;
        }
    }
    log_info("writer %s: committed %" PRIu64 ", prepared %" PRIu64 " (%zu epochs spooled)",
             w->name, w->committed, w->prepared, w->held.n);
    return 0;
}

/* Every FILE.eospool.<writer> next to the output. */
static int spools_load(eosink_t *s, char *err, size_t errlen)
{
    DIR *d = opendir(s->dir);
    if (!d) {
        snprintf(err, errlen, "cannot list %s: %s", s->dir, strerror(errno));
        return -1;
    }
    char *prefix = str_concat(s->base, ".eospool.", "");
    size_t plen = prefix ? strlen(prefix) : 0;
    int rc = prefix ? 0 : -1;
    struct dirent *de;
    while (rc == 0 && (de = readdir(d)) != NULL) {
        size_t n = strlen(de->d_name);
        if (strncmp(de->d_name, prefix, plen) != 0 ||
            (n > 4 && strcmp(de->d_name + n - 4, ".tmp") == 0))
            continue;
        char name[EO_NAME_MAX + 1];
        int nlen = name_unescape(de->d_name + plen, name);
        if (nlen < 0) {
            log_warn("ignoring %s/%s: not a spool name", s->dir, de->d_name);
            continue;
        }
        writer_t *w = writer_get(s, name, (size_t)nlen);
        if (!w) {
            snprintf(err, errlen, "out of memory");
            rc = -1;
        } else {
            rc = spool_load(s, w, err, errlen);
        }
    }
    closedir(d);
    free(prefix);
    return rc;
}

/* ------------------------------------------------------------ state file */

static int state_save(eosink_t *s)
{
    char *tmp = str_concat(s->state_path, ".tmp", "");
    FILE *f = tmp ? fopen(tmp, "w") : NULL;
    if (!f) {
        fail(s, "cannot write", tmp ? tmp : s->state_path);
        free(tmp);
        return -1;
    }
    fprintf(f, STATE_MAGIC "\nlength %" PRIu64 "\n", s->length);
    for (size_t i = 0; i < s->nwriters; i++) {
        char esc[ESC_MAX];
        name_escape(s->writers[i]->name, s->writers[i]->name_len, esc);
        fprintf(f, "writer %s %" PRIu64 "\n", esc, s->writers[i]->committed);
    }
    int rc = fflush(f) == 0 && fsync(fileno(f)) == 0 ? 0 : -1;
    if (fclose(f) != 0)
        rc = -1;
    if (rc == 0 && (rename(tmp, s->state_path) < 0 || sync_dir(s) < 0))
        rc = -1;
    if (rc < 0)
        fail(s, "cannot write", s->state_path);
    free(tmp);
    return rc;
}

/* One "writer NAME EPOCH" line. */
static int state_writer_line(eosink_t *s, const char *line)
{
    char esc[ESC_MAX + 1], name[EO_NAME_MAX + 1];
    uint64_t committed;
    if (sscanf(line, "writer %765s %" SCNu64, esc, &committed) != 2)
        return -1;
    int n = name_unescape(esc, name);
    writer_t *w = n < 0 ? NULL : writer_get(s, name, (size_t)n);
    if (!w)
        return -1;
    w->committed = w->prepared = committed;
    return 0;
}

/* Returns 0 (no state file is a fresh start), or -1 with err set. */
static int state_load(eosink_t *s, char *err, size_t errlen)
{
    FILE *f = fopen(s->state_path, "r");
    if (!f && errno == ENOENT)
        return 0;
    if (!f) {
        snprintf(err, errlen, "cannot open %s: %s", s->state_path, strerror(errno));
        return -1;
    }
    char line[1024];
    int rc = 0, lineno = 0;
    while (rc == 0 && fgets(line, sizeof line, f)) {
        lineno++;
        if (lineno == 1)
            rc = strcmp(line, STATE_MAGIC "\n") == 0 ? 0 : -1;
        else if (lineno == 2)
            rc = sscanf(line, "length %" SCNu64, &s->length) == 1 ? 0 : -1;
        else
            rc = state_writer_line(s, line);
    }
    if (rc == 0 && (ferror(f) || lineno < 2))
        rc = -1;
    fclose(f);
    if (rc < 0)
        snprintf(err, errlen, "%s is not a state file this receiver can read (line %d)",
                 s->state_path, lineno);
    return rc;
}

/* Cut what a crash left after the last commit (appended, but not recorded). */
static int output_open(eosink_t *s, char *err, size_t errlen)
{
    s->fd = open(s->path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    struct stat st;
    if (s->fd < 0 || fstat(s->fd, &st) < 0) {
        snprintf(err, errlen, "cannot open '%s': %s", s->path, strerror(errno));
        return -1;
    }
    if ((uint64_t)st.st_size < s->length) {
        snprintf(err, errlen,
                 "'%s' has %" PRIu64 " bytes, fewer than the %" PRIu64
                 " its state file records as committed; remove %s and %s.eospool.* to start"
                 " afresh",
                 s->path, (uint64_t)st.st_size, s->length, s->state_path, s->path);
        return -1;
    }
    if ((uint64_t)st.st_size > s->length) {
        if (s->length > 0)
            log_warn("%s: cutting %" PRIu64 " bytes written after the last recorded commit",
                     s->path, (uint64_t)st.st_size - s->length);
        if (ftruncate(s->fd, (off_t)s->length) < 0 || fsync(s->fd) < 0) {
            snprintf(err, errlen, "cannot cut '%s': %s", s->path, strerror(errno));
            return -1;
        }
    }
    return 0;
}

static int sink_paths(eosink_t *s, const char *path)
{
    s->path = strdup(path);
    s->state_path = str_concat(path, ".eostate", "");
    const char *slash = strrchr(path, '/');
    s->base = strdup(slash ? slash + 1 : path);
    if (!slash)
        s->dir = strdup(".");
    else if (slash == path)
        s->dir = strdup("/");
    else
        s->dir = strndup(path, (size_t)(slash - path));
    return s->path && s->state_path && s->base && s->dir ? 0 : -1;
}

eosink_t *eosink_open(const char *path, int framed, uint64_t max_record, char *err,
                      size_t errlen)
{
    eosink_t *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->fd = -1;
    s->framed = framed;
    (void)frame_spec_from_struct(&s->spec, 4, ">I");
    s->spec.max_payload = max_record;
    if (sink_paths(s, path) < 0) {
        snprintf(err, errlen, "out of memory");
    } else if (state_load(s, err, errlen) == 0 && output_open(s, err, errlen) == 0 &&
               spools_load(s, err, errlen) == 0) {
        return s;
    }
    eosink_close(s);
    return NULL;
}

void eosink_close(eosink_t *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->nwriters; i++) {
        if (s->writers[i]->conn)
            s->writers[i]->conn->w = NULL;
        writer_free(s->writers[i]);
    }
    if (s->fd >= 0 && close(s->fd) < 0)
        log_warn("close %s: %s", s->path, strerror(errno));
    free(s->writers);
    free(s->path);
    free(s->state_path);
    free(s->dir);
    free(s->base);
    free(s);
}

int eosink_failed(const eosink_t *s) { return s->failed; }

/* ------------------------------------------------------------ the protocol */

/* Send one small frame. The engine reads its connection all the time, so a
 * full socket buffer means a peer that stopped reading: give up on it. */
static int conn_send(eoconn_t *c, uint8_t type, const uint8_t *fields, size_t n)
{
    uint8_t f[4 + 1 + 16];
    put_be(f, 1 + n, 4);
    f[4] = type;
    memcpy(f + 5, fields, n);
    size_t len = 5 + n, done = 0;
    while (done < len) {
        ssize_t w = send(c->fd, f + done, len - done, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            log_warn("engine connection from %s: cannot answer: %s", c->peer, strerror(errno));
            return -1;
        }
        done += (size_t)w;
    }
    return 0;
}

static int send_u64s(eoconn_t *c, uint8_t type, uint64_t a, uint64_t b, int count)
{
    uint8_t fields[16];
    put_be(fields, a, 8);
    put_be(fields + 8, b, 8);
    return conn_send(c, type, fields, (size_t)count * 8);
}

eoconn_t *eosink_accept(eosink_t *s, int fd, const char *peer)
{
    (void)s;
    eoconn_t *c = calloc(1, sizeof *c);
    if (!c) {
        log_warn("out of memory; refusing the connection from %s", peer);
        return NULL;
    }
    c->fd = fd;
    snprintf(c->peer, sizeof c->peer, "%s", peer);
    if (conn_send(c, EO_GREETING, (const uint8_t *)EO_MAGIC, EO_MAGIC_LEN) < 0) {
        free(c);
        return NULL;
    }
    return c;
}

void eosink_conn_closed(eosink_t *s, eoconn_t *c)
{
    (void)s;
    writer_t *w = c->w;
    if (w && w->conn == c) {
        /* Epochs that did not end are resent after the next 'W'/'S'. */
        epochs_drop_range(&w->open, 0, UINT64_MAX);
        w->conn = NULL;
    }
    free(c);
}

static int bad(eoconn_t *c, const char *what)
{
    log_warn("engine connection from %s%s%s: %s; closing it", c->peer,
             c->w ? ", writer " : "", c->w ? c->w->name : "", what);
    return -1;
}

static int on_writer(eosink_t *s, eoconn_t *c, wire_rd_t *rd)
{
    size_t n;
    const uint8_t *name = wire_str16(rd, &n);
    if (c->w)
        return bad(c, "a second 'W'");
    if (!name || rd->p != rd->end || n == 0 || n > EO_NAME_MAX)
        return bad(c, "malformed 'W'");
    writer_t *w = writer_get(s, (const char *)name, n);
    if (!w)
        return bad(c, "out of memory");
    if (w->conn) {
        /* One writer, one connection: the old one is stale (the engine
         * reconnected before we saw the old one drop). Shutting it down wakes
         * the poll loop, which then closes it. */
        log_info("writer %s: a new connection from %s replaces the one from %s", w->name,
                 c->peer, w->conn->peer);
        w->conn->replaced = 1;
        if (shutdown(w->conn->fd, SHUT_RDWR) < 0)
            log_warn("shutdown: %s", strerror(errno));
        w->conn = NULL;
        epochs_drop_range(&w->open, 0, UINT64_MAX);
    }
    w->conn = c;
    c->w = w;
    log_info("writer %s on %s: committed %" PRIu64 ", prepared %" PRIu64, w->name, c->peer,
             w->committed, w->prepared);
    return send_u64s(c, EO_STATE, w->committed, w->prepared, 2);
}

static int on_data(eoconn_t *c, uint64_t epoch, const uint8_t *p, size_t n)
{
    writer_t *w = c->w;
    if (epoch <= w->prepared)
        return 0; /* held already: a resend after a reconnect */
    epoch_t *e = epochs_find(&w->open, epoch);
    if (!e && w->open.n > 0 && epoch < w->open.v[w->open.n - 1].epoch)
        return bad(c, "data of an epoch older than one already open");
    if (!e)
        e = epochs_push(&w->open, epoch);
    if (!e || buf_append(&e->data, p, n) < 0)
        return bad(c, "out of memory");
    return 0;
}

/* Framed output must be whole frames within the limit, or the file's framing
 * would break for good once it is committed. */
static int epoch_frames_ok(const eosink_t *s, const epoch_t *e)
{
    const uint8_t *p = buf_head(&e->data);
    size_t len = buf_unread(&e->data), pos = 0;
    while (pos < len) {
        size_t poff, plen, flen;
        uint64_t declared;
        if (frame_next(&s->spec, p + pos, len - pos, &poff, &plen, &flen, &declared) != FRAME_OK)
            return 0;
        pos += flen;
    }
    return 1;
}

static int on_epoch_end(eosink_t *s, eoconn_t *c, uint64_t epoch)
{
    writer_t *w = c->w;
    if (epoch <= w->prepared) {
        epochs_drop_range(&w->open, epoch, epoch);
        return send_u64s(c, EO_PREPARED, epoch, 0, 1);
    }
    epoch_t *e = epochs_find(&w->open, epoch);
    epoch_t empty = {.epoch = epoch};
    if (!e) {
        buf_init(&empty.data);
        e = &empty;
    }
    if (s->framed && !epoch_frames_ok(s, e))
        return bad(c, "an epoch's data is not whole frames within the record limit");
    if (spool_append(s, w, e) < 0)
        return -1;
    epoch_t *h = epochs_push(&w->held, epoch);
    if (!h)
        return bad(c, "out of memory");
    h->data = e->data; /* the buffer moves to the held list */
    if (e != &empty) {
        buf_init(&e->data);
        epochs_drop_range(&w->open, epoch, epoch);
    }
    w->prepared = epoch;
    return send_u64s(c, EO_PREPARED, epoch, 0, 1);
}

static uint64_t count_records(const eosink_t *s, const uint8_t *p, size_t len)
{
    uint64_t count = 0;
    if (len == 0)
        return 0;
    if (!s->framed) {
        const uint8_t *end = p + len;
        while (p < end && (p = memchr(p, '\n', (size_t)(end - p))) != NULL) {
            count++;
            p++;
        }
        return count;
    }
    size_t pos = 0;
    while (pos < len) {
        size_t poff, plen, flen;
        uint64_t declared;
        if (frame_next(&s->spec, p + pos, len - pos, &poff, &plen, &flen, &declared) != FRAME_OK)
            break;
        pos += flen;
        count++;
    }
    return count;
}

/* Append the held epochs up to `epoch` to the output, in order; then record the
 * commit; then drop them from the spool. A crash between any two steps is
 * repaired at start-up: the output is cut to the recorded length, and spooled
 * epochs the state calls committed are skipped. */
static int commit(eosink_t *s, writer_t *w, uint64_t epoch, uint64_t *records, uint64_t *bytes)
{
    uint64_t at = s->length, count = 0;
    size_t k = 0;
    for (; k < w->held.n && w->held.v[k].epoch <= epoch; k++) {
        const epoch_t *e = &w->held.v[k];
        size_t n = buf_unread(&e->data);
        const uint8_t *p = buf_head(&e->data);
        for (size_t done = 0; done < n;) {
            ssize_t wr = pwrite(s->fd, p + done, n - done, (off_t)(at + done));
            if (wr < 0 && errno == EINTR)
                continue;
            if (wr < 0) {
                fail(s, "cannot write", s->path);
                return -1;
            }
            done += (size_t)wr;
        }
        at += n;
        count += count_records(s, p, n);
    }
    if (fsync(s->fd) < 0) {
        fail(s, "cannot fsync", s->path);
        return -1;
    }
    *bytes += at - s->length;
    *records += count;
    s->length = at;
    w->committed = epoch;
    if (state_save(s) < 0)
        return -1;
    log_info("writer %s: committed epoch %" PRIu64 " (%zu epochs, %" PRIu64 " records)", w->name,
             epoch, k, count);
    epochs_drop_range(&w->held, 0, epoch);
    return spool_rewrite(s, w);
}

static int on_commit(eosink_t *s, eoconn_t *c, uint64_t epoch, uint64_t *records,
                     uint64_t *bytes)
{
    writer_t *w = c->w;
    if (epoch <= w->committed)
        return 0; /* in the output already (a repeat after a reconnect) */
    if (epoch > w->prepared) {
        char what[160];
        snprintf(what, sizeof what,
                 "commit of epoch %" PRIu64 ", which it does not hold prepared (prepared up to %"
                 PRIu64 ")",
                 epoch, w->prepared);
        return bad(c, what);
    }
    return commit(s, w, epoch, records, bytes);
}

static int on_abort(eosink_t *s, eoconn_t *c, uint64_t epoch)
{
    writer_t *w = c->w;
    if (epoch == UINT64_MAX)
        return 0;
    epochs_drop_range(&w->open, epoch + 1, UINT64_MAX);
    size_t dropped = epochs_drop_range(&w->held, epoch + 1, UINT64_MAX);
    if (w->prepared > epoch)
        w->prepared = epoch > w->committed ? epoch : w->committed;
    log_info("writer %s: aborted the epochs after %" PRIu64 " (%zu prepared dropped)", w->name,
             epoch, dropped);
    if (dropped > 0 && spool_rewrite(s, w) < 0)
        return -1;
    if (epoch < w->committed) {
        /* The writer lost its checkpoints: a new history after `epoch`. What
         * is in the output stays; its epochs count from here again. */
        log_warn("writer %s: aborts to epoch %" PRIu64 ", before its committed %" PRIu64
                 ": it starts a new history (what is in the output stays)", w->name, epoch,
                 w->committed);
        w->committed = w->prepared = epoch;
        return state_save(s);
    }
    return 0;
}

static int handle_frame(eosink_t *s, eoconn_t *c, const uint8_t *body, size_t len,
                        uint64_t *records, uint64_t *bytes)
{
    wire_rd_t rd;
    wire_rd_init(&rd, body, len);
    uint8_t type = wire_u8(&rd);
    if (type == EO_WRITER)
        return on_writer(s, c, &rd);
    if (!c->w)
        return bad(c, "a frame before 'W'");
    uint64_t epoch = wire_u64(&rd);
    if (rd.err)
        return bad(c, "a frame too short for its epoch");
    if (type == EO_DATA) {
        size_t n;
        const uint8_t *p = wire_rest(&rd, &n);
        return on_data(c, epoch, p, n);
    }
    if (rd.p != rd.end)
        return bad(c, "a frame longer than its type allows");
    switch (type) {
    case EO_EPOCH_END:
        return on_epoch_end(s, c, epoch);
    case EO_COMMIT:
        return on_commit(s, c, epoch, records, bytes);
    case EO_ABORT:
        return on_abort(s, c, epoch);
    }
    char what[64];
    snprintf(what, sizeof what, "unknown frame type 0x%02x", type);
    return bad(c, what);
}

int eosink_input(eosink_t *s, eoconn_t *c, buf_t *in, uint64_t *records, uint64_t *bytes)
{
    if (c->replaced) {
        log_info("engine connection from %s: replaced by a newer one; closing it", c->peer);
        return -1;
    }
    for (;;) {
        size_t avail = buf_unread(in);
        if (avail < 4)
            return 0;
        uint32_t n = eo_get_u32be(buf_head(in));
        if (n == 0 || n > EO_MAX_FRAME) {
            char what[64];
            snprintf(what, sizeof what, "frame length %" PRIu32 " out of range", n);
            return bad(c, what);
        }
        if (avail - 4 < n)
            return 0;
        int rc = handle_frame(s, c, buf_head(in) + 4, n, records, bytes);
        buf_consume(in, 4 + (size_t)n);
        if (rc < 0 || s->failed)
            return -1;
    }
}
