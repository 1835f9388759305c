/* State in checkpoints: the entries of a snapshot file (stream/snapshot.h)
 * that hold state stores, made from a registry and applied back to one.
 * A full snapshot pickles each slot's dict whole (one C pickle call per slot);
 * an incremental one pickles, per slot, a dict of just the keys marked changed
 * since the last checkpoint, so its size follows the changed keys. */
#ifndef BETTONG_STSNAP_H
#define BETTONG_STSNAP_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#include "net/wire.h"
#include "stream/state.h"
#include "util/buf.h"

#define STSNAP_MAX_STORES 65535u

typedef struct {
    uint64_t entries;   /* slot or single entries written */
    uint64_t keys;      /* keys in them */
} stsnap_stats_t;

/* With GIL. Append the state entries of a checkpoint to b, full or
 * incremental, and clear the change marks. Returns 0, or -1 with a Python
 * exception (b may hold a partial entry: the caller drops the snapshot). */
int stsnap_write(state_registry_t *r, int full, buf_t *b, stsnap_stats_t *st);

/* Store ids of the file being applied (ids are per file). */
typedef struct {
    state_store_t **by_id;
    size_t n;
} stsnap_ids_t;

/* With GIL. Apply one entry: returns 1 if it was a state entry (applied), 0 if
 * it is not one of stsnap's, -1 with err set (a Python error is cleared into
 * err). A store the application no longer has is skipped with a warning. */
int stsnap_apply(state_registry_t *r, stsnap_ids_t *ids, uint8_t type, wire_rd_t *f, char *err,
                 size_t errlen);
void stsnap_ids_free(stsnap_ids_t *ids);

/* With GIL. pickle.dumps(obj, 5) appended to b / pickle.loads of bytes: the
 * form of everything a checkpoint keeps. */
int stsnap_pickle_into(PyObject *obj, wire_wr_t *w);
PyObject *stsnap_unpickle(const uint8_t *p, size_t n);

#endif
