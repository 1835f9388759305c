/* The task pool's wire protocol, shared by the pool (`bettong pool`), its workers
 * (`bettong worker`) and the client extension (python/bettong/_bettong).
 *
 * A message is a frame: a u32 big-endian length of what follows, then a u8 type
 * and the type's fields. Integers are big-endian. "str16" is a u16 length then
 * that many bytes; "rest" is every remaining byte of the frame (a pickle).
 *
 * Connection life: the first frames are the handshake of net/auth.h for the
 * service "pool" (HELLO, CHALLENGE, PROOF: each side proves it knows the shared
 * secret without sending it). The identity the peer proves is
 *
 *     u8 role, u8 version, u32 pid, str16 name, str16 near   (proto_put_identity)
 *
 * `near` is a worker's locality: the name of the store backend it runs next to
 * (`bettong worker --join POOL --near-store B`), at most PROTO_PLACE_MAX bytes;
 * empty for no backend, and always empty from a client. It is in the identity,
 * not a message after WELCOME, so that the pool knows it before the worker's
 * first task and nothing can run before it is known. A peer of another version
 * is refused by the version byte (the first two fields never move), with a
 * reason naming both versions.
 *
 * A function running on the pool connects back as ROLE_SUBCALL: its identity
 * ends with the u64 id of the task it runs in, and its handshake key is that
 * task's token (pool/subcall.h), accepted only while the task runs; it is
 * then a client like any other.
 *
 * Once the peer's proof holds the pool judges that identity and answers WELCOME
 * or REFUSED (and closes). A handshake that fails (a wrong proof: a replayed
 * session, a wrong secret) is answered REFUSED "authentication failed: ..." and
 * closed. Nothing but handshake frames (at most AUTH_MAX_FRAME bytes, within 10
 * s) is read before WELCOME, so no pickle from an unauthenticated peer is ever
 * looked at; and a peer does not read the pool's FUNCDEF or TASK (a worker) or
 * RESULT (a client) before the pool proved the secret.
 *
 *  pool -> peer   WELCOME   u32 peer_id, u32 workers
 *  pool -> peer   REFUSED   str16 reason (also in place of the CHALLENGE, for a
 *                           HELLO of another handshake version or service)

 *  client -> pool FUNC      u64 func_id, rest: cloudpickled function
 *  client -> pool CALLS     u64 func_id, u32 timeout_ms (0: none), u16 retries,
 *                           str16 near, u32 count, then count x (u64 call_id,
 *                           u32 len, bytes: pickled (args tuple, kwargs dict))
 *                           `near` (empty: none) is the store backend the calls
 *                           would rather run next to: the client sends calls
 *                           of different preferences in different messages.
 *  client -> pool CANCEL    u64 call_id
 *  pool -> client CANCELLED u64 call_id, u8 cancelled (1: dropped before it ran)
 *  client -> pool FORGET    u64 func_id (no more calls of it will come)
 *  pool -> client RESULT    u64 call_id, u8 status, u32 worker_id, u32 attempts,
 *                           u64 submitted_us, u64 started_us, u64 finished_us,
 *                           str16 worker_near (the `near` of the worker that ran
 *                           it; empty: none, or it never ran),
 *                           rest: payload (see status)
 *  client -> pool STATUS    (empty)
 *  pool -> client STATUS_REPLY u32 workers, u32 queued, u32 running
 *
 *  pool -> worker FUNCDEF   u64 func_gid, rest: cloudpickled function
 *  pool -> worker FUNCDROP  u64 func_gid
 *  pool -> worker TASK      u64 task_id, u64 func_gid, rest: pickled (args, kwargs)
 *  worker -> pool DONE      u64 task_id, u8 status, u64 started_us, u64 finished_us,
 *                           rest: payload
 *
 * Added after version 1 was first written (same PROTO_VERSION: only the pool
 * sends it, and the pool and its workers are the same binary):
 *
 *  pool -> worker SKIP      u64 task_id: drop this task if it has not started.
 *                           If the worker drops it, it answers DONE(task_id,
 *                           CALL_CANCELLED, now, now, empty), which may come
 *                           before the DONE of a task sent earlier; if the task
 *                           already started (or is done) nothing extra is sent.
 *                           The pool sends it for a client's CANCEL of a call
 *                           it had sent ahead to a worker, and answers that
 *                           CANCEL once the worker has answered.
 *
 * Shared-memory payloads (added to version 3; pool/shm.h): a peer on the
 * pool's Unix socket may end its identity with a u8 of flags, PROTO_TAKES_FDS
 * meaning it can send and receive descriptors (older peers end before it and
 * are read as 0), and the pool's WELCOME then ends with the same u8: set when
 * that connection carries descriptors both ways. Only between two such ends:
 *
 *  worker -> pool DONE_FD   u64 task_id, u8 status, u64 started_us,
 *                           u64 finished_us, u64 size: DONE, its payload in
 *                           the sealed memfd attached (SCM_RIGHTS) to the
 *                           frame's first byte; a bytes result is an object
 *                           file (pool/shm.h), passed on as it is, or sent
 *                           as the pickle of its bytes to a client without
 *                           descriptors
 *  pool -> client RESULT_FD RESULT's fields up to worker_near, then u64 size:
 *                           RESULT, its payload in the attached memfd
 *  client -> pool CALLS_FD  u64 func_id, u32 timeout_ms, u16 retries, str16 near,
 *                           u64 call_id, u64 size: one call, its pickled
 *                           (args, kwargs) in the attached memfd
 *  pool -> worker TASK_FD   u64 task_id, u64 func_gid, u64 size: TASK, its
 *                           payload in the attached memfd
 *
 * A pool that cannot pass the descriptor on (a client or worker over TCP or
 * of an older build) maps it and sends the bytes (RESULT, TASK). A frame that announces a
 * descriptor none came for, a file of another size or without its seals, or
 * more than SHM_MAX_PENDING descriptors ahead of their frames closes the
 * connection with a log line.
 *
 * Locality (version 3): a call whose `near` names a place goes to a worker
 * whose `near` is the same name when one has room (see pool/sched.h); failing
 * that, to any worker with room, so no call waits for a busy or absent near
 * worker. Names are compared as bytes; the pool knows nothing of the store.
 *
 * The fields are encoded by net/wire.h (proto_* below are its functions under
 * this protocol's names). Times are microseconds since the Unix epoch. A worker
 * runs its tasks one at a time in the order received; the pool may send several
 * ahead. */
#ifndef BETTONG_PROTO_H
#define BETTONG_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "net/wire.h"
#include "util/buf.h"

/* 2: the handshake of net/auth.h replaced version 1's HELLO (which carried the
 * secret itself). 3: locality (the identity's near, CALLS' near, RESULT's
 * worker_near). */
#define PROTO_VERSION 3
/* The service name the handshake names. */
#define POOL_SERVICE "pool"
/* The longest peer name an identity carries (the pool keeps 63 bytes of it). */
#define PROTO_NAME_MAX 255
/* The longest locality name (a store backend's name) in an identity or CALLS;
 * a longer one is refused (a worker) or cut (the client never sends one). */
#define PROTO_PLACE_MAX 63
/* Identity and WELCOME flag: descriptors travel on this connection. */
#define PROTO_TAKES_FDS 1
/* Largest frame accepted: a result or argument of a few GB is not sent as one. */
#define PROTO_MAX_FRAME (2047ull * 1024 * 1024)
/* pickle.dumps(b, 5) of a bytes object b of n < 2^32 bytes is PROTO 5,
 * BINBYTES (u32 little-endian n), b's bytes, MEMOIZE, STOP: a large bytes
 * result travels as that head, its own buffer and that tail (no copy into a
 * pickle). */
#define PROTO_BYTES_HEAD 7
#define PROTO_BYTES_TAIL 2
static inline void proto_bytes_pickle(uint8_t head[PROTO_BYTES_HEAD],
                                      uint8_t tail[PROTO_BYTES_TAIL], uint32_t n)
{
    head[0] = 0x80; /* PROTO 5 */
    head[1] = 5;
    head[2] = 'B'; /* BINBYTES */
    for (int i = 0; i < 4; i++)
        head[3 + i] = (uint8_t)(n >> (8 * i));
    tail[0] = 0x94; /* MEMOIZE */
    tail[1] = '.';  /* STOP */
}

typedef enum {
    /* 1 was version 1's HELLO */
    MSG_WELCOME = 2,
    MSG_REFUSED = 3,
    MSG_FUNC = 10,
    MSG_CALLS = 11,
    MSG_CANCEL = 12,
    MSG_CANCELLED = 13,
    MSG_FORGET = 14,
    MSG_RESULT = 20,
    MSG_STATUS = 21,
    MSG_STATUS_REPLY = 22,
    MSG_FUNCDEF = 30,
    MSG_FUNCDROP = 31,
    MSG_TASK = 32,
    MSG_DONE = 33,
    MSG_SKIP = 34, /* added: see above */
    MSG_DONE_FD = 35,   /* added: see above */
    MSG_RESULT_FD = 23, /* added: see above */
    MSG_CALLS_FD = 16,  /* added: see above */
    MSG_TASK_FD = 36,   /* added: see above */
} msg_type;

/* ROLE_SUBCALL: a client inside a running call, whose handshake key is that
 * call's token (pool/subcall.h); its identity ends with u64 parent task id. */
typedef enum { ROLE_CLIENT = 1, ROLE_WORKER = 2, ROLE_SUBCALL = 3 } peer_role;

typedef enum {
    CALL_OK = 0,           /* payload: pickled result */
    CALL_RAISED = 1,       /* payload: pickled (exception or None, type name, message,
                              traceback text) */
    CALL_WORKER_DIED = 2,  /* payload: utf-8 text */
    CALL_TIMEOUT = 3,      /* payload: utf-8 text */
    CALL_CANCELLED = 4,    /* payload: empty */
    CALL_ERROR = 5,        /* payload: utf-8 text (function would not unpickle,
                              result would not pickle, ...) */
} call_status;

/* ---- writing and reading: net/wire.h, under the pool's names ----
 *
 * proto_begin starts a frame whose limit is PROTO_MAX_FRAME; everything else is
 * the wire codec as it is. */

typedef wire_wr_t proto_wr_t;
typedef wire_rd_t proto_rd_t;

/* Start a message of `type` at the end of b. */
static inline void proto_begin(proto_wr_t *w, buf_t *b, msg_type type)
{
    wire_begin(w, b, (uint8_t)type, PROTO_MAX_FRAME);
}
/* Fill in the frame length. Returns 0, or -1 (the partial frame is removed from
 * the buffer) if memory ran out or the frame is larger than PROTO_MAX_FRAME. */
static inline int proto_end(proto_wr_t *w) { return wire_end(w); }
/* Like proto_end, for a frame whose last `extra` bytes (a large payload) the
 * caller sends right after the buffer's bytes instead of copying them in: the
 * length counts them. Returns 0 or -1 as proto_end. */
static inline int proto_end_with(proto_wr_t *w, size_t extra) { return wire_end_with(w, extra); }
static inline void proto_put_u8(proto_wr_t *w, uint8_t v) { wire_put_u8(w, v); }
static inline void proto_put_u16(proto_wr_t *w, uint16_t v) { wire_put_u16(w, v); }
static inline void proto_put_u32(proto_wr_t *w, uint32_t v) { wire_put_u32(w, v); }
static inline void proto_put_u64(proto_wr_t *w, uint64_t v) { wire_put_u64(w, v); }
static inline void proto_put_bytes(proto_wr_t *w, const void *p, size_t n)
{
    wire_put_bytes(w, p, n);
}
static inline void proto_put_str16(proto_wr_t *w, const char *s, size_t n)
{
    wire_put_str16(w, s, n);
}

static inline void proto_rd_init(proto_rd_t *r, const uint8_t *body, size_t len)
{
    wire_rd_init(r, body, len);
}
static inline uint8_t proto_u8(proto_rd_t *r) { return wire_u8(r); }
static inline uint16_t proto_u16(proto_rd_t *r) { return wire_u16(r); }
static inline uint32_t proto_u32(proto_rd_t *r) { return wire_u32(r); }
static inline uint64_t proto_u64(proto_rd_t *r) { return wire_u64(r); }
/* A span of n bytes (pointer into the frame), NULL on error. */
static inline const uint8_t *proto_bytes(proto_rd_t *r, size_t n) { return wire_bytes(r, n); }
/* A str16: pointer and length, NULL on error. */
static inline const uint8_t *proto_str16(proto_rd_t *r, size_t *n) { return wire_str16(r, n); }
/* Every remaining byte. */
static inline const uint8_t *proto_rest(proto_rd_t *r, size_t *n) { return wire_rest(r, n); }

/* Append the identity a peer proves in the handshake (see above) to b; a name
 * longer than PROTO_NAME_MAX is cut, so is a near longer than PROTO_PLACE_MAX.
 * Returns 0 or -1 (out of memory). */
static inline int proto_put_identity(buf_t *b, uint8_t role, uint32_t pid, const char *name,
                                     size_t name_len, const char *near, size_t near_len)
{
    wire_wr_t w;
    wire_begin_fields(&w, b);
    wire_put_u8(&w, role);
    wire_put_u8(&w, PROTO_VERSION);
    wire_put_u32(&w, pid);
    wire_put_str16(&w, name, name_len < PROTO_NAME_MAX ? name_len : PROTO_NAME_MAX);
    wire_put_str16(&w, near, near_len < PROTO_PLACE_MAX ? near_len : PROTO_PLACE_MAX);
    return wire_end_fields(&w);
}

/* A sub-call client's identity: proto_put_identity's, then the u64 id of the
 * task it submits from. Returns 0 or -1. */
static inline int proto_put_subcall_identity(buf_t *b, uint32_t pid, const char *name,
                                             size_t name_len, uint64_t parent_task)
{
    if (proto_put_identity(b, ROLE_SUBCALL, pid, name, name_len, NULL, 0) < 0)
        return -1;
    wire_wr_t w;
    wire_begin_fields(&w, b);
    wire_put_u64(&w, parent_task);
    return wire_end_fields(&w);
}

/* End an identity with its flags (PROTO_TAKES_FDS; see above), after
 * proto_put_identity or proto_put_subcall_identity. Returns 0 or -1. */
static inline int proto_put_identity_flags(buf_t *b, uint8_t flags)
{
    wire_wr_t w;
    wire_begin_fields(&w, b);
    wire_put_u8(&w, flags);
    return wire_end_fields(&w);
}

/* An identity as proto_get_identity reads it; name points into the input. */
typedef struct {
    uint8_t role, version;
    uint32_t pid;
    const uint8_t *name;
    size_t name_len;
    const uint8_t *near; /* NULL (near_len 0) when the identity is of another version */
    size_t near_len;
    uint64_t parent_task; /* ROLE_SUBCALL: the task it submits from; else 0 */
    uint8_t flags;        /* PROTO_TAKES_FDS; 0 when the identity ends before them */
} proto_identity_t;

/* Decode an identity (see above), as the pool does after the handshake: a
 * function of its own so that the fuzz harnesses run the pool's decoder. Role
 * and version are left for the caller to judge; the near is read only from an
 * identity of this version (another version's is refused by its version, so
 * its later fields need not parse); bytes after it are not looked at. Returns
 * 0, or -1 if it is cut short. */
static inline int proto_get_identity(const uint8_t *p, size_t len, proto_identity_t *id)
{
    wire_rd_t r;
    wire_rd_init(&r, p, len);
    id->role = wire_u8(&r);
    id->version = wire_u8(&r);
    id->pid = wire_u32(&r);
    id->name = wire_str16(&r, &id->name_len);
    id->near = NULL;
    id->near_len = 0;
    id->parent_task = 0;
    id->flags = 0;
    if (!r.err && id->version == PROTO_VERSION)
        id->near = wire_str16(&r, &id->near_len);
    if (!r.err && id->version == PROTO_VERSION && id->role == ROLE_SUBCALL)
        id->parent_task = wire_u64(&r);
    if (!r.err && id->version == PROTO_VERSION && r.p < r.end)
        id->flags = wire_u8(&r);
    return r.err ? -1 : 0;
}

/* Microseconds since the epoch. */
static inline uint64_t proto_now_us(void) { return wire_now_us(); }

#endif
