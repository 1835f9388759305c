"""What runs on a Bettong worker for a Lithops call (kept import-light).

The client turns each item of iterdata into Lithops' "envelope" (a dict of the
function's parameters, utils.verify_args); here the reserved parameters are
filled in (`storage`, `id`) and the envelope is split into *args / **kwargs
by the function's own var-positional and var-keyword names, as Lithops'
worker does.
"""

import inspect
import os


def _signature(func):
    try:
        return inspect.signature(func)
    except (TypeError, ValueError):
        return None


def prepare_args(func, data, sig=None):
    sig = sig or _signature(func)
    var_pos = var_kw = None
    pos_only = []
    if sig is not None:
        for name, p in sig.parameters.items():
            if p.kind == p.VAR_POSITIONAL:
                var_pos = name
            elif p.kind == p.VAR_KEYWORD:
                var_kw = name
            elif p.kind == p.POSITIONAL_ONLY:
                pos_only.append(name)
    payload = dict(data)
    # (positional-only parameters, as a builtin's, cannot be given by keyword)
    head = tuple(payload.pop(n) for n in pos_only if n in payload)
    args = head + tuple((payload.pop(var_pos) or ()) if var_pos in payload else ())
    kwargs = (payload.pop(var_kw) or {}) if var_kw in payload else {}
    kwargs.update(payload)
    return args, kwargs


def _run(func, data, sig, session):
    env = os.environ
    saved = env.get("__LITHOPS_SESSION_ID"), env.get("LITHOPS_WORKER")
    env["__LITHOPS_SESSION_ID"] = session
    env["LITHOPS_WORKER"] = "True"
    try:
        args, kwargs = prepare_args(func, data, sig)
        return func(*args, **kwargs)
    finally:
        for k, v in zip(("__LITHOPS_SESSION_ID", "LITHOPS_WORKER"), saved):
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v


class LithopsCall:
    """One call of a Lithops job: func(**envelope) with `storage` and `id`
    filled in and __LITHOPS_SESSION_ID set (where put_cloudobject puts the
    objects it names itself, so that clean() finds them)."""

    def __init__(self, func, job_key, storage):
        self.func = func
        self.job_key = job_key
        self.storage = storage

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_sig", None)
        return state

    def __call__(self, call_id, data):
        func = self.func
        sig = self.__dict__.get("_sig")
        if sig is None:  # (once per worker: this object is kept while its function is)
            sig = self._sig = _signature(func) or inspect.Signature()
        params = sig.parameters
        data = dict(data)
        if "storage" in params:
            data["storage"] = self.storage
        if "id" in params:
            data["id"] = call_id
        if "obj" in params and hasattr(data.get("obj"), "total_parts"):
            from lithops.partitioner import load
            load(data["obj"], self.storage)
        return _run(func, data, sig, f"{self.job_key}/{call_id:05d}")

    def __repr__(self):
        return f"<lithops call of {self.func!r}>"


class LithopsReduce:
    """The reduce of a map_reduce: func(results, *extra_args_reduce) as an
    envelope, with `storage` and `id` (0) filled in."""

    def __init__(self, func, job_key, storage, extra_args=None):
        self.func = func
        self.job_key = job_key
        self.storage = storage
        self.extra_args = tuple(extra_args or ())

    def __call__(self, results):
        func = self.func
        sig = _signature(func)
        params = sig.parameters if sig is not None else {}
        reserved = {"storage", "id", "ibm_cos", "rabbitmq"}
        plain = sig.replace(parameters=[p for n, p in params.items() if n not in reserved])
        data = dict(plain.bind(results, *self.extra_args).arguments)
        if "storage" in params:
            data["storage"] = self.storage
        if "id" in params:
            data["id"] = 0
        return _run(func, data, sig, f"{self.job_key}/00000")


class LithopsChained:
    """A call on the result of an earlier call (a future given as map input):
    run as the reduce of that one call, so it starts when the result is there
    (the client forwards the result's pickle without unpickling it); the
    result is bound to the function's parameters as an item would be."""

    def __init__(self, func, job_key, storage, call_id):
        self.call = LithopsCall(func, job_key, storage)
        self.call_id = call_id

    def __call__(self, results):
        from lithops.utils import verify_args
        return self.call(self.call_id, verify_args(self.call.func, [results[0]], None)[0])
