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

/* Writing a checkpoint's state without stopping the loop for it (copy on
 * write at the grain of a slot): stsnap_begin marks, at the cut, what the
 * snapshot owes (every slot with state, or the slots with changed keys);
 * stsnap_step writes owed slots for up to a budget of time between batches;
 * a step that is about to use an owed slot writes it first (state_touch), so
 * every slot is written as it was at the cut. With GIL, all of them. */
typedef struct {
    state_registry_t *r;
    buf_t *b;
    int full;
    int active;
    int failed;          /* a pickling error: the snapshot is to be dropped */
    size_t left;         /* owed slots and single objects */
    stsnap_stats_t st;
} stsnap_run_t;

/* Write the stores' names into b and mark what is owed. Returns 0, or -1 with
 * a Python exception (nothing marked). */
int stsnap_begin(stsnap_run_t *run, state_registry_t *r, int full, buf_t *b);
/* Write owed state for up to budget_ns. Returns 1 once nothing is owed (then
 * run->failed says whether the snapshot is whole). */
int stsnap_step(stsnap_run_t *run, uint64_t budget_ns);
/* Forget what is still owed (after the last step, or to drop the snapshot). */
void stsnap_end(stsnap_run_t *run);

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
