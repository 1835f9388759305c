#include "store/sdb.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/fileio.h"
#include "util/log.h"

/* Address space reserved for the map; the file only grows as data is written. */
#define SDB_MAPSIZE (256ull * 1024 * 1024 * 1024)
#define MARKER_TEXT "bettong store\nformat 1\n"

struct sdb {
    MDB_env *env;
    MDB_dbi objects, aliases, obj_aliases, classes, meta, refs, replica_of, replicas, forwards,
        moving;
    int lock_fd;
    int created;
    char backend_id[SDB_BACKEND_ID_LEN + 1];
    uint32_t opened_version; /* the format version found on disk (or SDB_VERSION) */
    char dir[4096];
};

/* ------------------------------------------------------------ directory */

static int ensure_dir(const char *dir, char *err, size_t errlen)
{
    struct stat st;
    if (stat(dir, &st) == 0) {
        if (S_ISDIR(st.st_mode))
            return 0;
        snprintf(err, errlen, "%s exists and is not a directory", dir);
        return -1;
    }
    if (errno != ENOENT || mkdir(dir, 0700) < 0) {
        snprintf(err, errlen, "cannot create the directory %s: %s", dir, strerror(errno));
        return -1;
    }
    return 0;
}

static int take_lock(sdb_t *db, char *err, size_t errlen)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/" SDB_LOCKFILE, db->dir);
    db->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (db->lock_fd < 0) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    if (flock(db->lock_fd, LOCK_EX | LOCK_NB) < 0) {
        if (errno == EWOULDBLOCK)
            snprintf(err, errlen, "%s is in use by another bettong store (%s is locked)",
                     db->dir, path);
        else
            snprintf(err, errlen, "cannot lock %s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

/* 1: marked store, 0: empty (besides the lock file), -1: refused (err set). */
static int inspect_dir(sdb_t *db, char *err, size_t errlen)
{
    DIR *d = opendir(db->dir);
    if (!d) {
        snprintf(err, errlen, "cannot read the directory %s: %s", db->dir, strerror(errno));
        return -1;
    }
    int marker = 0, others = 0;
    char other[256] = "";
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") ||
            !strcmp(e->d_name, SDB_LOCKFILE))
            continue;
        if (!strcmp(e->d_name, SDB_MARKER)) {
            marker = 1;
        } else if (!others++) {
            snprintf(other, sizeof other, "%s", e->d_name);
        }
    }
    closedir(d);
    if (!marker && others) {
        snprintf(err, errlen,
                 "%s is not empty and is not a bettong store (no %s marker; it holds '%s'"
                 "%s): refusing to use it. Give an empty or new directory.",
                 db->dir, SDB_MARKER, other, others > 1 ? " and more" : "");
        return -1;
    }
    return marker;
}

static int check_marker(sdb_t *db, char *err, size_t errlen)
{
    char path[4200], text[64] = "";
    snprintf(path, sizeof path, "%s/" SDB_MARKER, db->dir);
    FILE *f = fopen(path, "re");
    size_t n = f ? fread(text, 1, sizeof text - 1, f) : 0;
    if (f)
        fclose(f);
    text[n] = '\0';
    if (strcmp(text, MARKER_TEXT) != 0) {
        snprintf(err, errlen, "%s: %s does not mark a bettong store of a format this version "
                 "reads: refusing to use it", db->dir, SDB_MARKER);
        return -1;
    }
    snprintf(path, sizeof path, "%s/data.mdb", db->dir);
    if (access(path, F_OK) != 0) {
        snprintf(err, errlen, "%s is marked as a bettong store but %s is missing: refusing "
                 "to start an empty store over it", db->dir, path);
        return -1;
    }
    return 0;
}

static int fsync_path(const char *path, int flags)
{
    int fd = open(path, flags | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

/* Write the marker durably: a temporary file, fsync, rename, fsync the dir. */
static int write_marker(sdb_t *db, char *err, size_t errlen)
{
    char tmp[4200], path[4200];
    snprintf(tmp, sizeof tmp, "%s/" SDB_MARKER ".tmp", db->dir);
    snprintf(path, sizeof path, "%s/" SDB_MARKER, db->dir);
    FILE *f = fopen(tmp, "we");
    int ok = f && fputs(MARKER_TEXT, f) >= 0;
    if (f && fclose(f) != 0)
        ok = 0;
    if (!ok || fsync_path(tmp, O_RDONLY) < 0 || rename(tmp, path) < 0 ||
        fsync_path(db->dir, O_RDONLY | O_DIRECTORY) < 0) {
        char text[300];
        snprintf(err, errlen, "cannot write %s: %s", path,
                 fs_strerror(errno, db->dir, text, sizeof text));
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------ environment */

/* LMDB's text for rc; for a system error, its real cause (a full disk). */
static const char *lmdb_text(const sdb_t *db, int rc, char *out, size_t cap)
{
    return rc > 0 ? fs_strerror(rc, db->dir, out, cap) : mdb_strerror(rc);
}

static int mdb_failed(const sdb_t *db, int rc, const char *what, char *err, size_t errlen)
{
    char text[300];
    snprintf(err, errlen, "%s: %s", what, lmdb_text(db, rc, text, sizeof text));
    return -1;
}

static int open_dbis(sdb_t *db, MDB_txn *txn, unsigned create, char *err, size_t errlen)
{
    int rc;
    if ((rc = mdb_dbi_open(txn, "objects", create, &db->objects)) ||
        (rc = mdb_dbi_open(txn, "aliases", create, &db->aliases)) ||
        (rc = mdb_dbi_open(txn, "obj_aliases", create | MDB_DUPSORT, &db->obj_aliases)) ||
        (rc = mdb_dbi_open(txn, "classes", create, &db->classes)) ||
        (rc = mdb_dbi_open(txn, "meta", create, &db->meta)) ||
        /* Always created: a version 1 store has none yet (srefs.h fills it). */
        (rc = mdb_dbi_open(txn, "refs", MDB_CREATE, &db->refs)) ||
        /* Likewise: stores made before replicas have none. */
        (rc = mdb_dbi_open(txn, "replica_of", MDB_CREATE, &db->replica_of)) ||
        (rc = mdb_dbi_open(txn, "replicas", MDB_CREATE | MDB_DUPSORT, &db->replicas)) ||
        /* And before versions. */
        (rc = mdb_dbi_open(txn, "forwards", MDB_CREATE, &db->forwards)) ||
        (rc = mdb_dbi_open(txn, "moving", MDB_CREATE, &db->moving)))
        return mdb_failed(db, rc, "the store's databases cannot be opened", err, errlen);
    return 0;
}

static uint32_t get_u32be(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int put_meta(sdb_t *db, MDB_txn *txn, char *err, size_t errlen)
{
    db->opened_version = SDB_VERSION;
    uint8_t ver[4] = {0, 0, 0, SDB_VERSION};
    MDB_val k1 = {6, "format"}, v1 = {strlen(SDB_FORMAT), SDB_FORMAT};
    MDB_val k2 = {7, "version"}, v2 = {4, ver};
    int rc = mdb_put(txn, db->meta, &k1, &v1, 0);
    if (!rc)
        rc = mdb_put(txn, db->meta, &k2, &v2, 0);
    return rc ? mdb_failed(db, rc, "cannot initialize the store", err, errlen) : 0;
}

static int check_meta(sdb_t *db, MDB_txn *txn, char *err, size_t errlen)
{
    MDB_val k1 = {6, "format"}, k2 = {7, "version"}, v1, v2;
    if (mdb_get(txn, db->meta, &k1, &v1) || v1.mv_size != strlen(SDB_FORMAT) ||
        memcmp(v1.mv_data, SDB_FORMAT, v1.mv_size) != 0) {
        snprintf(err, errlen, "%s: the data is not a bettong store's (format mark missing)",
                 db->dir);
        return -1;
    }
    /* Older versions are opened and upgraded by srefs_ensure. */
    if (mdb_get(txn, db->meta, &k2, &v2) || v2.mv_size != 4 ||
        get_u32be(v2.mv_data) < 1 || get_u32be(v2.mv_data) > SDB_VERSION) {
        snprintf(err, errlen, "%s: the store's format version is not one this binary knows "
                 "(1 to %u): made by a newer bettong?", db->dir, SDB_VERSION);
        return -1;
    }
    db->opened_version = get_u32be(v2.mv_data);
    return 0;
}

/* A random (version 4) UUID in text form. */
static int make_uuid(char out[SDB_BACKEND_ID_LEN + 1])
{
    uint8_t b[16];
    if (getrandom(b, sizeof b, 0) != (ssize_t)sizeof b)
        return -1;
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x40);
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);
    snprintf(out, SDB_BACKEND_ID_LEN + 1,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
             b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
             b[15]);
    return 0;
}

/* The backend id: made once, when a store first opens with this version (a
 * store made before has none yet), and kept for its life. */
static int ensure_backend_id(sdb_t *db, MDB_txn *txn, char *err, size_t errlen)
{
    MDB_val k = {10, "backend_id"}, v;
    int rc = mdb_get(txn, db->meta, &k, &v);
    if (rc == 0 && v.mv_size == SDB_BACKEND_ID_LEN) {
        memcpy(db->backend_id, v.mv_data, SDB_BACKEND_ID_LEN);
        db->backend_id[SDB_BACKEND_ID_LEN] = '\0';
        return 0;
    }
    if (make_uuid(db->backend_id) < 0) {
        snprintf(err, errlen, "no random bytes for the backend id: %s", strerror(errno));
        return -1;
    }
    v = (MDB_val){SDB_BACKEND_ID_LEN, db->backend_id};
    rc = mdb_put(txn, db->meta, &k, &v, 0);
    return rc ? mdb_failed(db, rc, "cannot record the backend id", err, errlen) : 0;
}

static int open_env(sdb_t *db, int init, char *err, size_t errlen)
{
    int rc = mdb_env_create(&db->env);
    if (rc)
        return mdb_failed(db, rc, "LMDB", err, errlen);
    if ((rc = mdb_env_set_maxdbs(db->env, 16)) ||
        (rc = mdb_env_set_mapsize(db->env, SDB_MAPSIZE)) ||
        (rc = mdb_env_set_maxreaders(db->env, 512)))
        return mdb_failed(db, rc, "LMDB", err, errlen);
    /* NOTLS: read transactions are not tied to threads' TLS slots. */
    if ((rc = mdb_env_open(db->env, db->dir, MDB_NOTLS, 0600))) {
        char what[4200];
        snprintf(what, sizeof what, "cannot open the store in %s", db->dir);
        return mdb_failed(db, rc, what, err, errlen);
    }
    MDB_txn *txn;
    if ((rc = mdb_txn_begin(db->env, NULL, 0, &txn)))
        return mdb_failed(db, rc, "LMDB", err, errlen);
    if (open_dbis(db, txn, init ? MDB_CREATE : 0, err, errlen) < 0 ||
        (init ? put_meta(db, txn, err, errlen) : check_meta(db, txn, err, errlen)) < 0 ||
        ensure_backend_id(db, txn, err, errlen) < 0) {
        mdb_txn_abort(txn);
        return -1;
    }
    if ((rc = mdb_txn_commit(txn)))
        return mdb_failed(db, rc, "cannot initialize the store", err, errlen);
    return 0;
}

sdb_t *sdb_open(const char *dir, char *err, size_t errlen)
{
    sdb_t *db = calloc(1, sizeof *db);
    if (!db) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    db->lock_fd = -1;
    if (strlen(dir) >= sizeof db->dir - 64) {
        snprintf(err, errlen, "directory path too long");
        free(db);
        return NULL;
    }
    snprintf(db->dir, sizeof db->dir, "%s", dir);
    /* Look before creating the lock file, so a foreign directory is left exactly
     * as it was; look again once the lock is held. */
    int marked = -1;
    if (ensure_dir(dir, err, errlen) == 0 && inspect_dir(db, err, errlen) >= 0 &&
        take_lock(db, err, errlen) == 0)
        marked = inspect_dir(db, err, errlen);
    if (marked == 1 && check_marker(db, err, errlen) < 0)
        marked = -1;
    if (marked >= 0 && open_env(db, !marked, err, errlen) == 0 &&
        (marked || write_marker(db, err, errlen) == 0)) {
        db->created = !marked;
        return db;
    }
    sdb_close(db);
    return NULL;
}

void sdb_close(sdb_t *db)
{
    if (!db)
        return;
    if (db->env)
        mdb_env_close(db->env);
    if (db->lock_fd >= 0)
        close(db->lock_fd); /* releases the flock */
    free(db);
}

int sdb_was_created(const sdb_t *db) { return db->created; }

const char *sdb_backend_id(const sdb_t *db) { return db->backend_id; }
uint32_t sdb_version(const sdb_t *db) { return db->opened_version; }

/* ------------------------------------------------------------ reads */

static int check(int rc, const char *what)
{
    if (rc == 0)
        return SDB_OK;
    if (rc == MDB_NOTFOUND)
        return SDB_NOTFOUND;
    log_error("store: %s: %s", what, mdb_strerror(rc));
    return SDB_ERROR;
}

static int key_ok(size_t n, size_t max) { return n >= 1 && n <= max; }

int sdb_usage(sdb_t *db, sdb_usage_t *out)
{
    memset(out, 0, sizeof *out);
    MDB_txn *txn = NULL;
    MDB_stat ms;
    MDB_envinfo info;
    if (mdb_txn_begin(db->env, NULL, MDB_RDONLY, &txn) != 0)
        return -1;
    int ok = mdb_stat(txn, db->objects, &ms) == 0;
    if (ok)
        out->objects = ms.ms_entries;
    mdb_txn_abort(txn);
    if (ok && mdb_env_info(db->env, &info) == 0)
        out->used_bytes = (uint64_t)(info.me_last_pgno + 1) * ms.ms_psize;
    char path[4200];
    struct stat st;
    snprintf(path, sizeof path, "%s/data.mdb", db->dir);
    if (stat(path, &st) == 0)
        out->file_bytes = (uint64_t)st.st_blocks * 512;
    return ok ? 0 : -1;
}

int sdb_read_begin(sdb_t *db, sdb_read_t *r)
{
    MDB_txn *txn = NULL;
    r->db = db;
    int rc = check(mdb_txn_begin(db->env, NULL, MDB_RDONLY, &txn), "read transaction");
    r->txn = txn;
    return rc;
}

void sdb_read_end(sdb_read_t *r)
{
    if (r->txn)
        mdb_txn_abort(r->txn);
    r->txn = NULL;
}

static void put_u64be(uint8_t out[8], uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        out[i] = (uint8_t)v;
}

static uint64_t get_u64be(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

int sdb_get_object(sdb_read_t *r, const char *id, size_t idlen, uint64_t *class_id,
                   const uint8_t **state, size_t *state_len)
{
    if (!key_ok(idlen, SDB_ID_MAX))
        return SDB_ERROR;
    MDB_val k = {idlen, (void *)id}, v;
    int rc = check(mdb_get(r->txn, r->db->objects, &k, &v), "reading an object");
    if (rc)
        return rc;
    if (v.mv_size < 8) {
        log_error("store: object %.*s has a malformed record", (int)idlen, id);
        return SDB_ERROR;
    }
    *class_id = get_u64be(v.mv_data);
    *state = (const uint8_t *)v.mv_data + 8;
    *state_len = v.mv_size - 8;
    return SDB_OK;
}

int sdb_get_alias(sdb_read_t *r, const char *alias, size_t alen, const char **id, size_t *idlen)
{
    if (!key_ok(alen, SDB_ALIAS_MAX))
        return SDB_NOTFOUND;
    MDB_val k = {alen, (void *)alias}, v;
    int rc = check(mdb_get(r->txn, r->db->aliases, &k, &v), "reading an alias");
    if (rc == SDB_OK) {
        *id = v.mv_data;
        *idlen = v.mv_size;
    }
    return rc;
}

int sdb_get_class(sdb_read_t *r, uint64_t class_id, const char **qualname, size_t *qlen,
                  const uint8_t **pickle, size_t *plen)
{
    uint8_t key[8];
    put_u64be(key, class_id);
    MDB_val k = {8, key}, v;
    int rc = check(mdb_get(r->txn, r->db->classes, &k, &v), "reading a class");
    if (rc)
        return rc;
    const uint8_t *p = v.mv_data;
    size_t q = v.mv_size >= 2 ? (size_t)p[0] << 8 | p[1] : SIZE_MAX;
    if (v.mv_size < 2 || v.mv_size - 2 < q) {
        log_error("store: class %llu has a malformed record", (unsigned long long)class_id);
        return SDB_ERROR;
    }
    *qualname = (const char *)p + 2;
    *qlen = q;
    *pickle = p + 2 + q;
    *plen = v.mv_size - 2 - q;
    return SDB_OK;
}

/* The duplicates of key id in dbi, appended to out as str16 entries. */
static int list_dups(sdb_read_t *r, MDB_dbi dbi, const char *what, const char *id, size_t idlen,
                     buf_t *out, uint32_t *count)
{
    *count = 0;
    if (!key_ok(idlen, SDB_ID_MAX))
        return SDB_ERROR;
    MDB_cursor *cur;
    int rc = check(mdb_cursor_open(r->txn, dbi, &cur), what);
    if (rc)
        return rc;
    MDB_val k = {idlen, (void *)id}, v;
    int mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_KEY);
    while (mrc == 0) {
        uint8_t len[2] = {(uint8_t)(v.mv_size >> 8), (uint8_t)v.mv_size};
        if (buf_append(out, len, 2) < 0 || buf_append(out, v.mv_data, v.mv_size) < 0) {
            mdb_cursor_close(cur);
            log_error("store: out of memory %s", what);
            return SDB_ERROR;
        }
        (*count)++;
        mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT_DUP);
    }
    mdb_cursor_close(cur);
    return mrc == MDB_NOTFOUND ? SDB_OK : check(mrc, what);
}

int sdb_list_aliases(sdb_read_t *r, const char *id, size_t idlen, buf_t *out, uint32_t *count)
{
    return list_dups(r, r->db->obj_aliases, "listing aliases", id, idlen, out, count);
}

/* Call fn on every pair of dbi; stops at fn's nonzero result (returned). */
static int each_pair(sdb_read_t *r, MDB_dbi dbi, const char *what,
                     int (*fn)(void *ctx, const MDB_val *k, const MDB_val *v), void *ctx)
{
    MDB_cursor *cur;
    int rc = check(mdb_cursor_open(r->txn, dbi, &cur), what);
    if (rc)
        return rc;
    MDB_val k, v;
    int mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
    while (mrc == 0 && rc == 0) {
        rc = fn(ctx, &k, &v);
        mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    if (rc)
        return rc;
    return mrc == MDB_NOTFOUND ? SDB_OK : check(mrc, what);
}

typedef struct {
    sdb_each_object_fn *fn;
    void *ctx;
} each_object_t;

static int object_pair(void *ctx, const MDB_val *k, const MDB_val *v)
{
    each_object_t *e = ctx;
    if (v->mv_size < 8)
        return 0;
    const uint8_t *p = v->mv_data;
    uint64_t cid = 0;
    for (int i = 0; i < 8; i++)
        cid = cid << 8 | p[i];
    return e->fn(e->ctx, k->mv_data, k->mv_size, cid, p + 8, v->mv_size - 8) ? SDB_ERROR : 0;
}

int sdb_each_object(sdb_read_t *r, sdb_each_object_fn *fn, void *ctx)
{
    each_object_t e = {fn, ctx};
    return each_pair(r, r->db->objects, "walking the objects", object_pair, &e);
}

typedef struct {
    sdb_each_alias_fn *fn;
    void *ctx;
} each_alias_t;

static int alias_pair(void *ctx, const MDB_val *k, const MDB_val *v)
{
    each_alias_t *e = ctx;
    return e->fn(e->ctx, k->mv_data, k->mv_size, v->mv_data, v->mv_size) ? SDB_ERROR : 0;
}

int sdb_each_alias(sdb_read_t *r, sdb_each_alias_fn *fn, void *ctx)
{
    each_alias_t e = {fn, ctx};
    return each_pair(r, r->db->aliases, "walking the aliases", alias_pair, &e);
}

/* ------------------------------------------------------------ writes */

static MDB_txn *wtxn(sdb_write_t *w) { return w->unit ? w->unit : w->txn; }

int sdb_write_begin(sdb_t *db, sdb_write_t *w)
{
    MDB_txn *txn = NULL;
    w->db = db;
    w->unit = NULL;
    int rc = check(mdb_txn_begin(db->env, NULL, 0, &txn), "write transaction");
    w->txn = txn;
    return rc;
}

int sdb_write_commit(sdb_write_t *w)
{
    if (w->unit)
        sdb_unit_abort(w);
    int rc = mdb_txn_commit(w->txn);
    w->txn = NULL;
    if (rc > 0) {
        /* The one write that reaches the disk: name a full disk as such. */
        char text[300];
        log_error("store: commit: %s", lmdb_text(w->db, rc, text, sizeof text));
        return SDB_ERROR;
    }
    return check(rc, "commit");
}

void sdb_write_abort(sdb_write_t *w)
{
    if (w->unit)
        sdb_unit_abort(w);
    if (w->txn)
        mdb_txn_abort(w->txn);
    w->txn = NULL;
}

int sdb_unit_begin(sdb_write_t *w)
{
    MDB_txn *t = NULL;
    int rc = check(mdb_txn_begin(w->db->env, w->txn, 0, &t), "nested transaction");
    w->unit = t;
    return rc;
}

int sdb_unit_commit(sdb_write_t *w)
{
    int rc = mdb_txn_commit(w->unit);
    w->unit = NULL;
    return check(rc, "nested commit");
}

void sdb_unit_abort(sdb_write_t *w)
{
    if (w->unit)
        mdb_txn_abort(w->unit);
    w->unit = NULL;
}

sdb_read_t sdb_write_view(sdb_write_t *w) { return (sdb_read_t){.db = w->db, .txn = wtxn(w)}; }

int sdb_put_object(sdb_write_t *w, const char *id, size_t idlen, uint64_t class_id,
                   const void *state, size_t state_len, int create)
{
    if (!key_ok(idlen, SDB_ID_MAX))
        return SDB_ERROR;
    MDB_val k = {idlen, (void *)id}, v = {8 + state_len, NULL};
    /* Reserve the value's room in the map and write it in place: no copy. */
    int rc = mdb_put(wtxn(w), w->db->objects, &k, &v, MDB_RESERVE | (create ? MDB_NOOVERWRITE : 0));
    if (rc == MDB_KEYEXIST)
        return SDB_EXISTS;
    if ((rc = check(rc, "storing an object")))
        return rc;
    put_u64be(v.mv_data, class_id);
    if (state_len)
        memcpy((uint8_t *)v.mv_data + 8, state, state_len);
    return SDB_OK;
}

int sdb_del_object(sdb_write_t *w, const char *id, size_t idlen)
{
    if (!key_ok(idlen, SDB_ID_MAX))
        return SDB_ERROR;
    MDB_txn *txn = wtxn(w);
    MDB_val k = {idlen, (void *)id};
    int rc = check(mdb_del(txn, w->db->objects, &k, NULL), "deleting an object");
    if (rc)
        return rc;
    MDB_cursor *cur;
    if ((rc = check(mdb_cursor_open(txn, w->db->obj_aliases, &cur), "deleting aliases")))
        return rc;
    MDB_val v;
    int mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_KEY);
    while (mrc == 0) {
        MDB_val a = v;
        mrc = mdb_del(txn, w->db->aliases, &a, NULL);
        if (mrc && mrc != MDB_NOTFOUND)
            break;
        mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT_DUP);
    }
    mdb_cursor_close(cur);
    if (mrc != MDB_NOTFOUND)
        return check(mrc, "deleting aliases");
    rc = mdb_del(txn, w->db->obj_aliases, &k, NULL);
    return rc == MDB_NOTFOUND ? SDB_OK : check(rc, "deleting aliases");
}

int sdb_put_alias(sdb_write_t *w, const char *alias, size_t alen, const char *id, size_t idlen)
{
    if (!key_ok(alen, SDB_ALIAS_MAX) || !key_ok(idlen, SDB_ID_MAX))
        return SDB_ERROR;
    MDB_txn *txn = wtxn(w);
    MDB_val ko = {idlen, (void *)id}, vo;
    int rc = check(mdb_get(txn, w->db->objects, &ko, &vo), "reading an object");
    if (rc)
        return rc;
    MDB_val ka = {alen, (void *)alias}, va = {idlen, (void *)id};
    int mrc = mdb_put(txn, w->db->aliases, &ka, &va, MDB_NOOVERWRITE);
    if (mrc == MDB_KEYEXIST) {
        /* va now holds the existing value. */
        return va.mv_size == idlen && memcmp(va.mv_data, id, idlen) == 0 ? SDB_OK : SDB_EXISTS;
    }
    if ((rc = check(mrc, "storing an alias")))
        return rc;
    MDB_val vr = {alen, (void *)alias};
    return check(mdb_put(txn, w->db->obj_aliases, &ko, &vr, 0), "storing an alias");
}

int sdb_del_alias(sdb_write_t *w, const char *alias, size_t alen)
{
    if (!key_ok(alen, SDB_ALIAS_MAX))
        return SDB_NOTFOUND;
    MDB_txn *txn = wtxn(w);
    MDB_val ka = {alen, (void *)alias}, vid;
    int rc = check(mdb_get(txn, w->db->aliases, &ka, &vid), "reading an alias");
    if (rc)
        return rc;
    MDB_val ko = vid, vr = {alen, (void *)alias};
    /* The reverse entry first: vid points into the map, which the next delete
     * may change. */
    int mrc = mdb_del(txn, w->db->obj_aliases, &ko, &vr);
    if (mrc && mrc != MDB_NOTFOUND)
        return check(mrc, "deleting an alias");
    return check(mdb_del(txn, w->db->aliases, &ka, NULL), "deleting an alias");
}

int sdb_put_class(sdb_write_t *w, uint64_t class_id, const char *qualname, size_t qlen,
                  const void *pickle, size_t plen)
{
    if (qlen > 0xffff)
        return SDB_ERROR;
    MDB_txn *txn = wtxn(w);
    uint8_t key[8];
    put_u64be(key, class_id);
    MDB_val k = {8, key}, v = {2 + qlen + plen, NULL};
    int rc = mdb_put(txn, w->db->classes, &k, &v, MDB_RESERVE | MDB_NOOVERWRITE);
    if (rc == MDB_KEYEXIST) {
        const uint8_t *p = v.mv_data;
        int same = v.mv_size == 2 + qlen + plen && p[0] == (uint8_t)(qlen >> 8) &&
                   p[1] == (uint8_t)qlen && memcmp(p + 2, qualname, qlen) == 0 &&
                   memcmp(p + 2 + qlen, pickle, plen) == 0;
        return same ? SDB_OK : SDB_CONFLICT;
    }
    if ((rc = check(rc, "storing a class")))
        return rc;
    uint8_t *p = v.mv_data;
    p[0] = (uint8_t)(qlen >> 8);
    p[1] = (uint8_t)qlen;
    memcpy(p + 2, qualname, qlen);
    memcpy(p + 2 + qlen, pickle, plen);
    return SDB_OK;
}

int sdb_has_class(sdb_write_t *w, uint64_t class_id)
{
    uint8_t key[8];
    put_u64be(key, class_id);
    MDB_val k = {8, key}, v;
    return check(mdb_get(wtxn(w), w->db->classes, &k, &v), "reading a class");
}

/* ------------------------------------------------------------ references */

int sdb_ref_get(sdb_read_t *r, const char *id, size_t idlen, uint64_t *count)
{
    *count = 0;
    if (!key_ok(idlen, SDB_ID_MAX))
        return SDB_ERROR;
    MDB_val k = {idlen, (void *)id}, v;
    int rc = check(mdb_get(r->txn, r->db->refs, &k, &v), "reading a reference count");
    if (rc == SDB_NOTFOUND)
        return SDB_OK;
    if (rc)
        return rc;
    if (v.mv_size != 8) {
        log_error("store: the reference count of %.*s is malformed", (int)idlen, id);
        return SDB_ERROR;
    }
    *count = get_u64be(v.mv_data);
    return SDB_OK;
}

int sdb_ref_add(sdb_write_t *w, const char *id, size_t idlen, int64_t delta)
{
    sdb_read_t view = sdb_write_view(w);
    uint64_t n;
    int rc = sdb_ref_get(&view, id, idlen, &n);
    if (rc)
        return rc;
    if (delta < 0 && (uint64_t)-delta > n) {
        log_warn("store: the reference count of %.*s would go below 0: 0", (int)idlen, id);
        n = 0;
    } else {
        n += (uint64_t)delta;
    }
    MDB_val k = {idlen, (void *)id};
    if (n == 0) {
        int mrc = mdb_del(wtxn(w), w->db->refs, &k, NULL);
        return mrc == MDB_NOTFOUND ? SDB_OK : check(mrc, "storing a reference count");
    }
    uint8_t b[8];
    put_u64be(b, n);
    MDB_val v = {8, b};
    return check(mdb_put(wtxn(w), w->db->refs, &k, &v, 0), "storing a reference count");
}

int sdb_refs_clear(sdb_write_t *w)
{
    return check(mdb_drop(wtxn(w), w->db->refs, 0), "clearing the reference counts");
}

int sdb_set_version(sdb_write_t *w, uint32_t version)
{
    uint8_t ver[4] = {(uint8_t)(version >> 24), (uint8_t)(version >> 16), (uint8_t)(version >> 8),
                      (uint8_t)version};
    MDB_val k = {7, "version"}, v = {4, ver};
    int rc = check(mdb_put(wtxn(w), w->db->meta, &k, &v, 0), "storing the format version");
    if (rc == SDB_OK)
        w->db->opened_version = version;
    return rc;
}

/* ------------------------------------------------------------ replicas */

int sdb_replica_master(sdb_read_t *r, const char *id, size_t idlen, char *master)
{
    if (!key_ok(idlen, SDB_ID_MAX))
        return SDB_NOTFOUND;
    MDB_val k = {idlen, (void *)id}, v;
    int rc = check(mdb_get(r->txn, r->db->replica_of, &k, &v), "reading a replica mark");
    if (rc == SDB_OK && master) {
        size_t n = v.mv_size < SDB_BACKEND_ID_LEN ? v.mv_size : SDB_BACKEND_ID_LEN;
        memcpy(master, v.mv_data, n);
        master[n] = '\0';
    }
    return rc;
}

int sdb_set_replica_master(sdb_write_t *w, const char *id, size_t idlen, const char *master)
{
    if (!key_ok(idlen, SDB_ID_MAX))
        return SDB_ERROR;
    MDB_val k = {idlen, (void *)id}, v = {strlen(master), (void *)master};
    return check(mdb_put(wtxn(w), w->db->replica_of, &k, &v, 0), "storing a replica mark");
}

int sdb_clear_replica_master(sdb_write_t *w, const char *id, size_t idlen)
{
    if (!key_ok(idlen, SDB_ID_MAX))
        return SDB_ERROR;
    MDB_val k = {idlen, (void *)id};
    int rc = mdb_del(wtxn(w), w->db->replica_of, &k, NULL);
    return rc == MDB_NOTFOUND ? SDB_OK : check(rc, "removing a replica mark");
}

int sdb_list_replicas(sdb_read_t *r, const char *id, size_t idlen, buf_t *out, uint32_t *count)
{
    return list_dups(r, r->db->replicas, "listing replicas", id, idlen, out, count);
}

int sdb_add_replica(sdb_write_t *w, const char *id, size_t idlen, const char *bid, size_t blen)
{
    if (!key_ok(idlen, SDB_ID_MAX) || !key_ok(blen, SDB_BACKEND_ID_LEN))
        return SDB_ERROR;
    MDB_val k = {idlen, (void *)id}, v = {blen, (void *)bid};
    int rc = mdb_put(wtxn(w), w->db->replicas, &k, &v, MDB_NODUPDATA);
    return rc == MDB_KEYEXIST ? SDB_OK : check(rc, "storing a replica");
}

int sdb_del_replica(sdb_write_t *w, const char *id, size_t idlen, const char *bid, size_t blen)
{
    if (!key_ok(idlen, SDB_ID_MAX) || !key_ok(blen, SDB_BACKEND_ID_LEN))
        return SDB_ERROR;
    MDB_val k = {idlen, (void *)id}, v = {blen, (void *)bid};
    int rc = mdb_del(wtxn(w), w->db->replicas, &k, &v);
    return rc == MDB_NOTFOUND ? SDB_OK : check(rc, "removing a replica");
}

int sdb_del_replicas(sdb_write_t *w, const char *id, size_t idlen)
{
    if (!key_ok(idlen, SDB_ID_MAX))
        return SDB_ERROR;
    MDB_val k = {idlen, (void *)id};
    int rc = mdb_del(wtxn(w), w->db->replicas, &k, NULL);
    return rc == MDB_NOTFOUND ? SDB_OK : check(rc, "removing replicas");
}

int sdb_each_replica(sdb_read_t *r, sdb_each_alias_fn *fn, void *ctx)
{
    each_alias_t e = {fn, ctx};
    return each_pair(r, r->db->replicas, "walking the replicas", alias_pair, &e);
}

/* ------------------------------------------------------------ forwards */

int sdb_get_forward(sdb_read_t *r, const char *id, size_t idlen, char *target, size_t *tlen)
{
    if (!key_ok(idlen, SDB_ID_MAX))
        return SDB_NOTFOUND;
    MDB_val k = {idlen, (void *)id}, v;
    int rc = check(mdb_get(r->txn, r->db->forwards, &k, &v), "reading a forward");
    if (rc == SDB_OK && !key_ok(v.mv_size, SDB_ID_MAX)) {
        log_error("store: the forward of %.*s is malformed", (int)idlen, id);
        return SDB_ERROR;
    }
    if (rc == SDB_OK) {
        memcpy(target, v.mv_data, v.mv_size);
        *tlen = v.mv_size;
    }
    return rc;
}

int sdb_put_forward(sdb_write_t *w, const char *id, size_t idlen, const char *target,
                    size_t tlen)
{
    if (!key_ok(idlen, SDB_ID_MAX) || !key_ok(tlen, SDB_ID_MAX))
        return SDB_ERROR;
    MDB_val k = {idlen, (void *)id}, v = {tlen, (void *)target};
    return check(mdb_put(wtxn(w), w->db->forwards, &k, &v, 0), "storing a forward");
}

/* ------------------------------------------------------------ moves */

int sdb_get_moving(sdb_read_t *r, const char *id, size_t idlen, char *dest)
{
    if (!key_ok(idlen, SDB_ID_MAX))
        return SDB_NOTFOUND;
    MDB_val k = {idlen, (void *)id}, v;
    int rc = check(mdb_get(r->txn, r->db->moving, &k, &v), "reading a move mark");
    if (rc == SDB_OK) {
        size_t n = v.mv_size < SDB_BACKEND_ID_LEN ? v.mv_size : SDB_BACKEND_ID_LEN;
        memcpy(dest, v.mv_data, n);
        dest[n] = '\0';
    }
    return rc;
}

int sdb_set_moving(sdb_write_t *w, const char *id, size_t idlen, const char *dest, size_t dlen)
{
    if (!key_ok(idlen, SDB_ID_MAX) || !key_ok(dlen, SDB_BACKEND_ID_LEN))
        return SDB_ERROR;
    MDB_val k = {idlen, (void *)id}, v = {dlen, (void *)dest};
    return check(mdb_put(wtxn(w), w->db->moving, &k, &v, 0), "storing a move mark");
}

int sdb_clear_moving(sdb_write_t *w, const char *id, size_t idlen)
{
    if (!key_ok(idlen, SDB_ID_MAX))
        return SDB_ERROR;
    MDB_val k = {idlen, (void *)id};
    int rc = mdb_del(wtxn(w), w->db->moving, &k, NULL);
    return rc == MDB_NOTFOUND ? SDB_OK : check(rc, "removing a move mark");
}

int sdb_each_moving(sdb_read_t *r, sdb_each_alias_fn *fn, void *ctx)
{
    each_alias_t e = {fn, ctx};
    return each_pair(r, r->db->moving, "walking the move marks", alias_pair, &e);
}
