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
 * Event time (issue 12 item 2, a Bettong extension; docs/user-guide.md,
 * "Windows on event time"): range windows given .with_event_time(extractor,
 * max_out_of_order) and session windows take each message's time from the
 * user's extractor (int ns, or a datetime: naive ones are UTC) and keep a
 * watermark PER KEY, in the key's window state (so it is checkpointed and
 * moves with the slot, and results do not depend on how keys are spread over
 * workers nor on how forwarded messages interleave):
 *   [max_ev, seen_at, wm, wins]
 *   max_ev   the greatest event time seen for the key
 *   seen_at  the wall clock (window_now) of the key's latest message
 *   wm       the key's watermark, never going back: on a message
 *            max(wm, max_ev - max_out_of_order); on a timer tick also
 *            max_ev - max_out_of_order + (now - seen_at), so a key's windows
 *            close while it is idle (Bytewax's EventClock advances the same
 *            way, counting from when the max was seen; here from the key's
 *            latest message, so a steadily fed key never moves on the wall
 *            clock between its messages)
 *   wins     its windows, sorted by start: lists [start, end, acc, closed]
 *            range:   [k*slide, k*slide + range), aligned to the epoch (0);
 *                     open while end > wm
 *            session: first and last event time of the session; events at
 *                     most `gap` apart are in one session; open while
 *                     last + gap >= wm
 *            only windows that got data exist (no empty-window outputs).
 * A message is late when its event time is before the key's watermark. Late
 * policy: drop (counted, logged once and at exit); update (with the closed
 * windows kept until the watermark is `keep` past their closing, the late
 * message is added to the windows it falls in that are still kept, and each
 * closed one it changed is output again at once); side output (the message
 * goes to the late sink, encoded by that sink's encoder). An event-time state
 * with no window left stays (its watermark still tells late data); the timer
 * skips it without a Python call (window_state_empty). Ingest-time session windows (no
 * extractor) are the same with the ingest time as event time and max out of
 * order 0. */
#ifndef BETTONG_WINDOW_H
#define BETTONG_WINDOW_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

typedef enum { WINDOW_RANGE, WINDOW_COUNT, WINDOW_SESSION } window_kind;

typedef enum { LATE_DROP, LATE_UPDATE, LATE_SIDE } window_late_policy;

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
    /* event time (see above); et = 0: Wallaroo's ingest-time range windows */
    int et;
    int64_t gap;                  /* session windows */
    PyObject *extractor;          /* owned; NULL: the ingest time is the event time */
    int source_time;              /* no extractor: the source's event time (ms) */
    int64_t max_ooo;              /* max out of order, ns */
    window_late_policy late_policy;
    int64_t keep;                 /* LATE_UPDATE: closed windows kept this long (ns) */
    int output_bounds;            /* output(key, acc, (start, end)) */
    PyObject *late_sink_cfg;      /* owned, LATE_SIDE: the sink config (graph.c loads it) */
    size_t late_sink;             /* LATE_SIDE: into app->sinks, set by graph.c */
    PyObject *late_encode;        /* owned, LATE_SIDE: that sink's encoder, set by graph.c */
    uint64_t late_side, late_updated;
    PyObject *epoch_naive, *epoch_utc; /* owned: datetimes are converted from these */
} window_spec_t;

/* Now, in ns on the wall clock. */
int64_t window_now(void);

/* With GIL. A spec for ("to_range_windows", range, slide, delay, agg),
 * ("to_range_windows", range, slide, 0, agg, ET) (event time),
 * ("to_session_windows", gap, agg, ET) or ("to_count_windows", count, agg),
 * where ET = ("event_time", extractor or None (ingest time) or "source",
 * max_out_of_order, policy ("drop", "update" or "side"), keep, sink config or
 * None, output_bounds);
 * NULL with a message in err. */
window_spec_t *window_spec_new(PyObject *stage, char *err, size_t errlen);
/* With GIL. */
void window_spec_free(window_spec_t *w);

/* The Aggregation of a window stage (borrowed), or NULL. */
PyObject *window_stage_aggregation(PyObject *stage);

/* The timer's period: 2 * (range + delay as given) for range windows (as
 * Wallaroo), 5 s for count windows; event time: half the slide (the gap),
 * between 10 ms and 1 s. */
int64_t window_tick_period(const window_spec_t *w);

/* With GIL. A message for `key` (a str for output()) whose window state is
 * `st` (a list, see above): the windows it closes are output first, then it is
 * added. Each non-None output is appended to `outs`. `ev` and `wm` are the
 * ingest time (both); event-time windows take the event time from the
 * extractor and `wm` as the wall clock of the key's idle clock; with
 * source_time, `ev` is the event time the message's source gave (ms since
 * 1970, a connector frame's; 0: none, a user error). Returns 0, 1
 * when the message is late and goes to the late sink (LATE_SIDE), or -1 with
 * a Python exception (st stays usable). */
int window_message(window_spec_t *w, PyObject *st, PyObject *key, PyObject *msg, int64_t ev,
                   int64_t wm, PyObject *outs);

/* With GIL. The timer, for one key: range windows close what the watermark
 * `wm` passed (event time: `wm` is the wall clock, window_tick_clock, and the
 * key's watermark moves on with it while the key is idle); when `idle` (no
 * input for 4 * (range + delay); not on event time) every window that holds
 * data is output once and the key's windows are closed. Count windows output
 * their partial window. Returns 0, or -1 with an exception. */
int window_tick(window_spec_t *w, PyObject *st, PyObject *key, int64_t wm, int idle,
                PyObject *outs);

/* The clock window_tick wants: the step's newest ingest time (Wallaroo's
 * windows), or the wall clock `now` (event time). */
int64_t window_tick_clock(const window_spec_t *w, int64_t now);

/* When the timer is due next after `now`: a period later for range windows;
 * the next multiple of 5 s of the wall clock for count windows. */
int64_t window_next_tick(const window_spec_t *w, int64_t now);

/* Whether the step has been without input long enough to flush (range). */
int window_idle(const window_spec_t *w, int64_t now);

/* A window state that holds nothing (an empty list): skipped by ticks. */
int window_state_empty(PyObject *st);

#endif
