#include "cluster/migrate.h"

#include <string.h>

#include "cluster/cproto.h"
#include "py/pyerr.h"
#include "util/log.h"

/* Append one store's part: name, kind, length, then obj serialized (kind 0 and
 * nothing when it cannot be serialized). */
static void put_part(app_t *app, wire_wr_t *w, state_store_t *s, int kind, PyObject *obj,
                     unsigned slot)
{
    wire_put_str16(w, s->name, strlen(s->name));
    size_t kind_at = cl_mark(w->b);
    wire_put_u8(w, (uint8_t)kind);
    wire_put_u32(w, 0);
    size_t start = cl_mark(w->b);
    if (w->err)
        return;
    if (app_value_encode(app, obj, w->b) < 0 || cl_mark(w->b) - start > UINT32_MAX) {
        if (PyErr_Occurred())
            pyerr_report("Bettong's encoding (state moving to another worker)");
        log_error("cluster: the state of '%s' in slot %u cannot be moved; it is lost", s->name,
                  slot);
        w->b->len = w->b->off + start;
        *cl_at(w->b, kind_at) = 0;
        return;
    }
    cl_put_be32(cl_at(w->b, kind_at + 1), cl_mark(w->b) - start);
}

int migrate_put_slot(app_t *app, buf_t *out, unsigned slot)
{
    unsigned n = 0;
    for (state_store_t *s = app->states.head; s; s = s->next)
        n += (s->slots[slot] != NULL) + (s->home_slot == slot && s->single != NULL);
    wire_wr_t w;
    wire_begin(&w, out, CL_STATE, CL_MAX_FRAME);
    wire_put_u16(&w, (uint16_t)slot);
    wire_put_u16(&w, (uint16_t)n);
    for (state_store_t *s = app->states.head; s; s = s->next) {
        PyObject *dict = state_slot_take(s, slot);
        PyObject *single = s->home_slot == slot ? state_single_take(s) : NULL;
        if (dict)
            put_part(app, &w, s, 1, dict, slot);
        if (single)
            put_part(app, &w, s, 2, single, slot);
        Py_XDECREF(dict);
        Py_XDECREF(single);
    }
    return wire_end(&w);
}

static state_store_t *store_named(app_t *app, const uint8_t *name, size_t len)
{
    for (state_store_t *s = app->states.head; s; s = s->next)
        if (strlen(s->name) == len && memcmp(s->name, name, len) == 0)
            return s;
    return NULL;
}

int migrate_install(app_t *app, wire_rd_t *r)
{
    unsigned slot = wire_u16(r);
    unsigned n = wire_u16(r);
    if (r->err || slot >= ROUTING_SLOTS)
        return -1;
    for (unsigned i = 0; i < n; i++) {
        size_t nlen;
        const uint8_t *name = wire_str16(r, &nlen);
        int kind = wire_u8(r);
        uint32_t len = wire_u32(r);
        const uint8_t *bytes = wire_bytes(r, len);
        if (r->err)
            return -1;
        if (kind == 0)
            continue; /* the old owner could not serialize it (logged there) */
        state_store_t *s = store_named(app, name, nlen);
        PyObject *obj = s ? app_value_decode(app, bytes, len) : NULL;
        int rc = -1;
        if (obj && kind == 1) {
            rc = state_slot_put(s, slot, obj);
        } else if (obj && kind == 2) {
            state_single_put(s, obj);
            rc = 0;
        }
        Py_XDECREF(obj);
        if (rc < 0) {
            if (PyErr_Occurred())
                pyerr_report("Bettong's encoding (state moved from another worker)");
            log_error("cluster: the state of '%.*s' in slot %u could not be installed; it is "
                      "lost", (int)nlen, (const char *)name, slot);
        }
    }
    return 0;
}

void migrate_drop_unowned(app_t *app, int (*owned)(const void *ctx, unsigned slot),
                          const void *ctx)
{
    for (state_store_t *s = app->states.head; s; s = s->next) {
        for (unsigned slot = 0; slot < ROUTING_SLOTS; slot++)
            if (!owned(ctx, slot))
                Py_XDECREF(state_slot_take(s, slot));
        if (!owned(ctx, s->home_slot))
            Py_XDECREF(state_single_take(s));
    }
}
