#include "store/meta.h"

#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "store/srefs.h"
#include "util/log.h"

#define KEY_BACKENDS "bettong:backends"
#define PFX_ALIAS "bettong:alias:"
#define PFX_LOC "bettong:loc:"
#define PFX_REP "bettong:rep:"
#define PFX_REFS "bettong:refs:" /* + backend id: hash, object id -> count */
/* Commands in flight at once while publishing. */
#define PUBLISH_BATCH 1024
/* How often the directory is checked for this backend. */
#define WATCH_MS 1000

/* Delete KEYS[1] if its value starts with ARGV[1] followed by a newline: an
 * alias or a location is removed only by the backend it names. */
/* HINCRBY, and the field gone when it reaches 0. */
static const char *INCR_OR_DROP =
    "local v = redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2]) "
    "if v <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end return v";

static const char *DEL_IF_OURS =
    "local v = redis.call('GET', KEYS[1]) "
    "if v and string.sub(v, 1, string.len(ARGV[1]) + 1) == ARGV[1] .. '\\n' then "
    "return redis.call('DEL', KEYS[1]) end return 0";

struct meta {
    pthread_mutex_t mu;
    redisContext *rc; /* NULL: not connected */
    char host[256]; /* or a Unix socket's path (port 0) */
    int port, dbno;
    sdb_t *db;
    char name[256], address[320];
    const char *id; /* sdb's backend id */
    buf_t locq;     /* queued: u8 kind (Q_*), u64 class id or count delta, u16 len, id */
    size_t nloc;
    /* Deletions (a location, an alias) that failed while Redis was away, sent
     * by the next publish(): u16 key length, key, u16 owner length, owner.
     * Without them a deleted object's entries would stay in the directory
     * (publish() only adds), and its aliases could never be taken again. */
    buf_t owed;
    /* the watcher (watch_main) */
    pthread_t watcher;
    int watching, stopping, down;
    pthread_cond_t wake;
};

static _Thread_local char last_error[512];

const char *meta_error(void) { return last_error; }

static void set_error(const char *fmt, const char *what)
{
    snprintf(last_error, sizeof last_error, fmt, what);
}

/* ------------------------------------------------------------ the connection */

static void drop(meta_t *m)
{
    if (m->rc) {
        redisFree(m->rc);
        m->rc = NULL;
    }
}

/* One command and its reply (NULL: the connection failed, and is dropped; an
 * error reply is returned as it is). */
static redisReply *command(meta_t *m, int argc, const char **argv, const size_t *lens)
{
    redisReply *r = redisCommandArgv(m->rc, argc, argv, lens);
    if (!r) {
        set_error("metadata service (Redis) failed: %s", m->rc->errstr[0] ? m->rc->errstr
                                                                          : "no reply");
        drop(m);
        return NULL;
    }
    if (r->type == REDIS_REPLY_ERROR)
        set_error("metadata service (Redis) refused a command: %s", r->str);
    return r;
}

/* A reply that is not an error; else NULL after freeing it. */
static redisReply *command_ok(meta_t *m, int argc, const char **argv, const size_t *lens)
{
    redisReply *r = command(m, argc, argv, lens);
    if (r && r->type == REDIS_REPLY_ERROR) {
        freeReplyObject(r);
        return NULL;
    }
    return r;
}

static int parse_url(meta_t *m, const char *url)
{
    if (strncmp(url, "unix:", 5) == 0 && url[5] && strlen(url + 5) < sizeof m->host) {
        snprintf(m->host, sizeof m->host, "%s", url + 5);
        return 0;
    }
    const char *p = strncmp(url, "redis://", 8) == 0 ? url + 8 : NULL;
    const char *colon = p ? strrchr(p, ':') : NULL;
    if (!colon || colon == p || (size_t)(colon - p) >= sizeof m->host)
        return -1;
    memcpy(m->host, p, (size_t)(colon - p));
    m->host[colon - p] = '\0';
    char *end;
    long port = strtol(colon + 1, &end, 10);
    long dbno = 0;
    if (*end == '/')
        dbno = strtol(end + 1, &end, 10);
    if (*end || port <= 0 || port > 65535 || dbno < 0 || dbno > 1000)
        return -1;
    m->port = (int)port;
    m->dbno = (int)dbno;
    return 0;
}

static int open_connection(meta_t *m)
{
    struct timeval tv = {META_TIMEOUT_MS / 1000, (META_TIMEOUT_MS % 1000) * 1000};
    m->rc = m->port ? redisConnectWithTimeout(m->host, m->port, tv)
                    : redisConnectUnixWithTimeout(m->host, tv);
    if (!m->rc || m->rc->err) {
        char what[400];
        const char *why = m->rc ? m->rc->errstr : "out of memory";
        if (m->port)
            snprintf(what, sizeof what, "%s:%d: %s", m->host, m->port, why);
        else
            snprintf(what, sizeof what, "unix:%s: %s", m->host, why);
        set_error("cannot reach the metadata service (Redis) at %s", what);
        drop(m);
        return -1;
    }
    redisSetTimeout(m->rc, tv);
    if (m->dbno) {
        char n[16];
        snprintf(n, sizeof n, "%d", m->dbno);
        const char *argv[] = {"SELECT", n};
        size_t lens[] = {6, strlen(n)};
        redisReply *r = command_ok(m, 2, argv, lens);
        if (!r) {
            drop(m);
            return -1;
        }
        freeReplyObject(r);
    }
    return 0;
}

/* ------------------------------------------------------------ publishing */

/* Commands appended and not yet answered, for pipelines. */
typedef struct {
    meta_t *m;
    size_t pending;
    int failed;
    sdb_read_t *rd; /* while publishing: the store's read transaction */
} pipe_t;

static int pipe_drain(pipe_t *p, size_t keep)
{
    while (p->pending > keep) {
        redisReply *r = NULL;
        if (redisGetReply(p->m->rc, (void **)&r) != REDIS_OK || !r) {
            set_error("metadata service (Redis) failed: %s", p->m->rc->errstr);
            drop(p->m);
            p->failed = 1;
            return -1;
        }
        if (r->type == REDIS_REPLY_ERROR) {
            set_error("metadata service (Redis) refused a command: %s", r->str);
            p->failed = 1;
        }
        freeReplyObject(r);
        p->pending--;
    }
    return p->failed ? -1 : 0;
}

static int pipe_append(pipe_t *p, int argc, const char **argv, const size_t *lens)
{
    if (p->failed || redisAppendCommandArgv(p->m->rc, argc, argv, lens) != REDIS_OK) {
        p->failed = 1;
        return -1;
    }
    p->pending++;
    return p->pending >= PUBLISH_BATCH ? pipe_drain(p, 0) : 0;
}

/* "first\nclass id in hex" */
static size_t value_of(char *out, size_t cap, const char *first, size_t n, uint64_t class_id)
{
    int k = snprintf(out, cap, "%.*s\n%llx", (int)n, first, (unsigned long long)class_id);
    return k < 0 ? 0 : (size_t)k < cap ? (size_t)k : cap - 1;
}

static size_t key_of(char *out, size_t cap, const char *prefix, const char *s, size_t n)
{
    int k = snprintf(out, cap, "%s%.*s", prefix, (int)n, s);
    return k < 0 ? 0 : (size_t)k < cap ? (size_t)k : cap - 1;
}

/* One reference of a state being published: +1 in this backend's counts. */
static void publish_ref(void *ctx, const char *id, size_t idlen, int delta)
{
    pipe_t *p = ctx;
    char key[64], n[16];
    snprintf(key, sizeof key, "%s%s", PFX_REFS, p->m->id);
    snprintf(n, sizeof n, "%d", delta);
    const char *argv[] = {"HINCRBY", key, id, n};
    size_t lens[] = {7, strlen(key), idlen, strlen(n)};
    pipe_append(p, 4, argv, lens);
}

static int publish_object(void *ctx, const char *id, size_t idlen, uint64_t class_id,
                          const uint8_t *state, size_t len)
{
    pipe_t *p = ctx;
    if (sdb_replica_master(p->rd, id, idlen, NULL) == SDB_OK)
        return 0; /* a replica: the master's object, published by the master */
    if (srefs_each(id, idlen, state, len, publish_ref, p) < 0)
        return 1;
    char key[SDB_ID_MAX + 32], val[SDB_BACKEND_ID_LEN + 32];
    /* NX: an object that a move left here too (this backend stopped between
     * the other one taking it and deleting it here) stays the other's. */
    const char *argv[] = {"SET", key, val, "NX"};
    size_t lens[] = {3, key_of(key, sizeof key, PFX_LOC, id, idlen),
                     value_of(val, sizeof val, p->m->id, SDB_BACKEND_ID_LEN, class_id), 2};
    return pipe_append(p, 4, argv, lens) < 0 ? 1 : 0;
}

static int publish_alias(void *ctx, const char *alias, size_t alen, const char *id, size_t idlen)
{
    pipe_t *p = ctx;
    uint64_t cid = 0;
    const uint8_t *st;
    size_t n;
    if (sdb_get_object(p->rd, id, idlen, &cid, &st, &n) != SDB_OK)
        return 0; /* an alias of no object: nothing to publish */
    char key[SDB_ALIAS_MAX + 32], val[SDB_ID_MAX + 32];
    const char *argv[] = {"SET", key, val, "NX"};
    size_t lens[] = {3, key_of(key, sizeof key, PFX_ALIAS, alias, alen),
                     value_of(val, sizeof val, id, idlen, cid), 2};
    return pipe_append(p, 4, argv, lens) < 0 ? 1 : 0;
}

/* A replica of an object this backend is the master of. */
static int publish_replica(void *ctx, const char *id, size_t idlen, const char *bid, size_t blen)
{
    pipe_t *p = ctx;
    char key[SDB_ID_MAX + 32];
    const char *argv[] = {"SADD", key, bid};
    size_t lens[] = {4, key_of(key, sizeof key, PFX_REP, id, idlen), blen};
    return pipe_append(p, 3, argv, lens) < 0 ? 1 : 0;
}

/* At most this much owed (about a million deletions): past it, later ones
 * are logged and left to the directory's users (a lookup finds no object). */
#define OWED_MAX (64u << 20)

/* mu held. */
static void owe_delete(meta_t *m, const char *key, size_t klen, const char *owner, size_t olen)
{
    uint8_t h[2];
    if (buf_unread(&m->owed) + klen + olen + 4 > OWED_MAX) {
        log_warn("store: metadata service: too many deletions owed while it is away: the "
                 "directory keeps %.*s", (int)klen, key);
        return;
    }
    h[0] = (uint8_t)(klen >> 8), h[1] = (uint8_t)klen;
    if (buf_append(&m->owed, h, 2) < 0 || buf_append(&m->owed, key, klen) < 0)
        return;
    h[0] = (uint8_t)(olen >> 8), h[1] = (uint8_t)olen;
    if (buf_append(&m->owed, h, 2) < 0 || buf_append(&m->owed, owner, olen) < 0)
        log_error("store: out of memory keeping a deletion for the metadata service");
}

/* The deletions owed (mu held, connected). */
static int send_owed(meta_t *m)
{
    pipe_t p = {.m = m};
    const uint8_t *q = buf_head(&m->owed), *end = q + buf_unread(&m->owed);
    size_t n = 0;
    while (q + 2 <= end && !p.failed) {
        size_t klen = (size_t)q[0] << 8 | q[1];
        const char *key = (const char *)q + 2;
        size_t olen = (size_t)q[2 + klen] << 8 | q[3 + klen];
        const char *owner = key + klen + 2;
        const char *argv[] = {"EVAL", DEL_IF_OURS, "1", key, owner};
        size_t lens[] = {4, strlen(DEL_IF_OURS), 1, klen, olen};
        pipe_append(&p, 5, argv, lens);
        q += 4 + klen + olen;
        n++;
    }
    if (p.failed || pipe_drain(&p, 0) < 0)
        return -1;
    if (n)
        log_info("store: metadata service: %zu deletion(s) made while it was away sent", n);
    buf_clear(&m->owed);
    return 0;
}

/* Register this backend and publish every object and alias it holds. */
static int publish(meta_t *m)
{
    char val[sizeof m->name + sizeof m->address + 2];
    snprintf(val, sizeof val, "%s\n%s", m->name, m->address);
    const char *argv[] = {"HSET", KEY_BACKENDS, m->id, val};
    size_t lens[] = {4, strlen(KEY_BACKENDS), SDB_BACKEND_ID_LEN, strlen(val)};
    redisReply *r = command_ok(m, 4, argv, lens);
    if (!r)
        return -1;
    freeReplyObject(r);
    if (send_owed(m) < 0)
        return -1;
    /* This backend's reference counts are counted again from its states. */
    char refs[64];
    snprintf(refs, sizeof refs, "%s%s", PFX_REFS, m->id);
    const char *dargv[] = {"DEL", refs};
    size_t dlens[] = {3, strlen(refs)};
    if (!(r = command_ok(m, 2, dargv, dlens)))
        return -1;
    freeReplyObject(r);
    sdb_read_t rd;
    pipe_t p = {.m = m, .rd = &rd};
    if (sdb_read_begin(m->db, &rd) != SDB_OK) {
        set_error("%s", "cannot read the store to publish it");
        return -1;
    }
    int rc = sdb_each_object(&rd, publish_object, &p);
    if (rc == 0)
        rc = sdb_each_alias(&rd, publish_alias, &p);
    if (rc == 0)
        rc = sdb_each_replica(&rd, publish_replica, &p);
    sdb_read_end(&rd);
    if (p.failed || rc != 0 || pipe_drain(&p, 0) < 0)
        return -1;
    log_info("store: published to the metadata service (Redis at %s) as backend '%s' (%s)",
             m->host, m->name, m->id);
    return 0;
}

/* Connected, and published since connecting; else META_ERROR. */
static int ensure(meta_t *m)
{
    if (m->rc)
        return 0;
    if (open_connection(m) < 0)
        return -1;
    if (publish(m) < 0) {
        drop(m);
        return -1;
    }
    return 0;
}

/* A call that failed because the connection broke (Redis restarted) is made
 * once more on a new connection (which publishes this backend first). */
static int retry(meta_t *m, int rc, int *tries)
{
    return rc == META_ERROR && !m->rc && (*tries)++ == 0;
}

/* Another backend registered under our name: its id, or "" if none. */
static int name_taken(meta_t *m, char *other, size_t cap)
{
    other[0] = '\0';
    const char *argv[] = {"HGETALL", KEY_BACKENDS};
    size_t lens[] = {7, strlen(KEY_BACKENDS)};
    redisReply *r = command_ok(m, 2, argv, lens);
    if (!r)
        return -1;
    size_t nlen = strlen(m->name);
    for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i + 1 < r->elements; i += 2) {
        redisReply *k = r->element[i], *v = r->element[i + 1];
        if (k->len == SDB_BACKEND_ID_LEN && memcmp(k->str, m->id, SDB_BACKEND_ID_LEN) == 0)
            continue;
        if (v->len > nlen && v->str[nlen] == '\n' && memcmp(v->str, m->name, nlen) == 0)
            snprintf(other, cap, "%.*s", (int)k->len, k->str);
    }
    freeReplyObject(r);
    return 0;
}

/* Is this backend still in the directory? Publish it again if not (Redis
 * restarted empty, or was flushed). mu held. */
static void check(meta_t *m)
{
    int was_connected = m->rc != NULL;
    if (ensure(m) < 0) {
        if (!m->down)
            log_warn("store: %s (retrying every %d ms)", last_error, WATCH_MS);
        m->down = 1;
        return;
    }
    if (m->down)
        log_info("store: the metadata service answers again");
    m->down = 0;
    if (!was_connected)
        return; /* ensure() just published */
    const char *argv[] = {"HEXISTS", KEY_BACKENDS, m->id};
    size_t lens[] = {7, strlen(KEY_BACKENDS), SDB_BACKEND_ID_LEN};
    redisReply *r = command_ok(m, 3, argv, lens);
    int missing = r && r->type == REDIS_REPLY_INTEGER && r->integer == 0;
    if (r)
        freeReplyObject(r);
    if (missing) {
        log_warn("store: the metadata service lost this backend: publishing it again");
        if (publish(m) < 0)
            drop(m);
    }
}

/* Every WATCH_MS: a backend that nobody asks anything still reappears in a
 * directory that lost it, within about a second. */
static void *watch_main(void *arg)
{
    meta_t *m = arg;
    pthread_mutex_lock(&m->mu);
    while (!m->stopping) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += WATCH_MS / 1000;
        ts.tv_nsec += (long)(WATCH_MS % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&m->wake, &m->mu, &ts);
        if (!m->stopping)
            check(m);
    }
    pthread_mutex_unlock(&m->mu);
    return NULL;
}

meta_t *meta_open(const char *url, sdb_t *db, const char *name, const char *address, char *err,
                  size_t errlen)
{
    meta_t *m = calloc(1, sizeof *m);
    if (!m) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&m->mu, NULL);
    pthread_cond_init(&m->wake, NULL);
    buf_init(&m->locq);
    buf_init(&m->owed);
    m->db = db;
    m->id = sdb_backend_id(db);
    snprintf(m->name, sizeof m->name, "%s", name);
    snprintf(m->address, sizeof m->address, "%s", address);
    char other[64] = "";
    if (parse_url(m, url) < 0) {
        snprintf(err, errlen, "--metadata %s: not redis://HOST:PORT[/DB] or unix:PATH", url);
    } else if (open_connection(m) < 0 || name_taken(m, other, sizeof other) < 0) {
        snprintf(err, errlen, "%s", last_error);
    } else if (other[0]) {
        snprintf(err, errlen, "a backend named '%s' is already registered with another id (%s):"
                 " choose another --name, or run that backend's store directory", name, other);
    } else if (publish(m) < 0) {
        snprintf(err, errlen, "%s", last_error);
    } else if (pthread_create(&m->watcher, NULL, watch_main, m) != 0) {
        snprintf(err, errlen, "cannot start the metadata watcher thread");
    } else {
        m->watching = 1;
        return m;
    }
    meta_close(m);
    return NULL;
}

void meta_close(meta_t *m)
{
    if (!m)
        return;
    if (m->watching) {
        pthread_mutex_lock(&m->mu);
        m->stopping = 1;
        pthread_cond_signal(&m->wake);
        pthread_mutex_unlock(&m->mu);
        pthread_join(m->watcher, NULL);
    }
    drop(m);
    buf_free(&m->locq);
    buf_free(&m->owed);
    pthread_cond_destroy(&m->wake);
    pthread_mutex_destroy(&m->mu);
    free(m);
}

/* ------------------------------------------------------------ aliases */

/* value "id\nclass" into id and class (0, or -1 if malformed). */
static int parse_value(const char *v, size_t n, char *first, size_t cap, size_t *firstlen,
                       uint64_t *class_id)
{
    const char *nl = memchr(v, '\n', n);
    if (!nl || nl == v || (size_t)(nl - v) >= cap)
        return -1;
    *firstlen = (size_t)(nl - v);
    memcpy(first, v, *firstlen);
    char hex[20];
    size_t hn = n - *firstlen - 1;
    if (hn == 0 || hn >= sizeof hex)
        return -1;
    memcpy(hex, nl + 1, hn);
    hex[hn] = '\0';
    char *end;
    *class_id = strtoull(hex, &end, 16);
    return *end ? -1 : 0;
}

/* GET key: META_OK with the reply's string in out (cap), META_NONE, META_ERROR. */
static int get_value(meta_t *m, const char *key, size_t klen, char *first, size_t cap,
                     size_t *firstlen, uint64_t *class_id)
{
    const char *argv[] = {"GET", key};
    size_t lens[] = {3, klen};
    redisReply *r = command_ok(m, 2, argv, lens);
    if (!r)
        return META_ERROR;
    int rc = META_NONE;
    if (r->type == REDIS_REPLY_STRING) {
        rc = parse_value(r->str, r->len, first, cap, firstlen, class_id) == 0 ? META_OK
                                                                              : META_ERROR;
        if (rc == META_ERROR)
            set_error("malformed entry '%s' in the metadata service", key);
    }
    freeReplyObject(r);
    return rc;
}

static int alias_claim_locked(meta_t *m, const char *alias, size_t alen, const char *id,
                              size_t idlen, uint64_t class_id)
{
    char key[SDB_ALIAS_MAX + 32], val[SDB_ID_MAX + 32];
    size_t klen = key_of(key, sizeof key, PFX_ALIAS, alias, alen);
    const char *argv[] = {"SET", key, val, "NX"};
    size_t lens[] = {3, klen, value_of(val, sizeof val, id, idlen, class_id), 2};
    redisReply *r = command_ok(m, 4, argv, lens);
    if (!r)
        return META_ERROR;
    int set = r->type == REDIS_REPLY_STATUS;
    freeReplyObject(r);
    if (set)
        return META_OK;
    char cur[SDB_ID_MAX];
    size_t curlen;
    uint64_t cid;
    int rc = get_value(m, key, klen, cur, sizeof cur, &curlen, &cid);
    if (rc == META_NONE) /* released meanwhile: try once more */
        return alias_claim_locked(m, alias, alen, id, idlen, class_id);
    if (rc != META_OK)
        return rc;
    return curlen == idlen && memcmp(cur, id, idlen) == 0 ? META_OK : META_TAKEN;
}

int meta_alias_claim(meta_t *m, const char *alias, size_t alen, const char *id, size_t idlen,
                     uint64_t class_id)
{
    pthread_mutex_lock(&m->mu);
    int rc, tries = 0;
    do
        rc = ensure(m) < 0 ? META_ERROR : alias_claim_locked(m, alias, alen, id, idlen, class_id);
    while (retry(m, rc, &tries));
    pthread_mutex_unlock(&m->mu);
    return rc;
}

/* DEL_IF_OURS on key with owner. */
static int del_if(meta_t *m, const char *key, size_t klen, const char *owner, size_t olen)
{
    const char *argv[] = {"EVAL", DEL_IF_OURS, "1", key, owner};
    size_t lens[] = {4, strlen(DEL_IF_OURS), 1, klen, olen};
    redisReply *r = command_ok(m, 5, argv, lens);
    if (!r)
        return META_ERROR;
    freeReplyObject(r);
    return META_OK;
}

int meta_alias_release(meta_t *m, const char *alias, size_t alen, const char *id, size_t idlen)
{
    char key[SDB_ALIAS_MAX + 32];
    size_t klen = key_of(key, sizeof key, PFX_ALIAS, alias, alen);
    pthread_mutex_lock(&m->mu);
    int rc, tries = 0;
    do
        rc = ensure(m) < 0 ? META_ERROR : del_if(m, key, klen, id, idlen);
    while (retry(m, rc, &tries));
    if (rc == META_ERROR)
        owe_delete(m, key, klen, id, idlen);
    pthread_mutex_unlock(&m->mu);
    return rc;
}

int meta_alias_get(meta_t *m, const char *alias, size_t alen, char *id, size_t *idlen,
                   uint64_t *class_id)
{
    char key[SDB_ALIAS_MAX + 32];
    size_t klen = key_of(key, sizeof key, PFX_ALIAS, alias, alen);
    pthread_mutex_lock(&m->mu);
    int rc, tries = 0;
    do
        rc = ensure(m) < 0 ? META_ERROR : get_value(m, key, klen, id, SDB_ID_MAX, idlen, class_id);
    while (retry(m, rc, &tries));
    pthread_mutex_unlock(&m->mu);
    return rc;
}

/* ------------------------------------------------------------ locations */

/* What the queue holds (locq's kind byte). */
enum { Q_LOC_REMOVE = 0, Q_LOC_ADD = 1, Q_REFS = 2 };

static int queue_loc(meta_t *m, uint8_t kind, const char *id, size_t idlen, uint64_t class_id)
{
    uint8_t h[11] = {kind};
    for (int i = 0; i < 8; i++)
        h[1 + i] = (uint8_t)(class_id >> (56 - 8 * i));
    h[9] = (uint8_t)(idlen >> 8);
    h[10] = (uint8_t)idlen;
    pthread_mutex_lock(&m->mu);
    int rc = buf_append(&m->locq, h, sizeof h) == 0 && buf_append(&m->locq, id, idlen) == 0;
    if (rc)
        m->nloc++;
    pthread_mutex_unlock(&m->mu);
    if (!rc)
        set_error("%s", "out of memory");
    return rc ? META_OK : META_ERROR;
}

int meta_loc_add(meta_t *m, const char *id, size_t idlen, uint64_t class_id)
{
    return queue_loc(m, Q_LOC_ADD, id, idlen, class_id);
}

int meta_loc_remove(meta_t *m, const char *id, size_t idlen)
{
    return queue_loc(m, Q_LOC_REMOVE, id, idlen, 0);
}

int meta_refs_add(meta_t *m, const char *id, size_t idlen, int delta)
{
    return queue_loc(m, Q_REFS, id, idlen, (uint64_t)(int64_t)delta);
}

/* The count of id in backend bid's hash, added to *sum. */
static int add_count(meta_t *m, const char *bid, size_t blen, const char *id, size_t idlen,
                     uint64_t *sum)
{
    char key[64];
    snprintf(key, sizeof key, "%s%.*s", PFX_REFS, (int)blen, bid);
    const char *argv[] = {"HGET", key, id};
    size_t lens[] = {4, strlen(key), idlen};
    redisReply *r = command_ok(m, 3, argv, lens);
    if (!r)
        return -1;
    if (r->type == REDIS_REPLY_STRING) {
        long long n = strtoll(r->str, NULL, 10);
        if (n > 0)
            *sum += (uint64_t)n;
    }
    freeReplyObject(r);
    return 0;
}

static int refs_elsewhere_locked(meta_t *m, const char *id, size_t idlen, uint64_t *count)
{
    *count = 0;
    const char *argv[] = {"HKEYS", KEY_BACKENDS};
    size_t lens[] = {5, strlen(KEY_BACKENDS)};
    redisReply *r = command_ok(m, 2, argv, lens);
    if (!r)
        return META_ERROR;
    int rc = META_OK;
    for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements && rc == META_OK; i++) {
        redisReply *k = r->element[i];
        if (k->len == SDB_BACKEND_ID_LEN && memcmp(k->str, m->id, SDB_BACKEND_ID_LEN) == 0)
            continue;
        if (add_count(m, k->str, k->len, id, idlen, count) < 0)
            rc = META_ERROR;
    }
    freeReplyObject(r);
    return rc;
}

int meta_refs_elsewhere(meta_t *m, const char *id, size_t idlen, uint64_t *count)
{
    pthread_mutex_lock(&m->mu);
    int rc, tries = 0;
    do
        rc = ensure(m) < 0 ? META_ERROR : refs_elsewhere_locked(m, id, idlen, count);
    while (retry(m, rc, &tries));
    pthread_mutex_unlock(&m->mu);
    return rc;
}

/* Send the queued locations (mu held, connected). */
static int send_locs(meta_t *m)
{
    pipe_t p = {.m = m};
    const uint8_t *q = buf_head(&m->locq), *end = q + buf_unread(&m->locq);
    while (q + 11 <= end && !p.failed) {
        uint64_t cid = 0;
        for (int i = 0; i < 8; i++)
            cid = cid << 8 | q[1 + i];
        size_t idlen = (size_t)q[9] << 8 | q[10];
        char key[SDB_ID_MAX + 32], val[SDB_BACKEND_ID_LEN + 32];
        size_t klen = key_of(key, sizeof key, PFX_LOC, (const char *)q + 11, idlen);
        if (q[0] == Q_REFS) {
            char hash[64], n[24];
            snprintf(hash, sizeof hash, "%s%s", PFX_REFS, m->id);
            snprintf(n, sizeof n, "%lld", (long long)(int64_t)cid);
            const char *argv[] = {"EVAL", INCR_OR_DROP, "1", hash, (const char *)q + 11, n};
            size_t lens[] = {4, strlen(INCR_OR_DROP), 1, strlen(hash), idlen, strlen(n)};
            pipe_append(&p, 6, argv, lens);
        } else if (q[0] == Q_LOC_ADD) {
            const char *argv[] = {"SET", key, val};
            size_t lens[] = {3, klen, value_of(val, sizeof val, m->id, SDB_BACKEND_ID_LEN, cid)};
            pipe_append(&p, 3, argv, lens);
        } else {
            const char *argv[] = {"EVAL", DEL_IF_OURS, "1", key, m->id};
            size_t lens[] = {4, strlen(DEL_IF_OURS), 1, klen, SDB_BACKEND_ID_LEN};
            pipe_append(&p, 5, argv, lens);
        }
        q += 11 + idlen;
    }
    return p.failed ? -1 : pipe_drain(&p, 0);
}

/* The location removals of the queue, owed (mu held): the next publish()
 * adds what is held, so only what went is owed. */
static void owe_removals(meta_t *m)
{
    const uint8_t *q = buf_head(&m->locq), *end = q + buf_unread(&m->locq);
    while (q + 11 <= end) {
        size_t idlen = (size_t)q[9] << 8 | q[10];
        if (q[0] == Q_LOC_REMOVE) {
            char key[SDB_ID_MAX + 32];
            size_t klen = key_of(key, sizeof key, PFX_LOC, (const char *)q + 11, idlen);
            owe_delete(m, key, klen, m->id, SDB_BACKEND_ID_LEN);
        }
        q += 11 + idlen;
    }
}

int meta_loc_flush(meta_t *m)
{
    pthread_mutex_lock(&m->mu);
    int rc = META_OK;
    if (m->nloc) {
        /* A connection made now publishes everything anyway. */
        int fresh = !m->rc;
        if (ensure(m) < 0 || (!fresh && send_locs(m) < 0)) {
            rc = META_ERROR;
            owe_removals(m);
        }
        buf_clear(&m->locq);
        m->nloc = 0;
    }
    pthread_mutex_unlock(&m->mu);
    return rc;
}

int meta_locate(meta_t *m, const char *id, size_t idlen, char *backend, uint64_t *class_id)
{
    char key[SDB_ID_MAX + 32];
    size_t klen = key_of(key, sizeof key, PFX_LOC, id, idlen);
    size_t blen = 0;
    pthread_mutex_lock(&m->mu);
    int rc, tries = 0;
    do
        rc = ensure(m) < 0 ? META_ERROR
                           : get_value(m, key, klen, backend, SDB_BACKEND_ID_LEN + 1, &blen,
                                       class_id);
    while (retry(m, rc, &tries));
    pthread_mutex_unlock(&m->mu);
    if (rc == META_OK)
        backend[blen] = '\0';
    return rc;
}

/* ------------------------------------------------------------ replicas */

/* GET the location and SMEMBERS the replica set, pipelined (mu held). */
static int locate_replicas_locked(meta_t *m, const char *lkey, size_t llen, const char *rkey,
                                  size_t rlen, char *backend, size_t *blen, uint64_t *class_id,
                                  buf_t *replicas, uint32_t *nrep)
{
    const char *a1[] = {"GET", lkey}, *a2[] = {"SMEMBERS", rkey};
    size_t l1[] = {3, llen}, l2[] = {8, rlen};
    if (redisAppendCommandArgv(m->rc, 2, a1, l1) != REDIS_OK ||
        redisAppendCommandArgv(m->rc, 2, a2, l2) != REDIS_OK) {
        set_error("metadata service (Redis) failed: %s", m->rc->errstr);
        drop(m);
        return META_ERROR;
    }
    redisReply *r[2] = {NULL, NULL};
    for (int i = 0; i < 2; i++) {
        if (redisGetReply(m->rc, (void **)&r[i]) != REDIS_OK || !r[i]) {
            set_error("metadata service (Redis) failed: %s", m->rc->errstr);
            drop(m);
            if (i)
                freeReplyObject(r[0]);
            return META_ERROR;
        }
    }
    int rc = META_NONE;
    if (r[0]->type == REDIS_REPLY_STRING) {
        rc = parse_value(r[0]->str, r[0]->len, backend, SDB_BACKEND_ID_LEN + 1, blen,
                         class_id) == 0 ? META_OK : META_ERROR;
        if (rc == META_ERROR)
            set_error("malformed entry '%s' in the metadata service", lkey);
    } else if (r[0]->type == REDIS_REPLY_ERROR) {
        set_error("metadata service (Redis) refused a command: %s", r[0]->str);
        rc = META_ERROR;
    }
    for (size_t i = 0; rc == META_OK && r[1]->type == REDIS_REPLY_ARRAY && i < r[1]->elements;
         i++) {
        redisReply *e = r[1]->element[i];
        if (e->type != REDIS_REPLY_STRING || e->len > SDB_BACKEND_ID_LEN)
            continue;
        uint8_t h[2] = {0, (uint8_t)e->len};
        if (buf_append(replicas, h, 2) < 0 || buf_append(replicas, e->str, e->len) < 0) {
            set_error("%s", "out of memory");
            rc = META_ERROR;
        } else {
            (*nrep)++;
        }
    }
    freeReplyObject(r[0]);
    freeReplyObject(r[1]);
    return rc;
}

int meta_locate_replicas(meta_t *m, const char *id, size_t idlen, char *backend,
                         uint64_t *class_id, buf_t *replicas, uint32_t *nrep)
{
    char lkey[SDB_ID_MAX + 32], rkey[SDB_ID_MAX + 32];
    size_t llen = key_of(lkey, sizeof lkey, PFX_LOC, id, idlen);
    size_t rlen = key_of(rkey, sizeof rkey, PFX_REP, id, idlen);
    size_t blen = 0, mark = buf_unread(replicas);
    pthread_mutex_lock(&m->mu);
    int rc, tries = 0;
    do {
        replicas->len = replicas->off + mark; /* a retry starts the list again */
        *nrep = 0;
        rc = ensure(m) < 0 ? META_ERROR
                           : locate_replicas_locked(m, lkey, llen, rkey, rlen, backend, &blen,
                                                    class_id, replicas, nrep);
    } while (retry(m, rc, &tries));
    pthread_mutex_unlock(&m->mu);
    if (rc == META_OK)
        backend[blen] = '\0';
    return rc;
}

/* SADD / SREM key member. */
static int set_member(meta_t *m, const char *cmd, const char *id, size_t idlen, const char *bid,
                      size_t blen)
{
    char key[SDB_ID_MAX + 32];
    const char *argv[] = {cmd, key, bid};
    size_t lens[] = {strlen(cmd), key_of(key, sizeof key, PFX_REP, id, idlen), blen};
    pthread_mutex_lock(&m->mu);
    int rc, tries = 0;
    do {
        redisReply *r = ensure(m) < 0 ? NULL : command_ok(m, 3, argv, lens);
        rc = r ? META_OK : META_ERROR;
        if (r)
            freeReplyObject(r);
    } while (retry(m, rc, &tries));
    pthread_mutex_unlock(&m->mu);
    return rc;
}

int meta_replica_add(meta_t *m, const char *id, size_t idlen, const char *bid, size_t blen)
{
    return set_member(m, "SADD", id, idlen, bid, blen);
}

int meta_replica_remove(meta_t *m, const char *id, size_t idlen, const char *bid, size_t blen)
{
    return set_member(m, "SREM", id, idlen, bid, blen);
}

/* ------------------------------------------------------------ backends */

static int put_str16(buf_t *out, const char *s, size_t n)
{
    uint8_t h[2] = {(uint8_t)(n >> 8), (uint8_t)n};
    return buf_append(out, h, 2) == 0 && buf_append(out, s, n) == 0 ? 0 : -1;
}

int meta_backends(meta_t *m, buf_t *out, uint32_t *count)
{
    *count = 0;
    pthread_mutex_lock(&m->mu);
    redisReply *r = NULL;
    for (int tries = 0; !r && tries < 2; tries++) {
        if (ensure(m) < 0)
            break;
        const char *argv[] = {"HGETALL", KEY_BACKENDS};
        size_t lens[] = {7, strlen(KEY_BACKENDS)};
        r = command_ok(m, 2, argv, lens);
        if (!r && m->rc)
            break; /* an error reply, not a broken connection */
    }
    pthread_mutex_unlock(&m->mu);
    if (!r)
        return META_ERROR;
    int rc = META_OK;
    for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i + 1 < r->elements; i += 2) {
        redisReply *k = r->element[i], *v = r->element[i + 1];
        const char *nl = v->str ? memchr(v->str, '\n', v->len) : NULL;
        if (!nl || k->len > 0xffff || v->len > 0xffff)
            continue;
        size_t nlen = (size_t)(nl - v->str);
        if (put_str16(out, k->str, k->len) < 0 || put_str16(out, v->str, nlen) < 0 ||
            put_str16(out, nl + 1, v->len - nlen - 1) < 0) {
            set_error("%s", "out of memory");
            rc = META_ERROR;
            break;
        }
        (*count)++;
    }
    freeReplyObject(r);
    return rc;
}
