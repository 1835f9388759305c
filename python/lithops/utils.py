"""Lithops' helpers that its users and tests import."""

import inspect
import os
import uuid


def is_lithops_worker():
    """Whether this runs inside a call (on a Bettong worker)."""
    return "LITHOPS_WORKER" in os.environ


def create_executor_id():
    return f"{uuid.uuid4().hex[:6]}-{os.getpid() % 1000:03d}"


def is_object_processing_function(map_function):
    try:
        return {"obj"} & set(inspect.signature(map_function).parameters)
    except (TypeError, ValueError):
        return set()


def is_unix_system():
    return os.name == "posix"


class FuturesList(list):
    """The list map()/map_reduce() return: futures, with map/wait/get_result."""

    executor = None
    config = None

    def _executor(self):
        if self.executor is None:
            from lithops import FunctionExecutor
            self.executor = FunctionExecutor(config=self.config)
        return self.executor

    def _extend_futures(self, fs):
        for fut in self:
            fut._produce_output = False
        if not hasattr(self, "alt_list"):
            self.alt_list = list(self)
        self.alt_list.extend(fs)
        self.clear()
        self.extend(fs)

    def map(self, map_function, sync=False, **kwargs):
        """map_function over the results of these futures (each call starts as
        soon as its input is there; sync: once all are)."""
        ex = self._executor()
        if sync:
            ex.wait(self)
        self._extend_futures(ex.map(map_function, list(self), **kwargs))
        return self

    def map_reduce(self, map_function, reduce_function, sync=False, **kwargs):
        ex = self._executor()
        if sync:
            ex.wait(self)
        self._extend_futures(ex.map_reduce(map_function, list(self), reduce_function, **kwargs))
        return self

    def wait(self, **kwargs):
        return self._executor().wait(getattr(self, "alt_list", self), **kwargs)

    def get_result(self, **kwargs):
        return self._executor().get_result(getattr(self, "alt_list", self), **kwargs)

    def __reduce__(self):
        return (list, (list(self),))


def create_futures_list(futures, executor):
    fl = FuturesList(futures)
    fl.config = executor.config
    fl.executor = executor
    return fl


def format_data(iterdata, extra_args):
    """iterdata as Lithops takes it: a range or set becomes a list, anything else
    that is not a list is ONE item; extra_args appended (tuple) or merged (dict)."""
    if type(iterdata) in (range, set):
        data = list(iterdata)
    elif type(iterdata) is not list and type(iterdata) is not FuturesList:
        data = [iterdata]
    else:
        data = iterdata
    if extra_args:
        out = []
        for d in data:
            if type(d) is tuple:
                if type(extra_args) is not tuple:
                    raise Exception("extra_args must contain args in a tuple")
                out.append(d + extra_args)
            elif type(d) is dict:
                if type(extra_args) is not dict:
                    raise Exception("extra_args must contain kwargs in a dictionary")
                d = dict(d)
                d.update(extra_args)
                out.append(d)
            else:
                out.append((d, *extra_args))
        data = out
    return data


def verify_args(func, iterdata, extra_args):
    """Each item as a dict of func's parameters (Lithops' envelope); a dict item
    must name every parameter (unless func takes **kwargs)."""
    data = format_data(iterdata, extra_args)
    reserved = ("ibm_cos", "storage", "id", "rabbitmq")
    sig = inspect.signature(func)
    sig = sig.replace(parameters=[p for n, p in sig.parameters.items() if n not in reserved])
    params = list(sig.parameters.values())
    var_kw = any(p.kind == p.VAR_KEYWORD for p in params)
    names = set(sig.parameters)
    # What sig.bind gives, without it, for the common shapes: k values for the
    # first k plain positional parameters when every later one has a default
    # (or is *args / **kwargs).
    plain = []
    for p in params:
        if p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            break
        plain.append(p)

    def quick(k):
        if k > len(plain):
            return None
        rest = params[k:]
        if all(p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
               for p in rest):
            return [p.name for p in plain[:k]]
        return None

    one = quick(1)
    out = []
    append = out.append
    for elem in data:
        if isinstance(elem, dict):
            if var_kw or names <= set(elem):
                append(elem)
            else:
                raise ValueError("Check the args names in the data. You provided these args: ",
                                 f"{list(elem)}, and the args must be: {list(sig.parameters)}")
        elif isinstance(elem, tuple):
            keys = quick(len(elem))
            append(dict(zip(keys, elem)) if keys is not None else dict(sig.bind(*elem).arguments))
        elif one is not None:
            append({one[0]: elem})
        else:
            append(dict(sig.bind(elem).arguments))
    return out
