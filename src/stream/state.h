/* State objects of stateful steps. One store per state name, shared by every
 * step (in any pipeline) that names it. A partitioned store keeps one dict per
 * routing slot mapping key -> state object, so the state of a slot can be
 * handed to another worker as a unit. */
#ifndef BETTONG_STATE_H
#define BETTONG_STATE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>

#include "stream/routing.h"

typedef struct state_store {
    char *name;
    unsigned home_slot;    /* the slot that holds the to_stateful object */
    PyObject *state_class; /* owned */
    PyObject *single;      /* owned; the to_stateful object, made on first use */
    PyObject *slots[ROUTING_SLOTS]; /* owned dicts, made on first use */
    /* With resilience: the keys whose state changed since the last checkpoint,
     * per slot (owned sets, made on first change), and whether the single
     * object did. An incremental snapshot writes only these. */
    PyObject *changed[ROUTING_SLOTS];
    int single_changed;
    /* A snapshot in progress (copy on write, stream/stsnap.c): the slots whose
     * state as of the checkpoint's cut is not written yet. A slot is written
     * before anything reads or changes it (state_touch); the rest are written
     * a little at a time between batches. For an incremental snapshot,
     * pending_changed holds the keys changed before the cut. */
    uint8_t pending[ROUTING_SLOTS];
    PyObject *pending_changed[ROUTING_SLOTS];
    int single_pending;
    unsigned npending;
    void (*write_pending)(void *ctx, struct state_store *s, int single, unsigned slot);
    void *write_ctx;
    unsigned snap_id;      /* its id in the snapshot being written */
    size_t keys;
    struct state_store *next;
} state_store_t;

typedef struct {
    state_store_t *head;
} state_registry_t;

/* Before a slot's state (or the single object) is used: a snapshot still
 * owing it writes it first. */
static inline void state_touch(state_store_t *s, unsigned slot)
{
    if (s->npending && s->pending[slot])
        s->write_pending(s->write_ctx, s, 0, slot);
}

static inline void state_touch_single(state_store_t *s)
{
    if (s->single_pending)
        s->write_pending(s->write_ctx, s, 1, s->home_slot);
}

/* With GIL. Find the store named `name` or make it. A different class for an
 * existing name is refused (returns NULL with err set). */
state_store_t *state_store_get(state_registry_t *r, const char *name, PyObject *state_class,
                               char *err, size_t errlen);
/* The store named `name`, or NULL. */
state_store_t *state_store_find(state_registry_t *r, const char *name);
/* Borrowed reference to the state for `key` in `slot`, created on first use by
 * calling the state class. NULL with a Python exception on failure. */
PyObject *state_for_key(state_store_t *s, unsigned slot, PyObject *key);
/* Borrowed reference to the single state object. */
PyObject *state_single(state_store_t *s);
/* With GIL. Take a slot's states out of the store: a new reference to its dict
 * (key -> state), or NULL if it holds none; the store forgets them. */
PyObject *state_slot_take(state_store_t *s, unsigned slot);
/* With GIL. Add the states of `dict` (key -> state) to a slot, replacing
 * states with the same key. Returns 0, or -1 with a Python exception. */
int state_slot_put(state_store_t *s, unsigned slot, PyObject *dict);
/* With GIL. Take the to_stateful object (new reference or NULL) / install one. */
PyObject *state_single_take(state_store_t *s);
void state_single_put(state_store_t *s, PyObject *obj);
/* With GIL. Note that the state of `key` in `slot` changed (key NULL: the
 * single object). Returns 0, or -1 with a Python exception. */
int state_mark_changed(state_store_t *s, unsigned slot, PyObject *key);
/* With GIL. Forget every change mark (after a full snapshot). */
void state_clear_changed(state_store_t *s);
/* How many keys the slots that `keep(slot)` accepts (all: NULL) hold, across stores. */
size_t state_count_keys(const state_registry_t *r, int (*keep)(const void *ctx, unsigned slot),
                        const void *ctx);
/* With GIL: drop every state object and change mark, keeping the stores. */
void state_registry_clear(state_registry_t *r);
/* With GIL: drop every store. */
void state_registry_free(state_registry_t *r);

#endif
