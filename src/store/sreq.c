#include "store/sreq.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/sdb.h"
#include "store/sproto.h"
#include "store/sreply.h"

#define NAME_MAX_LEN 255

/* ------------------------------------------------------------ the object */

sreq_t *sreq_new(size_t copy)
{
    /* The body is copied right after the struct: one allocation a request.
     * Only the struct is zeroed (the body is overwritten at once). */
    sreq_t *r = malloc(sizeof *r + copy);
    if (r)
        memset(r, 0, sizeof *r);
    return r;
}

void sreq_destroy(sreq_t *r)
{
    buf_free(&r->answer);
    buf_free(&r->unit_bytes);
    buf_free(&r->unit.out);
    free(r->created);
    free(r->mem);
    free(r);
}

/* The moves of the diagram in sreq.h, by the state moved from. */
static const unsigned moves[] = {
    [SREQ_QUEUED] = 1u << SREQ_INLINE | 1u << SREQ_THREAD | 1u << SREQ_COMMIT,
    [SREQ_INLINE] = 1u << SREQ_THREAD | 1u << SREQ_COMMIT,
    [SREQ_THREAD] = 1u << SREQ_COMMIT | 1u << SREQ_ANSWERED,
    [SREQ_COMMIT] = 0,
    [SREQ_ANSWERED] = 0,
};

void sreq_enter(sreq_t *r, sreq_state to)
{
    if (!(moves[r->state] & 1u << to)) {
        fprintf(stderr, "store: request %llu (type %u) cannot go from state %d to %d\n",
                (unsigned long long)r->id, r->type, (int)r->state, (int)to);
        abort();
    }
    r->state = to;
}

/* ------------------------------------------------------------ parsing */

static int text_ok(const uint8_t *p, size_t n, size_t max)
{
    return p && n >= 1 && n <= max && utf8_valid(p, n);
}

/* Fields by type. Returns 0 (parsed), 1 (parsed but invalid: answered
 * BAD_REQUEST), -1 (malformed: close). */
static int parse_fields(sreq_t *q, wire_rd_t *r, const char **why)
{
    const uint8_t *oid = NULL, *name = NULL;
    size_t n;
    int need_oid = 0, name_max = 0;
    switch (q->type) {
    case SMSG_CLASS:
        q->class_id = wire_u64(r);
        name = wire_str16(r, &q->namelen);
        q->payload = wire_rest(r, &q->len);
        if (!r->err && !utf8_valid(name, q->namelen))
            return *why = "the qualname is not UTF-8", 1;
        break;
    case SMSG_PERSIST:
        q->count = wire_u32(r);
        q->payload = wire_rest(r, &q->len);
        break;
    case SMSG_LOOKUP_ALIAS:
    case SMSG_DELETE_ALIAS:
        name = wire_str16(r, &q->namelen);
        name_max = SDB_ALIAS_MAX;
        break;
    case SMSG_REPLICA_PUT:
        need_oid = 1;
        oid = wire_str16(r, &n);
        q->class_id = wire_u64(r);
        name = wire_str16(r, &q->namelen);
        name_max = SDB_BACKEND_ID_LEN;
        q->payload = wire_rest(r, &q->len);
        break;
    case SMSG_CALL:
    case SMSG_GET_FIELD:
    case SMSG_SET_FIELD:
    case SMSG_ADD_ALIAS:
    case SMSG_MOVE:
    case SMSG_REPLICATE:
    case SMSG_FORWARD:
        need_oid = 1;
        oid = wire_str16(r, &n);
        name = wire_str16(r, &q->namelen);
        name_max = q->type == SMSG_ADD_ALIAS ? SDB_ALIAS_MAX
                   : q->type == SMSG_MOVE || q->type == SMSG_REPLICATE ? SDB_BACKEND_ID_LEN
                   : q->type == SMSG_FORWARD                           ? SDB_ID_MAX
                                                                       : NAME_MAX_LEN;
        if (q->type == SMSG_CALL || q->type == SMSG_SET_FIELD)
            q->payload = wire_rest(r, &q->len);
        break;
    case SMSG_LOOKUP_ID:
    case SMSG_GET_STATE:
    case SMSG_UPDATE:
    case SMSG_ALIASES:
    case SMSG_DELETE:
    case SMSG_REPLICA_DROP:
        need_oid = 1;
        oid = wire_str16(r, &n);
        if (q->type == SMSG_UPDATE)
            q->payload = wire_rest(r, &q->len);
        break;
    case SMSG_GET_CLASS:
        q->class_id = wire_u64(r);
        break;
    case SMSG_BACKENDS:
    case SMSG_UNLOAD:
        break;
    default:
        return *why = "unknown message type", -1;
    }
    if (r->err)
        return *why = "truncated message", -1;
    q->name = (const char *)name;
    if (need_oid) {
        q->oid = (const char *)oid;
        q->oidlen = n;
        if (!text_ok(oid, n, SDB_ID_MAX))
            return *why = "an object id is 1 to 128 bytes of UTF-8", 1;
    }
    if (name_max && !text_ok(name, q->namelen, (size_t)name_max))
        return *why = name_max == SDB_ALIAS_MAX ? "an alias is 1 to 400 bytes of UTF-8"
                      : name_max == SDB_ID_MAX  ? "an object id is 1 to 128 bytes of UTF-8"
                                                : "a name is 1 to 255 bytes of UTF-8",
               1;
    return 0;
}

int sreq_parse(sreq_t *q, const uint8_t *body, size_t len, const char **why)
{
    wire_rd_t r;
    wire_rd_init(&r, body, len);
    q->type = wire_u8(&r);
    q->id = wire_u64(&r);
    *why = "truncated message";
    return r.err ? -1 : parse_fields(q, &r, why);
}

int sreq_persist_next(wire_rd_t *r, sreq_pentry_t *e)
{
    e->id = (const char *)wire_str16(r, &e->idlen);
    e->class_id = wire_u64(r);
    e->alias = (const char *)wire_str16(r, &e->alen);
    uint32_t n = wire_u32(r);
    e->state = wire_bytes(r, n);
    e->slen = n;
    return r->err ? -1 : 0;
}

const char *sreq_persist_check(const sreq_t *r, size_t *naliases)
{
    /* An entry takes at least 16 bytes: a count the frame cannot hold is refused
     * before looping over it. */
    if (r->count > r->len / 16)
        return "PERSIST announces more objects than it holds";
    wire_rd_t rd;
    wire_rd_init(&rd, r->payload, r->len);
    *naliases = 0;
    for (uint32_t i = 0; i < r->count; i++) {
        sreq_pentry_t e;
        if (sreq_persist_next(&rd, &e) < 0)
            return "PERSIST is truncated";
        if (e.idlen < 1 || e.idlen > SDB_ID_MAX || !utf8_valid((const uint8_t *)e.id, e.idlen))
            return "an object id is 1 to 128 bytes of UTF-8";
        if (e.alen > SDB_ALIAS_MAX || !utf8_valid((const uint8_t *)e.alias, e.alen))
            return "an alias is 1 to 400 bytes of UTF-8";
        *naliases += e.alen > 0;
    }
    return NULL;
}
