/* The object store's Python side: live objects, classes, pickles with
 * persistent references, and the requests that run Python (CALL, GET_FIELD,
 * SET_FIELD, GET_STATE, UPDATE, DELETE). Everything here runs with the GIL held
 * (a Python thread of pyexec.h, or the main thread at start and stop); the GIL
 * is what guards the registry below.
 *
 * The registry maps object id -> the live object (one Python object per id in
 * the process), its class, its stored state (the pickle of its persistent
 * fields as last written) and the names of those fields. A miss loads the
 * object from LMDB: cls.__new__(cls), then its instance dict is given the
 * state's items and `_bettong_id` (its id). Its persistent fields are the keys
 * of the stored state plus every annotated field of the class (its MRO) that
 * the instance has.
 *
 * Persistent references: pickles made here call persistent_id for every
 * object: an instance of a loaded class that carries `_bettong_id` becomes
 * ("bettong.obj", object_id, class_id). Loading resolves such ids to the
 * registry's live objects (loading them as needed), so an object graph keeps
 * its identity. An id that does not exist is an error in arguments (the
 * request fails NOT_FOUND) and None inside a stored state (logged).
 *
 * State: a class's own __getstate__ / __setstate__, when it defines them, say
 * what is stored and how an object is rebuilt from it (sproto.h).
 *
 * Calls make objects: an instance of a Persistent class made during a CALL is
 * adopted (an id, a registry entry) and written by the call's unit with the
 * target's change and the aliases the call added; the module
 * _bettong_instore is how bettong.objects, inside the store, reaches this
 * registry (sproto.h, spy.c "calls").
 *
 * Writes: when a request changed an object's persistent state, the new state
 * is handed to the committer in the request's own unit, with the answer the
 * committer's done callback is to send; otherwise the answer goes at once.
 *
 * Cache: at most `cache` loaded objects are kept; past that, the least
 * recently used ones that nothing else references (reference count 1: the
 * registry's own), that are not being loaded and whose last write is on disk
 * are dropped (spy_trim, after every job). Objects that other live objects
 * reference stay: the bound is soft. */
#ifndef BETTONG_SPY_H
#define BETTONG_SPY_H

#include <stddef.h>
#include <stdint.h>

#include "store/commit.h"
#include "store/sdb.h"
#include "store/sreq.h"

/* The Python side's state: the registry, the classes, the Python objects it
 * uses. One per store, made by spy_init and held by the store, which hands it
 * to every function below; Python calls into C (pickling's persistent_id and
 * persistent_load, the _bettong_instore module) reach it through their
 * module. */
typedef struct spy spy_t;

/* With the GIL (the main thread, once). inline_us: the longest a request may
 * run on the loop thread (spy_run_inline); 0: never there. service: the
 * store is a backend of a service of several (meta.h): a reference to an
 * object it does not hold becomes a client proxy (bettong.objects) that calls
 * the backend holding it, and such proxies pickle as references. NULL with
 * err set on failure. */
spy_t *spy_init(sdb_t *db, committer_t *cm, size_t cache, unsigned inline_us, int service,
                char *err, size_t errlen);
/* With the GIL: drop every live object and class, and sp. */
void spy_fini(spy_t *sp);

/* The request's run (GIL held; INLINE or THREAD, sreq.h). It reads the
 * message (type, id, oid, name, class_id, payload) and leaves either
 * - its answer in r->answer, to go now (write_seq 0), or
 * - a submitted unit (r->unit with r->op or ops laid out in r->unit_bytes;
 *   unit.ctx set by the caller) whose done callback sends r->answer:
 *   write_seq is the unit's sequence number. Once the unit is submitted the
 *   run touches neither r->answer nor the unit (its ops, r->unit_bytes)
 *   again;
 * an empty answer and no unit mean out of memory (the caller answers). */
void spy_run(spy_t *sp, sreq_t *r);
/* Run one request on the calling thread if it qualifies (GIL held; the loop
 * thread, while no Python thread runs a request): its object is live, and it is
 * a GET_STATE, or a CALL / GET_FIELD / SET_FIELD of a method or field of that
 * class whose last INLINE_AFTER runs on the Python threads each took at most
 * inline_us of CPU and did not wait (a voluntary context switch: sleep, I/O, a
 * lock, the GIL). A run here that takes more CPU than inline_us, or waits and
 * takes longer than inline_us, sends the kind back to the threads (it must
 * qualify again); after INLINE_STRIKES such runs it never runs here again
 * (logged). Returns 1 if it ran (as spy_run does), 0 if not (nothing was
 * done). */
int spy_run_inline(spy_t *sp, sreq_t *r);
/* Drop idle objects past the cache bound (GIL held). */
void spy_trim(spy_t *sp);
/* With the GIL: drop every live object that spy_trim could drop, whatever the
 * cache's size (UNLOAD), until none is left that nothing else holds; append
 * the answer to request req (OK with the number dropped) to answer. */
void spy_unload(spy_t *sp, buf_t *answer, uint64_t req);
/* For the metrics (any thread, no GIL): lookups of an object id that found it
 * loaded (hits) and that read it from LMDB (loads: found there or not), and
 * the loaded objects as of the last spy_trim. */
void spy_cache_stats(const spy_t *sp, uint64_t *hits, uint64_t *loads, uint64_t *live);
/* Loaded objects now (GIL held). */
size_t spy_cached(const spy_t *sp);

#endif
