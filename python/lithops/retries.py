"""Lithops' RetryingFunctionExecutor: a failed call (exception, timeout, dead
worker) is submitted again, up to `retries` times, from the client's wait()."""

from lithops.wait import ALL_COMPLETED, ALWAYS, ANY_COMPLETED, THREADPOOL_SIZE, WAIT_DUR_SEC


class RetryingFuture:
    """A ResponseFuture that map() may submit again on failure."""

    def __init__(self, response_future, map_function, input, retries=None, **kwargs):
        self.response_future = response_future
        self.map_function = map_function
        self.input = input
        self.retries = retries or 0
        self.map_kwargs = kwargs
        self.failure_count = 0
        self.cancelled = False

    def _inc_failure_count(self):
        self.failure_count += 1

    def _should_retry(self):
        return not self.cancelled and self.failure_count <= self.retries

    def _retry(self, function_executor):
        self.response_future = function_executor.map(
            self.map_function, [self.input], **self.map_kwargs)[0]

    def cancel(self):
        """No more retries (a running call goes on)."""
        self.cancelled = True

    @property
    def done(self):
        return self.response_future.done

    @property
    def error(self):
        return self.response_future.error

    @property
    def _exception(self):
        return self.response_future._exception

    @property
    def stats(self):
        return self.response_future.stats

    def status(self, throw_except=True, internal_storage=None, check_only=False):
        stat = self.response_future.status(throw_except=throw_except, check_only=check_only)
        if self.response_future.error:
            self.response_future._raise()
        return stat

    def result(self, throw_except=True, internal_storage=None):
        res = self.response_future.result(throw_except=throw_except)
        if self.response_future.error:
            self.response_future._raise()
        return res


class RetryingFunctionExecutor:
    """A FunctionExecutor whose map() takes `retries` (default: the config's
    lithops.retries, else 0)."""

    def __init__(self, executor):
        self.executor = executor
        self.config = executor.config

    def __enter__(self):
        self.executor.__enter__()
        return self

    def __exit__(self, exc_type, exc_value, traceback):
        self.executor.__exit__(exc_type, exc_value, traceback)

    def map(self, map_function, map_iterdata, chunksize=None, extra_args=None, extra_env=None,
            runtime_memory=None, obj_chunk_size=None, obj_chunk_number=None, obj_newline="\n",
            timeout=None, include_modules=[], exclude_modules=[], retries=None):
        retries = retries if retries is not None else self.config.get("lithops", {}).get("retries", 0)
        kwargs = dict(chunksize=chunksize, extra_args=extra_args, extra_env=extra_env,
                      runtime_memory=runtime_memory, obj_chunk_size=obj_chunk_size,
                      obj_chunk_number=obj_chunk_number, obj_newline=obj_newline,
                      timeout=timeout, include_modules=include_modules,
                      exclude_modules=exclude_modules)
        fs = self.executor.map(map_function, map_iterdata, **kwargs)
        return [RetryingFuture(f, map_function=map_function, input=i, retries=retries, **kwargs)
                for i, f in zip(map_iterdata, fs)]

    def wait(self, fs, throw_except=True, return_when=ALL_COMPLETED, download_results=False,
             timeout=None, threadpool_size=THREADPOOL_SIZE, wait_dur_sec=WAIT_DUR_SEC,
             show_progressbar=True):
        """Wait, submitting failed calls again while they have retries left;
        returns (done, pending) lists of RetryingFutures."""
        lookup = {f.response_future: f for f in fs}
        current = list(fs)
        while True:
            done, pending = self.executor.wait(
                [f.response_future for f in current], throw_except=throw_except,
                return_when=return_when, download_results=download_results, timeout=timeout,
                show_progressbar=show_progressbar)
            r_done = []
            r_pending = [lookup[rf] for rf in pending]
            for rf in done:
                f = lookup[rf]
                if rf.error:
                    f._inc_failure_count()
                    if f._should_retry():
                        f._retry(self.executor)
                        lookup[f.response_future] = f
                        r_pending.append(f)
                        continue
                r_done.append(f)
            current = r_done + r_pending
            if return_when == ALWAYS:
                break
            if return_when == ANY_COMPLETED and r_done:
                break
            if return_when == ALL_COMPLETED and not r_pending:
                break
        return r_done, r_pending

    def clean(self, fs=None, cs=None, clean_cloudobjects=True, clean_fn=False, force=False):
        self.executor.clean(fs, cs, clean_cloudobjects, clean_fn, force)
