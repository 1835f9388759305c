"""Lithops' ResponseFuture over a Bettong future.

Lithops' futures are not concurrent.futures ones: `done`, `ready`, `success`,
`error`, `running` are properties (so `if f.done:` reads the state), a future
moves Running -> Ready (finished, not yet looked at) -> Success/Done/Error once
wait()/status()/result() has read it, and result(throw_except=False) returns
None for a failed call. Bettong's own futures (bettong.ResponseFuture, a
concurrent.futures.Future with done() a method) are unchanged; this class
holds one (`_bf`).

Results travel with the status here (there is no separate download), so
status() of a successful call leaves it Done, as Lithops does for results
small enough to come inline.
"""

import logging

logger = logging.getLogger(__name__)


class ResponseFuture:
    """The result of one Lithops call (a Bettong call underneath)."""

    class State:
        New = "New"
        Invoked = "Invoked"
        Running = "Running"
        Ready = "Ready"
        Success = "Success"
        Error = "Error"
        Done = "Done"
        Unknown = "Unknown"

    # (defaults on the class: a map makes one future per item)
    activation_id = None
    logs = None
    runtime_name = "bettong"
    _produce_output = True
    _read = False
    _state = None          # set once read: Success, Done or Error
    _exception = None      # (type, value, traceback) of a failed call
    _call_output = None
    _call_status = None
    _new_futures = None
    _stats = None

    def __init__(self, bf, call_id, job):
        self._bf = bf
        self.call_id = f"{call_id:05d}"
        self._job = job

    job_id = property(lambda self: self._job.job_id)
    job_key = property(lambda self: self._job.job_key)
    executor_id = property(lambda self: self._job.executor_id)
    function_name = property(lambda self: self._job.function_name)
    execution_timeout = property(lambda self: self._job.execution_timeout)
    runtime_memory = property(lambda self: self._job.runtime_memory)

    def __repr__(self):
        return f"<lithops ResponseFuture {self.job_key}/{self.call_id} {self._current()}>"

    def _current(self):
        if self._state is not None:
            return self._state
        return ResponseFuture.State.Ready if self._bf.done() else ResponseFuture.State.Running

    def _set_state(self, state):
        self._state = state

    def cancel(self):
        raise NotImplementedError("Cannot cancel dispatched jobs")

    def cancelled(self):
        raise NotImplementedError("Cannot cancel dispatched jobs")

    @property
    def new(self):
        return False  # a future exists once its call is sent

    @property
    def invoked(self):
        return False  # (sent calls are Running until they end: the pool does not say when one starts)

    @property
    def running(self):
        return self._current() == ResponseFuture.State.Running

    @property
    def ready(self):
        return self._current() == ResponseFuture.State.Ready

    @property
    def error(self):
        return self._current() == ResponseFuture.State.Error

    @property
    def success(self):
        return self._current() in (ResponseFuture.State.Success, ResponseFuture.State.Error)

    @property
    def done(self):
        return self._current() in (ResponseFuture.State.Done, ResponseFuture.State.Error,
                                   ResponseFuture.State.Unknown)

    @property
    def futures(self):
        return self._new_futures is not None

    @property
    def stats(self):
        if self._stats is not None:
            return self._stats
        s = self._bf.stats
        if not s:
            return {}
        return {
            "host_submit_tstamp": s["submitted"],
            "worker_start_tstamp": s["started"],
            "worker_end_tstamp": s["finished"],
            "worker_exec_time": round(s["exec_time"], 8),
            "worker_func_exec_time": round(s["exec_time"], 8),
            "worker_id": s["worker"],
            "attempts": s["attempts"],
        }

    def _settle(self, bf_timeout=None):
        """Wait for the Bettong call and read its outcome (once)."""
        if self._state is not None:
            return
        bf = self._bf
        try:
            exc = bf.exception(bf_timeout)
        except BaseException as e:  # cancelled (the pool went away, ...)
            exc = e
        if exc is None:
            out = self._call_output = bf.result()
            self._state = ResponseFuture.State.Done
            new = _returned_futures(out)
            if new is not None:  # function composition: the call returned futures
                self._new_futures = new
        else:
            exc = self._lithops_exception(exc)
            self._exception = (type(exc), exc, exc.__traceback__)
            self._state = ResponseFuture.State.Error
        self._call_status = {"type": "__end__", "exception": exc is not None,
                             "activation_id": None}

    def __reduce__(self):
        """A future travels (returned by a function, ...) as its outcome: it is
        waited for, and unpickles as a future that has ended with it."""
        self._settle()
        exc = self._exception[1] if self._exception is not None else None
        if exc is not None:
            exc.__traceback__ = None
        return (_ended_future, (self.call_id, self.job_id, self.job_key, self.executor_id,
                                self.function_name, self.runtime_memory, self.stats,
                                self._call_output, exc))

    def _lithops_exception(self, exc):
        """A worker that died running a call with a memory limit is, as Lithops
        assumes for a killed call, out of memory."""
        from bettong.errors import WorkerDied
        if isinstance(exc, WorkerDied) and self.runtime_memory:
            err = MemoryError("Function exceeded maximum memory and was killed")
            err.__cause__ = exc
            return err
        return exc

    def _raise(self):
        typ, value, tb = self._exception
        raise value.with_traceback(tb)

    def status(self, throw_except=True, internal_storage=None, check_only=False, wait_dur_sec=1):
        """The call's status (a dict) once it ended; raises the call's exception
        when it failed and throw_except is true. check_only: None at once if
        the call has not ended."""
        if check_only and self._state is None and not self._bf.done():
            return None
        self._settle()
        if self._state == ResponseFuture.State.Error:
            if throw_except:
                self._raise()
            return None
        return self._call_status

    def result(self, throw_except=True, internal_storage=None, retries=10, wait_dur_sec=1):
        """The call's value (waiting for it). A failed call raises its exception,
        or returns None with throw_except=False."""
        self.status(throw_except=throw_except)
        if self._state == ResponseFuture.State.Error:
            return None
        return self._call_output


class _Ended:
    """The Bettong future of a future that ended elsewhere."""

    stats = {}

    def done(self):
        return True


def _ended_future(call_id, job_id, job_key, executor_id, function_name, runtime_memory, stats,
                  output, exc):
    f = ResponseFuture(_Ended(), 0, _JobInfo(job_id, job_key, executor_id, function_name,
                                             runtime_memory))
    f.call_id = call_id
    f._stats = stats
    f._call_output = output
    if exc is None:
        f._state = ResponseFuture.State.Done
        f._new_futures = _returned_futures(output)
    else:
        f._state = ResponseFuture.State.Error
        f._exception = (type(exc), exc, None)
    f._call_status = {"type": "__end__", "exception": exc is not None, "activation_id": None}
    return f


class _JobInfo:
    def __init__(self, job_id, job_key, executor_id, function_name, runtime_memory):
        self.job_id = job_id
        self.job_key = job_key
        self.executor_id = executor_id
        self.function_name = function_name
        self.execution_timeout = None
        self.runtime_memory = runtime_memory


def _returned_futures(out):
    """The futures a call returned (one, or a non-empty list of them), or None."""
    if isinstance(out, ResponseFuture):
        return [out]
    if isinstance(out, (list, tuple)) and out and all(isinstance(x, ResponseFuture) for x in out):
        return list(out)
    return None
