/* Wallaroo 0.6.1's windows, per key: range windows (tumbling or sliding, with
 * a delay) and count windows, over a user's Aggregation. The bookkeeping is
 * here, in C; the user's initial_accumulator/update/combine/output are called
 * for the accumulators and the outputs.
 *
 * A key's window state is a plain Python list kept in the key's slot of a state
 * store (stream/state.h), so it is checkpointed and moves between workers with
 * the slot like any other state (a list of ints, None and the user's
 * accumulators pickles as they do):
 *   range: [start, panes] - panes is a list of accumulators or None (empty),
 *          pane i covering [start + i*pane, start + (i+1)*pane)
 *   count: [count, acc]
 *   []     no window open for the key (before its first message, after a flush)
 *
 * Time is ingest time as this worker sees it: the wall clock (CLOCK_REALTIME,
 * signed ns) when the message reaches the window step. The wall clock rather
 * than a monotonic one because window starts stored in a checkpoint or moved
 * to another host must still mean something there; signed so that
 * "now - (delay + range)" cannot wrap as Wallaroo's U64 does.
 *
 * Event time, later (issue 12 item 2): window_message takes the message's
 * time `ev` and the step's watermark `wm` as two arguments already; today
 * both are the ingest time. An event-time extractor would give `ev` (a step
 * field called before window_message), and a watermark carried with messages
 * (a min over upstreams, as in Wallaroo's StageWatermarks) would give `wm` and
 * the tick's watermark; nothing in the window state depends on where they
 * come from. Late data (ev before the ring) is already dropped and counted. */
#ifndef BETTONG_WINDOW_H
#define BETTONG_WINDOW_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

typedef enum { WINDOW_RANGE, WINDOW_COUNT } window_kind;

typedef struct {
    window_kind kind;
    /* range windows, ns */
    int64_t range, slide, delay;  /* delay rounded up to a multiple of slide */
    int64_t delay_given;          /* as given: the timer's period uses it */
    int64_t pane;                 /* gcd(range, slide) */
    Py_ssize_t ppw, pps;          /* panes per window, per slide */
    Py_ssize_t ring;              /* panes a new key starts with */
    /* count windows */
    long long count;
    /* the aggregation's bound methods (owned) */
    PyObject *init, *update, *combine, *output;
    /* the step's clock: its input watermark (the newest message's time) and
     * when its timer is due next */
    int64_t last_input_ns;
    int64_t next_tick_ns;
    uint64_t late;                /* messages dropped: before every open window */
} window_spec_t;

/* Now, in ns on the wall clock. */
int64_t window_now(void);

/* With GIL. A spec for ("to_range_windows", range, slide, delay, agg) or
 * ("to_count_windows", count, agg); NULL with a message in err. */
window_spec_t *window_spec_new(PyObject *stage, char *err, size_t errlen);
/* With GIL. */
void window_spec_free(window_spec_t *w);

/* The timer's period: 2 * (range + delay as given) for range windows (as
 * Wallaroo), 5 s for count windows. */
int64_t window_tick_period(const window_spec_t *w);

/* With GIL. A message for `key` (a str for output()) whose window state is
 * `st` (a list, see above): the windows it closes are output first, then it is
 * added. Each non-None output is appended to `outs`. Returns 0, or -1 with a
 * Python exception (st stays usable). */
int window_message(window_spec_t *w, PyObject *st, PyObject *key, PyObject *msg, int64_t ev,
                   int64_t wm, PyObject *outs);

/* With GIL. The timer, for one key: range windows close what the watermark
 * `wm` passed; when `idle` (no input for 4 * (range + delay)) every window
 * that holds data is output once and the key's windows are closed. Count
 * windows output their partial window. Returns 0, or -1 with an exception. */
int window_tick(window_spec_t *w, PyObject *st, PyObject *key, int64_t wm, int idle,
                PyObject *outs);

/* When the timer is due next after `now`: a period later for range windows;
 * the next multiple of 5 s of the wall clock for count windows. */
int64_t window_next_tick(const window_spec_t *w, int64_t now);

/* Whether the step has been without input long enough to flush (range). */
int window_idle(const window_spec_t *w, int64_t now);

/* A window state that holds nothing (an empty list): skipped by ticks. */
int window_state_empty(PyObject *st);

#endif
