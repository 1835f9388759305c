#include "stream/exec.h"

#include <string.h>

#include "net/frame.h"
#include "py/bridge.h"
#include "py/pyerr.h"
#include "py/pykey.h"
#include "util/hash.h"
#include "util/hist.h"
#include "util/log.h"

static void run_from(exec_t *x, pipeline_t *p, size_t i, PyObject *msg);
static void run_step(exec_t *x, pipeline_t *p, size_t i, PyObject *msg, PyObject *key);

/* Count an error of `where` (a label that lives as long as the app): by
 * pointer, in a small table; the error path only. */
static void count_error(exec_t *x, const char *where)
{
    for (size_t i = 0; i < EXEC_ERROR_KINDS; i++) {
        if (x->errors[i].where == where || !x->errors[i].where) {
            x->errors[i].where = where;
            x->errors[i].n++;
            return;
        }
    }
    x->errors_other++;
}

/* A user callback raised: count and log it, then apply the policy to the input
 * message (once per input, however many of its branches fail). */
static void user_error(exec_t *x, const char *where)
{
    pyerr_report(where);
    count_error(x, where);
    if (x->cur_failed)
        return;
    x->cur_failed = 1;
    x->failed++;
    if (x->on_error == ON_ERROR_STOP) {
        if (!x->stop_requested)
            log_error("stopping: --on-error=stop and %s raised", where);
        x->stop_requested = 1;
    } else if (x->on_error == ON_ERROR_DEAD_LETTER && x->dead_letter) {
        if (x->cur_frame) {
            fwrite(x->cur_frame, 1, x->cur_frame_len, x->dead_letter);
        } else if (x->cur_message) {
            /* Generator input has no frame: write its pickle, framed like one. */
            PyObject *pickle = PyImport_ImportModule("pickle");
            PyObject *data = pickle ? PyObject_CallMethod(pickle, "dumps", "O", x->cur_message)
                                    : NULL;
            if (data && PyBytes_GET_SIZE(data) <= 0xffffffffLL) {
                uint8_t hdr[4];
                uint32_t n = (uint32_t)PyBytes_GET_SIZE(data);
                hdr[0] = (uint8_t)(n >> 24);
                hdr[1] = (uint8_t)(n >> 16);
                hdr[2] = (uint8_t)(n >> 8);
                hdr[3] = (uint8_t)n;
                fwrite(hdr, 1, 4, x->dead_letter);
                fwrite(PyBytes_AS_STRING(data), 1, (size_t)n, x->dead_letter);
            } else {
                PyErr_Clear();
                log_warn("dead letter: the failed message cannot be pickled; not written");
            }
            Py_XDECREF(data);
            Py_XDECREF(pickle);
        }
    }
}

/* A sampled input's clock reads (one input in EXEC_SAMPLE_EVERY): a step's
 * Python call, and the time from taking the input to an output encoded. */
static inline uint64_t sample_start(const exec_t *x) { return x->sampling ? now_ns() : 0; }

static inline void sample_step(const exec_t *x, step_t *s, uint64_t t0)
{
    if (x->sampling)
        metrics_hist_record(&s->stats.latency, now_ns() - t0);
}

/* A new input: whether it is timed. */
static inline void take_input(exec_t *x)
{
    x->sampling = x->sample_latency && (x->inputs++ & (EXEC_SAMPLE_EVERY - 1)) == 0;
    if (x->sampling)
        x->t_in = now_ns();
}

/* What an encoder's errors are reported as. */
static const char *encoder_label(const pipe_out_t *o) { return o->label ? o->label : "encoder"; }

/* An encoded output into its sink's buffer: as it is, or as a connector
 * frame. Returns 0, or -1 after reporting. */
static int append_output(exec_t *x, const pipe_out_t *o, buf_t *b, const char *data, size_t n)
{
    if (o->connector_frame) {
        uint8_t hdr[FRAME_CONNECTOR_HEADER];
        if (frame_put_connector_header(hdr, n, 0) < 0) {
            PyErr_Format(PyExc_ValueError, "a connector frame holds at most 4 GiB - 9 bytes; "
                         "the encoder returned %zu", n);
            user_error(x, encoder_label(o));
            return -1;
        }
        /* Room for the whole frame first: never a header without its payload. */
        if (buf_reserve(b, sizeof hdr + n) < 0) {
            log_error("out of memory buffering sink output");
            return -1;
        }
        buf_append(b, hdr, sizeof hdr);
    }
    if (buf_append(b, data, n) < 0) {
        log_error("out of memory buffering sink output");
        return -1;
    }
    return 0;
}

/* Encode msg into one output's sink buffer. */
static void emit_to(exec_t *x, const pipeline_t *p, pipe_out_t *o, PyObject *msg)
{
    PyObject *out = py_call1(o->encode, msg);
    if (!out) {
        user_error(x, encoder_label(o));
        return;
    }
    if (out == Py_None && p->api06) {
        /* Wallaroo 0.6: an encoder's None writes nothing. */
        Py_DECREF(out);
        return;
    }
    buf_t *b = x->sink_bufs[o->sink];
    const char *data = NULL;
    Py_ssize_t n = 0;
    Py_buffer view;
    int have_view = 0;
    if (PyBytes_Check(out)) {
        data = PyBytes_AS_STRING(out);
        n = PyBytes_GET_SIZE(out);
    } else if (PyUnicode_Check(out)) {
        data = PyUnicode_AsUTF8AndSize(out, &n);
    } else if (PyObject_CheckBuffer(out) && PyObject_GetBuffer(out, &view, PyBUF_SIMPLE) == 0) {
        have_view = 1;
        data = view.buf;
        n = view.len;
    } else {
        PyErr_Format(PyExc_TypeError, "encoder returned %.100s, expected bytes or str",
                     Py_TYPE(out)->tp_name);
    }
    if (!data) {
        Py_DECREF(out);
        user_error(x, encoder_label(o));
        return;
    }
    if (append_output(x, o, b, data, (size_t)n) == 0) {
        x->messages_out++;
        o->messages++;
        if (x->sampling)
            metrics_hist_record(&x->end_to_end, now_ns() - x->t_in);
    }
    if (have_view)
        PyBuffer_Release(&view);
    Py_DECREF(out);
}

/* Every output goes to each of the pipeline's sinks (to_sinks), in order. */
static void emit(exec_t *x, pipeline_t *p, PyObject *msg)
{
    for (size_t k = 0; k < p->nouts; k++)
        emit_to(x, p, &p->outs[k], msg);
}

int exec_route_key(const step_t *s, PyObject *key, uint64_t *hash)
{
    if (s->kind == STEP_PARTITION_U64) {
        if (!PyLong_Check(key)) {
            PyErr_Format(PyExc_TypeError,
                         "to_state_partition_u64: partition key must be an int, not %.100s",
                         Py_TYPE(key)->tp_name);
            return -1;
        }
        unsigned long long v = PyLong_AsUnsignedLongLong(key);
        if (v == (unsigned long long)-1 && PyErr_Occurred())
            return -1;
        *hash = hash_u64(v);
        return 0;
    }
    return pykey_hash(key, hash);
}

void exec_set_router(exec_t *x, const routing_table_t *table, unsigned self,
                     exec_forward_fn forward, void *ctx)
{
    x->table = table;
    x->self = self;
    x->forward = forward;
    x->forward_ctx = ctx;
}

void exec_count_slot_runs(exec_t *x, uint32_t *counts) { x->slot_runs = counts; }

void exec_count_failed(exec_t *x) { x->failed++; }

int exec_slot_here(const exec_t *x, unsigned slot)
{
    return !x->table || routing_owner(x->table, slot) == x->self;
}

unsigned exec_slots_here(const exec_t *x)
{
    unsigned n = 0;
    for (unsigned slot = 0; slot < ROUTING_SLOTS; slot++)
        n += exec_slot_here(x, slot) != 0;
    return n;
}

int64_t exec_event_time(const exec_t *x) { return x->cur_event_time; }

/* Whether the message must go on elsewhere: if its slot belongs to another
 * worker it is handed to the cluster and 1 is returned. */
static int forwarded_away(exec_t *x, pipeline_t *p, step_t *s, unsigned slot, PyObject *msg,
                          PyObject *key)
{
    if (!x->table)
        return 0;
    unsigned owner = routing_owner(x->table, slot);
    if (owner == x->self)
        return 0;
    x->forward(x->forward_ctx, owner, (unsigned)(p - x->app->pipes), (unsigned)(s - p->steps),
               msg, key);
    x->forwarded++;
    return 1;
}

/* The state object the message belongs to (borrowed), or NULL: after reporting
 * an error, or (*away set) when its state lives on another worker. known_key is
 * the partition key when the worker that forwarded the message computed it.
 * With change tracking, *slot and *key (a new reference; NULL for to_stateful)
 * say where the state lives, to mark it changed after the step. */
static PyObject *state_of(exec_t *x, pipeline_t *p, step_t *s, PyObject *msg,
                          PyObject *known_key, int *away, unsigned *slot_out, PyObject **key_out)
{
    if (s->kind == STEP_STATEFUL) {
        if ((*away = forwarded_away(x, p, s, s->state->home_slot, msg, NULL)))
            return NULL;
        if (x->slot_runs)
            x->slot_runs[s->state->home_slot]++;
        PyObject *st = state_single(s->state);
        if (!st)
            user_error(x, "state class");
        *slot_out = s->state->home_slot;
        return st;
    }
    PyObject *key = known_key ? Py_NewRef(known_key) : py_call1(s->partition_fn, msg);
    if (!key) {
        user_error(x, "partition function");
        return NULL;
    }
    uint64_t h;
    PyObject *st = NULL;
    if (exec_route_key(s, key, &h) == 0) {
        unsigned slot = routing_slot(h);
        if (!(*away = forwarded_away(x, p, s, slot, msg, key))) {
            if (x->slot_runs)
                x->slot_runs[slot]++;
            st = state_for_key(s->state, slot, key);
            *slot_out = slot;
        }
    }
    if (st && x->track_changes)
        *key_out = key;
    else
        Py_DECREF(key);
    if (!st && !*away)
        user_error(x, "partition function");
    return st;
}

/* A state step said its state changed: note it for the next checkpoint. */
static void note_change(exec_t *x, step_t *s, PyObject *r, unsigned slot, PyObject *key)
{
    int changed = PyObject_IsTrue(PyTuple_GET_ITEM(r, 1));
    if (changed > 0 && state_mark_changed(s->state, slot, key) == 0)
        return;
    if (changed != 0)
        user_error(x, "marking state changed");
}

/* Send each output of a multi step on, with the stream's key; None sends
 * nothing. Wallaroo 0.6 takes a list only (a tuple is an error there). */
static void run_each(exec_t *x, pipeline_t *p, size_t next, PyObject *outs, step_t *s,
                     PyObject *key)
{
    if (outs == Py_None)
        return;
    if (p->api06 && !PyList_Check(outs)) {
        PyErr_Format(PyExc_TypeError, "%s: compute_multi must return a list or None, not "
                     "%.100s", s->label, Py_TYPE(outs)->tp_name);
        user_error(x, s->label);
        return;
    }
    PyObject *seq = PySequence_Fast(outs, "compute_multi must return a list or None");
    if (!seq) {
        user_error(x, s->label);
        return;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    for (Py_ssize_t i = 0; i < n && !x->stop_requested; i++)
        if (items[i] != Py_None) {
            s->stats.out++;
            run_step(x, p, next, items[i], key);
        }
    Py_DECREF(seq);
}

/* Hand step i's result on: each item of a multi step's list in order, or a
 * single output unless it is None. */
static void go_on(exec_t *x, pipeline_t *p, size_t i, PyObject *out, PyObject *key)
{
    step_t *s = &p->steps[i];
    if (s->multi) {
        run_each(x, p, i + 1, out, s, key);
    } else if (out != Py_None) {
        s->stats.out++;
        run_step(x, p, i + 1, out, key);
    }
}

/* Split a state computation's (output, state_changed) result. Returns a borrowed
 * output or NULL after reporting. */
static PyObject *state_result_output(exec_t *x, step_t *s, PyObject *r)
{
    if (!PyTuple_Check(r) || PyTuple_GET_SIZE(r) != 2) {
        PyErr_Format(PyExc_TypeError,
                     "%s must return a 2-tuple (output, state_changed), not %.100s", s->label,
                     Py_TYPE(r)->tp_name);
        user_error(x, s->label);
        return NULL;
    }
    return PyTuple_GET_ITEM(r, 0);
}

static void run_from(exec_t *x, pipeline_t *p, size_t i, PyObject *msg)
{
    run_step(x, p, i, msg, NULL);
}

/* The classic API's steps. known_key is the partition key when the worker
 * that forwarded the message computed it. A stateless step passes the
 * stream's key on (only Wallaroo 0.6 streams have one). */
static void run_classic(exec_t *x, pipeline_t *p, size_t i, PyObject *msg, PyObject *known_key)
{
    step_t *s = &p->steps[i];
    PyObject *r, *key = NULL;
    unsigned slot = 0;
    uint64_t t0;
    if (s->kind == STEP_STATELESS) {
        s->stats.in++;
        t0 = sample_start(x);
        r = py_call1(s->fn, msg);
    } else {
        int away = 0;
        PyObject *st = state_of(x, p, s, msg, known_key, &away, &slot, &key);
        if (!st)
            return;
        s->stats.in++;
        t0 = sample_start(x);
        r = py_call2(s->fn, msg, st);
    }
    sample_step(x, s, t0);
    if (!r) {
        Py_XDECREF(key);
        user_error(x, s->label);
        return;
    }
    PyObject *out = r;
    if (s->kind != STEP_STATELESS && !(out = state_result_output(x, s, r))) {
        Py_XDECREF(key);
        Py_DECREF(r);
        return;
    }
    if (s->kind != STEP_STATELESS && x->track_changes)
        note_change(x, s, r, slot, key);
    Py_XDECREF(key);
    go_on(x, p, i, out, s->kind == STEP_STATELESS ? known_key : NULL);
    Py_DECREF(r);
}

/* STEP_KEY_BY: the stream's key from here on, as bytes (a new reference), or
 * NULL after reporting. collect()'s constant key costs no Python call. */
static PyObject *stream_key(exec_t *x, step_t *s, PyObject *msg)
{
    s->stats.in++;
    if (s->const_key)
        return Py_NewRef(s->const_key);
    uint64_t t0 = sample_start(x);
    PyObject *r = py_call1(s->key_fn, msg);
    sample_step(x, s, t0);
    PyObject *key = r ? pykey_wallaroo06(r) : NULL;
    Py_XDECREF(r);
    if (!key)
        user_error(x, s->label);
    return key;
}

/* key_by / collect(): as in Wallaroo, the steps after it run on the worker
 * that owns the key's slot; the message goes there now, with its key.
 * known_key is that key when this worker is where it was sent (the key the
 * stream had before this step is replaced, never used). */
static void run_key_by(exec_t *x, pipeline_t *p, size_t i, PyObject *msg, PyObject *known_key)
{
    step_t *s = &p->steps[i];
    PyObject *key = known_key ? Py_NewRef(known_key) : stream_key(x, s, msg);
    uint64_t h;
    if (!key)
        return;
    if (pykey_hash(key, &h) < 0) {
        user_error(x, s->label);
        Py_DECREF(key);
        return;
    }
    if (!known_key)
        s->stats.out++; /* counted where the key was computed, forwarded or not */
    if (!forwarded_away(x, p, s, routing_slot(h), msg, key)) {
        if (x->slot_runs)
            x->slot_runs[routing_slot(h)]++;
        run_step(x, p, i + 1, msg, key);
    }
    Py_DECREF(key);
}

/* A Wallaroo 0.6 state computation: the state of the stream's key (a new one
 * per message when no key_by came before, as Wallaroo's random keys give);
 * its result is the output itself, and the state is always kept. */
static void run_keyed_state(exec_t *x, pipeline_t *p, size_t i, PyObject *msg, PyObject *key)
{
    step_t *s = &p->steps[i];
    PyObject *st, *fresh = NULL;
    unsigned slot = 0;
    uint64_t h;
    if (!key) {
        st = fresh = PyObject_CallNoArgs(s->state->state_class);
    } else if (pykey_hash(key, &h) < 0) {
        user_error(x, s->label);
        return;
    } else {
        slot = routing_slot(h);
        if (forwarded_away(x, p, s, slot, msg, key))
            return;
        st = state_for_key(s->state, slot, key);
    }
    if (!st) {
        user_error(x, "state class");
        return;
    }
    s->stats.in++;
    uint64_t t0 = sample_start(x);
    PyObject *r = py_call2(s->fn, msg, st);
    sample_step(x, s, t0);
    Py_XDECREF(fresh);
    if (!r) {
        user_error(x, s->label);
        return;
    }
    if (key && x->track_changes && state_mark_changed(s->state, slot, key) < 0)
        user_error(x, "marking state changed");
    go_on(x, p, i, r, key);
    Py_DECREF(r);
}

/* The key as output(key, acc) gets it: a str, as machida3's
 * PyUnicode_FromString of the key bytes (up to a NUL). */
static PyObject *window_key_str(PyObject *key)
{
    const char *b = PyBytes_AS_STRING(key);
    return PyUnicode_DecodeUTF8(b, (Py_ssize_t)strnlen(b, (size_t)PyBytes_GET_SIZE(key)),
                                "replace");
}

/* A window step's outputs go on, in order, with the key. */
static void window_outputs(exec_t *x, pipeline_t *p, size_t i, PyObject *outs, PyObject *key)
{
    for (Py_ssize_t k = 0; k < PyList_GET_SIZE(outs) && !x->stop_requested; k++) {
        p->steps[i].stats.out++;
        run_step(x, p, i + 1, PyList_GET_ITEM(outs, k), key);
    }
}

/* One key's windows, with the outputs (new list) they gave, or NULL after
 * reporting. Marked changed for the next incremental checkpoint. *late_side:
 * the message is late and goes to the window's late sink (event time). */
static PyObject *window_run(exec_t *x, step_t *s, unsigned slot, PyObject *key, PyObject *st,
                            PyObject *msg, int64_t now, int idle, int *late_side)
{
    PyObject *ks = window_key_str(key);
    PyObject *outs = ks ? PyList_New(0) : NULL;
    int64_t ev = s->window->source_time ? x->cur_event_time : now;
    int rc = outs ? (msg ? window_message(s->window, st, ks, msg, ev, now, outs)
                         : window_tick(s->window, st, ks, now, idle, outs)) : -1;
    Py_XDECREF(ks);
    if (late_side)
        *late_side = rc == 1;
    if (rc >= 0 && x->track_changes && state_mark_changed(s->state, slot, key) < 0)
        rc = -1;
    if (rc < 0) {
        user_error(x, s->label);
        /* what fired before the error is still output */
    }
    return outs;
}

/* Windows over the stream's key (graph.c refuses them without a key_by):
 * the key's windows live in its slot, on the worker that owns it. */
static void run_window(exec_t *x, pipeline_t *p, size_t i, PyObject *msg, PyObject *key)
{
    step_t *s = &p->steps[i];
    uint64_t h;
    if (!key || pykey_hash(key, &h) < 0) {
        if (!key)
            PyErr_SetString(PyExc_RuntimeError, "a window step got a message without a key");
        user_error(x, s->label);
        return;
    }
    unsigned slot = routing_slot(h);
    if (forwarded_away(x, p, s, slot, msg, key))
        return;
    PyObject *st = state_for_key(s->state, slot, key);
    if (!st) {
        user_error(x, "window state");
        return;
    }
    int late_side = 0;
    s->stats.in++;
    uint64_t t0 = sample_start(x);
    PyObject *outs = window_run(x, s, slot, key, st, msg, window_now(), 0, &late_side);
    sample_step(x, s, t0);
    if (late_side) {
        /* the window's late sink: its own sink and encoder (stream/window.h) */
        const window_spec_t *w = s->window;
        pipe_out_t late = {.sink = w->late_sink, .encode = w->late_encode};
        emit_to(x, p, &late, msg);
    }
    if (outs)
        window_outputs(x, p, i, outs, key);
    Py_XDECREF(outs);
}

/* The timer of one window step: every key of the slots this worker owns. The
 * keys are listed first, since outputs may run steps that touch the store. */
static void tick_window_step(exec_t *x, pipeline_t *p, size_t i, int64_t now)
{
    step_t *s = &p->steps[i];
    int idle = window_idle(s->window, now);
    int64_t wm = window_tick_clock(s->window, now);
    for (unsigned slot = 0; slot < ROUTING_SLOTS && !x->stop_requested; slot++) {
        if (!s->state->slots[slot] || (x->table && routing_owner(x->table, slot) != x->self))
            continue;
        state_touch(s->state, slot);
        PyObject *items = PyDict_Items(s->state->slots[slot]);
        if (!items) {
            user_error(x, "window state");
            continue;
        }
        for (Py_ssize_t k = 0; k < PyList_GET_SIZE(items); k++) {
            PyObject *kv = PyList_GET_ITEM(items, k);
            PyObject *key = PyTuple_GET_ITEM(kv, 0), *st = PyTuple_GET_ITEM(kv, 1);
            if (window_state_empty(st))
                continue;
            x->cur_failed = 0;
            PyObject *outs = window_run(x, s, slot, key, st, NULL, wm, idle, NULL);
            if (outs)
                window_outputs(x, p, i, outs, key);
            Py_XDECREF(outs);
        }
        Py_DECREF(items);
    }
}

int64_t exec_windows_due(exec_t *x, int64_t now)
{
    int64_t next = INT64_MAX;
    x->cur_frame = NULL;
    x->cur_message = NULL;
    x->cur_event_time = 0; /* a window's output has no source event time */
    x->sampling = 0;      /* timer outputs are not inputs: not timed */
    for (size_t j = 0; j < x->app->npipes; j++) {
        pipeline_t *p = &x->app->pipes[j];
        for (size_t i = 0; i < p->nsteps; i++) {
            window_spec_t *w = p->steps[i].window;
            if (!w || p->steps[i].window_borrowed)
                continue;
            if (now >= w->next_tick_ns) {
                tick_window_step(x, p, i, now);
                w->next_tick_ns = window_next_tick(w, now);
            }
            if (w->next_tick_ns < next)
                next = w->next_tick_ns;
        }
    }
    return next;
}

/* Step i of p on msg; key is the stream's key (Wallaroo 0.6), or a classic
 * partition key computed by the worker that forwarded the message. */
static void run_step(exec_t *x, pipeline_t *p, size_t i, PyObject *msg, PyObject *key)
{
    if (i == p->nsteps) {
        emit(x, p, msg);
        return;
    }
    switch (p->steps[i].kind) {
    case STEP_KEY_BY:
        run_key_by(x, p, i, msg, NULL);
        break;
    case STEP_KEYED_STATE:
        run_keyed_state(x, p, i, msg, key);
        break;
    case STEP_WINDOW:
        run_window(x, p, i, msg, key);
        break;
    default:
        run_classic(x, p, i, msg, key);
        break;
    }
}

int exec_frame(exec_t *x, pipeline_t *p, const uint8_t *frame, size_t frame_len,
               const uint8_t *payload, size_t payload_len)
{
    x->frames_in++;
    p->messages_in++;
    take_input(x);
    PyObject *bytes = PyBytes_FromStringAndSize((const char *)payload, (Py_ssize_t)payload_len);
    PyObject *msg = bytes ? py_call1(p->source.decode, bytes) : NULL;
    Py_XDECREF(bytes);
    if (!msg) {
        p->decode_errors++;
        char where[300];
        snprintf(where, sizeof where, "decoder of pipeline '%s'", p->name);
        pyerr_report(where);
        return -1;
    }
    x->cur_frame = frame;
    x->cur_frame_len = frame_len;
    x->cur_message = NULL;
    x->cur_failed = 0;
    x->cur_event_time = p->source.connector ? frame_connector_event_time(frame) : 0;
    if (msg != Py_None)
        run_from(x, p, 0, msg);
    Py_DECREF(msg);
    x->cur_frame = NULL;
    return 0;
}

void exec_message(exec_t *x, pipeline_t *p, PyObject *msg)
{
    x->frames_in++;
    p->messages_in++;
    take_input(x);
    x->cur_frame = NULL;
    x->cur_message = msg;
    x->cur_failed = 0;
    x->cur_event_time = 0;
    run_from(x, p, 0, msg);
    x->cur_message = NULL;
}

int exec_forwarded(exec_t *x, unsigned pipe, unsigned step, PyObject *msg, PyObject *key,
                   int64_t event_time)
{
    if (pipe >= x->app->npipes || step >= x->app->pipes[pipe].nsteps)
        return -1;
    pipeline_t *p = &x->app->pipes[pipe];
    take_input(x);
    x->cur_frame = NULL;
    x->cur_failed = 0;
    x->cur_message = msg;
    x->cur_event_time = event_time;
    if (p->steps[step].kind == STEP_KEY_BY)
        run_key_by(x, p, step, msg, key);
    else
        run_step(x, p, step, msg, p->steps[step].kind == STEP_STATEFUL ? NULL : key);
    x->cur_message = NULL;
    return 0;
}

int exec_payload_length(void *ctx, const uint8_t *header, size_t header_len, uint64_t *len)
{
    source_t *src = ctx;
    PyObject *h = PyBytes_FromStringAndSize((const char *)header, (Py_ssize_t)header_len);
    PyObject *r = h ? py_call1(src->payload_length, h) : NULL;
    Py_XDECREF(h);
    if (!r) {
        pyerr_report("decoder payload_length");
        return -1;
    }
    long long v = PyLong_Check(r) ? PyLong_AsLongLong(r) : -1;
    Py_DECREF(r);
    if (v < 0) {
        PyErr_Clear();
        log_warn("decoder payload_length returned a negative or non-int length");
        return -1;
    }
    *len = (uint64_t)v;
    return 0;
}
