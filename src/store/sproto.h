/* The object store's wire protocol, between `bettong store` and the client
 * (python/bettong/_store extension + python/bettong/objects.py).
 *
 * Framing as the pool's: a u32 big-endian length of what follows, a u8 type,
 * the fields. Integers big-endian; str16 = u16 length + bytes (UTF-8); u32-bytes
 * = u32 length + bytes; "rest" = the remaining bytes of the frame.
 *
 * The first frames are the handshake of net/auth.h for the service "store"
 * (HELLO, CHALLENGE, PROOF: each side proves it knows the shared secret without
 * sending it). The identity the client proves is
 *
 *     u8 version, str16 client name                 (sproto_put_identity)
 *
 * Once the client's proof holds the store answers WELCOME or REFUSED. A failed
 * handshake (a wrong proof: a replayed session, a wrong secret) is answered
 * REFUSED "authentication failed: ..." and closed: nothing after it is read, so a
 * recorded session's requests never run again. The store reads nothing else (no
 * pickle) from a peer it has not accepted, and a client reads no answer from a
 * store that has not proved the secret. A store listening on a non-loopback
 * address requires the shared secret.
 *
 * Every request carries a u64 request id chosen by the client; the answer echoes
 * it. A client may pipeline requests; answers to calls on different objects may
 * come back in any order, answers about one object come in request order.
 *
 * Objects: an object id is a 36-character UUID text chosen by the client at
 * make_persistent. A class is registered once per (store, class pickle): its id
 * is a 64-bit hash of the class pickle computed by the client (the store refuses a
 * CLASS whose id it holds with different bytes). A class the store can import by
 * its qualified name is imported; otherwise the pickle (by value) is loaded.
 *
 * Pickles: states, arguments and results are pickled with protocol 5; a persistent
 * object inside them (a proxy on the client, the live object in the store) is
 * pickled as a persistent id: the tuple ("bettong.obj", object_id, class_id). The
 * store resolves such ids to its live objects; the client to proxies.
 *
 *  store -> client  WELCOME        str16 store name
 *  store -> client  REFUSED        str16 reason (also in place of the CHALLENGE,
 *                                  for a HELLO of another handshake version or
 *                                  service)
 *
 *  client -> store  CLASS          u64 req, u64 class_id, str16 qualname, rest: class pickle
 *  client -> store  PERSIST        u64 req, u32 count, count x (str16 object_id,
 *                                  u64 class_id, str16 alias or empty,
 *                                  u32-bytes state: pickled dict of persistent fields)
 *                                  (all of them in one durable transaction)
 *  client -> store  LOOKUP_ALIAS   u64 req, str16 alias
 *  client -> store  LOOKUP_ID      u64 req, str16 object_id
 *  client -> store  CALL           u64 req, str16 object_id, str16 method,
 *                                  rest: pickled (args tuple, kwargs dict), or
 *                                  empty for no arguments
 *  client -> store  GET_FIELD      u64 req, str16 object_id, str16 field
 *  client -> store  SET_FIELD      u64 req, str16 object_id, str16 field, rest: pickled value
 *  client -> store  GET_STATE      u64 req, str16 object_id        (dc_clone)
 *  client -> store  UPDATE         u64 req, str16 object_id, rest: pickled dict (dc_update)
 *  client -> store  ADD_ALIAS      u64 req, str16 object_id, str16 alias
 *  client -> store  DELETE_ALIAS   u64 req, str16 alias
 *  client -> store  ALIASES        u64 req, str16 object_id
 *  client -> store  DELETE         u64 req, str16 object_id
 *  client -> store  GET_CLASS      u64 req, u64 class_id
 *  client -> store  BACKENDS       u64 req                (answer: BACKEND_LIST)
 *  client -> store  MOVE           u64 req, str16 object_id, str16 backend_id
 *                                  (answer: OK None once the object is on
 *                                  that backend and gone from this one)
 *  client -> store  REPLICATE      u64 req, str16 object_id, str16 backend_id
 *                                  (to the master: OK None once backend_id
 *                                  holds a read-only replica, durably, and
 *                                  this backend lists it)
 *  store -> store   REPLICA_PUT    u64 req, str16 object_id, u64 class_id,
 *                                  str16 master backend_id, rest: state
 *                                  (a master to a replica's backend: store
 *                                  this state as a replica of the master's
 *                                  object; OK None once durable)
 *  store -> store   REPLICA_DROP   u64 req, str16 object_id (a master to a
 *                                  replica's backend: forget the replica)
 *  client -> store  FORWARD        u64 req, str16 object_id, str16 target_id
 *                                  (versions: the object goes and its id names
 *                                  target_id from then on; OK None once on disk;
 *                                  OK None at once when object_id is target_id)
 *  client -> store  UNLOAD         u64 req (drop the live objects nothing holds
 *                                  from memory: the next request about one
 *                                  loads it from disk; OK with their number)
 *
 *  store -> client  OK             u64 req, rest: pickled value (None for commands)
 *  store -> client  REF            u64 req, str16 object_id, u64 class_id (lookups)
 *  store -> client  RAISED         u64 req, rest: pickled (exception or None,
 *                                  type qualname, message, traceback text)
 *  store -> client  FAILED         u64 req, u8 code, str16 message
 *                                  (code: see store_error; NOT_FOUND covers an
 *                                  unknown alias or id, ALIAS_TAKEN a taken alias,
 *                                  NO_ATTRIBUTE a method or field the class lacks,
 *                                  REFERENCED a DELETE of an object that other
 *                                  stored objects refer to)
 *  store -> client  CLASS_BYTES    u64 req, rest: class pickle
 *  store -> client  BACKEND_LIST   u64 req, u32 count, count x (str16 backend_id,
 *                                  str16 name, str16 address): the answering
 *                                  backend first
 *
 * REF ends with str16 backend_id: the backend that holds the object, then
 * u16 count, count x str16 backend_id: the backends that hold a replica of it
 * (absent from a store of before replicas: none).
 *
 * Several backends (`bettong store --metadata`, store/meta.h): each object lives
 * on one backend; requests about it go there (a backend answers NOT_FOUND for
 * an object it does not hold: the client looks it up again, LOOKUP_ID, and
 * follows it). LOOKUP_ALIAS and LOOKUP_ID answer for objects on any backend;
 * aliases are unique across the service. MOVE hands the object (state, class,
 * aliases) to the other backend as a client of it, then deletes it here; the
 * object keeps its id, so references to it keep working.
 *
 * Replicas (REPLICATE): read-only copies of an object on other backends. The
 * master M sends the class (CLASS) and the stored state (REPLICA_PUT) to the
 * replica's backend R as its client; R stores it marked as a replica of M, M
 * lists R (in its LMDB and in the service's directory). Every later write of
 * the object on M (CALL, SET_FIELD, UPDATE that changed it) first sends
 * REPLICA_PUT with the new state to every replica and waits for each one's
 * durable answer, then commits on M and answers: a read on a replica that
 * starts after a write's answer sees that write (or a later one). A replica
 * that does not answer (within BETTONG_REPLICA_TIMEOUT seconds, default 5) is
 * dropped from M's list and the write goes on. DELETE and MOVE on M send
 * REPLICA_DROP to every replica first. On R a replica answers GET_FIELD and
 * GET_STATE; CALL, SET_FIELD, UPDATE, DELETE, MOVE, ADD_ALIAS, ALIASES and
 * REPLICATE about it answer NOT_FOUND (the client looks it up: LOOKUP_ID on R
 * names M), and R publishes no location for it.
 *
 * Versions (FORWARD): consolidating a version into its original replaces
 * each version by a forward to the original on the version's backend. A
 * request naming a forwarded id acts on the original when this backend holds
 * it (LOOKUP_ID and LOOKUP_ALIAS answer REF with the original's id); else it
 * fails FORWARDED, whose message is the original's id, and the client sends
 * it there. A stored reference to a forwarded id loads as the original. The
 * version's own aliases go; what referred to it keeps its count on the
 * version's id (the original's count does not include it).
 *
 * A CALL, SET_FIELD, UPDATE, PERSIST, DELETE or alias change that modified the
 * store is committed to disk before its answer is sent. A CALL that raises leaves
 * the object as it was before the call.
 *
 * Added by the store's implementation (no new messages or fields; what the store
 * does where the text above leaves a choice):
 *
 * - Frames are at most 1 GiB (the length field); a handshake frame at most
 *   AUTH_MAX_FRAME. A malformed frame (truncated fields, unknown type, over the
 *   limit, anything but the handshake first) closes that connection only. A well-formed request with an
 *   invalid name (object id not 1..128 bytes of UTF-8, alias not 1..400 bytes,
 *   method or field not 1..255 bytes) is answered FAILED BAD_REQUEST.
 * - WELCOME's store name is "bettong store DIR".
 * - Answers about one object (every request naming an object id) come in request
 *   order; a read is never answered before the changes it saw are on disk. CLASS,
 *   PERSIST, LOOKUP_ALIAS, DELETE_ALIAS and GET_CLASS run in arrival order among
 *   themselves and see every change requested before them.
 * - PERSIST naming an id that already exists (stored, or in a PERSIST not yet
 *   answered) fails the whole batch with BAD_REQUEST; a taken alias with
 *   ALIAS_TAKEN; a class id never sent with UNKNOWN_CLASS. Requests about its
 *   objects sent before its answer wait for it.
 * - ADD_ALIAS of an alias that already names the same object succeeds.
 * - CLASS: qualname is "module:qualname" (or "module.qualname"); a class whose
 *   module does not import (or is __main__) is loaded from the pickle.
 * - In the store a live object is built as cls.__new__(cls); its instance dict
 *   gets the state's items, "_bettong_id" (its id, str) and "_bettong_cid" (its
 *   class id, int). Its persistent fields are the stored state's keys plus the
 *   annotated names of the class and its bases that the instance has (ClassVar
 *   annotations and names starting with "_bt" excluded, as the client computes
 *   them), plus any field set by SET_FIELD or UPDATE. Fields are read and set
 *   with object.__getattribute__ / object.__setattr__ (a class's own
 *   __getattr__ / __setattr__ are not called for GET_FIELD, SET_FIELD, UPDATE or
 *   the method lookup of CALL).
 * - An object is written only when the pickle of its persistent fields changed.
 *   When a CALL's result or the object's new state cannot be pickled, the call is
 *   undone and answered FAILED INTERNAL with the reason.
 * - RAISED's type is "module.Qualname" ("ValueError" for builtins); the traceback
 *   is the formatted text of the method's frames.
 * - A persistent id of an object that does not exist: in CALL arguments or a
 *   SET_FIELD / UPDATE value, FAILED NOT_FOUND; inside a stored state, None.
 * - OK for ALIASES holds a pickled list of str; LOOKUP_ID answers REF.
 * - DELETE of an object whose id is inside the stored state of another object
 *   (a persistent id; an object naming itself does not count) fails
 *   REFERENCED (STORE_REFERENCED_FMT) and changes nothing: a stored reference
 *   never dangles. The store counts the stored references to each object in
 *   the commit that writes each state (srefs.h); a PERSIST or CALL that adds a
 *   reference and a DELETE of its target are ordered by the committer.
 * - A class that defines its own __getstate__ (not object's) stores what it
 *   returns (PERSIST's state, GET_STATE's answer and the store's writes are
 *   that value pickled, not a dict of fields); one that defines __setstate__
 *   is given the state by it when the store loads the object (and after a
 *   failed call: its instance dict emptied first), else the state's items go
 *   into the instance dict. UPDATE and SET_FIELD still set fields by name.
 * - During a CALL, an object of a class derived from bettong.objects'
 *   Persistent that is made (Persistent.__new__), made persistent, or met
 *   without an id while the target's new state or the result is pickled, is
 *   given an id by the store (a UUID text, like a client's) and becomes a
 *   persistent object of the store: its state (and its class, registered by
 *   the store when it was not sent by a client) is written with the call's
 *   change and the aliases the call added (make_persistent(alias=...),
 *   add_alias: AliasTaken inside the method for an alias on disk or added by
 *   a call not yet on disk) in the call's one durable unit, before the answer.
 *   Inside references point to it by persistent id. A CALL that raises stores
 *   none of them. Requests about one of these objects come in only after the
 *   answer that named it, so after its unit. */
#ifndef BETTONG_SPROTO_H
#define BETTONG_SPROTO_H

#include <stddef.h>
#include <stdint.h>

#include "net/wire.h"
#include "util/buf.h"

/* 2: the handshake of net/auth.h replaced version 1's HELLO (which carried the
 * secret itself). */
#define SPROTO_VERSION 2
/* The service name the handshake names. */
#define STORE_SERVICE "store"
/* The longest client name an identity carries (the store keeps 63 bytes). */
#define SPROTO_NAME_MAX 255

typedef enum {
    /* 1 was version 1's HELLO */
    SMSG_WELCOME = 2,
    SMSG_REFUSED = 3,
    SMSG_CLASS = 10,
    SMSG_PERSIST = 11,
    SMSG_LOOKUP_ALIAS = 12,
    SMSG_LOOKUP_ID = 13,
    SMSG_CALL = 14,
    SMSG_GET_FIELD = 15,
    SMSG_SET_FIELD = 16,
    SMSG_GET_STATE = 17,
    SMSG_UPDATE = 18,
    SMSG_ADD_ALIAS = 19,
    SMSG_DELETE_ALIAS = 20,
    SMSG_ALIASES = 21,
    SMSG_DELETE = 22,
    SMSG_GET_CLASS = 23,
    SMSG_BACKENDS = 24,
    SMSG_MOVE = 25,
    SMSG_REPLICATE = 26,
    SMSG_REPLICA_PUT = 27,
    SMSG_REPLICA_DROP = 28,
    SMSG_FORWARD = 29,
    SMSG_UNLOAD = 30,
    SMSG_OK = 40,
    SMSG_REF = 41,
    SMSG_RAISED = 42,
    SMSG_FAILED = 43,
    SMSG_CLASS_BYTES = 44,
    SMSG_BACKEND_LIST = 45,
} smsg_type;

typedef enum {
    STORE_ERR_NOT_FOUND = 1,
    STORE_ERR_ALIAS_TAKEN = 2,
    STORE_ERR_NO_ATTRIBUTE = 3,
    STORE_ERR_BAD_REQUEST = 4,
    STORE_ERR_UNKNOWN_CLASS = 5,  /* PERSIST named a class_id never sent */
    STORE_ERR_INTERNAL = 6,       /* storage failure, unpicklable result, ... */
    STORE_ERR_REFERENCED = 7,     /* DELETE of an object that stored objects refer to */
    STORE_ERR_FORWARDED = 8,      /* the id was forwarded (FORWARD): the message is
                                     the id it names now, held by another backend */
} store_error;

/* FAILED REFERENCED's message (object id, count). */
#define STORE_REFERENCED_FMT                                                               \
    "object '%.*s' is still referenced by %llu stored object(s): remove those references " \
    "(or delete the objects that hold them) first"

/* Append the identity a client proves in the handshake (see above) to b; a name
 * longer than SPROTO_NAME_MAX is cut. Returns 0 or -1 (out of memory). */
static inline int sproto_put_identity(buf_t *b, const char *name, size_t name_len)
{
    wire_wr_t w;
    wire_begin_fields(&w, b);
    wire_put_u8(&w, SPROTO_VERSION);
    wire_put_str16(&w, name, name_len < SPROTO_NAME_MAX ? name_len : SPROTO_NAME_MAX);
    return wire_end_fields(&w);
}

/* An identity as sproto_get_identity reads it; name points into the input. */
typedef struct {
    uint8_t version;
    const uint8_t *name;
    size_t name_len;
} sproto_identity_t;

/* Decode an identity (see above), as the store does after the handshake: a
 * function of its own so that the fuzz harnesses run the store's decoder. The
 * version is left for the caller to judge; bytes after the name are not looked
 * at. Returns 0, or -1 if it is cut short. */
static inline int sproto_get_identity(const uint8_t *p, size_t len, sproto_identity_t *id)
{
    wire_rd_t r;
    wire_rd_init(&r, p, len);
    id->version = wire_u8(&r);
    id->name = wire_str16(&r, &id->name_len);
    return r.err ? -1 : 0;
}

#endif
