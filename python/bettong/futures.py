"""Futures of bettong calls, and waiting for many of them.

`ResponseFuture` is a `concurrent.futures.Future`, so `concurrent.futures.wait` and
`as_completed` work on it. It is made cheap for maps of many items:

- every bettong future shares one condition (`_COND`), so a future costs no lock of
  its own; the receiver thread resolves a whole batch of results under it at once
  and wakes the waiters once;
- a result stays a pickle until `result()` (or `exception()`) is called, on the
  caller's thread: a huge result does not hold up the others;
- the waiter and callback lists are created on first use.
"""

import concurrent.futures as _cf
import itertools
import threading
import time
import weakref
from concurrent.futures import CancelledError
from concurrent.futures._base import (CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED,
                                      PENDING)

from . import errors

try:
    from ._bettong import chunk_items as _chunk_items, chunk_runs as _chunk_runs
    from ._bettong import gc_track as _gc_track
except ImportError:  # (only the workers import this without the extension)
    _chunk_items = _chunk_runs = None

    def _gc_track(obj):
        pass

try:
    from ._bettong import (CALL_CANCELLED, CALL_ERROR, CALL_OK, CALL_RAISED,
                           CALL_TIMEOUT, CALL_WORKER_DIED)
except ImportError:
    CALL_OK, CALL_RAISED, CALL_WORKER_DIED, CALL_TIMEOUT, CALL_CANCELLED, CALL_ERROR = range(6)

from _pickle import loads as _loads  # (pickle.loads without the module around it)

# A result pickled with out-of-band buffers (src/pool/shm.h): a numpy array's
# data, say, lies page-aligned after the pickle in a file the worker wrote; the
# payload is that file mapped privately (bettong.MappedFile), or its bytes.
_OOB_MAGIC = b"\0BTGOOB1"


def _load_oob(payload):
    """Unpickle an out-of-band file over views of it (no copy when mapped)."""
    mv = memoryview(payload)
    le = int.from_bytes
    nbuf = le(mv[8:12], "little")
    poff, plen = le(mv[16:24], "little"), le(mv[24:32], "little")
    bufs = []
    for i in range(nbuf):
        at = 32 + 16 * i
        off, n = le(mv[at:at + 8], "little"), le(mv[at + 8:at + 16], "little")
        # (from bytes, a copy: the values would otherwise be read-only)
        bufs.append(mv[off:off + n] if not mv.readonly else bytearray(mv[off:off + n]))
    return _loads(mv[poff:poff + plen], buffers=bufs)


def _is_pickle(payload):
    """Whether a successful call's payload is a plain pickle (not out of band)."""
    return type(payload) is bytes and not payload.startswith(_OOB_MAGIC)


def _load_result(payload):
    """A successful call's value from its payload."""
    return _loads(payload) if _is_pickle(payload) else _load_oob(payload)


# wait() conditions. The first two are concurrent.futures' own values, so the
# standard module's constants work here too.
ALL_COMPLETED = _cf.ALL_COMPLETED
ANY_COMPLETED = _cf.FIRST_COMPLETED
FIRST_COMPLETED = _cf.FIRST_COMPLETED
ALWAYS = "ALWAYS"
_RETURN_WHEN = {
    ALL_COMPLETED: ALL_COMPLETED, ANY_COMPLETED: ANY_COMPLETED, ALWAYS: ALWAYS,
    "ANY_COMPLETED": ANY_COMPLETED, _cf.FIRST_EXCEPTION: _cf.FIRST_EXCEPTION,
    # PyWren's integer spellings
    1: ALL_COMPLETED, 2: ANY_COMPLETED, 3: ALWAYS,
}

_DONE = frozenset((FINISHED, CANCELLED, CANCELLED_AND_NOTIFIED))
_CANCELLED = frozenset((CANCELLED, CANCELLED_AND_NOTIFIED))

def flush_all():
    """Send the calls every pool connection holds back (set by _pool)."""


# One condition for every bettong future (reentrant, as concurrent.futures.wait
# acquires the condition of each future it is given).
_COND = threading.Condition(threading.RLock())


class ResponseFuture(_cf.Future):
    """The future of one call. `stats` gives its timings once it is done."""

    _condition = _COND
    _state = PENDING
    _result = None
    _exception = None
    _ev = None          # the RESULT event tuple (its payload dropped once decoded, if large)
    _dec = False        # _result / _exception are set from it
    _w = None           # waiters (concurrent.futures protocol), made on first use
    _cb = None          # done callbacks, made on first use
    _collected = False  # its result was fetched (get_result(None) skips it)
    _job = None         # the executor's record of the submission it belongs to
    _client = None
    _call_id = None
    _cancel_hook = None  # for a future not sent yet (a reduce): how to cancel it
    _n = 0              # a chunk's call (map with chunksize): the number of its items
    _watch = None       # ... those of them with waiters or callbacks (until it is done)
    _chunk = None       # an item of a chunk: the chunk's call
    _index = 0
    _ncoll = 0          # a chunk's call: items collected one by one
    _all_collected = False  # ... all its items collected at once

    def __init__(self, client=None, call_id=None):  # noqa: D107 (no super().__init__: no lock)
        # Every attribute set later on the hot paths is made here, so that setting
        # it then does not grow the instance's dict (which costs more than all of
        # this). call_async's prepared path (_bettong.HotCall) makes its futures
        # without running this: each attribute below other than _client and
        # _call_id must equal its class default.
        self._client = client
        self._call_id = call_id
        self._state = PENDING
        self._ev = None
        self._job = None
        self._result = None
        self._dec = False
        self._collected = False
        self._w = None
        self._cb = None

    # concurrent.futures' code reads these two lists; make them on first use.
    @property
    def _waiters(self):
        w = self._w
        if w is None:
            w = self._w = []
        return w

    @property
    def _done_callbacks(self):
        cb = self._cb
        if cb is None:
            cb = self._cb = []
        return cb

    @property
    def call_id(self):
        return self._call_id

    def __repr__(self):
        state = self._state.lower()
        if self._state == FINISHED:
            state += " (error)" if self.errored() else ""
        return f"<ResponseFuture call {self._call_id} {state}>"

    # ---- state
    def done(self):
        return self._state in _DONE

    def cancelled(self):
        return self._state in _CANCELLED

    def running(self):
        return False  # the pool does not say when a call starts

    def succeeded(self):
        """Done, and the function returned."""
        if self._state != FINISHED:
            return False
        if self._dec:
            return self._exception is None
        ev = self._ev
        return ev is None or ev[2] == CALL_OK

    def errored(self):
        """Done, and the call failed (raised, timed out, its worker died, ...)."""
        return self._state == FINISHED and not self.succeeded()

    # Lithops spellings
    @property
    def success(self):
        return self.succeeded()

    @property
    def error(self):
        return self.errored()

    @property
    def ready(self):
        return self.done()

    @property
    def stats(self):
        """Timings once done: submitted, started, finished (epoch seconds), the
        worker that ran the call (its id in the pool), the store backend that
        worker runs next to (`worker_near`: the name it joined with,
        `bettong worker --near-store NAME`; None if it has none or the call
        never ran) and the attempts it took. Empty before."""
        ev = self._ev
        if ev is None:
            return {}
        sub, start, fin = ev[5] / 1e6, ev[6] / 1e6, ev[7] / 1e6
        return {
            "call_id": ev[1], "worker": ev[3], "worker_near": ev[8], "attempts": ev[4],
            "submitted": sub, "started": start, "finished": fin,
            "exec_time": max(0.0, fin - start) if start else 0.0,
            # Lithops names of the same times
            "host_submit_tstamp": sub, "worker_start_tstamp": start,
            "worker_end_tstamp": fin,
        }

    # ---- outcome
    def _decode(self):
        """Turn the raw result into a value or an exception (once). The event
        tuple stays for the stats; a large payload is dropped from it."""
        ev = self._ev
        if self._dec or ev is None:
            return
        status, payload = ev[2], ev[9]
        if len(ev) == 11:  # the result itself (a big bytes), not its pickle
            self._result = payload
        elif status == CALL_OK:
            try:
                self._result = _load_result(payload)
            except BaseException as e:
                self._exception = e
        elif status == CALL_RAISED:
            self._exception = errors.raised_exception(payload)
        elif status == CALL_WORKER_DIED:
            self._exception = errors.worker_died(payload)
        elif status == CALL_TIMEOUT:
            self._exception = errors.timed_out(payload)
        elif status != CALL_CANCELLED:
            self._exception = errors.call_error(payload)
        self._dec = True
        if len(payload) > 4096:
            self._ev = ev[:9]

    def _wait(self, timeout):
        if self._state in _DONE:
            return
        client = self._client
        if client is not None and client._outq:
            client.flush()  # calls still held back to be sent together go now
        try:
            with _COND:
                if timeout is None:
                    while self._state not in _DONE:
                        _COND.wait()
                else:
                    end = time.monotonic() + timeout
                    while self._state not in _DONE:
                        left = end - time.monotonic()
                        if left <= 0:
                            raise TimeoutError(f"call {self._call_id} not done after {timeout} s")
                        _COND.wait(left)
        except KeyboardInterrupt:
            if self._client is not None:
                self._client.interrupt()
            raise

    def _collect(self):
        self._collected = True
        job = self._job
        if job is not None:
            self._job = None
            job.collected_one()

    def result(self, timeout=None):
        self._wait(timeout)
        if not self._collected:
            self._collect()
        if self._state != FINISHED:
            raise CancelledError()
        if not self._dec:
            self._decode()
        exc = self._exception
        if exc is not None:
            raise exc
        return self._result

    def exception(self, timeout=None):
        self._wait(timeout)
        if self._state != FINISHED:
            raise CancelledError()
        if not self._dec:
            self._decode()
        return self._exception

    def cancel(self):
        """Drop the call if it has not started. Returns whether it was dropped."""
        state = self._state
        if state in _DONE:
            return state in _CANCELLED
        if self._call_id is None:
            hook = self._cancel_hook
            return bool(hook and hook(self))
        client = self._client
        return bool(client and client.cancel_call(self))

    def set_running_or_notify_cancel(self):
        raise RuntimeError("bettong futures are run by the pool")


class ChunkItem(ResponseFuture):
    """The future of one item of a map with chunksize: its chunk (one pool call,
    `_chunk`) runs the items one after the other on a worker. An item holds only
    its chunk and index: state, stats, call id and cancel are the chunk's
    (cancelling an item cancels its chunk); the result is the item's, taken from
    the chunk's list when asked for.

    A map makes a chunk's items in C (make_items), untracked by the cycle
    collector (see _bettong.chunk_items). That stays sound because nothing an item
    can reach leads back to it: the chunk does not list its items (runs of them in
    a list are found with chunk_runs), it holds its Job weakly, and it holds items
    with waiters or callbacks (`_watch`) only until it is done. An item is tracked
    again before anything is stored on it (__setattr__)."""

    # Its two own fields are slots, filled from C without a Python call per item.
    __slots__ = ("_chunk", "_index")

    def __init__(self, chunk, index):  # noqa: D107
        self._chunk = chunk
        self._index = index

    def __setattr__(self, name, value):
        _gc_track(self)
        object.__setattr__(self, name, value)

    # The chunk's, read through (and the chunk's state written through).
    @property
    def _state(self):
        return self._chunk._state

    @_state.setter
    def _state(self, value):
        self._chunk._state = value

    @property
    def _ev(self):
        return self._chunk._ev

    @_ev.setter
    def _ev(self, value):
        pass  # the chunk's event is the item's

    @property
    def _call_id(self):
        return self._chunk._call_id

    @property
    def _client(self):
        return self._chunk._client

    @property
    def _job(self):
        return _job_of(self._chunk)

    @_job.setter
    def _job(self, value):
        self._chunk._job = None if value is None else weakref.ref(value)

    @property
    def _dec(self):
        return False  # decoded on each look (a list index), never cached here

    @_dec.setter
    def _dec(self, value):
        pass

    # waiters and callbacks are the item's own; the chunk is told to pass its end
    # on (with _COND held: concurrent.futures reads these under the condition)
    def _watch(self):
        c = self._chunk
        if c._state in _DONE:
            return  # nothing more to pass on
        if c._watch is None:
            c._watch = []
        if not any(x is self for x in c._watch):  # (waiters and callbacks: once)
            c._watch.append(self)

    @property
    def _waiters(self):
        w = self.__dict__.get("_w")
        if w is None:
            w = self._w = []
            self._watch()
        return w

    @property
    def _done_callbacks(self):
        cb = self.__dict__.get("_cb")
        if cb is None:
            cb = self._cb = []
            self._watch()
        return cb

    def _outcome(self):
        """(value, exception) of this item, from the chunk's result."""
        c = self._chunk
        if not c._dec:
            c._decode()
        if c._exception is not None:
            return None, c._exception
        try:
            values, errs = c._result
            if errs and self._index in errs:
                exc = self.__dict__.get("_exception")
                if exc is None:
                    exc = self._exception = errors.rebuilt_exception(errs[self._index])
                return None, exc
            return values[self._index], None
        except Exception as e:  # not what ChunkFunction returns
            return None, errors.RemoteError(type(e).__name__, f"bad result of a chunk: {e}")

    def _decode(self):
        pass

    @property
    def _collected(self):
        return self.__dict__.get("_c", False) or self._chunk._all_collected

    @_collected.setter
    def _collected(self, value):
        self._c = value

    def _collect(self):
        self._c = True
        c = self._chunk
        c._ncoll += 1
        job = _job_of(c)
        if job is not None:
            job.collected_one()

    def result(self, timeout=None):
        self._wait(timeout)
        if not self._collected:
            self._collect()
        if self._state != FINISHED:
            raise CancelledError()
        value, exc = self._outcome()
        if exc is not None:
            raise exc
        return value

    def exception(self, timeout=None):
        self._wait(timeout)
        if self._state != FINISHED:
            raise CancelledError()
        return self._outcome()[1]

    def succeeded(self):
        return self._state == FINISHED and self._outcome()[1] is None

    def __repr__(self):
        return f"<ResponseFuture call {self._call_id}[{self._index}] {self._state.lower()}>"


def _job_of(chunk):
    """The Job of a chunk's call (held weakly, see ChunkItem), or None."""
    ref = chunk._job
    return ref() if ref is not None else None


def make_items(chunks, k, n):
    """The futures of the n items of the calls of consecutive chunks of k items
    (the last may have fewer), in order."""
    for c in chunks:
        c._n = k
    if chunks:
        chunks[-1]._n = n - (len(chunks) - 1) * k
    if _chunk_items is not None:
        return _chunk_items(ChunkItem, chunks, k, n)
    return [ChunkItem(chunks[i // k], i % k) for i in range(n)]


def _run(fs, i):
    """How many futures of the list fs from i on are consecutive items of one
    chunk (0 if fs[i] is not an item of a chunk)."""
    f = fs[i]
    if type(f) is not ChunkItem:
        return 0
    c, k, j, n = f._chunk, f._index, i + 1, len(fs)
    while j < n and type(fs[j]) is ChunkItem and fs[j]._chunk is c and fs[j]._index == k + j - i:
        j += 1
    return j - i


def _run_lengths(fs):
    """The list fs cut into runs, in order: n > 0 for n consecutive items of one
    chunk, 0 for one future outside such a run (one walk, in C)."""
    if _chunk_runs is not None:
        return _chunk_runs(ChunkItem, fs)
    out, i, n = [], 0, len(fs)
    while i < n:
        m = _run(fs, i)
        out.append(m)
        i += m or 1
    return out


class FutureList(list):
    """The list of futures map() returns (a list that can be weakly referenced)."""

    __slots__ = ("__weakref__", "_chunks")

    def __init__(self, *args):
        super().__init__(*args)
        self._chunks = None  # a chunked map's: the calls of its chunks, in order


class Job:
    """An executor's record of one submission (call_async, map, map_reduce) whose
    results were not all collected; it forgets the job once they are, so that
    results the caller dropped are freed."""

    __slots__ = ("kind", "futures", "left", "jobs", "__weakref__")

    def __init__(self, kind, futures, jobs, chunks=None):
        self.kind = kind
        self.futures = futures
        self.left = len(futures)
        self.jobs = jobs  # the executor's dict of jobs
        if chunks is None and futures and futures[0]._chunk is not None:
            chunks = dict.fromkeys(f._chunk for f in futures)
        if chunks is not None:  # items of chunks (a chunked map): on the chunks, weakly
            ref = weakref.ref(self)
            for c in chunks:
                c._job = ref
        else:
            for f in futures:
                f._job = self
        jobs[id(self)] = self

    def collected_one(self):
        self.left -= 1
        if self.left <= 0:
            self.jobs.pop(id(self), None)


# ------------------------------------------------------------------ resolving

def _notify(f, how):
    """With _COND held: tell f's waiters (concurrent.futures' protocol) it ended;
    a chunk's call tells those of its items too. Returns the futures whose done
    callbacks are to run."""
    out = []
    watch = f._watch
    if watch is not None:
        f._watch = None  # done: it holds its items no longer (see ChunkItem)
    for x in (f,) + tuple(watch or ()):
        if x._w:
            for w in x._w:
                getattr(w, how)(x)
        if x._cb:
            out.append(x)
    return out


def resolve_local(futures, exc=None, cancelled=False):
    """Finish futures on this side: cancelled, or failed with `exc`. For an item
    of a chunk, that is its chunk's call (and so every item of it)."""
    todo = []
    with _COND:
        for f in futures:
            if f._chunk is not None:
                f = f._chunk
            if f._state in _DONE:
                continue
            if cancelled:
                f._state = CANCELLED_AND_NOTIFIED
                todo += _notify(f, "add_cancelled")
            else:
                f._exception = exc
                f._dec = True
                f._state = FINISHED
                todo += _notify(f, "add_exception")
        _COND.notify_all()
    for f in todo:
        f._invoke_callbacks()


# ------------------------------------------------------------------ waiting

class _Counter:
    """A waiter (concurrent.futures' protocol) that counts completions."""

    __slots__ = ("n", "errors")

    def __init__(self):
        self.n = 0
        self.errors = 0

    def add_result(self, f):
        self.n += 1

    def add_exception(self, f):
        self.n += 1
        self.errors += 1

    def add_cancelled(self, f):
        self.n += 1


class _Runs:
    """A list of bettong futures seen as runs, from one walk of it: holders[j] is
    the future whose state tells when the j-th run is done, weights[j] how many
    futures of the list it stands for (None: one each) and starts[j] where it
    starts. A run of one chunk's items, as map made them, is that chunk's call;
    any other future is a run of one (an item: its chunk)."""

    __slots__ = ("fs", "holders", "weights", "starts")

    def __init__(self, fs, holders, weights):
        self.fs, self.holders, self.weights = fs, holders, weights
        self.starts = None if weights is None else [0, *itertools.accumulate(weights)][:-1]

    @classmethod
    def of(cls, fs):
        """The runs of the list fs, or None when one of fs is not a bettong future."""
        RF = ResponseFuture
        if not fs or not isinstance(fs[0], RF) or fs[0]._chunk is None:
            if not all(map(isinstance, fs, itertools.repeat(RF))):
                return None
            return cls(fs, [f._chunk or f for f in fs], None)
        hs, ws, i = [], [], 0
        for m in _run_lengths(fs):
            f = fs[i]
            if m:
                hs.append(f._chunk)
                ws.append(m)
                i += m
                continue
            if not isinstance(f, RF):
                return None
            hs.append(f._chunk or f)
            ws.append(1)
            i += 1
        return cls(fs, hs, ws)

    def undone(self):
        """The indexes of the runs not done yet."""
        return [j for j, h in enumerate(self.holders) if h._state not in _DONE]

    def count(self, runs):
        """How many futures the runs of these indexes stand for."""
        ws = self.weights
        return len(runs) if ws is None else sum(ws[j] for j in runs)

    def futures(self, runs):
        """The futures of the runs of these indexes, in order."""
        fs, ws = self.fs, self.weights
        if ws is None:
            return [fs[j] for j in runs]
        out = []
        for j in runs:
            out += fs[self.starts[j]:self.starts[j] + ws[j]]
        return out

    def split(self):
        """(done, not_done): the futures, in order."""
        left = self.undone()
        if not left:
            return list(self.fs), []
        nd = self.futures(left)
        ids = set(map(id, nd))
        return [f for f in self.fs if id(f) not in ids], nd


def _pending(fs):
    """The futures of the list fs not done yet."""
    runs = _Runs.of(fs)
    if runs is None:
        return [f for f in fs if not f.done()]
    return runs.futures(runs.undone())


def wait_futures(fs, return_when=ALL_COMPLETED, timeout=None, show_progressbar=None,
                 on_interrupt=None, lists=True):
    """Wait for bettong futures; returns (done, not_done) lists in the order of fs
    (or, with lists=False, only whether all are done).

    ALWAYS looks once without blocking; a timeout returns what is done by then.
    Ctrl-C calls on_interrupt() (default: interrupt the futures' pools) and
    re-raises."""
    fs = fs if isinstance(fs, list) else list(fs)
    return _wait_runs(fs, _Runs.of(fs), return_when, timeout, show_progressbar, on_interrupt,
                      lists)


def _wait_runs(fs, runs, return_when, timeout, show_progressbar, on_interrupt, lists,
               ready=None):
    """wait_futures on the list fs, whose runs (_Runs.of(fs)) are known. With
    ALL_COMPLETED, ready(holders) is called, without the lock, with the futures
    that tell when runs are done (see _Runs) as they are done, in order, while
    the rest are waited for (results_of decodes them meanwhile)."""
    rw = _RETURN_WHEN.get(return_when)
    if rw is None:
        raise ValueError(f"unknown return_when {return_when!r}")
    if runs is None:
        # other kinds of futures: the standard way
        if rw == ALWAYS:
            d, nd = [f for f in fs if f.done()], [f for f in fs if not f.done()]
        else:
            d, nd = _cf.wait(fs, timeout, rw)
        d, nd = [f for f in fs if f in d], [f for f in fs if f in nd]
        return (d, nd) if lists else not nd
    pending = runs.undone()
    if rw == ALWAYS or not pending:
        return runs.split() if lists else not pending

    from .progress import Progress
    flush_all()  # calls held back to be sent together go now
    total = len(fs)
    bar = Progress(total, total - runs.count(pending), show_progressbar)
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        if rw != ALL_COMPLETED:
            with _COND:
                _wait_first(runs.futures(pending), fs, rw, bar, deadline)
        else:
            hs = [runs.holders[j] for j in pending]
            ws = None if runs.weights is None else [runs.weights[j] for j in pending]
            base = total - (len(hs) if ws is None else sum(ws))
            if ready is None:
                with _COND:
                    _wait_all(hs, ws, base, bar, deadline)
            else:
                ready(runs.holders)  # those done already: while the others run
                i = 0
                while i < len(hs):
                    with _COND:
                        j = _wait_all(hs, ws, base, bar, deadline, i, early=True)
                    if j == i:
                        break  # the deadline
                    ready(hs[i:j])
                    i = j
    except KeyboardInterrupt:
        bar.close()
        if on_interrupt is not None:
            on_interrupt()
        else:
            for c in {f._client for f in fs if f._client is not None}:
                c.interrupt()
        raise
    left = runs.undone()
    bar.update(total - runs.count(left))
    bar.close()
    if not lists:
        return not left
    return runs.split() if left else (list(fs), [])


def _wait_all(hs, ws, base, bar, deadline, i=0, early=False):
    """With _COND held: until every future of hs from i on is done (or the
    deadline); early, only until one more is. hs[j] stands for ws[j] futures
    (ws None: one each), base for those done before. A cursor walks them;
    nothing is installed on the futures. Returns the cursor: where the first
    future not done is, len(hs) once all are."""
    n, start = len(hs), i
    next_draw = 0.0
    while True:
        while i < n and hs[i]._state in _DONE:
            i += 1
        if i == n or (early and i > start):
            return i
        wait_for = bar.tick if bar.active else None
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                return i
            wait_for = left if wait_for is None else min(left, wait_for)
        _COND.wait(wait_for)
        if bar.active and time.monotonic() >= next_draw:
            done = sum(ws[j] if ws else 1 for j in range(n) if hs[j]._state in _DONE)
            bar.update(base + done)
            next_draw = time.monotonic() + bar.tick


def _wait_first(pending, fs, rw, bar, deadline):
    """With _COND held: until one future is done (ANY_COMPLETED) or one failed
    (FIRST_EXCEPTION; or all are done)."""
    # pending was looked at before _COND was taken: one may have ended since, and
    # a waiter installed on it now would never hear of it.
    pending = _pending(pending)
    if rw == ANY_COMPLETED and len(pending) < len(fs):
        return
    if rw == _cf.FIRST_EXCEPTION and any(f.errored() for f in fs):
        return
    counter = _Counter()
    for f in pending:
        f._waiters.append(counter)
    try:
        need = 1 if rw == ANY_COMPLETED else len(pending)
        while counter.n < need and not (rw == _cf.FIRST_EXCEPTION and counter.errors):
            wait_for = bar.tick if bar.active else None
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                wait_for = left if wait_for is None else min(left, wait_for)
            _COND.wait(wait_for)
            if bar.active:
                bar.update(len(fs) - len(pending) + counter.n)
    finally:
        for f in pending:
            w = f._w
            if w:
                try:
                    w.remove(counter)
                except ValueError:
                    pass


def wait(fs, return_when=ALL_COMPLETED, timeout=None, show_progressbar=None):
    """Wait for futures of any executor: (done, not_done)."""
    if isinstance(fs, _cf.Future):
        fs = [fs]
    return wait_futures(fs, return_when, timeout, show_progressbar)


def _decode_done(fs):
    """Decode the results of these futures that are done (results_of calls it
    while it waits for the others: unpickling overlaps the calls still running)."""
    for f in fs:
        if not f._dec and f._state == FINISHED:
            f._decode()


def results_of(fs, timeout=None, show_progressbar=None, throw_except=True, on_interrupt=None):
    """Results of futures (a list) in their order, after all are done; raises the
    first failure (in order) unless throw_except is false (the exception is then
    put in place of the result)."""
    runs = _Runs.of(fs)
    if not _wait_runs(fs, runs, ALL_COMPLETED, timeout, show_progressbar, on_interrupt,
                      lists=False, ready=_decode_done):
        raise TimeoutError(f"{len(_pending(fs))} of {len(fs)} calls were not done after "
                           f"{timeout} s")
    # Where a whole chunk's items are in a row, as map made them: start -> chunk.
    whole = {}
    if runs is not None and runs.weights is not None:
        for h, m, i in zip(runs.holders, runs.weights, runs.starts):
            f = fs[i]
            if f._chunk is h and m == h._n and f._index == 0:
                whole[i] = h
    out = []
    append = out.append
    loads = _loads
    i, n = 0, len(fs)
    while i < n:
        f = fs[i]
        i += 1
        chunk = f._chunk
        if chunk is not None:
            # A whole chunk in a row: its list at once.
            if (whole and whole.get(i - 1) is chunk and chunk._state == FINISHED
                    and not chunk._all_collected):
                m = chunk._n
                if not chunk._dec:
                    chunk._decode()
                if chunk._exception is None and not chunk._result[1]:
                    out += chunk._result[0]
                    i += m - 1
                    chunk._all_collected = True
                    job = _job_of(chunk)
                    if job is not None:
                        job.left -= m - chunk._ncoll
                        if job.left <= 0:
                            job.jobs.pop(id(job), None)
                    continue
            # An item of a chunk: its value straight from the chunk's list.
            if chunk._state == FINISHED:
                if not chunk._dec:
                    chunk._decode()
                if chunk._exception is None:
                    values, errs = chunk._result
                    k = f._index
                    if not errs or k not in errs:
                        if not f._collected:
                            f._collect()
                        append(values[k])
                        continue
        # The common case inline: a plain successful result, decoded while the
        # others were waited for, or here when small.
        else:
            if (not f._dec and (ev := f._ev) is not None and ev[2] == CALL_OK
                    and len(ev[9]) <= 4096):
                try:
                    f._result = loads(ev[9])
                except BaseException as e:
                    f._exception = e
                f._dec = True
            if f._dec and f._exception is None and f._state == FINISHED:
                if not f._collected:
                    f._collected = True
                    job = f._job
                    if job is not None:
                        f._job = None
                        job.left -= 1
                        if job.left <= 0:
                            job.jobs.pop(id(job), None)
                append(f._result)
                continue
        try:
            append(f.result())
        except BaseException as e:  # noqa: B902
            if throw_except:
                raise
            append(e)
    return out


def get_all_results(fs, timeout=None, show_progressbar=None, throw_except=True):
    """Results of futures of any executor, in order (PyWren's name)."""
    if isinstance(fs, _cf.Future):
        return results_of([fs], timeout, show_progressbar, throw_except)[0]
    return results_of(list(fs), timeout, show_progressbar, throw_except)
