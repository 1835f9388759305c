/* Fuzz target: the object store's request parser and PERSIST walk
 * (store/sreq.c), what sconn.c runs on every frame of an accepted client and
 * sobj.c on every PERSIST batch.
 *
 * Input: a request frame's body (type, request id, fields). Checks: the
 * parser's verdict agrees with the fields (every pointer inside the body, names
 * and ids within their limits and valid UTF-8 by an independent check); a
 * PERSIST batch that passes sreq_persist_check walks its count entries without
 * an error, each entry within the payload, and its alias count matches. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "store/sproto.h"
#include "store/sreply.h"
#include "store/sreq.h"
#include "utf8_ref.h"

#define CHECK(c) do { if (!(c)) __builtin_trap(); } while (0)

static int inside(const void *p, size_t n, const uint8_t *b, size_t len)
{
    const uint8_t *q = p;
    return n == 0 || (q >= b && q <= b + len && n <= (size_t)(b + len - q));
}

static void check_text(const char *p, size_t n, size_t max, const uint8_t *b, size_t len)
{
    CHECK(p && n >= 1 && n <= max && inside(p, n, b, len));
    CHECK(utf8_ref((const uint8_t *)p, n));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *b = malloc(size ? size : 1);
    CHECK(b);
    memcpy(b, data, size);
    sreq_t q;
    memset(&q, 0, sizeof q);
    const char *why = NULL;
    int rc = sreq_parse(&q, b, size, &why);
    CHECK(rc >= -1 && rc <= 1 && (rc == 0 || why));
    if (rc != 0) {
        free(b);
        return 0;
    }
    CHECK(size >= 9 && q.type == b[0]);
    CHECK(inside(q.payload, q.len, b, size));
    switch (q.type) {
    case SMSG_CALL:
    case SMSG_GET_FIELD:
    case SMSG_SET_FIELD:
        check_text(q.oid, q.oidlen, SDB_ID_MAX, b, size);
        check_text(q.name, q.namelen, 255, b, size);
        break;
    case SMSG_ADD_ALIAS:
        check_text(q.oid, q.oidlen, SDB_ID_MAX, b, size);
        check_text(q.name, q.namelen, SDB_ALIAS_MAX, b, size);
        break;
    case SMSG_LOOKUP_ALIAS:
    case SMSG_DELETE_ALIAS:
        check_text(q.name, q.namelen, SDB_ALIAS_MAX, b, size);
        break;
    case SMSG_LOOKUP_ID:
    case SMSG_GET_STATE:
    case SMSG_UPDATE:
    case SMSG_ALIASES:
    case SMSG_DELETE:
    case SMSG_REPLICA_DROP:
        check_text(q.oid, q.oidlen, SDB_ID_MAX, b, size);
        break;
    case SMSG_FORWARD:
        check_text(q.oid, q.oidlen, SDB_ID_MAX, b, size);
        check_text(q.name, q.namelen, SDB_ID_MAX, b, size);
        break;
    case SMSG_MOVE:
    case SMSG_REPLICATE:
    case SMSG_REPLICA_PUT:
        check_text(q.oid, q.oidlen, SDB_ID_MAX, b, size);
        check_text(q.name, q.namelen, SDB_BACKEND_ID_LEN, b, size);
        break;
    case SMSG_CLASS:
        CHECK(inside(q.name, q.namelen, b, size));
        CHECK(utf8_ref((const uint8_t *)q.name, q.namelen));
        break;
    case SMSG_PERSIST: {
        size_t naliases = 0;
        const char *bad = sreq_persist_check(&q, &naliases);
        if (bad)
            break;
        wire_rd_t rd;
        wire_rd_init(&rd, q.payload, q.len);
        size_t seen = 0;
        for (uint32_t i = 0; i < q.count; i++) {
            sreq_pentry_t e;
            CHECK(sreq_persist_next(&rd, &e) == 0);
            check_text(e.id, e.idlen, SDB_ID_MAX, b, size);
            CHECK(e.alen <= SDB_ALIAS_MAX && inside(e.alias, e.alen, b, size));
            CHECK(utf8_ref((const uint8_t *)e.alias, e.alen));
            CHECK(inside(e.state, e.slen, b, size));
            seen += e.alen > 0;
        }
        CHECK(seen == naliases);
        break;
    }
    case SMSG_GET_CLASS:
    case SMSG_BACKENDS: /* no fields */
    case SMSG_UNLOAD:
        break;
    default:
        CHECK(0); /* an unknown type is malformed */
    }
    free(b);
    return 0;
}
