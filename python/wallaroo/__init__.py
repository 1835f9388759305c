"""The classic Wallaroo Python API, as run by Bettong.

This module only describes an application: `ApplicationBuilder.build()` returns a
plain description (dicts and lists holding the user's objects) that the C engine
turns into a running topology. Nothing here runs per message.

Decorated functions become small objects with the duck-typed methods of the spec
(`name()`, `compute(data)`, ...). They also carry the plain function in
`_bettong_fn` so the engine can call it directly, without the method layer.
"""

import pickle
import struct

__all__ = [
    "ApplicationBuilder", "WallarooError",
    "computation", "computation_multi", "state_computation",
    "state_computation_multi", "partition", "decoder", "encoder",
    "TCPSourceConfig", "TCPSinkConfig", "GenSourceConfig",
    "KafkaSourceConfig", "KafkaSinkConfig",
    "tcp_parse_input_addrs", "tcp_parse_output_addrs",
    "kafka_parse_source_options", "kafka_parse_sink_options",
    "serialize", "deserialize",
]


class WallarooError(Exception):
    """Misuse of the API (raised while the application is being built)."""


# ---------------------------------------------------------------- serialization

def serialize(obj):
    return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def deserialize(data):
    return pickle.loads(data)


# ---------------------------------------------------------------- decorators

class _Computation:
    kind = "computation"

    def __init__(self, fn, name):
        self._bettong_fn = fn
        self._name = name or getattr(fn, "__name__", "computation")

    def name(self):
        return self._name

    def compute(self, data):
        return self._bettong_fn(data)

    def __repr__(self):
        return "<wallaroo %s %r>" % (self.kind, self._name)


class _ComputationMulti(_Computation):
    kind = "computation_multi"

    def compute_multi(self, data):
        return self._bettong_fn(data)

    compute = None  # a multi computation has no single-output compute


class _StateComputation(_Computation):
    kind = "state_computation"

    def compute(self, data, state):
        return self._bettong_fn(data, state)


class _StateComputationMulti(_Computation):
    kind = "state_computation_multi"

    def compute_multi(self, data, state):
        return self._bettong_fn(data, state)

    compute = None


def _named_decorator(cls):
    def decorator_factory(name=None):
        # Allow both @computation(name="x") and a bare @computation.
        if callable(name) and not isinstance(name, str):
            return cls(name, None)

        def wrap(fn):
            return cls(fn, name)
        return wrap
    return decorator_factory


computation = _named_decorator(_Computation)
computation_multi = _named_decorator(_ComputationMulti)
state_computation = _named_decorator(_StateComputation)
state_computation_multi = _named_decorator(_StateComputationMulti)


class _Partition:
    def __init__(self, fn):
        self._bettong_fn = fn

    def partition(self, data):
        return self._bettong_fn(data)


def partition(fn):
    return _Partition(fn)


class _Decoder:
    def __init__(self, fn, header_length, length_fmt):
        if struct.calcsize(length_fmt) != header_length:
            raise WallarooError(
                "decoder %r: header_length=%d does not match length_fmt %r (%d bytes)"
                % (getattr(fn, "__name__", fn), header_length, length_fmt,
                   struct.calcsize(length_fmt)))
        self._bettong_fn = fn
        self._bettong_header_length = header_length
        self._bettong_length_fmt = length_fmt

    def header_length(self):
        return self._bettong_header_length

    def payload_length(self, bs):
        return struct.unpack(self._bettong_length_fmt, bs)[0]

    def decode(self, bs):
        return self._bettong_fn(bs)


def decoder(header_length, length_fmt):
    def wrap(fn):
        return _Decoder(fn, header_length, length_fmt)
    return wrap


class _Encoder:
    def __init__(self, fn):
        self._bettong_fn = fn

    def encode(self, data):
        return self._bettong_fn(data)


def encoder(fn):
    return _Encoder(fn)


# ---------------------------------------------------------------- sources, sinks

def _check_port(port, what):
    try:
        p = int(port)
    except (TypeError, ValueError):
        raise WallarooError("%s: port %r is not a number" % (what, port))
    if not 0 <= p <= 65535:
        raise WallarooError("%s: port %r out of range" % (what, port))
    return p


class TCPSourceConfig:
    def __init__(self, host, port, decoder):
        self.host = host
        self.port = port
        self.decoder = decoder

    def _describe(self):
        _require_methods(self.decoder, ("header_length", "payload_length", "decode"),
                         "TCPSourceConfig decoder")
        return {"kind": "tcp", "host": str(self.host or "127.0.0.1"),
                "port": _check_port(self.port, "TCPSourceConfig"),
                "decoder": self.decoder}


class TCPSinkConfig:
    def __init__(self, host, port, encoder):
        self.host = host
        self.port = port
        self.encoder = encoder

    def _describe(self):
        _require_methods(self.encoder, ("encode",), "TCPSinkConfig encoder")
        return {"kind": "tcp", "host": str(self.host or "127.0.0.1"),
                "port": _check_port(self.port, "TCPSinkConfig"),
                "encoder": self.encoder}


class GenSourceConfig:
    """A source fed by `generator.initial_value()` and then `generator.apply(prev)`.
    In Bettong, a value of None ends the source."""

    def __init__(self, generator):
        self.generator = generator

    def _describe(self):
        _require_methods(self.generator, ("initial_value", "apply"), "GenSourceConfig generator")
        return {"kind": "gen", "generator": self.generator}


class KafkaSourceConfig:
    def __init__(self, topic, brokers, log_level, decoder):
        self.topic, self.brokers, self.log_level, self.decoder = topic, brokers, log_level, decoder

    def _describe(self):
        return {"kind": "kafka", "topic": self.topic, "brokers": self.brokers}


class KafkaSinkConfig:
    def __init__(self, topic, brokers, log_level, max_produce_buffer_ms, max_message_size,
                 encoder):
        self.topic, self.brokers, self.log_level = topic, brokers, log_level
        self.max_produce_buffer_ms = max_produce_buffer_ms
        self.max_message_size = max_message_size
        self.encoder = encoder

    def _describe(self):
        return {"kind": "kafka", "topic": self.topic, "brokers": self.brokers}


def _parse_addrs(args, long_flag, short_flag):
    value = None
    for i, arg in enumerate(args):
        if arg in (long_flag, short_flag):
            if i + 1 < len(args):
                value = args[i + 1]
        elif arg.startswith(long_flag + "="):
            value = arg[len(long_flag) + 1:]
    if value is None:
        raise WallarooError("missing %s host:port[,host:port...]" % long_flag)
    addrs = []
    for item in value.split(","):
        host, sep, port = item.rpartition(":")
        if not sep:
            raise WallarooError("bad address %r for %s (expected host:port)" % (item, long_flag))
        addrs.append((host, port))
    return addrs


def tcp_parse_input_addrs(args):
    return _parse_addrs(args, "--in", "-i")


def tcp_parse_output_addrs(args):
    return _parse_addrs(args, "--out", "-o")


def _flag_value(args, name, default=None):
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg[len(name) + 1:]
    return default


def kafka_parse_source_options(args):
    brokers = _flag_value(args, "--kafka_source_brokers", "")
    return (_flag_value(args, "--kafka_source_topic", ""),
            [tuple(b.rsplit(":", 1)) for b in brokers.split(",") if b],
            _flag_value(args, "--kafka_source_log_level", "Warn"))


def kafka_parse_sink_options(args):
    brokers = _flag_value(args, "--kafka_sink_brokers", "")
    return (_flag_value(args, "--kafka_sink_topic", ""),
            [tuple(b.rsplit(":", 1)) for b in brokers.split(",") if b],
            _flag_value(args, "--kafka_sink_log_level", "Warn"),
            int(_flag_value(args, "--kafka_sink_max_produce_buffer_ms", "0")),
            int(_flag_value(args, "--kafka_sink_max_message_size", "100000")))


# ---------------------------------------------------------------- the builder

def _require_methods(obj, names, what):
    missing = [n for n in names if not callable(getattr(obj, n, None))]
    if missing:
        raise WallarooError("%s %r has no method %s" % (what, obj, ", ".join(missing)))


def _computation_arity(comp, stateful, what):
    """Return 'single' or 'multi' for a computation object, checking its methods."""
    if not callable(getattr(comp, "name", None)):
        raise WallarooError("%s %r has no name() method" % (what, comp))
    if callable(getattr(comp, "compute_multi", None)):
        return "multi"
    if callable(getattr(comp, "compute", None)):
        return "single"
    raise WallarooError("%s %r has neither compute() nor compute_multi()" % (what, comp))


class ApplicationBuilder:
    def __init__(self, name):
        self._name = name
        self._pipelines = []
        self._current = None

    def _open(self, call):
        if self._current is None:
            raise WallarooError("%s() called outside a pipeline: call new_pipeline() first"
                                % call)
        return self._current

    def new_pipeline(self, name, source_config):
        if self._current is not None:
            raise WallarooError("new_pipeline(%r): pipeline %r is not finished "
                                "(end it with to_sink() or done())"
                                % (name, self._current["name"]))
        if not hasattr(source_config, "_describe"):
            raise WallarooError("new_pipeline(%r): %r is not a source config"
                                % (name, source_config))
        self._current = {"name": str(name), "source": source_config._describe(), "steps": [],
                         "sink": None}
        return self

    def _add_step(self, call, kind, comp, stateful, **extra):
        pipe = self._open(call)
        step = {"kind": kind, "computation": comp,
                "arity": _computation_arity(comp, stateful, call)}
        step.update(extra)
        pipe["steps"].append(step)
        return self

    def to(self, computation):
        return self._add_step("to", "to", computation, False)

    def to_parallel(self, computation):
        return self._add_step("to_parallel", "to_parallel", computation, False)

    def _check_state(self, call, state_class, state_name):
        if not callable(state_class):
            raise WallarooError("%s: state class %r is not callable" % (call, state_class))
        if not isinstance(state_name, str) or not state_name:
            raise WallarooError("%s: state_name must be a non-empty str" % call)

    def to_stateful(self, computation, state_class, state_name):
        self._check_state("to_stateful", state_class, state_name)
        return self._add_step("to_stateful", "to_stateful", computation, True,
                              state_class=state_class, state_name=state_name)

    def _to_partition(self, call, kind, computation, state_class, state_name,
                      partition_function, partition_keys):
        self._check_state(call, state_class, state_name)
        _require_methods(partition_function, ("partition",), call + " partition function")
        keys = list(partition_keys) if partition_keys is not None else []
        return self._add_step(call, kind, computation, True, state_class=state_class,
                              state_name=state_name, partition_function=partition_function,
                              partition_keys=keys)

    def to_state_partition(self, computation, state_class, state_name, partition_function,
                           partition_keys=None):
        return self._to_partition("to_state_partition", "to_state_partition", computation,
                                  state_class, state_name, partition_function, partition_keys)

    def to_state_partition_u64(self, computation, state_class, state_name,
                               partition_function, partition_keys=None):
        return self._to_partition("to_state_partition_u64", "to_state_partition_u64",
                                  computation, state_class, state_name, partition_function,
                                  partition_keys)

    def to_sink(self, sink_config):
        pipe = self._open("to_sink")
        if not hasattr(sink_config, "_describe"):
            raise WallarooError("to_sink: %r is not a sink config" % (sink_config,))
        pipe["sink"] = sink_config._describe()
        self._pipelines.append(pipe)
        self._current = None
        return self

    def done(self):
        pipe = self._open("done")
        self._pipelines.append(pipe)
        self._current = None
        return self

    def build(self):
        if self._current is not None:
            raise WallarooError("build(): pipeline %r is not finished "
                                "(end it with to_sink() or done())" % self._current["name"])
        if not self._pipelines:
            raise WallarooError("build(): the application has no pipeline")
        return {"bettong_description": 1, "name": str(self._name),
                "pipelines": list(self._pipelines)}
