#include "stream/stsnap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stream/snapshot.h"
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

static int put_slot(wire_wr_t *w, buf_t *b, uint8_t type, unsigned id, unsigned slot,
                    PyObject *dict)
{
    wire_begin(w, b, type, SNAP_MAX_ENTRY);
    wire_put_u16(w, (uint16_t)id);
    wire_put_u16(w, (uint16_t)slot);
    if (stsnap_pickle_into(dict, w) < 0)
        return -1;
    if (wire_end(w) < 0) {
        PyErr_SetString(PyExc_MemoryError, "a slot's state does not fit a snapshot entry");
        return -1;
    }
    return 0;
}

/* One SNAP_DELTA entry: the list [slot, {key: state}, slot, ...] pickled in
 * one call, so what each slot and each state's class cost is paid once per
 * entry, not once per slot. */
static int put_changes(buf_t *b, unsigned id, PyObject *list)
{
    wire_wr_t w;
    wire_begin(&w, b, SNAP_DELTA, SNAP_MAX_ENTRY);
    wire_put_u16(&w, (uint16_t)id);
    if (stsnap_pickle_into(list, &w) < 0)
        return -1;
    if (wire_end(&w) < 0) {
        PyErr_SetString(PyExc_MemoryError, "changed state does not fit a snapshot entry");
        return -1;
    }
    return 0;
}

/* The keys of s changed since the last checkpoint, in entries of at most
 * DELTA_KEYS keys. */
#define DELTA_KEYS 1000000

static int write_changes(state_store_t *s, unsigned id, buf_t *b, stsnap_stats_t *st)
{
    PyObject *list = PyList_New(0);
    size_t keys = 0;
    for (unsigned slot = 0; list && slot < ROUTING_SLOTS; slot++) {
        if (!s->changed[slot])
            continue;
        PyObject *d = changed_items(s->slots[slot], s->changed[slot]);
        PyObject *n = d ? PyLong_FromUnsignedLong(slot) : NULL;
        int rc = n && PyList_Append(list, n) == 0 && PyList_Append(list, d) == 0 ? 0 : -1;
        if (rc == 0)
            keys += (size_t)PyDict_GET_SIZE(d);
        Py_XDECREF(n);
        Py_XDECREF(d);
        if (rc == 0 && keys >= DELTA_KEYS) {
            rc = put_changes(b, id, list);
            st->entries++;
            st->keys += keys;
            keys = 0;
            Py_SETREF(list, rc == 0 ? PyList_New(0) : NULL);
        }
        if (rc < 0)
            Py_CLEAR(list);
    }
    if (!list)
        return -1;
    int rc = PyList_GET_SIZE(list) > 0 ? put_changes(b, id, list) : 0;
    if (PyList_GET_SIZE(list) > 0) {
        st->entries++;
        st->keys += keys;
    }
    Py_DECREF(list);
    return rc;
}

static int write_store(state_store_t *s, unsigned id, int full, buf_t *b, stsnap_stats_t *st)
{
    wire_wr_t w;
    wire_begin(&w, b, SNAP_STORE, SNAP_MAX_ENTRY);
    wire_put_u16(&w, (uint16_t)id);
    wire_put_str16(&w, s->name, strlen(s->name));
    wire_end(&w);
    for (unsigned slot = 0; full && slot < ROUTING_SLOTS; slot++) {
        PyObject *dict = s->slots[slot];
        if (!dict || PyDict_GET_SIZE(dict) == 0)
            continue;
        if (put_slot(&w, b, SNAP_SLOT, id, slot, dict) < 0)
            return -1;
        st->keys += (uint64_t)PyDict_GET_SIZE(dict);
        st->entries++;
    }
    if (!full && write_changes(s, id, b, st) < 0)
        return -1;
    if (s->single && (full || s->single_changed)) {
        wire_begin(&w, b, SNAP_SINGLE, SNAP_MAX_ENTRY);
        wire_put_u16(&w, (uint16_t)id);
        if (stsnap_pickle_into(s->single, &w) < 0 || wire_end(&w) < 0)
            return -1;
        st->entries++;
        st->keys++;
    }
    state_clear_changed(s);
    return 0;
}

int stsnap_write(state_registry_t *r, int full, buf_t *b, stsnap_stats_t *st)
{
    memset(st, 0, sizeof *st);
    unsigned id = 0;
    for (state_store_t *s = r->head; s; s = s->next, id++) {
        if (id >= STSNAP_MAX_STORES) {
            PyErr_SetString(PyExc_OverflowError, "too many state stores for a snapshot");
            return -1;
        }
        if (write_store(s, id, full, b, st) < 0)
            return -1;
    }
    return 0;
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
