"""PoolExecutor: the standard concurrent.futures.Executor interface on a Bettong
pool (the same mechanism as FunctionExecutor: a local pool started on first use,
or address=)."""

import concurrent.futures as _cf
import time

from ._serial import dumps_args, short_repr
from .executor import FunctionExecutor
from .futures import wait_futures


class _Args:
    """Binding of submit()/map() calls: the arguments exactly as given."""

    simple = False

    def __init__(self, what):
        self.what = what

    def calls(self, items, base):
        return items

    def one(self, i, item):
        return self.payloads([item], i)[0]

    def payloads(self, items, base):
        out = []
        for j, item in enumerate(items):
            try:
                out.append(dumps_args(item))
            except Exception as e:
                raise TypeError(f"cannot pickle the arguments of {self.what} call {base + j}: "
                                f"{short_repr(item)}: {e}") from e
        return out


class PoolExecutor(_cf.Executor):
    """concurrent.futures.Executor on Bettong workers:

        with bettong.PoolExecutor(workers=4) as ex:
            f = ex.submit(pow, 2, 10)
            squares = list(ex.map(lambda x: x * x, range(100)))
    """

    def __init__(self, workers=None, address=None, secret=None, max_workers=None, timeout=None,
                 retries=0):
        self._fx = FunctionExecutor(workers=workers if workers is not None else max_workers,
                                    address=address, secret=secret, timeout=timeout,
                                    retries=retries, show_progressbar=False)
        self._shutdown = False

    def _check(self):
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")

    def submit(self, fn, /, *args, **kwargs):
        self._check()
        try:
            payload = dumps_args((args, kwargs))
        except Exception as e:
            raise TypeError(f"cannot pickle the arguments of submit: {short_repr((args, kwargs))}: "
                            f"{e}") from e
        return self._fx._send_one(fn, payload, None, None)

    def map(self, fn, *iterables, timeout=None, chunksize=None):
        """Results of fn over zip(*iterables), in order, as they are needed (the calls
        are all submitted at once). `timeout` counts from this call."""
        self._check()
        end = None if timeout is None else time.monotonic() + timeout
        items = [(args, {}) for args in zip(*iterables)]
        fs = self._fx._submit_items(fn, items, _Args("map"), None, chunksize, None, None)

        def results():
            try:
                fs.reverse()
                while fs:
                    f = fs.pop()
                    if end is None:
                        yield f.result()
                    else:
                        yield f.result(end - time.monotonic())
            finally:  # closed early, or a failure: drop the calls not needed
                left = [f for f in fs if not f.done()]
                if left:
                    left[0]._client.cancel_many(left)
        return results()

    def shutdown(self, wait=True, *, cancel_futures=False):
        self._shutdown = True
        client = self._fx._client
        if client is not None:
            if cancel_futures:
                client.cancel_all()
            live = list(client._pending.values())  # the calls in flight
            if wait and live:
                wait_futures(live, show_progressbar=False, on_interrupt=self._fx._interrupt)
        self._fx.close()

    @property
    def workers(self):
        return self._fx.workers
