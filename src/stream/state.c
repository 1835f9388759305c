#include "stream/state.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/hash.h"

state_store_t *state_store_get(state_registry_t *r, const char *name, PyObject *state_class,
                               char *err, size_t errlen)
{
    for (state_store_t *s = r->head; s; s = s->next) {
        if (strcmp(s->name, name) == 0) {
            if (s->state_class != state_class) {
                snprintf(err, errlen,
                         "state '%s' is declared with two different state classes", name);
                return NULL;
            }
            return s;
        }
    }
    state_store_t *s = calloc(1, sizeof *s);
    if (!s || !(s->name = strdup(name))) {
        free(s);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    Py_INCREF(state_class);
    s->state_class = state_class;
    /* The single object lives in a slot of its own, so it has one owner in a
     * cluster and moves like partitioned state. */
    s->home_slot = routing_slot(hash_bytes(name, strlen(name), 0));
    s->next = r->head;
    r->head = s;
    return s;
}

state_store_t *state_store_find(state_registry_t *r, const char *name)
{
    for (state_store_t *s = r->head; s; s = s->next)
        if (strcmp(s->name, name) == 0)
            return s;
    return NULL;
}

PyObject *state_for_key(state_store_t *s, unsigned slot, PyObject *key)
{
    state_touch(s, slot);
    PyObject *dict = s->slots[slot];
    if (!dict) {
        dict = PyDict_New();
        if (!dict)
            return NULL;
        s->slots[slot] = dict;
    }
    PyObject *st = PyDict_GetItemWithError(dict, key);
    if (st || PyErr_Occurred())
        return st;
    st = PyObject_CallNoArgs(s->state_class);
    if (!st)
        return NULL;
    int rc = PyDict_SetItem(dict, key, st);
    Py_DECREF(st); /* the dict owns it now */
    if (rc < 0)
        return NULL;
    s->keys++;
    return st;
}

PyObject *state_single(state_store_t *s)
{
    state_touch_single(s);
    if (!s->single)
        s->single = PyObject_CallNoArgs(s->state_class);
    return s->single;
}

PyObject *state_slot_take(state_store_t *s, unsigned slot)
{
    state_touch(s, slot);
    PyObject *dict = s->slots[slot];
    s->slots[slot] = NULL;
    if (dict)
        s->keys -= (size_t)PyDict_GET_SIZE(dict);
    return dict;
}

int state_slot_put(state_store_t *s, unsigned slot, PyObject *dict)
{
    if (!PyDict_Check(dict)) {
        PyErr_Format(PyExc_TypeError, "state of slot %u of '%s' is a %.100s, not a dict", slot,
                     s->name, Py_TYPE(dict)->tp_name);
        return -1;
    }
    if (!s->slots[slot]) {
        if (!(s->slots[slot] = PyDict_New()))
            return -1;
    }
    Py_ssize_t before = PyDict_GET_SIZE(s->slots[slot]);
    if (PyDict_Update(s->slots[slot], dict) < 0)
        return -1;
    s->keys += (size_t)(PyDict_GET_SIZE(s->slots[slot]) - before);
    return 0;
}

PyObject *state_single_take(state_store_t *s)
{
    state_touch_single(s);
    PyObject *obj = s->single;
    s->single = NULL;
    return obj;
}

void state_single_put(state_store_t *s, PyObject *obj)
{
    Py_INCREF(obj);
    Py_XSETREF(s->single, obj);
}

int state_mark_changed(state_store_t *s, unsigned slot, PyObject *key)
{
    if (!key) {
        s->single_changed = 1;
        return 0;
    }
    if (!s->changed[slot] && !(s->changed[slot] = PySet_New(NULL)))
        return -1;
    return PySet_Add(s->changed[slot], key);
}

void state_clear_changed(state_store_t *s)
{
    for (unsigned i = 0; i < ROUTING_SLOTS; i++)
        Py_CLEAR(s->changed[i]);
    s->single_changed = 0;
}

size_t state_count_keys(const state_registry_t *r, int (*keep)(const void *ctx, unsigned slot),
                        const void *ctx)
{
    size_t n = 0;
    for (const state_store_t *s = r->head; s; s = s->next) {
        for (unsigned i = 0; i < ROUTING_SLOTS; i++)
            if (s->slots[i] && (!keep || keep(ctx, i)))
                n += (size_t)PyDict_GET_SIZE(s->slots[i]);
        if (s->single && (!keep || keep(ctx, s->home_slot)))
            n++;
    }
    return n;
}

void state_registry_clear(state_registry_t *r)
{
    for (state_store_t *s = r->head; s; s = s->next) {
        for (unsigned i = 0; i < ROUTING_SLOTS; i++)
            Py_CLEAR(s->slots[i]);
        Py_CLEAR(s->single);
        state_clear_changed(s);
        s->keys = 0;
    }
}

void state_registry_free(state_registry_t *r)
{
    state_store_t *s = r->head;
    while (s) {
        state_store_t *next = s->next;
        for (unsigned i = 0; i < ROUTING_SLOTS; i++)
            Py_XDECREF(s->slots[i]);
        state_clear_changed(s);
        Py_XDECREF(s->single);
        Py_XDECREF(s->state_class);
        free(s->name);
        free(s);
        s = next;
    }
    r->head = NULL;
}
