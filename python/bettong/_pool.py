"""The connection to a pool (a local one is started by bettong._localpool): the receiver thread
that resolves futures, call and function ids, cancel, close.

One `Client` per pool connection. Senders may be any thread (the extension has one
sender lock); one daemon thread receives and resolves futures in batches. Nothing
that can block on the pool runs on the receiver thread: a reduce is submitted from a
helper thread (`defer`), so a sender blocked by a full socket can never stop the
receiver from draining results.
"""

import atexit
import collections
import os
from itertools import repeat as _repeat, starmap as _starmap
from _queue import SimpleQueue as _SimpleQueue  # (not queue: it imports heapq, time...)
import sys
import threading
import weakref

from . import errors
from ._localpool import (LocalPool, _secret_bytes, default_workers, find_binary,  # noqa: F401
                         start_local, subcall_ticket, worker_path)
from . import futures as _futures_mod
from ._serial import payload_size
from .futures import (_COND, _DONE, _notify, CANCELLED_AND_NOTIFIED, CALL_CANCELLED, CALL_OK,
                      FINISHED, resolve_local)

try:
    from . import _bettong
except ImportError as e:  # pragma: no cover - reported when a pool is used
    _bettong = None
    _IMPORT_ERROR = e

MSG_RESULT = 20
MSG_CANCELLED = 13
MSG_STATUS_REPLY = 22


# Calls held back by call_async/submit before they are sent at once.
_OUTQ_MAX = 512
_MAX_ARGS = 2047 * 1024 * 1024 - 64  # PROTO_MAX_FRAME, less the CALLS header

# Functions kept registered in the pool for reuse (by digest), and their bytes.
_FUNC_CACHE_ENTRIES = 64
_FUNC_CACHE_BYTES = 256 * 1024 * 1024


# This process's id, kept by an at-fork hook: os.getpid() is a system call (about
# 2 us on some virtual machines, more than the rest of a call_async), and the hot
# call paths ask on every call whether the process forked since its pool
# connection was made. A fork that skips the hooks (a C fork() without
# PyOS_AfterFork_Child) leaves the interpreter unfit to run Python anyway.
PID = [os.getpid()]


def _pid_after_fork():
    PID[0] = os.getpid()


os.register_at_fork(after_in_child=_pid_after_fork)


def _extension():
    if _bettong is None:
        raise ImportError(
            "bettong's C extension (bettong._bettong) is not built: run `make` in the "
            f"Bettong repository ({_IMPORT_ERROR})")
    return _bettong


_clients = weakref.WeakSet()


def flush_all():
    for c in list(_clients):
        if c._outq:
            try:
                c.flush()
            except BaseException:
                pass


_futures_mod.flush_all = flush_all


@atexit.register
def _close_all():
    for c in list(_clients):
        try:
            c.close()
        except Exception:
            pass


class Client:
    """One connection to a pool and everything in flight on it."""

    def __init__(self, address=None, secret=None, workers=None, name=None, local=None):
        """local: a LocalPool already starting (start_local), used when no address
        is given; else one is started here."""
        ext = _extension()
        self.pid = os.getpid()
        self.local = None
        self.parent_task = 0
        ticket = subcall_ticket() if address is None and secret is None else None
        if ticket is not None:
            # Inside a call on a pool: back into the same pool as its sub-call client.
            address, self.parent_task, secret = ticket
        secret = _secret_bytes(secret)
        if address is None:
            if local is not None and local.pid == self.pid:
                self.local = local
            else:
                self.local = LocalPool(workers or default_workers(), secret)
            address = self.local.address()
        if name is None:
            name = f"{os.path.basename(sys.argv[0] or 'python')}[{os.getpid()}]"
        try:
            if self.parent_task:
                self.conn = ext.Connection(address, secret, name, parent_task=self.parent_task)
            else:
                self.conn = ext.Connection(address, secret, name)
        except BaseException:
            if self.local:
                self.local.stop()
            raise
        self.address = address
        self.workers = self.conn.workers
        self.closed = False
        self._closing = False
        self._pending = {}            # call_id -> future
        self._ids = ext.CallIds()      # call ids (also taken by executor._Hot's HotCall)
        self._func_lock = threading.Lock()
        self._next_func = 1
        self._funcs = collections.OrderedDict()  # digest -> [func_id, size, pins]
        self._func_bytes = 0
        self._cancel_waits = {}        # call_id -> [Event, ...]
        self._status_waits = []
        self._status = None
        self._deferred = None
        self._defer_lock = threading.Lock()
        self._outq = collections.deque()   # calls held back: (func_id, tms, retries, id, payload, near)
        self._send_lock = threading.Lock()  # one flush at a time (keeps their order)
        self._flush_ev = threading.Event()
        self._flusher = None
        self._close_when_idle = False
        self._receiver = threading.Thread(target=self._receive, name="bettong-receiver",
                                          daemon=True)
        self._receiver.start()
        _clients.add(self)

    # ------------------------------------------------------------ ids, functions
    def call_ids(self, n):
        """Reserve n consecutive call ids; returns the first."""
        return self._ids.take(n)

    def pin_function(self, pf):
        """The pool's id for a pickled function, sending it if the pool does not
        have it. Pinned until unpin_function: it cannot be forgotten meanwhile.
        The registry lock is held while FUNC goes out, so no thread can send calls
        of a function before the pool has it."""
        with self._func_lock:
            ent = self._funcs.get(pf.digest)
            if ent is not None:
                self._funcs.move_to_end(pf.digest)
                ent[2] += 1
                return ent[0]
            func_id = self._next_func
            self._next_func += 1
            evict = self._evictable(len(pf.payload))
            if evict:
                self.flush()  # calls of those functions still held back go first
                self.conn.forget(evict)
            self.conn.send_func(func_id, pf.payload)
            self._funcs[pf.digest] = [func_id, len(pf.payload), 1]
            self._func_bytes += len(pf.payload)
            return func_id

    def _evictable(self, incoming=0):
        """Drop unpinned functions (least recently used first) until `incoming`
        more bytes fit; returns their ids, to FORGET."""
        out = []
        funcs = self._funcs
        for digest, ent in list(funcs.items()):
            if (len(funcs) < _FUNC_CACHE_ENTRIES
                    and self._func_bytes + incoming <= _FUNC_CACHE_BYTES):
                break
            if ent[2] == 0:
                del funcs[digest]
                self._func_bytes -= ent[1]
                out.append(ent[0])
        return out

    def unpin_function(self, pf):
        with self._func_lock:
            ent = self._funcs.get(pf.digest)
            if ent is not None:
                ent[2] -= 1
            if len(self._funcs) > _FUNC_CACHE_ENTRIES or self._func_bytes > _FUNC_CACHE_BYTES:
                evict = self._evictable()
                if evict:
                    try:
                        self.flush()
                        self.conn.forget(evict)
                    except OSError:
                        pass

    # ------------------------------------------------------------ submitting
    def submit(self, func_id, timeout_ms, retries, first, payloads, futures, near=None):
        """Register futures for calls first.. (or for the call ids in the list
        `first`) and send them, near the store backend named `near` (None: no
        preference)."""
        pending = self._pending
        ids = range(first, first + len(futures)) if type(first) is int else first
        pending.update(zip(ids, futures))
        try:
            if near is None:
                self.conn.send_calls(func_id, timeout_ms, retries, first, payloads)
            else:
                self.conn.send_calls(func_id, timeout_ms, retries, first, payloads, near)
        except BaseException:
            for i in ids:
                pending.pop(i, None)
            raise

    def submit_one(self, func_id, timeout_ms, retries, call_id, payload, future, near=None):
        """One call (call_async, submit): held back a moment so that calls made in a
        row go out together (one message, one write, one wake-up of the pool).
        They go when someone waits for a result, when many are waiting, or else
        from the flusher thread as soon as it gets the interpreter."""
        size = len(payload) if type(payload) is bytes else payload_size(payload)
        if size > _MAX_ARGS:
            raise ValueError(f"the arguments are too large to send ({size} bytes pickled)")
        self._pending[call_id] = future
        q = self._outq
        q.append((func_id, timeout_ms, retries, call_id, payload, near))
        n = len(q)
        if n == 1:
            self._kick()
        elif n >= _OUTQ_MAX:
            self.flush()

    def _kick(self):
        """Wake the flusher for the first call held back."""
        self._start_flusher()
        self._flush_ev.set()

    def _start_flusher(self):
        if self._flusher is None:
            with self._defer_lock:
                if self._flusher is None:
                    self._flusher = threading.Thread(target=self._run_flusher,
                                                     name="bettong-flush", daemon=True)
                    self._flusher.start()

    def _run_flusher(self):
        ev = self._flush_ev
        while not self._closing:
            ev.wait()
            ev.clear()
            if self._closing:
                return
            try:
                self.flush()
            except BaseException:
                pass  # the connection is gone: the receiver fails the futures

    def flush(self):
        """Send the calls held back, in order, grouped by function, options and
        locality."""
        q = self._outq
        if not q:
            return
        with self._send_lock:
            n = len(q)
            if n == 0:
                return
            items = list(_starmap(q.popleft, _repeat((), n)))
            # The common case, one group (a loop of call_async on one function):
            # told and sent without a Python step per call.
            fs, ts, rs, ids, payloads, nears = zip(*items)
            f0, t0, r0, near = fs[0], ts[0], rs[0], nears[0]
            if (fs.count(f0) == n and ts.count(t0) == n and rs.count(r0) == n
                    and nears.count(near) == n):
                try:
                    self.conn.send_calls(f0, t0, r0, ids, payloads, near)
                except BaseException:
                    q.extendleft(reversed(items))  # (see below)
                    raise
                return
            start = 0
            while start < n:
                f0, t0, r0 = items[start][:3]
                near = items[start][5]
                end = start + 1
                while (end < n and items[end][0] == f0 and items[end][1] == t0
                       and items[end][2] == r0 and items[end][5] == near):
                    end += 1
                group = items[start:end]
                try:
                    self.conn.send_calls(f0, t0, r0, [it[3] for it in group],
                                         [it[4] for it in group], near)
                except BaseException:
                    # Not sent: back to the front, for the next flush (if the
                    # connection is gone, the receiver fails their futures).
                    q.extendleft(reversed(items[start:]))
                    raise
                start = end

    def withdraw(self, futures):
        """Cancel calls already sent (a later part of their map failed to pickle)."""
        ids = list(dict.fromkeys(f._call_id for f in futures if f._call_id is not None))
        for i in ids:
            self._pending.pop(i, None)
        try:
            self.conn.cancel(ids)
        except OSError:
            pass
        resolve_local(futures, cancelled=True)

    def defer(self, fn, *args):
        """Run fn(*args) on a helper thread (from the receiver thread: sending)."""
        if self._deferred is None:
            with self._defer_lock:
                if self._deferred is None:
                    q = _SimpleQueue()
                    t = threading.Thread(target=self._run_deferred, args=(q,),
                                         name="bettong-submit", daemon=True)
                    t.start()
                    self._deferred = q
        self._deferred.put((fn, args))

    def _run_deferred(self, q):
        while True:
            item = q.get()
            if item is None:
                return
            fn, args = item
            try:
                fn(*args)
            except BaseException:  # the function reports to its own future
                pass

    # ------------------------------------------------------------ cancel, status
    def cancel_call(self, f, timeout=5.0):
        """CANCEL one call and wait (briefly) for the pool's answer."""
        call_id = f._call_id
        if self.closed or call_id not in self._pending:
            return f.cancelled()
        if self._outq and threading.current_thread() is not self._receiver:
            self.flush()
        ev = threading.Event()
        self._cancel_waits.setdefault(call_id, []).append(ev)
        try:
            self.conn.cancel(call_id)
        except OSError:
            return f.cancelled()
        if threading.current_thread() is self._receiver:
            return False  # the answer can only come through this thread
        ev.wait(timeout)
        return f.cancelled()

    def cancel_many(self, futures):
        """CANCEL calls without waiting for the answers."""
        ids = [f._call_id for f in futures if f._call_id is not None]
        if ids and not self.closed:
            try:
                self.conn.cancel(ids)
            except OSError:
                pass

    def cancel_all(self):
        """CANCEL every call in flight (without waiting for the answers)."""
        ids = list(self._pending)
        if ids and not self.closed:
            try:
                self.conn.cancel(ids)
            except OSError:
                pass

    def status(self, timeout=5.0):
        """(workers, queued, running) from the pool."""
        ev = threading.Event()
        self._status_waits.append(ev)
        self.conn.status()
        if not ev.wait(timeout) or self._status is None:
            raise TimeoutError("no STATUS_REPLY from the pool")
        return self._status

    # ------------------------------------------------------------ receiving
    def _receive(self):
        recv = self.conn.recv
        try:
            while True:
                self._dispatch(recv())
        except BaseException as e:
            self._lost(e)

    def _dispatch(self, events, RESULT=MSG_RESULT, OK=CALL_OK, CANCELLED=CALL_CANCELLED,
                  FIN=FINISHED, CAN=CANCELLED_AND_NOTIFIED):
        pop = self._pending.pop
        callbacks = []
        others = None
        with _COND:
            for ev in events:
                if ev[0] != RESULT:
                    if others is None:
                        others = []
                    others.append(ev)
                    continue
                f = pop(ev[1], None)
                if f is None:
                    continue
                if f._watch:  # a chunk's call whose items have waiters or callbacks
                    f._ev = ev
                    if ev[2] == CANCELLED:
                        f._state = CAN
                        callbacks += _notify(f, "add_cancelled")
                    else:
                        f._state = FIN
                        # which items failed is only known once the chunk is unpickled
                        callbacks += _notify(f, "add_result" if ev[2] == OK else "add_exception")
                    continue
                f._ev = ev
                if ev[2] == CANCELLED:
                    f._state = CAN
                    if f._w:
                        for w in f._w:
                            w.add_cancelled(f)
                else:
                    f._state = FIN
                    if f._w:
                        if ev[2] == OK:
                            for w in f._w:
                                w.add_result(f)
                        else:
                            for w in f._w:
                                w.add_exception(f)
                if f._cb:
                    callbacks.append(f)
            if others:
                for ev in others:
                    if ev[0] == MSG_CANCELLED and ev[2]:
                        f = pop(ev[1], None)
                        if f is not None and f._state not in _DONE:
                            f._state = CAN
                            callbacks += _notify(f, "add_cancelled")
            _COND.notify_all()
        for f in callbacks:
            f._invoke_callbacks()
        if self._close_when_idle and not self._pending:
            self._close_when_idle = False
            self.defer(self.close)
        if others:
            for ev in others:
                if ev[0] == MSG_CANCELLED:
                    for e in self._cancel_waits.pop(ev[1], ()):
                        e.set()
                elif ev[0] == MSG_STATUS_REPLY:
                    self._status = tuple(ev[1:4])
                    waits, self._status_waits = self._status_waits, []
                    for e in waits:
                        e.set()

    def _lost(self, exc):
        """The connection ended: by close(), or the pool went away."""
        self.closed = True
        futures = list(self._pending.values())
        self._pending.clear()
        if self._closing:
            resolve_local(futures, cancelled=True)
        else:
            err = errors.PoolError(f"lost the connection to the pool at {self.address}: {exc}")
            resolve_local(futures, exc=err)
        for evs in list(self._cancel_waits.values()):
            for e in evs:
                e.set()
        self._cancel_waits.clear()
        for e in self._status_waits:
            e.set()

    # ------------------------------------------------------------ closing
    def close(self, timeout=5.0):
        """Close the connection (a local pool then exits with its workers). Calls in
        flight are cancelled."""
        if self._closing:
            return
        self._closing = True
        _clients.discard(self)
        if self.pid != os.getpid():  # a forked child: the parent's pool is not ours
            return
        self.conn.close()
        if threading.current_thread() is not self._receiver:
            self._receiver.join(timeout)
        if self._deferred is not None:
            self._deferred.put(None)
        self._flush_ev.set()  # the flusher sees _closing and ends
        if self.local is not None:
            self.local.stop(timeout)

    def release(self):
        """Its executor is gone: close now, or once the calls in flight are done
        (their futures may still be waited on)."""
        if self._pending and not self.closed:
            self._close_when_idle = True
            if self._pending:
                return
        if threading.current_thread() is self._receiver:
            self.defer(self.close)
        else:
            self.close()

    def interrupt(self):
        """Ctrl-C: drop what has not started, then close."""
        if self._closing:
            return
        self.cancel_all()
        self.close()
