/* The object store's wire protocol, between `bettong store` and the client
 * (python/bettong/_store extension + python/bettong/objects.py).
 *
 * Framing as the pool's: a u32 big-endian length of what follows, a u8 type,
 * the fields. Integers big-endian; str16 = u16 length + bytes (UTF-8); u32-bytes
 * = u32 length + bytes; "rest" = the remaining bytes of the frame.
 *
 * The first message is HELLO; the store answers WELCOME or REFUSED and reads
 * nothing else (no pickle) from a peer it has not accepted. A store listening on a
 * non-loopback address requires the shared secret.
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
 *  client -> store  HELLO          u8 version, str16 secret, str16 client name
 *  store -> client  WELCOME        str16 store name
 *  store -> client  REFUSED        str16 reason
 *
 *  client -> store  CLASS          u64 req, u64 class_id, str16 qualname, rest: class pickle
 *  client -> store  PERSIST        u64 req, u32 count, count x (str16 object_id,
 *                                  u64 class_id, str16 alias or empty,
 *                                  u32-bytes state: pickled dict of persistent fields)
 *                                  (all of them in one durable transaction)
 *  client -> store  LOOKUP_ALIAS   u64 req, str16 alias
 *  client -> store  LOOKUP_ID      u64 req, str16 object_id
 *  client -> store  CALL           u64 req, str16 object_id, str16 method,
 *                                  rest: pickled (args tuple, kwargs dict)
 *  client -> store  GET_FIELD      u64 req, str16 object_id, str16 field
 *  client -> store  SET_FIELD      u64 req, str16 object_id, str16 field, rest: pickled value
 *  client -> store  GET_STATE      u64 req, str16 object_id        (dc_clone)
 *  client -> store  UPDATE         u64 req, str16 object_id, rest: pickled dict (dc_update)
 *  client -> store  ADD_ALIAS      u64 req, str16 object_id, str16 alias
 *  client -> store  DELETE_ALIAS   u64 req, str16 alias
 *  client -> store  ALIASES        u64 req, str16 object_id
 *  client -> store  DELETE         u64 req, str16 object_id
 *  client -> store  GET_CLASS      u64 req, u64 class_id
 *
 *  store -> client  OK             u64 req, rest: pickled value (None for commands)
 *  store -> client  REF            u64 req, str16 object_id, u64 class_id (lookups)
 *  store -> client  RAISED         u64 req, rest: pickled (exception or None,
 *                                  type qualname, message, traceback text)
 *  store -> client  FAILED         u64 req, u8 code, str16 message
 *                                  (code: see store_error; NOT_FOUND covers an
 *                                  unknown alias or id, ALIAS_TAKEN a taken alias,
 *                                  NO_ATTRIBUTE a method or field the class lacks)
 *  store -> client  CLASS_BYTES    u64 req, rest: class pickle
 *
 * A CALL, SET_FIELD, UPDATE, PERSIST, DELETE or alias change that modified the
 * store is committed to disk before its answer is sent. A CALL that raises leaves
 * the object as it was before the call. */
#ifndef BETTONG_SPROTO_H
#define BETTONG_SPROTO_H

#define SPROTO_VERSION 1

typedef enum {
    SMSG_HELLO = 1,
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
    SMSG_OK = 40,
    SMSG_REF = 41,
    SMSG_RAISED = 42,
    SMSG_FAILED = 43,
    SMSG_CLASS_BYTES = 44,
} smsg_type;

typedef enum {
    STORE_ERR_NOT_FOUND = 1,
    STORE_ERR_ALIAS_TAKEN = 2,
    STORE_ERR_NO_ATTRIBUTE = 3,
    STORE_ERR_BAD_REQUEST = 4,
    STORE_ERR_UNKNOWN_CLASS = 5,  /* PERSIST named a class_id never sent */
    STORE_ERR_INTERNAL = 6,       /* storage failure, unpicklable result, ... */
} store_error;

#endif
