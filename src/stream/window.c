#include "stream/window.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "util/log.h"

/* Count windows flush their partial window this often (Wallaroo 0.6.1's
 * TumblingCountWindows timeout_interval). */
#define COUNT_TICK_NS 5000000000LL
/* A window needs this many panes at most: beyond, the bookkeeping per message
 * would cost more than the aggregation (a range of an hour sliding by 1 ns). */
#define MAX_PANES 100000

/* The wall clock never goes back here (the loop is one thread): a step back
 * of the system clock (NTP) would otherwise make new messages "late". */
int64_t window_now(void)
{
    static int64_t last;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
    if (now < last)
        return last;
    last = now;
    return now;
}

static int64_t gcd64(int64_t a, int64_t b)
{
    while (b) {
        int64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

/* ------------------------------------------------------------ the spec */

static int int_arg(PyObject *v, long long min, long long *out, const char *what, char *err,
                   size_t errlen)
{
    long long n = PyLong_Check(v) && !PyBool_Check(v) ? PyLong_AsLongLong(v) : min - 1;
    if (n < min) {
        PyErr_Clear();
        snprintf(err, errlen, "%s must be an int >= %lld (nanoseconds for times)", what, min);
        return -1;
    }
    *out = n;
    return 0;
}

static PyObject *agg_method(PyObject *agg, const char *name, char *err, size_t errlen)
{
    PyObject *m = PyObject_GetAttrString(agg, name);
    if (m && PyCallable_Check(m))
        return m;
    Py_XDECREF(m);
    PyErr_Clear();
    snprintf(err, errlen, "the window's Aggregation has no method %s()", name);
    return NULL;
}

static int load_aggregation(window_spec_t *w, PyObject *agg, char *err, size_t errlen)
{
    if (!(w->init = agg_method(agg, "initial_accumulator", err, errlen)) ||
        !(w->update = agg_method(agg, "update", err, errlen)) ||
        !(w->combine = agg_method(agg, "combine", err, errlen)) ||
        !(w->output = agg_method(agg, "output", err, errlen)))
        return -1;
    return 0;
}

/* Wallaroo 0.6.1's _SlidingWindows set-up: panes of gcd(range, slide), the
 * delay rounded up to whole slides, a ring of a window plus the delay. */
static int load_range(window_spec_t *w, PyObject *stage, char *err, size_t errlen)
{
    long long r, s, d;
    if (PyTuple_GET_SIZE(stage) != 5)
        return snprintf(err, errlen, "to_range_windows: expected (tag, range, slide, delay, "
                        "aggregation)"), -1;
    if (int_arg(PyTuple_GET_ITEM(stage, 1), 1, &r, "range_windows: the range", err, errlen) ||
        int_arg(PyTuple_GET_ITEM(stage, 2), 1, &s, "range_windows: the slide", err, errlen) ||
        int_arg(PyTuple_GET_ITEM(stage, 3), 0, &d, "range_windows: the delay", err, errlen))
        return -1;
    if (s > r)
        return snprintf(err, errlen, "range_windows: the slide must not be larger than the "
                        "range"), -1;
    if (r > INT64_MAX / 8 || d > INT64_MAX / 8)
        return snprintf(err, errlen, "range_windows: range or delay too large"), -1;
    w->kind = WINDOW_RANGE;
    w->range = r;
    w->slide = s;
    w->delay_given = d;
    w->delay = ((d + s - 1) / s) * s;
    w->pane = gcd64(r, s);
    w->ppw = (Py_ssize_t)(r / w->pane);
    w->pps = (Py_ssize_t)(s / w->pane);
    w->ring = w->ppw + (Py_ssize_t)(w->delay / s) * w->pps;
    if (w->ring > MAX_PANES)
        return snprintf(err, errlen, "range_windows: range %lld, slide %lld and delay %lld "
                        "need %zd panes of gcd(range, slide) ns; at most %d are supported",
                        r, s, d, w->ring, MAX_PANES), -1;
    return load_aggregation(w, PyTuple_GET_ITEM(stage, 4), err, errlen);
}

static int load_count(window_spec_t *w, PyObject *stage, char *err, size_t errlen)
{
    if (PyTuple_GET_SIZE(stage) != 3)
        return snprintf(err, errlen, "to_count_windows: expected (tag, count, aggregation)"),
               -1;
    w->kind = WINDOW_COUNT;
    if (int_arg(PyTuple_GET_ITEM(stage, 1), 0, &w->count, "count_windows: the count", err,
                errlen))
        return -1;
    return load_aggregation(w, PyTuple_GET_ITEM(stage, 2), err, errlen);
}

window_spec_t *window_spec_new(PyObject *stage, char *err, size_t errlen)
{
    window_spec_t *w = calloc(1, sizeof *w);
    if (!w) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    PyObject *tag = PyTuple_GET_ITEM(stage, 0);
    int range = PyUnicode_CompareWithASCIIString(tag, "to_range_windows") == 0;
    if ((range ? load_range(w, stage, err, errlen) : load_count(w, stage, err, errlen)) < 0) {
        window_spec_free(w);
        return NULL;
    }
    /* As if input had just come: a key restored from a checkpoint is flushed
     * after the idle time, not at the first tick. */
    w->last_input_ns = window_now();
    w->next_tick_ns = window_next_tick(w, w->last_input_ns);
    return w;
}

void window_spec_free(window_spec_t *w)
{
    if (!w)
        return;
    if (w->late > 1)
        log_warn("windows: %llu messages older than every open window of their key were "
                 "dropped", (unsigned long long)w->late);
    Py_XDECREF(w->init);
    Py_XDECREF(w->update);
    Py_XDECREF(w->combine);
    Py_XDECREF(w->output);
    free(w);
}

int64_t window_tick_period(const window_spec_t *w)
{
    return w->kind == WINDOW_RANGE ? 2 * (w->range + w->delay_given) : COUNT_TICK_NS;
}

int64_t window_next_tick(const window_spec_t *w, int64_t now)
{
    int64_t period = window_tick_period(w);
    /* Count windows tick on the wall clock's multiples of 5 s, on every worker
     * alike: a partial window is flushed at a moment one can tell from the
     * outside (and one worker's flush is not out of step with another's). */
    if (w->kind == WINDOW_COUNT)
        return (now / period + 1) * period;
    return now + period;
}

int window_idle(const window_spec_t *w, int64_t now)
{
    return w->kind == WINDOW_RANGE && now - w->last_input_ns > 4 * (w->range + w->delay_given);
}

int window_state_empty(PyObject *st)
{
    return !PyList_Check(st) || PyList_GET_SIZE(st) == 0;
}

/* ------------------------------------------------------------ outputs */

/* output(key, acc); a non-None result is appended to outs. */
static int emit_output(window_spec_t *w, PyObject *key, PyObject *acc, PyObject *outs)
{
    PyObject *out = PyObject_CallFunctionObjArgs(w->output, key, acc, NULL);
    if (!out)
        return -1;
    int rc = out == Py_None ? 0 : PyList_Append(outs, out);
    Py_DECREF(out);
    return rc;
}

/* update(msg, acc): mutates acc in place; what it returns is ignored. */
static int update_acc(window_spec_t *w, PyObject *msg, PyObject *acc)
{
    PyObject *r = PyObject_CallFunctionObjArgs(w->update, msg, acc, NULL);
    Py_XDECREF(r);
    return r ? 0 : -1;
}

/* ------------------------------------------------------------ range windows */

/* The state's start (ns) and panes (borrowed), or -1 with an exception if it
 * is not a range state (a checkpoint from another application). */
static int range_parts(PyObject *st, int64_t *start, PyObject **panes)
{
    if (PyList_GET_SIZE(st) != 2 || !PyList_Check(PyList_GET_ITEM(st, 1))) {
        PyErr_SetString(PyExc_TypeError, "window state is not a range window's");
        return -1;
    }
    *start = PyLong_AsLongLong(PyList_GET_ITEM(st, 0));
    *panes = PyList_GET_ITEM(st, 1);
    return *start == -1 && PyErr_Occurred() ? -1 : 0;
}

static int set_start(PyObject *st, int64_t start)
{
    PyObject *v = PyLong_FromLongLong(start);
    return v ? PyList_SetItem(st, 0, v) : -1;
}

static int append_empty(PyObject *panes, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++)
        if (PyList_Append(panes, Py_None) < 0)
            return -1;
    return 0;
}

/* A key's first message: windows laid out so that the newest one ends, after
 * the delay, where the watermark is (Wallaroo: W - (delay + range)). */
static int range_open(window_spec_t *w, PyObject *st, int64_t wm)
{
    PyObject *panes = PyList_New(0);
    PyObject *start = PyLong_FromLongLong(wm - (w->delay + w->range));
    int rc = panes && start && append_empty(panes, w->ring) == 0 &&
             PyList_Append(st, start) == 0 && PyList_Append(st, panes) == 0 ? 0 : -1;
    Py_XDECREF(panes);
    Py_XDECREF(start);
    return rc;
}

static int any_data(PyObject *panes)
{
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(panes); i++)
        if (PyList_GET_ITEM(panes, i) != Py_None)
            return 1;
    return 0;
}

/* The window starting at the ring's start: its panes combined (starting from a
 * fresh identity), output; then the ring slides by one slide. */
static int fire_next(window_spec_t *w, PyObject *st, PyObject *panes, int64_t start,
                     PyObject *key, PyObject *outs)
{
    PyObject *acc = PyObject_CallNoArgs(w->init);
    for (Py_ssize_t j = 0; acc && j < w->ppw && j < PyList_GET_SIZE(panes); j++) {
        PyObject *p = PyList_GET_ITEM(panes, j);
        if (p == Py_None)
            continue;
        PyObject *next = PyObject_CallFunctionObjArgs(w->combine, acc, p, NULL);
        Py_SETREF(acc, next);
    }
    int rc = acc ? emit_output(w, key, acc, outs) : -1;
    Py_XDECREF(acc);
    if (rc < 0)
        return -1;
    if (PyList_SetSlice(panes, 0, w->pps, NULL) < 0 || append_empty(panes, w->pps) < 0)
        return -1;
    return set_start(st, start + w->slide);
}

/* Output, in order, every window [s, s+range) the watermark has passed by more
 * than the delay. Windows with no data are output only while data is still
 * in the ring; once it is empty the ring jumps ahead (the windows in between
 * would all be empty). */
static int range_trigger(window_spec_t *w, PyObject *st, PyObject *key, int64_t wm,
                         PyObject *outs)
{
    int64_t start;
    PyObject *panes;
    if (range_parts(st, &start, &panes) < 0)
        return -1;
    while (start + w->range + w->delay < wm) {
        if (!any_data(panes)) {
            int64_t behind = wm - (w->range + w->delay) - start;
            return set_start(st, start + ((behind + w->slide - 1) / w->slide) * w->slide);
        }
        if (fire_next(w, st, panes, start, key, outs) < 0)
            return -1;
        start += w->slide;
    }
    return 0;
}

/* Add msg to the pane its time falls in, growing the ring (by whole slides)
 * if it is past the ring's end. Before the ring: late, dropped. */
static int range_apply(window_spec_t *w, PyObject *st, PyObject *msg, int64_t ev)
{
    int64_t start;
    PyObject *panes;
    if (range_parts(st, &start, &panes) < 0)
        return -1;
    if (ev < start) {
        /* Wallaroo drops late data silently; with ingest time it means a
         * clock behind the one that opened the windows (a slot moved from a
         * host whose clock is ahead): say so, once. */
        if (w->late++ == 0)
            log_warn("windows: a message older than every open window of its key was "
                     "dropped (is this host's clock behind another worker's?); further "
                     "ones are counted at exit");
        return 0;
    }
    Py_ssize_t idx = (Py_ssize_t)((ev - start) / w->pane);
    Py_ssize_t n = PyList_GET_SIZE(panes);
    if (idx >= n && append_empty(panes, ((idx + 1 - n + w->pps - 1) / w->pps) * w->pps) < 0)
        return -1;
    PyObject *acc = PyList_GET_ITEM(panes, idx);
    if (acc == Py_None) {
        if (!(acc = PyObject_CallNoArgs(w->init)))
            return -1;
        Py_INCREF(acc); /* one for the list, one held while update runs */
        PyList_SetItem(panes, idx, acc);
    } else {
        Py_INCREF(acc);
    }
    int rc = update_acc(w, msg, acc);
    Py_DECREF(acc);
    return rc;
}

/* Idle: every window with data, once, in order; then the key has none. */
static int range_flush(window_spec_t *w, PyObject *st, PyObject *key, PyObject *outs)
{
    int64_t start;
    PyObject *panes;
    if (range_parts(st, &start, &panes) < 0)
        return -1;
    while (any_data(panes)) {
        if (fire_next(w, st, panes, start, key, outs) < 0)
            return -1;
        start += w->slide;
    }
    return PyList_SetSlice(st, 0, PyList_GET_SIZE(st), NULL);
}

/* ------------------------------------------------------------ count windows */

static int count_fire(window_spec_t *w, PyObject *st, PyObject *key, PyObject *outs)
{
    int rc = emit_output(w, key, PyList_GET_ITEM(st, 1), outs);
    /* Closed either way: an output() that raised does not fire again. */
    if (PyList_SetSlice(st, 0, PyList_GET_SIZE(st), NULL) < 0)
        return -1;
    return rc;
}

static int count_message(window_spec_t *w, PyObject *st, PyObject *key, PyObject *msg,
                         PyObject *outs)
{
    if (PyList_GET_SIZE(st) == 0) {
        PyObject *acc = PyObject_CallNoArgs(w->init);
        PyObject *zero = PyLong_FromLong(0);
        int rc = acc && zero && PyList_Append(st, zero) == 0 && PyList_Append(st, acc) == 0;
        Py_XDECREF(acc);
        Py_XDECREF(zero);
        if (!rc)
            return -1;
    }
    if (PyList_GET_SIZE(st) != 2) {
        PyErr_SetString(PyExc_TypeError, "window state is not a count window's");
        return -1;
    }
    long long n = PyLong_AsLongLong(PyList_GET_ITEM(st, 0));
    if ((n == -1 && PyErr_Occurred()) || update_acc(w, msg, PyList_GET_ITEM(st, 1)) < 0)
        return -1;
    n++;
    if (n >= w->count)
        return count_fire(w, st, key, outs);
    PyObject *v = PyLong_FromLongLong(n);
    return v ? PyList_SetItem(st, 0, v) : -1;
}

/* ------------------------------------------------------------ entry points */

int window_message(window_spec_t *w, PyObject *st, PyObject *key, PyObject *msg, int64_t ev,
                   int64_t wm, PyObject *outs)
{
    if (!PyList_Check(st)) {
        PyErr_SetString(PyExc_TypeError, "window state is not a list");
        return -1;
    }
    if (wm > w->last_input_ns)
        w->last_input_ns = wm;
    if (w->kind == WINDOW_COUNT)
        return count_message(w, st, key, msg, outs);
    if (PyList_GET_SIZE(st) == 0 && range_open(w, st, wm) < 0)
        return -1;
    if (range_trigger(w, st, key, wm, outs) < 0)
        return -1;
    return range_apply(w, st, msg, ev);
}

int window_tick(window_spec_t *w, PyObject *st, PyObject *key, int64_t wm, int idle,
                PyObject *outs)
{
    if (window_state_empty(st))
        return 0;
    if (w->kind == WINDOW_COUNT)
        return count_fire(w, st, key, outs);
    return idle ? range_flush(w, st, key, outs) : range_trigger(w, st, key, wm, outs);
}
