/* One request of the object store, from the frame it came in to its answer.
 *
 * A request is one object (sreq_t) for its whole life: parsed from a frame
 * (sconn.c), queued behind its object (sobj.c), run by Python (spy.h) on the
 * loop thread or a Python thread, and/or handed to the committer as a unit
 * (commit.h). It owns its frame body, its answer buffer, its unit and the
 * bytes the unit's ops point into. Its state says who holds it, and so who
 * may touch it and who frees it; only the loop thread reads or changes the
 * state.
 *
 *            ┌──▶ INLINE ──┬──────────────────▶ ✕ answered
 *            │      │      └──▶ COMMIT ──▶ ✕ answered by its unit
 *            │      ▼              ▲
 *   QUEUED ──┼──▶ THREAD ──┬───────┘
 *            │             ├──────────────────▶ ✕ answered
 *            │             └──▶ ANSWERED ─────▶ ✕ (the run is back)
 *            ├──▶ COMMIT (a request that is one unit) ──▶ ✕ answered by it
 *            └────────────────────────────────▶ ✕ answered at once
 *
 * (✕: freed, by whoever made that last move: sobj.c.)
 *
 * - QUEUED: parsed, in its object's queue (the head waits for an earlier
 *   unit, or is about to start).
 * - INLINE: running on the loop thread (spy_run_inline), which answers it or
 *   submits its unit before anything else happens on that thread.
 * - THREAD: handed to a Python thread: until its run is back on the loop
 *   thread (pyjob done), that thread owns the answer, the unit and
 *   write_seq. Once it has submitted the unit it touches neither the answer
 *   nor the unit again: the unit's done callback may answer before the run
 *   is back (write_seq, which the thread sets last, is read once it is).
 * - COMMIT: its unit is with the committer and nothing else has it; the
 *   committer's done callback answers (with `answer`, or from the unit's
 *   results) and frees it.
 * - ANSWERED: the unit came back (and answered) while the run was still out;
 *   the run's return frees it. This pair of events is why a request once
 *   needed a reference count.
 *
 * A request leaves its object's queue when its run is back (or, for a unit,
 * when the unit is submitted): the next one may start while the unit is on
 * its way to disk, and its answer is held behind it (sconn_answer).
 *
 * The parser below has no side effects: it reads a frame body and fills the
 * message fields, and nothing else, so the fuzz harnesses (fuzz/) can run it
 * on arbitrary bytes without a store, a loop or Python. */
#ifndef BETTONG_SREQ_H
#define BETTONG_SREQ_H

#include <stddef.h>
#include <stdint.h>

#include "net/wire.h"
#include "store/commit.h"
#include "store/pyexec.h"
#include "store/store.h"
#include "util/buf.h"

typedef enum {
    SREQ_QUEUED = 0,
    SREQ_INLINE,
    SREQ_THREAD,
    SREQ_COMMIT,
    SREQ_ANSWERED,
} sreq_state;

struct sreq {
    /* The message: set by sreq_parse only, pointers into the body. */
    uint8_t type;
    uint64_t id;
    const char *oid;
    size_t oidlen;
    const char *name; /* method, field, alias, qualname, or a backend id (MOVE,
                         REPLICATE, REPLICA_PUT's master) */
    size_t namelen;
    uint64_t class_id;
    const uint8_t *payload; /* "rest", or PERSIST's entries */
    size_t len;
    uint32_t count;         /* PERSIST */

    sreq_state state;
    struct sreq *next;      /* its object's queue */
    sconn_t *conn;          /* counted reference */
    struct sobj *ent;       /* the object it is queued behind or is a unit about;
                               NULL for the others */
    size_t cost;            /* bytes counted against the connection */
    uint64_t read_ns;       /* uv_hrtime when parsed (stmetrics.h latency) */
    pyjob_t pj;             /* its run on a Python thread */
    /* The unit: its one op, or ops laid out in unit_bytes (with the bytes
     * they point to) when a run or a PERSIST makes several; the unit's seq
     * once submitted (0: no unit). */
    wunit_t unit;
    wop_t op;
    buf_t unit_bytes;
    uint64_t write_seq;
    struct sobj **created;  /* PERSIST: the entries it marked pending (owned) */
    size_t ncreated;
    buf_t answer;           /* the answer frame, until it is sent */
    void *mem;              /* the body when it is not in `body` (a large frame
                               kept as it came, or NULL) */
    uint8_t body[];         /* the body of a frame that was copied */
};

/* A new request (QUEUED, every field zero) with room for `copy` bytes of
 * body after it. NULL when out of memory. */
sreq_t *sreq_new(size_t copy);
/* Free what the request owns and the request (not its connection's
 * accounting: sreq_free in sconn.h does that, then calls this). */
void sreq_destroy(sreq_t *r);
/* Move to state `to`. A move the diagram above does not have is a bug that
 * would answer or free a request twice: it stops the process at once. */
void sreq_enter(sreq_t *r, sreq_state to);

/* Parse a request frame's body (type, request id, the type's fields) into q,
 * whose pointers then point into body. Returns 0 (parsed), 1 (well-formed but
 * invalid: answer BAD_REQUEST with *why), -1 (malformed: close, *why says
 * why). q->type and q->id are set whenever the body holds them. Writes the
 * message fields of q, nothing else. */
int sreq_parse(sreq_t *q, const uint8_t *body, size_t len, const char **why);

/* One PERSIST entry; pointers into the request's payload. */
typedef struct {
    const char *id;
    size_t idlen;
    uint64_t class_id;
    const char *alias;
    size_t alen;
    const uint8_t *state;
    size_t slen;
} sreq_pentry_t;

/* Read the next PERSIST entry. Returns 0, or -1 if the payload ends early. */
int sreq_persist_next(wire_rd_t *r, sreq_pentry_t *e);

/* Check every entry of a parsed PERSIST (its count and payload); *naliases is
 * the number of entries with an alias. NULL, or why the batch is refused. A
 * batch that passes can be walked with sreq_persist_next count times without
 * an error. */
const char *sreq_persist_check(const sreq_t *r, size_t *naliases);

#endif
