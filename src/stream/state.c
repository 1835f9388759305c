#include "stream/state.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    s->next = r->head;
    r->head = s;
    return s;
}

PyObject *state_for_key(state_store_t *s, unsigned slot, PyObject *key)
{
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
    if (!s->single)
        s->single = PyObject_CallNoArgs(s->state_class);
    return s->single;
}

void state_registry_free(state_registry_t *r)
{
    state_store_t *s = r->head;
    while (s) {
        state_store_t *next = s->next;
        for (unsigned i = 0; i < ROUTING_SLOTS; i++)
            Py_XDECREF(s->slots[i]);
        Py_XDECREF(s->single);
        Py_XDECREF(s->state_class);
        free(s->name);
        free(s);
        s = next;
    }
    r->head = NULL;
}
