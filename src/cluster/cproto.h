/* The cluster's wire protocol (on the framed format of net/wire.h). Three kinds
 * of connection, each opened by the side that sends on it:
 *   control: a worker -> the coordinator (JOIN, COUNTS, ...) and the
 *            coordinator -> each worker (MEMBERS, TABLE, PAUSE, ...);
 *   data:    worker A -> worker B, the messages A forwards to B's slots and the
 *            state of slots moving to B, in order;
 *   admin:   `bettong cluster` -> the coordinator, answered on the same
 *            connection.
 *
 * Every connection starts with the handshake of net/auth.h for the service
 * "cluster", keyed with the cluster secret (empty when none is configured: then
 * only loopback peers are accepted, and the proofs show only that both sides
 * speak the protocol). The secret never crosses the wire and a recorded
 * handshake does not replay. The identity the opener proves (cl_put_identity)
 * is u8 channel, u16 index, str16 name:
 *   worker -> coordinator, control: CL_NO_INDEX, the worker's --name;
 *   coordinator -> worker, control: the worker's index, the join token the
 *       worker sent in its JOIN (so a worker accepts only the coordinator it
 *       joined, and only one);
 *   worker -> worker, data: the sender's index and name, which must be those
 *       of a current member in the receiver's copy of MEMBERS (a claim for an
 *       index it does not know yet waits for the next MEMBERS, up to the
 *       handshake deadline);
 *   `bettong cluster` -> coordinator, admin: CL_NO_INDEX, "bettong cluster".
 *
 *   opener -> acceptor  AUTH_HELLO (identity)
 *   acceptor -> opener  AUTH_CHALLENGE, or CL_REFUSED (no secret and not loopback)
 *   opener -> acceptor  AUTH_PROOF, only if the acceptor proved the secret;
 *                       otherwise the opener logs it, closes and sends nothing
 *                       else (a worker joining a coordinator that cannot prove
 *                       the secret stops)
 *   acceptor -> opener  CL_WELCOME once the proof holds and the identity is
 *                       accepted, else CL_REFUSED (why) and the acceptor closes
 *   then the channel's own frames; the opener sends nothing queued before the
 *   WELCOME, and the acceptor reads no other frame (none larger than
 *   AUTH_MAX_FRAME) before it sent it.
 * A connection that has not finished the handshake within the handshake
 * deadline (cluster_config_t.handshake_ms, default CL_HANDSHAKE_MS) is closed.
 *
 * Trust: whoever holds the cluster secret can join as a member (and so can do
 * what a member can); the handshake keeps out everyone else and binds each
 * connection to the member it claims to be. It does not encrypt or protect the
 * frames after it: an attacker on the path between members can read and alter
 * them. TLS is the answer to that, and is not done yet. */
#ifndef BETTONG_CPROTO_H
#define BETTONG_CPROTO_H

#include <stddef.h>
#include <stdint.h>

#include "net/authconn.h"
#include "net/tls.h"
#include "net/frame.h"
#include "net/inconn.h"
#include "net/wire.h"

#define CL_MAX_FRAME (256u << 20) /* a slot's state travels in one frame */
#define CL_MAX_ADMIN 4096u        /* frame limit on an admin connection */
#define CL_SERVICE "cluster"      /* the handshake's service name */
#define CL_HANDSHAKE_MS 10000     /* default deadline for a connection's handshake */
#define CL_TOKEN_LEN 32           /* a join token: 16 random bytes in hex */
#define CL_MAX_WORKERS 256u       /* worker indices are below this */
#define CL_NO_INDEX 0xffffu
#define CL_NAME_MAX 64
#define CL_ADDR_MAX 300
#define CL_SECRET_MAX 256
#define CL_DEFAULT_TIMEOUT_MS 5000 /* silence after which a peer counts as lost */

/* How often to show a peer we are alive: a few times per timeout. */
static inline unsigned cl_heartbeat_ms(unsigned timeout_ms)
{
    unsigned hb = timeout_ms / 4;
    return hb < 50 ? 50 : hb > 1000 ? 1000 : hb;
}

enum {
    /* 1 was the HELLO with the secret in clear, before the handshake */
    CL_PING = 2,       /* any channel, to show the sender is alive */
    CL_BYE = 3,        /* any channel: the sender closes on purpose */
    CL_WELCOME = 4,    /* acceptor -> opener: the handshake passed, go on */
    CL_REFUSED = 5,    /* acceptor -> opener: str16 why; the acceptor closes */
    /* data: worker -> worker */
    CL_MSG = 10,       /* u16 pipe, u16 step, rest: the serialized message */
    CL_STATE = 11,     /* u16 slot, u16 n, n x (str16 store, u8 kind, u32 len, bytes) */
    CL_BARRIER = 12,   /* u64 n: what follows on this link comes after checkpoint n */
    CL_MSG_ET = 13,    /* CL_MSG with the event time its source gave: u16 pipe, u16 step,
                          i64 event time, then as CL_MSG (sent when it is not 0) */
    /* control: worker -> coordinator */
    CL_JOIN = 20,      /* str16 name (the one proven), str16 control address, str16 data
                          address, str16 join token (the coordinator proves it back),
                          [str16 metrics address, "" for none] */
    CL_COUNTS = 21,    /* u32 seq, u16 n, n x (u16 peer, u64 sent, u64 processed) */
    CL_INSTALLED = 22, /* u32 slots installed since the last one */
    CL_ACK = 23,       /* u32 seq */
    CL_STATUS = 24,    /* u32 seq, u64 keys, u64 in, u64 out, u64 forwarded, u64 failed */
    CL_STOP = 25,      /* str16 why: asks for a stop of the whole cluster */
    CL_LOADS = 26,     /* u32 seq, u16 n, n x (u16 slot, u32 messages run there since the
                          last LOADQ) */
    CL_CKPT_DONE = 27, /* u64 n, u8 ok: this worker's part of checkpoint n is durable */
    CL_RESTORED = 28,  /* u64 k, u8 ok, u16 n, n x (u64 position, str16 stream) */
    CL_CLAIM = 29,     /* u32 id, str16 stream: a resumable stream connected here */
    CL_SUSPECT = 48,   /* u16 index, u8 ours, str16 why: a data link with that worker
                          closed without a goodbye (ours = 1: our link to it, so we
                          cannot send to it any more); the coordinator checks it on
                          its own link and declares it lost or not */
    /* control: coordinator -> worker */
    CL_MEMBERS = 30,   /* u16 you, u16 n, n x (u16 index, u8 state, str16 name,
                          str16 control, str16 data, str16 metrics) */
    CL_TABLE = 31,     /* u32 seq, ROUTING_SLOTS x u16 owner */
    CL_PAUSE = 32,     /* u32 seq: hold the sources, then answer COUNTS */
    CL_COUNTQ = 33,    /* u32 seq: answer COUNTS */
    CL_MIGRATE = 34,   /* u16 n, n x (u16 slot, u16 to): send these slots' state */
    CL_RESUME = 35,    /* run the sources (the first one starts them) */
    CL_STATUSQ = 36,   /* u32 seq */
    CL_FINISH = 37,    /* [u8 exit code]: the cluster stops: flush the sinks and exit */
    CL_LEAVE = 38,     /* this worker owns no slot any more: flush and exit */
    CL_LOST = 39,      /* u16 index, str16 why */
    CL_LOADQ = 40,     /* u32 seq: answer LOADS, start counting again */
    CL_CKPT = 41,      /* u64 n, u16 n, n x u16 participant: cut checkpoint n */
    CL_CKPT_END = 42,  /* u64 n, u8 complete: checkpoint n is complete or abandoned */
    CL_RESTORE = 43,   /* u64 k, u64 history: load checkpoint k (0: none; output epochs
                          count after history), answer RESTORED */
    CL_STREAMS = 44,   /* u16 n, n x (u64 position, str16 stream): resumable streams'
                          positions at the restored checkpoint, on any worker */
    CL_GRANT = 45,     /* u32 id, u64 position: the stream claimed is this worker's */
    CL_RELEASE = 46,   /* u32 id, str16 stream: let the stream go, answer RELEASED */
    CL_RELEASED = 47,  /* worker -> coordinator: u32 id, u64 position reached */
    /* admin -> coordinator, and its answer */
    CL_ASK_STATUS = 50,
    CL_ASK_SHRINK = 51, /* str16 worker name */
    CL_REPLY = 52,      /* u8 code (0: ok), rest: text for the user */
    CL_ASK_STOP = 53,   /* stop the whole cluster (`bettong cluster shutdown`) */
};

enum { CL_CH_CONTROL = 1, CL_CH_DATA = 2, CL_CH_ADMIN = 3 };

/* Where a member is in its life. */
enum { CL_JOINING = 1, CL_ACTIVE = 2, CL_LEAVING = 3, CL_LEFT = 4, CL_LOST_STATE = 5 };

const char *cl_state_name(int state);

typedef struct {
    char secret[CL_SECRET_MAX];
    size_t len; /* 0: none configured, only loopback peers are accepted */
    /* TLS (--tls-cert/--tls-key, --tls): the cluster's listeners take
     * tls_server, its outbound links tls_client; NULL: plain TCP. Owned by
     * the process (runcl.c), shared by reference. */
    tls_ctx_t *tls_server;
    tls_ctx_t *tls_client;
} cl_secret_t;

/* The frame spec of every cluster listener. */
void cl_frame_spec(frame_spec_t *spec);

/* Append a frame with no fields (PING, BYE, PAUSE-less kinds ...). */
void cl_put_empty(buf_t *b, uint8_t type);
/* Append a frame with one u32 (seq) field. */
void cl_put_u32(buf_t *b, uint8_t type, uint32_t v);

/* The identity an opener proves in the handshake. */
typedef struct {
    int channel;
    unsigned index;
    char name[CL_NAME_MAX];
} cl_hello_t;

/* Append an identity (u8 channel, u16 index, str16 name) to b, unframed: the
 * bytes an opener passes to the handshake. */
void cl_put_identity(buf_t *b, int channel, unsigned index, const char *name);
/* Decode an identity. Returns 0, or -1 if malformed. */
int cl_get_identity(const uint8_t *p, size_t len, cl_hello_t *out);

/* Resolve an address a cluster member listens on (`what` names it in the
 * message): beyond loopback only with a cluster secret. Returns 0 or -1 with err. */
int cl_listen_address(const char *addr, const cl_secret_t *s, const char *what,
                      struct sockaddr_storage *sa, char *err, size_t errlen);

/* The acceptor's side of the handshake on an inbound connection that is not
 * accepted yet: run one frame body. CL_ACC_MORE: go on; CL_ACC_DONE: the peer
 * proved the secret for *out (the caller judges the identity, then answers with
 * cl_welcome or cl_refuse); CL_ACC_REFUSED: refused with a log line and a
 * REFUSED, the connection closes after it (return 0 from the frame callback);
 * CL_ACC_CLOSE: not our protocol, logged, close now (return -1). */
enum { CL_ACC_MORE = 0, CL_ACC_DONE = 1, CL_ACC_REFUSED = -1, CL_ACC_CLOSE = -2 };
int cl_accept_frame(authconn_t *a, const cl_secret_t *s, inconn_t *c, const uint8_t *body,
                    size_t len, cl_hello_t *out);
/* Accept the handshake: send WELCOME and raise the frame limit to max. */
void cl_welcome(inconn_t *c, uint64_t max);
/* Refuse the connection: log why (printf-style), tell the peer, close after. */
void cl_refuse(inconn_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A frame body that is a REFUSED: its reason into why (else NULL is returned). */
const char *cl_refused_why(const uint8_t *body, size_t len, char *why, size_t cap);

/* Positions in a buffer that is being appended to are kept relative to its
 * read offset: an append may compact the buffer (move its unread bytes to the
 * front), which changes absolute positions but not relative ones. */
static inline size_t cl_mark(const buf_t *b) { return buf_unread(b); }
static inline uint8_t *cl_at(buf_t *b, size_t rel) { return buf_head(b) + rel; }
static inline void cl_put_be32(uint8_t *p, size_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* Copy a str16 field into out (cut to fit, NUL-terminated); "" on error. */
void cl_str16(wire_rd_t *r, char *out, size_t cap);

#endif
