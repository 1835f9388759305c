"""PyWren-IBM-Cloud's FunctionExecutor, with its signatures, on a Bettong pool
(the same machinery as the `lithops` package: see lithops.executors for what
each parameter does here).

Differences from Lithops that PyWren programs rely on, kept: map's third
positional argument is extra_args; chunk_size / chunk_n are object chunking
(refused: not available yet); return_when is ALL_COMPLETED (1), ANY_COMPLETED
(2) or ALWAYS (3); a list or tuple item with as many elements as the function
has parameters is spread over them; clean(cloudobjects=...).
"""

import inspect

import lithops.executors as _lx
from lithops.wait import ALL_COMPLETED as _L_ALL, ALWAYS as _L_ALWAYS, ANY_COMPLETED as _L_ANY
from lithops.utils import create_futures_list, format_data

from pywren_ibm_cloud.wait import ALL_COMPLETED, ALWAYS, ANY_COMPLETED

_RETURN_WHEN = {ALL_COMPLETED: _L_ALL, ANY_COMPLETED: _L_ANY, ALWAYS: _L_ALWAYS}


def verify_args(func, iterdata, extra_args):
    """PyWren's binding of iterdata to func's parameters (as dicts)."""
    data = format_data(iterdata, extra_args)
    reserved = ("ibm_cos", "swift", "storage", "id", "rabbitmq")
    sig = inspect.signature(func)
    sig = sig.replace(parameters=[p for n, p in sig.parameters.items() if n not in reserved])
    out = []
    for elem in data:
        if type(elem) is dict:
            if set(sig.parameters) <= set(elem):
                out.append(elem)
            else:
                raise ValueError(f"Check the args names in the data. You provided these args: "
                                 f"{list(elem)}, and the args must be: {list(sig.parameters)}")
        elif type(elem) in (list, tuple) and len(elem) == len(sig.parameters):
            out.append(dict(sig.bind(*list(elem)).arguments))
        else:
            out.append(dict(sig.bind(elem).arguments))
    return out


def _config(config, compute_backend, storage_backend, workers, runtime_memory):
    """A PyWren configuration (its `pywren` section) in Lithops' layout."""
    config = dict(config or {})
    pw = dict(config.pop("pywren", None) or {})
    backend = compute_backend or pw.pop("compute_backend", None) or "ibm_cf"
    pw.pop("compute_backend", None)
    storage = storage_backend or pw.pop("storage_backend", None) or "localhost"
    pw.pop("storage_backend", None)
    lc = {"backend": backend, "storage": storage}
    for src, dst in (("storage_bucket", "storage_bucket"), ("runtime_timeout", "execution_timeout"),
                     ("include_modules", "include_modules"),
                     ("exclude_modules", "exclude_modules"), ("data_cleaner", "data_cleaner")):
        if src in pw:
            lc[dst] = pw.pop(src)
    section = dict(config.get(backend) or {})
    if "workers" in pw:
        section.setdefault("max_workers", pw.pop("workers"))
    if "runtime_memory" in pw:
        section.setdefault("runtime_memory", pw.pop("runtime_memory"))
    if workers is not None:
        section["max_workers"] = workers
    if runtime_memory is not None:
        section["runtime_memory"] = runtime_memory
    config[backend] = section
    config["lithops"] = lc
    if pw:
        config["pywren"] = pw  # (noted as ignored)
    return config


class FunctionExecutor(_lx.FunctionExecutor):
    """PyWren-IBM-Cloud's executor."""

    _verify_args = staticmethod(verify_args)

    def __init__(self, config=None, runtime=None, runtime_memory=None, compute_backend=None,
                 compute_backend_region=None, storage_backend=None, storage_backend_region=None,
                 workers=None, rabbitmq_monitor=None, remote_invoker=None, log_level=None):
        self._ignored = tuple(f"{n}={v!r}" for n, v in (
            ("runtime", runtime), ("compute_backend_region", compute_backend_region),
            ("storage_backend_region", storage_backend_region),
            ("rabbitmq_monitor", rabbitmq_monitor), ("remote_invoker", remote_invoker))
            if v is not None)
        super().__init__(config=_config(config, compute_backend, storage_backend, workers,
                                        runtime_memory),
                         log_level=log_level or False)

    def call_async(self, func, data, extra_env=None, runtime_memory=None, timeout=None,
                   include_modules=[], exclude_modules=[]):
        return super().call_async(func, data, extra_env, runtime_memory, timeout,
                                  include_modules, exclude_modules)

    def map(self, map_function, map_iterdata, extra_args=None, extra_env=None,
            runtime_memory=None, chunk_size=None, chunk_n=None, timeout=None,
            invoke_pool_threads=500, include_modules=[], exclude_modules=[]):
        _check_threads(invoke_pool_threads)
        return super().map(map_function, map_iterdata, None, extra_args, extra_env,
                           runtime_memory, chunk_size, chunk_n, "\n", timeout, include_modules,
                           exclude_modules)

    def map_reduce(self, map_function, map_iterdata, reduce_function, extra_args=None,
                   extra_env=None, map_runtime_memory=None, reduce_runtime_memory=None,
                   chunk_size=None, chunk_n=None, timeout=None, invoke_pool_threads=500,
                   reducer_one_per_object=False, reducer_wait_local=False, include_modules=[],
                   exclude_modules=[]):
        """A map, then the reduce; returns the map futures and the reduce's.
        reducer_wait_local: the client waits for the maps before it returns."""
        _check_threads(invoke_pool_threads)
        fs = super().map_reduce(
            map_function, map_iterdata, reduce_function, None, extra_args, None, extra_env,
            map_runtime_memory, reduce_runtime_memory, timeout, chunk_size, chunk_n, "\n",
            reducer_one_per_object, _L_ALWAYS, include_modules, exclude_modules)
        if reducer_wait_local:
            self._wait(fs=list(fs[:-1]))
        return list(fs)

    def wait(self, fs=None, throw_except=True, return_when=ALL_COMPLETED, download_results=False,
             timeout=None, THREADPOOL_SIZE=128, WAIT_DUR_SEC=1):
        if return_when not in _RETURN_WHEN:
            raise ValueError("return_when must be ALL_COMPLETED (1), ANY_COMPLETED (2) or "
                             f"ALWAYS (3), not {return_when!r}")
        done, not_done = self._wait(fs, throw_except, _RETURN_WHEN[return_when],
                                    download_results, timeout)
        return list(done), list(not_done)

    def get_result(self, fs=None, throw_except=True, timeout=None, THREADPOOL_SIZE=128,
                   WAIT_DUR_SEC=1):
        return super().get_result(fs, throw_except, timeout)

    def clean(self, fs=None, cs=None, cloudobjects=True, force=True, log=True):
        super().clean(fs, cs, clean_cloudobjects=cloudobjects, force=force)


def _check_threads(n):
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"invoke_pool_threads must be a positive number, not {n!r}")


__all__ = ["FunctionExecutor", "create_futures_list"]
