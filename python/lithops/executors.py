"""Lithops' executors, with Lithops' signatures and return values, on a Bettong pool.

FunctionExecutor, LocalhostExecutor, ServerlessExecutor and StandaloneExecutor
all run their calls on one bettong.FunctionExecutor: a local pool started on
first use, or the remote pool at $BETTONG_POOL (secret: $BETTONG_SECRET),
whatever compute backend the configuration names (see lithops.config for what
of a configuration applies).

Every parameter does what Lithops documents or is refused:
- timeout (or the config's execution_timeout, default 1800 s): a call running
  longer is stopped (its worker is killed and replaced) and fails with
  TimeoutError;
- runtime_memory (MiB): a per-call memory limit on the worker (RLIMIT_AS, see
  bettong._worker.LimitedFunction): past it the call fails with MemoryError;
- include_modules: modules pickled by value with the function (the workers
  need not have them); exclude_modules: kept by reference; None or [] (the
  default): the function's modules go by reference (the workers import them:
  same machine, or the same paths);
- chunksize: that many calls per worker invocation;
- spawn_reducer: map_reduce returns once that percentage of the maps is done
  (ALWAYS: at once), as Lithops does; the reduce itself starts when all are;
- functions with an `obj` parameter: data from storage (lithops.partitioner),
  obj_chunk_size / obj_chunk_number / obj_newline partitions, obj_reduce_by_key
  one reducer per object;
- futures as map input: each call starts on its input's result (_chain);
  futures returned by a call stand for it in wait/get_result;
- storage backends other than localhost and the S3 ones: refused.
"""

import logging

import bettong

from lithops import constants
from lithops.config import Settings, default_config, extract_storage_config, note_once
from lithops.future import ResponseFuture, _Ended
from lithops.partitioner import create_partitions
from lithops.storage import Storage
from lithops.storage.utils import CloudObject, create_job_key
from lithops.utils import (FuturesList, create_executor_id, create_futures_list,
                           is_object_processing_function, verify_args)
from lithops.wait import ALL_COMPLETED, ALWAYS, THREADPOOL_SIZE, wait
from lithops.worker import LithopsCall, LithopsChained, LithopsReduce

logger = logging.getLogger(__name__)


class _Job:
    """What a job's futures tell about it."""

    def __init__(self, executor_id, job_id, func, timeout, memory):
        self.executor_id = executor_id
        self.job_id = job_id
        self.job_key = create_job_key(executor_id, job_id)
        self.function_name = getattr(func, "__name__", type(func).__name__)
        self.execution_timeout = timeout
        self.runtime_memory = memory


def _futures_input(map_iterdata):
    """Whether map_iterdata is futures (function chaining): all of them, or none."""
    if not isinstance(map_iterdata, (list, tuple)):
        return False
    n = sum(isinstance(x, ResponseFuture) for x in map_iterdata)
    if n and n != len(map_iterdata):
        raise TypeError("map_iterdata mixes futures and other items")
    return n > 0


def _object_options(map_function, obj_chunk_size=None, obj_chunk_number=None,
                    obj_reduce_by_key=False):
    """Whether map_function processes objects (an `obj` parameter); the
    object options are refused for any other function."""
    if is_object_processing_function(map_function):
        return True
    for name, value in (("obj_chunk_size", obj_chunk_size), ("obj_chunk_number", obj_chunk_number),
                        ("obj_reduce_by_key", obj_reduce_by_key)):
        if value:
            raise ValueError(f"{name} applies to functions with an `obj` parameter (data from "
                             "storage), which this one has not")
    return False


class FunctionExecutor:
    """Lithops' FunctionExecutor: calls run on a Bettong pool."""

    _verify_args = staticmethod(verify_args)  # (PyWren's binds lists too)
    _ignored = ()  # (PyWren's: its arguments that mean nothing here, for the note)

    def __init__(self, mode=None, config=None, config_file=None, backend=None, storage=None,
                 monitoring=None, log_level=False, **kwargs):
        config_ow = {"lithops": {}, "backend": {}}
        for key, value in kwargs.items():
            if value is not None:
                config_ow["backend"][key] = value
        for key, value in (("mode", mode), ("backend", backend), ("storage", storage),
                           ("monitoring", monitoring)):
            if value is not None:
                config_ow["lithops"][key] = value
        self.config = default_config(config_file=config_file, config_data=config,
                                     config_overwrite=config_ow)
        level = log_level or self.config["lithops"].get("log_level")
        if level:
            logging.getLogger("lithops").setLevel(str(level).upper())
        self._settings = Settings(self.config, self._ignored)
        self.storage = Storage(storage_config=extract_storage_config(self.config))
        self.backend = self.config["lithops"]["backend"]
        self.mode = self.config["lithops"]["mode"]
        self.data_cleaner = self._settings.data_cleaner
        self.executor_id = create_executor_id()
        self.futures = []
        self.cleaned_jobs = set()
        self.total_jobs = 0
        self.last_call = None
        self.log_path = None
        self._bx = bettong.FunctionExecutor(workers=self._settings.workers,
                                            show_progressbar=False)
        if self._bx.address and self._settings.workers_asked:
            note_once(f"lithops on Bettong: max_workers={self._settings.workers} ignored: calls "
                      f"run on the pool at {self._bx.address} (BETTONG_POOL), with its workers")

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc_value, traceback):
        self._bx.__exit__(exc_type, exc_value, traceback)

    def __repr__(self):
        return f"<lithops.FunctionExecutor {self.executor_id} on {self._bx!r}>"

    # ------------------------------------------------------------ submitting
    def _create_job(self, call_type, func, timeout, memory):
        job_id = f"{call_type}{str(self.total_jobs).zfill(3)}"
        self.total_jobs += 1
        return _Job(self.executor_id, job_id, func,
                    timeout if timeout is not None else self._settings.timeout,
                    memory if memory is not None else self._settings.runtime_memory)

    def _modules(self, include_modules, exclude_modules):
        """Lithops' merge of the config's and the call's module lists, as
        bettong's include_modules / exclude_modules options."""
        cfg_inc = self._settings.include_modules
        if include_modules is None or (cfg_inc is None and not include_modules):
            inc = []
        else:
            inc = list(cfg_inc or []) + list(include_modules or [])
        exc = list(self._settings.exclude_modules) + list(exclude_modules or [])
        opts = {}
        if inc:
            opts["include_modules"] = inc
        if exc:
            opts["exclude_modules"] = exc
        return opts

    def _envelopes(self, func, iterdata, extra_args, objects, chunk_size=None, chunk_number=None,
                   newline="\n"):
        """The items as Lithops' parameter dicts; for a function with an `obj`
        parameter, one per partition of the objects they name, and the number
        of partitions of each object."""
        envelopes = self._verify_args(func, iterdata, extra_args)
        if not objects:
            return envelopes, None
        return create_partitions(self.storage, envelopes, chunk_size, chunk_number, newline)

    def _map_items(self, job, func, iterdata, extra_args, extra_env, chunksize,
                   include_modules, exclude_modules, envelopes=None):
        if envelopes is None:
            envelopes = self._verify_args(func, iterdata, extra_args)
        items = list(enumerate(envelopes))
        bfs = self._bx.map(LithopsCall(func, job.job_key, self.storage), items,
                           extra_env=extra_env, chunksize=chunksize,
                           timeout=job.execution_timeout, runtime_memory=job.runtime_memory,
                           **self._modules(include_modules, exclude_modules))
        fs = [ResponseFuture(bf, i, job) for i, bf in enumerate(bfs)]
        self.futures.extend(fs)
        return fs

    def call_async(self, func, data, extra_env=None, runtime_memory=None, timeout=None,
                   include_modules=[], exclude_modules=[]):
        """Run func once on data; its future."""
        objects = _object_options(func)
        envelopes, _ = self._envelopes(func, [data], None, objects)
        job = self._create_job("A", func, timeout, runtime_memory)
        self.last_call = "call_async"
        return self._map_items(job, func, None, None, extra_env, None, include_modules,
                               exclude_modules, envelopes)[0]

    def map(self, map_function, map_iterdata, chunksize=None, extra_args=None, extra_env=None,
            runtime_memory=None, obj_chunk_size=None, obj_chunk_number=None, obj_newline="\n",
            timeout=None, include_modules=[], exclude_modules=[]):
        """One call per item of map_iterdata (a list, range or set; anything else
        is one item); a FuturesList in order."""
        if _futures_input(map_iterdata):
            return create_futures_list(self._chain(map_function, map_iterdata, obj_chunk_size,
                                                   obj_chunk_number, extra_env, timeout,
                                                   runtime_memory, include_modules,
                                                   exclude_modules), self)
        objects = _object_options(map_function, obj_chunk_size, obj_chunk_number)
        envelopes, _ = self._envelopes(map_function, map_iterdata, extra_args, objects,
                                       obj_chunk_size, obj_chunk_number, obj_newline)
        job = self._create_job("M", map_function, timeout, runtime_memory)
        self.last_call = "map"
        fs = self._map_items(job, map_function, None, None, extra_env, chunksize,
                             include_modules, exclude_modules, envelopes)
        return create_futures_list(fs, self)

    def map_reduce(self, map_function, map_iterdata, reduce_function, chunksize=None,
                   extra_args=None, extra_args_reduce=None, extra_env=None,
                   map_runtime_memory=None, reduce_runtime_memory=None, timeout=None,
                   obj_chunk_size=None, obj_chunk_number=None, obj_newline="\n",
                   obj_reduce_by_key=False, spawn_reducer=20, include_modules=[],
                   exclude_modules=[]):
        """A map, then reduce_function(list of the map results) on a worker once
        all maps are done. Returns the map futures and the reduce's (whose
        result is get_result()'s)."""
        chained = _futures_input(map_iterdata)
        objects = _object_options(map_function, obj_chunk_size, obj_chunk_number,
                                  obj_reduce_by_key)
        if extra_args_reduce is not None and type(extra_args_reduce) is not tuple:
            raise Exception("extra_args must contain args in a tuple")
        if spawn_reducer != ALWAYS and not (isinstance(spawn_reducer, int)
                                            and 0 < spawn_reducer <= 100):
            raise ValueError(f"spawn_reducer must be ALWAYS or a percentage, not {spawn_reducer!r}")
        self.last_call = "map_reduce"
        mjob = self._create_job("M", map_function, timeout, map_runtime_memory)
        rjob = _Job(self.executor_id, mjob.job_id.replace("M", "R"), reduce_function,
                    self._settings.timeout,
                    reduce_runtime_memory if reduce_runtime_memory is not None
                    else self._settings.runtime_memory)
        modules = self._modules(include_modules, exclude_modules)
        reducer = LithopsReduce(reduce_function, rjob.job_key, self.storage, extra_args_reduce)
        if chained:
            maps = self._chain(map_function, map_iterdata, None, None, extra_env, timeout,
                               map_runtime_memory, include_modules, exclude_modules, mjob)
            rf = self._bx._reduce_of([f._bf for f in maps], reducer, extra_env=extra_env,
                                     timeout=rjob.execution_timeout,
                                     runtime_memory=rjob.runtime_memory, **modules)
            reduces = [ResponseFuture(rf, 0, rjob)]
        elif obj_reduce_by_key:
            # one reducer per object, over the results of its partitions
            envelopes, parts = self._envelopes(map_function, map_iterdata, extra_args, objects,
                                               obj_chunk_size, obj_chunk_number, obj_newline)
            if chunksize and chunksize > 1:
                raise ValueError("lithops on Bettong: chunksize with obj_reduce_by_key is not "
                                 "available (a reducer takes its object's calls)")
            maps = self._map_items(mjob, map_function, None, None, extra_env, None,
                                   include_modules, exclude_modules, envelopes)
            reduces, start = [], 0
            for i, n in enumerate(parts):
                rf = self._bx._reduce_of([f._bf for f in maps[start:start + n]], reducer,
                                         extra_env=extra_env, timeout=rjob.execution_timeout,
                                         runtime_memory=rjob.runtime_memory,
                                         **modules)
                reduces.append(ResponseFuture(rf, i, rjob))
                start += n
        else:
            envelopes, _ = self._envelopes(map_function, map_iterdata, extra_args, objects,
                                           obj_chunk_size, obj_chunk_number, obj_newline)
            rf = self._bx.map_reduce(
                LithopsCall(map_function, mjob.job_key, self.storage), list(enumerate(envelopes)),
                reducer, extra_env=extra_env, chunksize=chunksize,
                timeout=mjob.execution_timeout, map_runtime_memory=mjob.runtime_memory,
                reduce_runtime_memory=rjob.runtime_memory, **modules)
            maps = [ResponseFuture(bf, i, mjob) for i, bf in enumerate(rf.map_futures)]
            self.futures.extend(maps)
            reduces = [ResponseFuture(rf, 0, rjob)]
        self.futures.extend(reduces)
        if spawn_reducer != ALWAYS and maps:
            self._wait(maps, return_when=spawn_reducer)
        for f in maps:  # Lithops' _set_mapreduce: their results are the reduce's input
            f._read = True
            f._produce_output = False
        return create_futures_list(maps + reduces, self)

    def _chain(self, func, inputs, obj_chunk_size, obj_chunk_number, extra_env, timeout,
               memory, include_modules, exclude_modules, job=None):
        """One call of func per input future, on its result, started on a worker
        as soon as that result is there (function chaining)."""
        if is_object_processing_function(func) or obj_chunk_size or obj_chunk_number:
            raise NotImplementedError("lithops on Bettong: objects from futures' results are "
                                      "not available")
        job = job or self._create_job("M", func, timeout, memory)
        modules = self._modules(include_modules, exclude_modules)
        fs = []
        for i, inp in enumerate(inputs):
            inp._produce_output = False  # its result is this call's input
            bf = inp._bf
            if isinstance(bf, _Ended) or bf._chunk is not None:
                # ended elsewhere, or an item of a chunked map: its value, sent
                bf = self._bx.call_async(LithopsCall(func, job.job_key, self.storage),
                                         (i, verify_args(func, [inp.result()], None)[0]),
                                         extra_env=extra_env, timeout=job.execution_timeout,
                                         runtime_memory=job.runtime_memory, **modules)
            else:
                bf = self._bx._reduce_of([bf], LithopsChained(func, job.job_key, self.storage, i),
                                         extra_env=extra_env, timeout=job.execution_timeout,
                                         runtime_memory=job.runtime_memory, **modules)
            fs.append(ResponseFuture(bf, i, job))
        self.futures.extend(fs)
        return fs

    # ------------------------------------------------------------ results
    def wait(self, fs=None, throw_except=True, return_when=ALL_COMPLETED, download_results=False,
             timeout=None, threadpool_size=THREADPOOL_SIZE, wait_dur_sec=None,
             show_progressbar=True):
        """(done, not_done) FuturesLists; see lithops.wait.wait."""
        return self._wait(fs, throw_except, return_when, download_results, timeout,
                          show_progressbar)

    def _wait(self, fs=None, throw_except=True, return_when=ALL_COMPLETED,
              download_results=False, timeout=None, show_progressbar=True):
        futures = fs or self.futures
        if type(futures) not in (list, FuturesList):
            futures = [futures]
        if futures:
            wait(fs=futures, throw_except=throw_except, return_when=return_when,
                 download_results=download_results, timeout=timeout,
                 show_progressbar=show_progressbar, futures_from_executor_wait=not fs)
        if download_results:
            done = [f for f in futures if f.done]
            not_done = [f for f in futures if not f.done]
        else:
            done = [f for f in futures if f.success or f.done]
            not_done = [f for f in futures if not f.success and not f.done]
        return create_futures_list(done, self), create_futures_list(not_done, self)

    def get_result(self, fs=None, throw_except=True, timeout=None,
                   threadpool_size=THREADPOOL_SIZE, wait_dur_sec=None, show_progressbar=True):
        """The results of fs (default: every future not read yet), in order; one
        value when that is one result and the last call was not a map."""
        fs_done, _ = self._wait(fs=fs, throw_except=throw_except, timeout=timeout,
                                download_results=True, show_progressbar=show_progressbar)
        result = []
        for f in fs_done:
            if f.futures or not f._produce_output:
                continue
            if fs:
                result.append(f.result(throw_except=throw_except))
            elif not f._read:
                result.append(f.result(throw_except=throw_except))
                f._read = True
        if len(result) == 1 and self.last_call != "map":
            return result[0]
        return result

    def plot(self, fs=None, dst=None, figsize=(10, 6)):
        """A timeline of the calls (Bettong's: one PNG at dst)."""
        ftrs = self.futures if not fs else fs
        if isinstance(ftrs, ResponseFuture):
            ftrs = [ftrs]
        return self._bx.plot([f._bf for f in ftrs], dst)

    def clean(self, fs=None, cs=None, clean_cloudobjects=True, clean_fn=False, force=False,
              on_exit=False):
        """Remove the temporary data of the jobs of fs (default: all of this
        executor's) that are done (or all, with force): with
        clean_cloudobjects, the CloudObjects their calls stored without naming
        a key; cs: those CloudObjects."""
        if cs:
            self.storage.delete_cloudobjects(list(cs))
            if not fs:
                return
        futures = fs or self.futures
        futures = [futures] if type(futures) not in (list, FuturesList) else futures
        jobs = {f.job_key for f in futures if force or f.done or f._bf.done()}
        for job_key in sorted(jobs - self.cleaned_jobs):
            self.storage.delete_job_data(job_key, clean_cloudobjects)
        self.cleaned_jobs |= jobs

    def job_summary(self, cloud_objects_n=0):
        raise NotImplementedError("lithops on Bettong: job_summary() (cloud costs) has no meaning "
                                  "on a Bettong pool")


class LocalhostExecutor(FunctionExecutor):
    def __init__(self, config=None, config_file=None, storage=None, monitoring=None,
                 log_level=False, **kwargs):
        super().__init__(backend=constants.LOCALHOST, config=config, config_file=config_file,
                         storage=storage or constants.LOCALHOST, log_level=log_level,
                         monitoring=monitoring, **kwargs)


class ServerlessExecutor(FunctionExecutor):
    def __init__(self, config=None, config_file=None, backend=None, storage=None,
                 monitoring=None, log_level=False, **kwargs):
        super().__init__(config=config, config_file=config_file, mode=constants.SERVERLESS,
                         backend=backend, storage=storage, monitoring=monitoring,
                         log_level=log_level, **kwargs)


class StandaloneExecutor(FunctionExecutor):
    def __init__(self, config=None, config_file=None, backend=None, storage=None,
                 monitoring=None, log_level=False, **kwargs):
        super().__init__(config=config, config_file=config_file, mode=constants.STANDALONE,
                         backend=backend, storage=storage, monitoring=monitoring,
                         log_level=log_level, **kwargs)


__all__ = ["FunctionExecutor", "LocalhostExecutor", "ServerlessExecutor", "StandaloneExecutor",
           "CloudObject"]
