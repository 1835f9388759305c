#include "stream/window.h"

#include <datetime.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util/log.h"

/* Count windows flush their partial window this often (Wallaroo 0.6.1's
 * TumblingCountWindows timeout_interval). */
#define COUNT_TICK_NS 5000000000LL
/* A window needs this many panes at most: beyond, the bookkeeping per message
 * would cost more than the aggregation (a range of an hour sliding by 1 ns). */
#define MAX_PANES 100000
/* Event-time range windows: at most this many windows per message. */
#define MAX_ET_WINDOWS_PER_MESSAGE 1000
/* Event-time windows' timer: half a slide (or gap), within these bounds. */
#define ET_TICK_MIN_NS 10000000LL
#define ET_TICK_MAX_NS 1000000000LL
/* Event times beyond this (about 146 years from 1970) are refused: the
 * watermark arithmetic must not overflow. */
#define ET_LIMIT_NS (1LL << 62)

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

/* ("event_time", extractor or None, max_out_of_order, policy, keep, sink
 * config or None, output_bounds): the Python builder checked the values;
 * this checks their types again (a hand-made stage). */
static int load_event_time(window_spec_t *w, PyObject *et, char *err, size_t errlen)
{
    if (!PyTuple_Check(et) || PyTuple_GET_SIZE(et) != 7 ||
        !PyUnicode_Check(PyTuple_GET_ITEM(et, 0)) ||
        PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(et, 0), "event_time") != 0)
        return snprintf(err, errlen, "windows: expected (\"event_time\", extractor, "
                        "max_out_of_order, policy, keep, sink, output_bounds)"), -1;
    PyObject *ex = PyTuple_GET_ITEM(et, 1), *policy = PyTuple_GET_ITEM(et, 3);
    PyObject *sink = PyTuple_GET_ITEM(et, 5);
    long long ooo, keep;
    if (int_arg(PyTuple_GET_ITEM(et, 2), 0, &ooo, "with_event_time: max_out_of_order", err,
                errlen) ||
        int_arg(PyTuple_GET_ITEM(et, 4), 0, &keep, "with_late_data: keep", err, errlen))
        return -1;
    if (ooo > ET_LIMIT_NS || keep > ET_LIMIT_NS)
        return snprintf(err, errlen, "windows: max_out_of_order or keep too large"), -1;
    if (PyUnicode_Check(ex) && PyUnicode_CompareWithASCIIString(ex, "source") == 0) {
        w->source_time = 1;
    } else if (ex != Py_None) {
        if (!PyCallable_Check(ex))
            return snprintf(err, errlen, "with_event_time: the extractor is not callable"), -1;
        w->extractor = Py_NewRef(ex);
    }
    const char *pol = PyUnicode_Check(policy) ? PyUnicode_AsUTF8(policy) : NULL;
    if (pol && strcmp(pol, "drop") == 0) {
        w->late_policy = LATE_DROP;
    } else if (pol && strcmp(pol, "update") == 0) {
        w->late_policy = LATE_UPDATE;
    } else if (pol && strcmp(pol, "side") == 0 && sink != Py_None) {
        w->late_policy = LATE_SIDE;
        w->late_sink_cfg = Py_NewRef(sink);
    } else {
        PyErr_Clear();
        return snprintf(err, errlen, "with_late_data: the policy must be \"drop\", "
                        "\"update\" or a sink config"), -1;
    }
    w->et = 1;
    w->max_ooo = ooo;
    w->keep = keep;
    w->output_bounds = PyObject_IsTrue(PyTuple_GET_ITEM(et, 6)) == 1;
    PyDateTime_IMPORT;
    if (!PyDateTimeAPI)
        return snprintf(err, errlen, "windows: the datetime module cannot be loaded"), -1;
    w->epoch_naive = PyDateTime_FromDateAndTime(1970, 1, 1, 0, 0, 0, 0);
    w->epoch_utc = PyDateTimeAPI->DateTime_FromDateAndTime(
        1970, 1, 1, 0, 0, 0, 0, PyDateTime_TimeZone_UTC, PyDateTimeAPI->DateTimeType);
    if (!w->epoch_naive || !w->epoch_utc) {
        PyErr_Clear();
        return snprintf(err, errlen, "windows: cannot make the epoch's datetime"), -1;
    }
    return 0;
}

/* ("to_range_windows", r, s, d, agg, ET): range windows on event time. */
static int load_range_et(window_spec_t *w, PyObject *stage, char *err, size_t errlen)
{
    if (PyTuple_GET_SIZE(stage) == 5)
        return 0;
    if (PyTuple_GET_SIZE(stage) != 6)
        return snprintf(err, errlen, "to_range_windows: expected (tag, range, slide, delay, "
                        "aggregation[, event_time])"), -1;
    if (w->delay_given != 0)
        return snprintf(err, errlen, "range_windows: with_delay() is for ingest time; on event "
                        "time give max_out_of_order to with_event_time()"), -1;
    /* On event time each message updates every window it is in. */
    if ((w->range + w->slide - 1) / w->slide > MAX_ET_WINDOWS_PER_MESSAGE)
        return snprintf(err, errlen, "range_windows: on event time a message is in each of "
                        "range/slide windows; at most %d are supported",
                        MAX_ET_WINDOWS_PER_MESSAGE), -1;
    return load_event_time(w, PyTuple_GET_ITEM(stage, 5), err, errlen);
}

/* Wallaroo 0.6.1's _SlidingWindows set-up: panes of gcd(range, slide), the
 * delay rounded up to whole slides, a ring of a window plus the delay. */
static int load_range(window_spec_t *w, PyObject *stage, char *err, size_t errlen)
{
    long long r, s, d;
    if (PyTuple_GET_SIZE(stage) != 5 && PyTuple_GET_SIZE(stage) != 6)
        return snprintf(err, errlen, "to_range_windows: expected (tag, range, slide, delay, "
                        "aggregation[, event_time])"), -1;
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
    if (load_range_et(w, stage, err, errlen) < 0)
        return -1;
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

/* ("to_session_windows", gap, agg, ET). */
static int load_session(window_spec_t *w, PyObject *stage, char *err, size_t errlen)
{
    long long gap;
    if (PyTuple_GET_SIZE(stage) != 4)
        return snprintf(err, errlen, "to_session_windows: expected (tag, gap, aggregation, "
                        "event_time)"), -1;
    if (int_arg(PyTuple_GET_ITEM(stage, 1), 1, &gap, "session_windows: the gap", err, errlen))
        return -1;
    if (gap > ET_LIMIT_NS)
        return snprintf(err, errlen, "session_windows: the gap is too large"), -1;
    w->kind = WINDOW_SESSION;
    w->gap = gap;
    if (load_event_time(w, PyTuple_GET_ITEM(stage, 3), err, errlen) < 0)
        return -1;
    return load_aggregation(w, PyTuple_GET_ITEM(stage, 2), err, errlen);
}

PyObject *window_stage_aggregation(PyObject *stage)
{
    if (!PyTuple_Check(stage) || PyTuple_GET_SIZE(stage) < 3 ||
        !PyUnicode_Check(PyTuple_GET_ITEM(stage, 0)))
        return NULL;
    PyObject *tag = PyTuple_GET_ITEM(stage, 0);
    Py_ssize_t i = PyUnicode_CompareWithASCIIString(tag, "to_range_windows") == 0 ? 4 : 2;
    return i < PyTuple_GET_SIZE(stage) ? PyTuple_GET_ITEM(stage, i) : NULL;
}

window_spec_t *window_spec_new(PyObject *stage, char *err, size_t errlen)
{
    window_spec_t *w = calloc(1, sizeof *w);
    if (!w) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    PyObject *tag = PyTuple_GET_ITEM(stage, 0);
    int rc;
    if (PyUnicode_CompareWithASCIIString(tag, "to_range_windows") == 0)
        rc = load_range(w, stage, err, errlen);
    else if (PyUnicode_CompareWithASCIIString(tag, "to_session_windows") == 0)
        rc = load_session(w, stage, err, errlen);
    else
        rc = load_count(w, stage, err, errlen);
    if (rc < 0) {
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
    if (w->late > 1 || (w->et && w->late == 1))
        log_warn("windows: %llu %s dropped", (unsigned long long)w->late,
                 w->et ? "late messages (event time before their key's watermark) were"
                       : "messages older than every open window of their key were");
    if (w->late_side || w->late_updated)
        log_info("windows: %llu late messages went to the late sink, %llu updated kept "
                 "windows", (unsigned long long)w->late_side,
                 (unsigned long long)w->late_updated);
    Py_XDECREF(w->extractor);
    Py_XDECREF(w->late_sink_cfg);
    Py_XDECREF(w->late_encode);
    Py_XDECREF(w->epoch_naive);
    Py_XDECREF(w->epoch_utc);
    Py_XDECREF(w->init);
    Py_XDECREF(w->update);
    Py_XDECREF(w->combine);
    Py_XDECREF(w->output);
    free(w);
}

int64_t window_tick_period(const window_spec_t *w)
{
    if (w->et) {
        int64_t half = (w->kind == WINDOW_SESSION ? w->gap : w->slide) / 2;
        return half < ET_TICK_MIN_NS ? ET_TICK_MIN_NS
                                     : half > ET_TICK_MAX_NS ? ET_TICK_MAX_NS : half;
    }
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

int64_t window_tick_clock(const window_spec_t *w, int64_t now)
{
    return w->et ? now : w->last_input_ns;
}

int window_idle(const window_spec_t *w, int64_t now)
{
    return w->kind == WINDOW_RANGE && !w->et &&
           now - w->last_input_ns > 4 * (w->range + w->delay_given);
}

int window_state_empty(PyObject *st)
{
    if (!PyList_Check(st) || PyList_GET_SIZE(st) == 0)
        return 1;
    /* event time: [max_ev, seen_at, wm, wins] with no window */
    return PyList_GET_SIZE(st) == 4 && PyList_Check(PyList_GET_ITEM(st, 3)) &&
           PyList_GET_SIZE(PyList_GET_ITEM(st, 3)) == 0;
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

/* ------------------------------------------------------------ event time */

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

/* A datetime as ns since the epoch; a naive one is taken as UTC. */
static int datetime_ns(window_spec_t *w, PyObject *v, int64_t *ev)
{
    PyObject *tz = PyObject_GetAttrString(v, "tzinfo");
    if (!tz)
        return -1;
    PyObject *d = PyNumber_Subtract(v, tz == Py_None ? w->epoch_naive : w->epoch_utc);
    Py_DECREF(tz);
    if (!d)
        return -1;
    if (!PyDelta_Check(d)) {
        Py_DECREF(d);
        PyErr_SetString(PyExc_TypeError, "event time: datetime - epoch is not a timedelta");
        return -1;
    }
    long long days = PyDateTime_DELTA_GET_DAYS(d), secs = PyDateTime_DELTA_GET_SECONDS(d),
              us = PyDateTime_DELTA_GET_MICROSECONDS(d);
    Py_DECREF(d);
    if (days > 53000 || days < -53000) {
        PyErr_Format(PyExc_ValueError, "event time %R is more than 145 years from 1970", v);
        return -1;
    }
    *ev = ((days * 86400 + secs) * 1000000 + us) * 1000;
    return 0;
}

/* The extractor's value: an int (ns since the epoch) or a datetime. */
static int event_time_value(window_spec_t *w, PyObject *v, int64_t *ev)
{
    if (PyLong_Check(v) && !PyBool_Check(v)) {
        int overflow = 0;
        long long n = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (n == -1 && PyErr_Occurred())
            return -1;
        if (overflow || n > ET_LIMIT_NS || n < -ET_LIMIT_NS) {
            PyErr_Format(PyExc_ValueError, "event time %R ns is out of range (at most 2**62 "
                         "ns from 1970)", v);
            return -1;
        }
        *ev = n;
        return 0;
    }
    if (PyDateTime_Check(v))
        return datetime_ns(w, v, ev);
    PyErr_Format(PyExc_TypeError, "the event-time extractor returned %.100s; expected an int "
                 "(ns since 1970) or a datetime", Py_TYPE(v)->tp_name);
    return -1;
}

/* The event time a source gave (ms since 1970, as connector frames carry it;
 * 0: none) in ns. */
static int source_time_ns(int64_t ms, int64_t *ev)
{
    if (ms == 0) {
        PyErr_SetString(PyExc_ValueError, "the message has no event time from its source "
                        "(with_event_time() without an extractor takes a connector frame's "
                        "event time; this one is 0 or the message is not from a connector)");
        return -1;
    }
    if (ms > ET_LIMIT_NS / 1000000 || ms < -ET_LIMIT_NS / 1000000) {
        PyErr_Format(PyExc_ValueError, "the source's event time %lld ms is out of range",
                     (long long)ms);
        return -1;
    }
    *ev = ms * 1000000;
    return 0;
}

/* The message's event time: the extractor's, the source's (`given`, ms), or
 * the ingest time (`given`). */
static int event_time(window_spec_t *w, PyObject *msg, int64_t given, int64_t *ev)
{
    if (w->source_time)
        return source_time_ns(given, ev);
    if (!w->extractor) {
        *ev = given;
        return 0;
    }
    PyObject *v = PyObject_CallOneArg(w->extractor, msg);
    if (!v)
        return -1;
    int rc = event_time_value(w, v, ev);
    Py_DECREF(v);
    return rc;
}

/* A key's clock and windows: [max_ev, seen_at, wm, wins]. */
typedef struct {
    int64_t max_ev, seen_at, wm;
    PyObject *wins; /* borrowed from the state */
} et_state_t;

static int et_read(PyObject *st, et_state_t *e)
{
    if (PyList_GET_SIZE(st) != 4 || !PyList_Check(PyList_GET_ITEM(st, 3))) {
        PyErr_SetString(PyExc_TypeError, "window state is not an event-time window's");
        return -1;
    }
    e->max_ev = PyLong_AsLongLong(PyList_GET_ITEM(st, 0));
    e->seen_at = PyLong_AsLongLong(PyList_GET_ITEM(st, 1));
    e->wm = PyLong_AsLongLong(PyList_GET_ITEM(st, 2));
    e->wins = PyList_GET_ITEM(st, 3);
    return PyErr_Occurred() ? -1 : 0;
}

static int set_int(PyObject *list, Py_ssize_t i, int64_t v)
{
    PyObject *o = PyLong_FromLongLong(v);
    return o ? PyList_SetItem(list, i, o) : -1;
}

static int et_write(PyObject *st, const et_state_t *e)
{
    return set_int(st, 0, e->max_ev) < 0 || set_int(st, 1, e->seen_at) < 0 ||
           set_int(st, 2, e->wm) < 0 ? -1 : 0;
}

/* The first message of a key: its clock starts at this message. */
static int et_start(window_spec_t *w, PyObject *st, int64_t ev, int64_t now)
{
    PyObject *wins = PyList_New(0);
    int rc = wins && PyList_Append(st, Py_None) == 0 && PyList_Append(st, Py_None) == 0 &&
             PyList_Append(st, Py_None) == 0 && PyList_Append(st, wins) == 0 ? 0 : -1;
    Py_XDECREF(wins);
    et_state_t e = {ev, now, ev - w->max_ooo, NULL};
    return rc == 0 ? et_write(st, &e) : -1;
}

/* A window: [start, end, acc, closed]. */
typedef struct {
    int64_t start, end;
    PyObject *acc; /* borrowed */
    int closed;
} et_win_t;

static int win_read(PyObject *wins, Py_ssize_t i, et_win_t *v)
{
    PyObject *win = PyList_GET_ITEM(wins, i);
    if (!PyList_Check(win) || PyList_GET_SIZE(win) != 4) {
        PyErr_SetString(PyExc_TypeError, "a window in the state is not [start, end, acc, "
                        "closed]");
        return -1;
    }
    v->start = PyLong_AsLongLong(PyList_GET_ITEM(win, 0));
    v->end = PyLong_AsLongLong(PyList_GET_ITEM(win, 1));
    v->acc = PyList_GET_ITEM(win, 2);
    v->closed = PyList_GET_ITEM(win, 3) == Py_True;
    return PyErr_Occurred() ? -1 : 0;
}

/* A new window (owned), or NULL with an exception. */
static PyObject *win_new(int64_t start, int64_t end, PyObject *acc, int closed)
{
    return Py_BuildValue("[LLOO]", (long long)start, (long long)end, acc,
                         closed ? Py_True : Py_False);
}

/* The watermark at which a window closes: no on-time message (one at or
 * past the watermark) can fall in it any more. */
static int64_t close_at(const window_spec_t *w, const et_win_t *v)
{
    return w->kind == WINDOW_SESSION ? v->end + w->gap + 1 : v->end;
}

/* Whether a closed window is still kept (LATE_UPDATE) at watermark wm. */
static int kept(const window_spec_t *w, const et_win_t *v, int64_t wm)
{
    return w->late_policy == LATE_UPDATE && wm <= close_at(w, v) + w->keep;
}

/* output(key, acc) or output(key, acc, (start, end)). */
static int et_output(window_spec_t *w, PyObject *key, const et_win_t *v, PyObject *outs)
{
    if (!w->output_bounds)
        return emit_output(w, key, v->acc, outs);
    PyObject *bounds = Py_BuildValue("(LL)", (long long)v->start, (long long)v->end);
    PyObject *out = bounds ? PyObject_CallFunctionObjArgs(w->output, key, v->acc, bounds, NULL)
                           : NULL;
    Py_XDECREF(bounds);
    if (!out)
        return -1;
    int rc = out == Py_None ? 0 : PyList_Append(outs, out);
    Py_DECREF(out);
    return rc;
}

/* Remove window *i; *i steps back so that a loop's i++ reads the next. */
static int remove_win(PyObject *wins, Py_ssize_t *i)
{
    Py_ssize_t at = (*i)--;
    return PyList_SetSlice(wins, at, at + 1, NULL);
}

/* Output, in order, each open window the watermark closed: it is kept, marked
 * closed, with LATE_UPDATE, else removed. Kept windows past `keep` go. */
static int et_close(window_spec_t *w, et_state_t *e, PyObject *key, PyObject *outs)
{
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(e->wins); i++) {
        et_win_t v;
        if (win_read(e->wins, i, &v) < 0)
            return -1;
        int rc = 0;
        if (!v.closed && close_at(w, &v) <= e->wm) {
            Py_INCREF(v.acc); /* held while output runs and the window may go */
            rc = et_output(w, key, &v, outs);
            if (kept(w, &v, e->wm))
                PyList_SetItem(PyList_GET_ITEM(e->wins, i), 3, Py_NewRef(Py_True));
            else if (remove_win(e->wins, &i) < 0)
                rc = -1;
            Py_DECREF(v.acc);
        } else if (v.closed && !kept(w, &v, e->wm)) {
            if (remove_win(e->wins, &i) < 0)
                rc = -1;
        }
        if (rc < 0) /* closed either way: an output() that raised does not fire again */
            return -1;
    }
    return 0;
}

/* update(msg, acc) on the window [start, end) of a range, created (with a
 * new accumulator) if it has none; *out_closed: it is a closed one. */
static int range_add(window_spec_t *w, et_state_t *e, int64_t start, PyObject *msg,
                     et_win_t *out)
{
    Py_ssize_t n = PyList_GET_SIZE(e->wins), i = 0;
    et_win_t v = {0};
    for (; i < n; i++) {
        if (win_read(e->wins, i, &v) < 0)
            return -1;
        if (v.start >= start)
            break;
    }
    if (i == n || v.start != start) {
        PyObject *acc = PyObject_CallNoArgs(w->init);
        v.start = start;
        v.end = start + w->range;
        v.closed = close_at(w, &v) <= e->wm;
        PyObject *win = acc ? win_new(v.start, v.end, acc, v.closed) : NULL;
        Py_XDECREF(acc);
        if (!win || PyList_Insert(e->wins, i, win) < 0) {
            Py_XDECREF(win);
            return -1;
        }
        Py_DECREF(win);
        v.acc = PyList_GET_ITEM(win, 2);
    }
    *out = v;
    Py_INCREF(v.acc);
    int rc = update_acc(w, msg, v.acc);
    Py_DECREF(v.acc);
    return rc;
}

/* A range message at ev: into each window [k*slide, k*slide + range) it is
 * in; a late one (LATE_UPDATE) only into those still kept, the closed ones
 * output again. *added: how many windows took it. */
static int range_et_message(window_spec_t *w, et_state_t *e, PyObject *key, PyObject *msg,
                            int64_t ev, int late, PyObject *outs, int *added)
{
    int64_t lo = floor_div(ev - w->range, w->slide) + 1, hi = floor_div(ev, w->slide);
    for (int64_t k = lo; k <= hi; k++) {
        et_win_t v = {k * w->slide, k * w->slide + w->range, NULL, 0};
        if (late && close_at(w, &v) <= e->wm && !kept(w, &v, e->wm))
            continue;
        if (range_add(w, e, v.start, msg, &v) < 0)
            return -1;
        ++*added;
        if (v.closed && et_output(w, key, &v, outs) < 0)
            return -1;
    }
    return 0;
}

/* The accumulator of windows [a, b) combined in order (new), or NULL. */
static PyObject *combine_range(window_spec_t *w, PyObject *wins, Py_ssize_t a, Py_ssize_t b)
{
    PyObject *acc = Py_NewRef(PyList_GET_ITEM(PyList_GET_ITEM(wins, a), 2));
    for (Py_ssize_t i = a + 1; acc && i < b; i++) {
        PyObject *next = PyObject_CallFunctionObjArgs(
            w->combine, acc, PyList_GET_ITEM(PyList_GET_ITEM(wins, i), 2), NULL);
        Py_SETREF(acc, next);
    }
    return acc;
}

/* A session message at ev: the sessions it is at most `gap` from (open ones;
 * with LATE_UPDATE kept closed ones too) merge with it into one (combine());
 * none: a session of its own. A late one (LATE_UPDATE) that leaves a closed
 * session outputs it again. */
static int session_message(window_spec_t *w, et_state_t *e, PyObject *key, PyObject *msg,
                           int64_t ev, int late, PyObject *outs, int *added)
{
    Py_ssize_t n = PyList_GET_SIZE(e->wins), a = 0, b;
    et_win_t v;
    for (; a < n; a++) {
        if (win_read(e->wins, a, &v) < 0)
            return -1;
        if (v.end + w->gap >= ev)
            break;
    }
    for (b = a; b < n; b++) {
        if (win_read(e->wins, b, &v) < 0)
            return -1;
        if (v.start - w->gap > ev)
            break;
    }
    et_win_t m = {ev, ev, NULL, 0};
    if (a < b) {
        et_win_t first, last;
        if (win_read(e->wins, a, &first) < 0 || win_read(e->wins, b - 1, &last) < 0)
            return -1;
        m.start = first.start < ev ? first.start : ev;
        m.end = last.end > ev ? last.end : ev;
    }
    m.closed = close_at(w, &m) <= e->wm;
    if (late && m.closed && !kept(w, &m, e->wm))
        return 0;
    PyObject *acc = a < b ? combine_range(w, e->wins, a, b) : PyObject_CallNoArgs(w->init);
    PyObject *win = acc ? win_new(m.start, m.end, acc, m.closed) : NULL;
    int rc = win && update_acc(w, msg, acc) == 0 ? 0 : -1;
    m.acc = acc;
    if (rc == 0) {
        PyObject *one = PyList_New(1);
        rc = one ? 0 : -1;
        if (one) {
            PyList_SET_ITEM(one, 0, Py_NewRef(win));
            rc = PyList_SetSlice(e->wins, a, b, one);
            Py_DECREF(one);
        }
    }
    if (rc == 0) {
        ++*added;
        if (m.closed)
            rc = et_output(w, key, &m, outs);
    }
    Py_XDECREF(win);
    Py_XDECREF(acc);
    return rc;
}

static int et_message(window_spec_t *w, PyObject *st, PyObject *key, PyObject *msg,
                      int64_t given, int64_t now, PyObject *outs)
{
    int64_t ev;
    if (event_time(w, msg, given, &ev) < 0)
        return -1;
    if (PyList_GET_SIZE(st) == 0 && et_start(w, st, ev, now) < 0)
        return -1;
    et_state_t e;
    if (et_read(st, &e) < 0)
        return -1;
    if (ev > e.max_ev)
        e.max_ev = ev;
    e.seen_at = now;
    if (e.max_ev - w->max_ooo > e.wm)
        e.wm = e.max_ev - w->max_ooo;
    if (et_write(st, &e) < 0)
        return -1;
    int late = ev < e.wm, added = 0;
    if (late && w->late_policy == LATE_SIDE) {
        w->late_side++;
        return 1;
    }
    if (!late || w->late_policy == LATE_UPDATE) {
        int rc = w->kind == WINDOW_SESSION
                     ? session_message(w, &e, key, msg, ev, late, outs, &added)
                     : range_et_message(w, &e, key, msg, ev, late, outs, &added);
        if (rc < 0)
            return -1;
    }
    if (late && added)
        w->late_updated++;
    if (late && !added && w->late++ == 0)
        log_warn("windows: a late message (event time %lld ns, %lld ns behind its key's "
                 "watermark) was dropped; further ones are counted at exit", (long long)ev,
                 (long long)(e.wm - ev));
    return et_close(w, &e, key, outs);
}

/* The timer: the key's watermark moves on with the wall clock since its
 * latest message; the windows it passed close. */
static int et_tick(window_spec_t *w, PyObject *st, PyObject *key, int64_t now, PyObject *outs)
{
    et_state_t e;
    if (et_read(st, &e) < 0)
        return -1;
    int64_t idle = now > e.seen_at ? now - e.seen_at : 0;
    if (idle > ET_LIMIT_NS)
        idle = ET_LIMIT_NS;
    int64_t wm = e.max_ev - w->max_ooo + idle;
    if (wm <= e.wm)
        return 0;
    e.wm = wm;
    if (et_write(st, &e) < 0)
        return -1;
    return et_close(w, &e, key, outs);
}

/* ------------------------------------------------------------ entry points */

int window_message(window_spec_t *w, PyObject *st, PyObject *key, PyObject *msg, int64_t ev,
                   int64_t wm, PyObject *outs)
{
    if (!PyList_Check(st)) {
        PyErr_SetString(PyExc_TypeError, "window state is not a list");
        return -1;
    }
    if (w->et)
        return et_message(w, st, key, msg, ev, wm, outs);
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
    if (w->et)
        return et_tick(w, st, key, wm, outs);
    if (w->kind == WINDOW_COUNT)
        return count_fire(w, st, key, outs);
    return idle ? range_flush(w, st, key, outs) : range_trigger(w, st, key, wm, outs);
}
