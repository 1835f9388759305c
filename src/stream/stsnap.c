#include "stream/stsnap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "py/pyerr.h"
#include "stream/snapshot.h"
#include "util/hist.h"
#include "util/log.h"

static PyObject *pickle_dumps, *pickle_loads; /* owned for the process's life */

static int load_pickle(void)
{
    if (pickle_dumps)
        return 0;
    PyObject *m = PyImport_ImportModule("pickle");
    if (!m)
        return -1;
    pickle_dumps = PyObject_GetAttrString(m, "dumps");
    pickle_loads = PyObject_GetAttrString(m, "loads");
    Py_DECREF(m);
    if (!pickle_dumps || !pickle_loads) {
        Py_CLEAR(pickle_dumps);
        Py_CLEAR(pickle_loads);
        return -1;
    }
    return 0;
}

int stsnap_pickle_into(PyObject *obj, wire_wr_t *w)
{
    if (load_pickle() < 0)
        return -1;
    PyObject *proto = PyLong_FromLong(5);
    PyObject *data = proto ? PyObject_CallFunctionObjArgs(pickle_dumps, obj, proto, NULL) : NULL;
    Py_XDECREF(proto);
    if (!data)
        return -1;
    wire_put_bytes(w, PyBytes_AS_STRING(data), (size_t)PyBytes_GET_SIZE(data));
    Py_DECREF(data);
    return 0;
}

PyObject *stsnap_unpickle(const uint8_t *p, size_t n)
{
    if (load_pickle() < 0)
        return NULL;
    PyObject *data = PyBytes_FromStringAndSize((const char *)p, (Py_ssize_t)n);
    PyObject *obj = data ? PyObject_CallOneArg(pickle_loads, data) : NULL;
    Py_XDECREF(data);
    return obj;
}

/* A dict of the changed keys of a slot that still hold state. */
static PyObject *changed_items(PyObject *slot_dict, PyObject *changed)
{
    PyObject *d = PyDict_New();
    if (!d)
        return NULL;
    PyObject *it = PyObject_GetIter(changed), *key;
    if (!it) {
        Py_DECREF(d);
        return NULL;
    }
    while ((key = PyIter_Next(it))) {
        PyObject *v = slot_dict ? PyDict_GetItemWithError(slot_dict, key) : NULL;
        int rc = v ? PyDict_SetItem(d, key, v) : (PyErr_Occurred() ? -1 : 0);
        Py_DECREF(key);
        if (rc < 0)
            break;
    }
    Py_DECREF(it);
    if (PyErr_Occurred()) {
        Py_DECREF(d);
        return NULL;
    }
    return d;
}

/* One entry: its type, the store's id, maybe a slot, then a pickle. */
static int put_entry(buf_t *b, uint8_t type, unsigned id, int with_slot, unsigned slot,
                     PyObject *obj)
{
    wire_wr_t w;
    wire_begin(&w, b, type, SNAP_MAX_ENTRY);
    wire_put_u16(&w, (uint16_t)id);
    if (with_slot)
        wire_put_u16(&w, (uint16_t)slot);
    if (stsnap_pickle_into(obj, &w) < 0)
        return -1;
    if (wire_end(&w) < 0) {
        PyErr_SetString(PyExc_MemoryError, "state does not fit a snapshot entry");
        return -1;
    }
    return 0;
}

/* The changed keys of a slot, appended to an SNAP_DELTA list [slot, {key:
 * state}, ...] (one pickle call for many slots: what each slot and each
 * state's class cost is paid once per entry). Returns keys added, or -1. */
static Py_ssize_t add_changes(PyObject *list, state_store_t *s, unsigned slot)
{
    PyObject *d = changed_items(s->slots[slot], s->pending_changed[slot]);
    PyObject *n = d ? PyLong_FromUnsignedLong(slot) : NULL;
    int rc = n && PyList_Append(list, n) == 0 && PyList_Append(list, d) == 0 ? 0 : -1;
    Py_ssize_t keys = rc == 0 ? PyDict_GET_SIZE(d) : -1;
    Py_XDECREF(n);
    Py_XDECREF(d);
    Py_CLEAR(s->pending_changed[slot]);
    return keys;
}

static void done_one(stsnap_run_t *run, state_store_t *s, int single, unsigned slot)
{
    if (single) {
        s->single_pending = 0;
    } else {
        s->pending[slot] = 0;
        s->npending--;
    }
    run->left--;
}

/* A Python error while writing: reported once, the snapshot is dropped (the
 * flags still go, so processing is not held up). */
static void run_failed(stsnap_run_t *run)
{
    if (!run->failed)
        pyerr_report("checkpoint (pickling state)");
    PyErr_Clear();
    run->failed = 1;
}

/* Write one pending slot (or single object) of s, as it was at the cut. */
static void write_one(stsnap_run_t *run, state_store_t *s, int single, unsigned slot)
{
    int rc = 0;
    if (run->failed) {
        /* nothing more is written */
    } else if (single) {
        rc = put_entry(run->b, SNAP_SINGLE, s->snap_id, 0, 0, s->single);
        run->st.entries++;
        run->st.keys++;
    } else if (run->full) {
        PyObject *dict = s->slots[slot];
        if (dict && PyDict_GET_SIZE(dict) > 0) {
            rc = put_entry(run->b, SNAP_SLOT, s->snap_id, 1, slot, dict);
            run->st.entries++;
            run->st.keys += (uint64_t)PyDict_GET_SIZE(dict);
        }
    } else {
        PyObject *list = PyList_New(0);
        Py_ssize_t keys = list ? add_changes(list, s, slot) : -1;
        rc = keys < 0 ? -1 : put_entry(run->b, SNAP_DELTA, s->snap_id, 0, 0, list);
        Py_XDECREF(list);
        run->st.entries++;
        run->st.keys += keys > 0 ? (uint64_t)keys : 0;
    }
    if (rc < 0)
        run_failed(run);
    if (!single)
        Py_CLEAR(s->pending_changed[slot]);
    done_one(run, s, single, slot);
}

/* state_touch: a step is about to use a slot the snapshot still owes. */
static void write_pending(void *ctx, state_store_t *s, int single, unsigned slot)
{
    write_one(ctx, s, single, slot);
}

static int put_store(buf_t *b, state_store_t *s)
{
    wire_wr_t w;
    wire_begin(&w, b, SNAP_STORE, SNAP_MAX_ENTRY);
    wire_put_u16(&w, (uint16_t)s->snap_id);
    wire_put_str16(&w, s->name, strlen(s->name));
    return wire_end(&w);
}

/* Mark what the snapshot owes of s: every slot with state (full), or the
 * slots with changes, whose change sets move aside (new changes go to fresh
 * ones, for the next checkpoint). */
static void mark_store(stsnap_run_t *run, state_store_t *s)
{
    for (unsigned slot = 0; slot < ROUTING_SLOTS; slot++) {
        int owed = run->full ? s->slots[slot] && PyDict_GET_SIZE(s->slots[slot]) > 0
                             : s->changed[slot] != NULL;
        if (!owed)
            continue;
        if (!run->full) {
            s->pending_changed[slot] = s->changed[slot];
            s->changed[slot] = NULL;
        }
        s->pending[slot] = 1;
        s->npending++;
        run->left++;
    }
    if (s->single && (run->full || s->single_changed)) {
        s->single_pending = 1;
        run->left++;
    }
    s->single_changed = 0;
    if (run->full)
        state_clear_changed(s);
    s->write_pending = write_pending;
    s->write_ctx = run;
}

int stsnap_begin(stsnap_run_t *run, state_registry_t *r, int full, buf_t *b)
{
    memset(run, 0, sizeof *run);
    run->r = r;
    run->b = b;
    run->full = full;
    unsigned id = 0;
    for (state_store_t *s = r->head; s; s = s->next, id++) {
        if (id >= STSNAP_MAX_STORES) {
            PyErr_SetString(PyExc_OverflowError, "too many state stores for a snapshot");
            return -1;
        }
        s->snap_id = id;
        if (put_store(b, s) < 0) {
            PyErr_NoMemory();
            return -1;
        }
    }
    for (state_store_t *s = r->head; s; s = s->next)
        mark_store(run, s);
    run->active = 1;
    return 0;
}

/* Incremental: the pending slots of s, several to an entry. */
static void step_changes(stsnap_run_t *run, state_store_t *s, uint64_t deadline)
{
    PyObject *list = PyList_New(0);
    Py_ssize_t keys = 0;
    unsigned n = 0;
    for (unsigned slot = 0; list && slot < ROUTING_SLOTS && s->npending; slot++) {
        if (!s->pending[slot])
            continue;
        Py_ssize_t k = add_changes(list, s, slot);
        done_one(run, s, 0, slot);
        if (k < 0) {
            Py_CLEAR(list);
            break;
        }
        keys += k;
        if (++n % 4 == 0 && (keys >= 100000 || now_ns() >= deadline))
            break;
    }
    if (list && PyList_GET_SIZE(list) > 0 && !run->failed &&
        put_entry(run->b, SNAP_DELTA, s->snap_id, 0, 0, list) < 0)
        Py_CLEAR(list);
    if (!list)
        run_failed(run);
    else if (PyList_GET_SIZE(list) > 0) {
        run->st.entries++;
        run->st.keys += (uint64_t)keys;
    }
    Py_XDECREF(list);
}

int stsnap_step(stsnap_run_t *run, uint64_t budget_ns)
{
    uint64_t deadline = now_ns() + budget_ns;
    for (state_store_t *s = run->r->head; s && run->left; s = s->next) {
        if (s->single_pending)
            write_one(run, s, 1, s->home_slot);
        while (s->npending && now_ns() < deadline) {
            if (!run->full) {
                step_changes(run, s, deadline);
                continue;
            }
            unsigned n = 0;
            for (unsigned slot = 0; slot < ROUTING_SLOTS && s->npending; slot++) {
                if (!s->pending[slot])
                    continue;
                write_one(run, s, 0, slot);
                if (++n % 4 == 0 && now_ns() >= deadline)
                    break;
            }
        }
        if (now_ns() >= deadline)
            break;
    }
    return run->left == 0;
}

void stsnap_end(stsnap_run_t *run)
{
    if (!run->active)
        return;
    for (state_store_t *s = run->r->head; s; s = s->next) {
        for (unsigned slot = 0; s->npending && slot < ROUTING_SLOTS; slot++)
            if (s->pending[slot]) {
                s->pending[slot] = 0;
                s->npending--;
                Py_CLEAR(s->pending_changed[slot]);
            }
        s->single_pending = 0;
        s->write_pending = NULL;
        s->write_ctx = NULL;
    }
    run->left = 0;
    run->active = 0;
}

static state_store_t *store_named(state_registry_t *r, const uint8_t *name, size_t n)
{
    for (state_store_t *s = r->head; s; s = s->next)
        if (strlen(s->name) == n && memcmp(s->name, name, n) == 0)
            return s;
    return NULL;
}

static int declare_store(state_registry_t *r, stsnap_ids_t *ids, wire_rd_t *f, char *err,
                         size_t errlen)
{
    unsigned id = wire_u16(f);
    size_t n;
    const uint8_t *name = wire_str16(f, &n);
    if (!name) {
        snprintf(err, errlen, "malformed store entry");
        return -1;
    }
    if (id >= ids->n) {
        state_store_t **grown = realloc(ids->by_id, (id + 1) * sizeof *grown);
        if (!grown) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        memset(grown + ids->n, 0, (id + 1 - ids->n) * sizeof *grown);
        ids->by_id = grown;
        ids->n = id + 1;
    }
    ids->by_id[id] = store_named(r, name, n);
    if (!ids->by_id[id])
        log_warn("checkpoint: state '%.*s' is not in the application any more; its state is "
                 "not restored", (int)n, (const char *)name);
    return 1;
}

static void python_error(char *err, size_t errlen, const char *what)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyObject *text = value ? PyObject_Str(value) : NULL;
    const char *msg = text ? PyUnicode_AsUTF8(text) : NULL;
    snprintf(err, errlen, "%s: %s", what, msg ? msg : "unknown error");
    PyErr_Clear();
    Py_XDECREF(text);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
}

static int apply_state(stsnap_ids_t *ids, uint8_t type, wire_rd_t *f, char *err, size_t errlen)
{
    unsigned id = wire_u16(f);
    unsigned slot = type == SNAP_SINGLE ? 0 : wire_u16(f);
    size_t n;
    const uint8_t *p = wire_rest(f, &n);
    if (f->err || id >= ids->n || slot >= ROUTING_SLOTS) {
        snprintf(err, errlen, "malformed state entry");
        return -1;
    }
    state_store_t *s = ids->by_id[id];
    if (!s)
        return 1;
    PyObject *obj = stsnap_unpickle(p, n);
    if (!obj) {
        python_error(err, errlen, "cannot unpickle state");
        return -1;
    }
    int rc = 0;
    if (type == SNAP_SINGLE) {
        state_single_put(s, obj);
    } else {
        if (type == SNAP_SLOT)
            Py_XDECREF(state_slot_take(s, slot));
        rc = state_slot_put(s, slot, obj);
    }
    Py_DECREF(obj);
    if (rc < 0) {
        python_error(err, errlen, "cannot restore state");
        return -1;
    }
    return 1;
}

static int apply_changes(stsnap_ids_t *ids, wire_rd_t *f, char *err, size_t errlen)
{
    unsigned id = wire_u16(f);
    size_t n;
    const uint8_t *p = wire_rest(f, &n);
    if (f->err || id >= ids->n) {
        snprintf(err, errlen, "malformed state entry");
        return -1;
    }
    state_store_t *s = ids->by_id[id];
    if (!s)
        return 1;
    PyObject *list = stsnap_unpickle(p, n);
    if (!list || !PyList_Check(list) || PyList_GET_SIZE(list) % 2) {
        if (list && !PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "changed state is not a list of slots and dicts");
        Py_XDECREF(list);
        python_error(err, errlen, "cannot unpickle state");
        return -1;
    }
    int rc = 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(list) && rc == 0; i += 2) {
        long slot = PyLong_AsLong(PyList_GET_ITEM(list, i));
        if (slot < 0 || slot >= (long)ROUTING_SLOTS) {
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_ValueError, "slot %ld out of range", slot);
            rc = -1;
        } else {
            rc = state_slot_put(s, (unsigned)slot, PyList_GET_ITEM(list, i + 1));
        }
    }
    Py_DECREF(list);
    if (rc < 0) {
        python_error(err, errlen, "cannot restore state");
        return -1;
    }
    return 1;
}

int stsnap_apply(state_registry_t *r, stsnap_ids_t *ids, uint8_t type, wire_rd_t *f, char *err,
                 size_t errlen)
{
    switch (type) {
    case SNAP_STORE:
        return declare_store(r, ids, f, err, errlen);
    case SNAP_SLOT:
    case SNAP_SINGLE:
        return apply_state(ids, type, f, err, errlen);
    case SNAP_DELTA:
        return apply_changes(ids, f, err, errlen);
    default:
        return 0;
    }
}

void stsnap_ids_free(stsnap_ids_t *ids)
{
    free(ids->by_id);
    ids->by_id = NULL;
    ids->n = 0;
}
