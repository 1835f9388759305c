#include "stream/catalog.h"

#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/fileio.h"

/* Address space for the map; the file only grows with what is written. */
#define CAT_MAPSIZE (1ull << 30)
#define KEY_IDENTITY "identity"
#define REC_LEN (8 + 8 + 1 + 8 + 4)

struct catalog {
    MDB_env *env;
    MDB_dbi meta, ckpts;
    int lock_fd;
    char dir[4096];
};

/* mkdir -p */
static int make_dirs(const char *dir, char *err, size_t errlen)
{
    char path[4096];
    snprintf(path, sizeof path, "%s", dir);
    for (char *p = path + 1;; p++) {
        char c = *p;
        if (c != '/' && c != '\0')
            continue;
        *p = '\0';
        if (mkdir(path, 0700) < 0 && errno != EEXIST) {
            snprintf(err, errlen, "cannot create the directory %s: %s", path, strerror(errno));
            return -1;
        }
        *p = c;
        if (c == '\0')
            break;
    }
    struct stat st;
    if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "%s is not a directory", dir);
        return -1;
    }
    return 0;
}

static int take_lock(catalog_t *c, char *err, size_t errlen)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/worker.lock", c->dir);
    c->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (c->lock_fd < 0) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    if (flock(c->lock_fd, LOCK_EX | LOCK_NB) < 0) {
        snprintf(err, errlen, errno == EWOULDBLOCK
                                  ? "%s is in use by another worker (%s is locked)"
                                  : "cannot lock %s: %s",
                 c->dir, errno == EWOULDBLOCK ? path : strerror(errno));
        return -1;
    }
    return 0;
}

static int lmdb_fail(const catalog_t *c, int rc, const char *what, char *err, size_t errlen)
{
    char text[300];
    snprintf(err, errlen, "checkpoint catalog: %s: %s", what,
             rc > 0 ? fs_strerror(rc, c->dir, text, sizeof text) : mdb_strerror(rc));
    return -1;
}

/* The first opener writes its identity; later ones must match it. */
static int check_identity(catalog_t *c, const char *identity, char *err, size_t errlen)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(c->env, NULL, 0, &txn);
    if (rc)
        return lmdb_fail(c, rc, "begin", err, errlen);
    MDB_val k = {strlen(KEY_IDENTITY), KEY_IDENTITY}, v;
    rc = mdb_get(txn, c->meta, &k, &v);
    if (rc == 0) {
        int same = v.mv_size == strlen(identity) && memcmp(v.mv_data, identity, v.mv_size) == 0;
        if (!same)
            snprintf(err, errlen,
                     "the resilience directory %s belongs to another application (%.*s), "
                     "not %s: give this one its own --resilience-dir",
                     c->dir, (int)(v.mv_size > 200 ? 200 : v.mv_size), (char *)v.mv_data,
                     identity);
        mdb_txn_abort(txn);
        return same ? 0 : -1;
    }
    if (rc != MDB_NOTFOUND) {
        mdb_txn_abort(txn);
        return lmdb_fail(c, rc, "read", err, errlen);
    }
    v.mv_size = strlen(identity);
    v.mv_data = (void *)identity;
    if ((rc = mdb_put(txn, c->meta, &k, &v, 0)) || (rc = mdb_txn_commit(txn))) {
        if (rc && txn)
            mdb_txn_abort(txn);
        return lmdb_fail(c, rc, "write", err, errlen);
    }
    return 0;
}

static int open_env(catalog_t *c, char *err, size_t errlen)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/catalog.mdb", c->dir);
    int rc;
    if ((rc = mdb_env_create(&c->env)))
        return lmdb_fail(c, rc, "create", err, errlen);
    if ((rc = mdb_env_set_maxdbs(c->env, 4)) || (rc = mdb_env_set_mapsize(c->env, CAT_MAPSIZE)))
        return lmdb_fail(c, rc, "configure", err, errlen);
    if ((rc = mdb_env_open(c->env, path, MDB_NOSUBDIR | MDB_NOTLS, 0600)))
        return lmdb_fail(c, rc, path, err, errlen);
    MDB_txn *txn;
    if ((rc = mdb_txn_begin(c->env, NULL, 0, &txn)))
        return lmdb_fail(c, rc, "begin", err, errlen);
    if ((rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &c->meta)) ||
        (rc = mdb_dbi_open(txn, "checkpoints", MDB_CREATE, &c->ckpts)) ||
        (rc = mdb_txn_commit(txn))) {
        mdb_txn_abort(txn);
        return lmdb_fail(c, rc, "open tables", err, errlen);
    }
    return 0;
}

catalog_t *catalog_open(const char *dir, const char *identity, char *err, size_t errlen)
{
    catalog_t *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    c->lock_fd = -1;
    snprintf(c->dir, sizeof c->dir, "%s", dir);
    if (make_dirs(dir, err, errlen) < 0 || take_lock(c, err, errlen) < 0 ||
        open_env(c, err, errlen) < 0 || check_identity(c, identity, err, errlen) < 0) {
        catalog_close(c);
        return NULL;
    }
    return c;
}

void catalog_close(catalog_t *c)
{
    if (!c)
        return;
    if (c->env)
        mdb_env_close(c->env);
    if (c->lock_fd >= 0)
        close(c->lock_fd);
    free(c);
}

const char *catalog_dir(const catalog_t *c) { return c->dir; }

static void key_of(uint64_t n, uint8_t k[8])
{
    for (int i = 7; i >= 0; i--, n >>= 8)
        k[i] = (uint8_t)n;
}

static void put_be(uint8_t *p, uint64_t v, int n)
{
    for (int i = n - 1; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

static void encode(const snap_info_t *s, uint8_t rec[REC_LEN])
{
    put_be(rec, s->n, 8);
    put_be(rec + 8, s->base, 8);
    rec[16] = s->full ? 1 : 0;
    put_be(rec + 17, s->size, 8);
    put_be(rec + 25, s->crc, 4);
}

static int decode(const MDB_val *v, snap_info_t *s)
{
    if (v->mv_size != REC_LEN)
        return -1;
    wire_rd_t r;
    wire_rd_init(&r, v->mv_data, v->mv_size);
    s->n = wire_u64(&r);
    s->base = wire_u64(&r);
    s->full = wire_u8(&r);
    s->size = wire_u64(&r);
    s->crc = wire_u32(&r);
    return r.err ? -1 : 0;
}

static int prune(catalog_t *c, MDB_txn *txn, uint64_t below)
{
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, c->ckpts, &cur);
    if (rc)
        return rc;
    MDB_val k, v;
    uint8_t limit[8];
    key_of(below, limit);
    while ((rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST)) == 0) {
        if (k.mv_size == 8 && memcmp(k.mv_data, limit, 8) >= 0)
            break;
        if ((rc = mdb_cursor_del(cur, 0)))
            break;
    }
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

int catalog_complete_with(catalog_t *c, const snap_info_t *info, uint64_t prune_below,
                          const char *key, const void *meta, size_t len, char *err,
                          size_t errlen)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(c->env, NULL, 0, &txn);
    if (rc)
        return lmdb_fail(c, rc, "begin", err, errlen);
    uint8_t kb[8], rec[REC_LEN];
    key_of(info->n, kb);
    encode(info, rec);
    MDB_val k = {8, kb}, v = {REC_LEN, rec};
    MDB_val mk = {key ? strlen(key) : 0, (void *)key}, mv = {len, (void *)meta};
    if ((rc = mdb_put(txn, c->ckpts, &k, &v, 0)) || (rc = prune(c, txn, prune_below)) ||
        (key && (rc = mdb_put(txn, c->meta, &mk, &mv, 0)))) {
        mdb_txn_abort(txn);
        return lmdb_fail(c, rc, "record", err, errlen);
    }
    if ((rc = mdb_txn_commit(txn)))
        return lmdb_fail(c, rc, "commit", err, errlen);
    return 0;
}

int catalog_complete(catalog_t *c, const snap_info_t *info, uint64_t prune_below, char *err,
                     size_t errlen)
{
    return catalog_complete_with(c, info, prune_below, NULL, NULL, 0, err, errlen);
}

int catalog_get(catalog_t *c, const char *key, buf_t *out, char *err, size_t errlen)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(c->env, NULL, MDB_RDONLY, &txn);
    if (rc)
        return lmdb_fail(c, rc, "begin", err, errlen);
    MDB_val k = {strlen(key), (void *)key}, v;
    rc = mdb_get(txn, c->meta, &k, &v);
    int found = rc == 0;
    if (found && buf_append(out, v.mv_data, v.mv_size) < 0) {
        mdb_txn_abort(txn);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    mdb_txn_abort(txn);
    if (rc != 0 && rc != MDB_NOTFOUND)
        return lmdb_fail(c, rc, "read", err, errlen);
    return found;
}

int catalog_list(catalog_t *c, snap_info_t *out, size_t max, char *err, size_t errlen)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(c->env, NULL, MDB_RDONLY, &txn);
    if (rc)
        return lmdb_fail(c, rc, "begin", err, errlen);
    MDB_cursor *cur;
    if ((rc = mdb_cursor_open(txn, c->ckpts, &cur))) {
        mdb_txn_abort(txn);
        return lmdb_fail(c, rc, "cursor", err, errlen);
    }
    size_t n = 0;
    MDB_val k, v;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_LAST); rc == 0 && n < max;
         rc = mdb_cursor_get(cur, &k, &v, MDB_PREV))
        if (decode(&v, &out[n]) == 0)
            n++;
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    if (rc != 0 && rc != MDB_NOTFOUND)
        return lmdb_fail(c, rc, "list", err, errlen);
    return (int)n;
}
