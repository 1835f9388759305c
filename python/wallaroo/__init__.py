"""The Wallaroo Python API, as run by Bettong: the classic API (ApplicationBuilder,
partitioned state) and Wallaroo 0.6.1's pipeline API (source, to, key_by, merge,
to_sink, build_application).

This module only describes an application. `ApplicationBuilder.build()` returns
a plain description (dicts and lists holding the user's objects);
`build_application()` returns Wallaroo 0.6.1's tuple `(app_name, root_idx,
vs, es)`. The C engine turns either into a running topology, and tells the two
APIs apart by which of them it got. Nothing here runs per message.

Decorated functions become small objects with the duck-typed methods of the
spec (`name()`, `compute(data)`, ...). They also carry the plain function in
`_bettong_fn` so the engine can call it directly, without the method layer.
"""

import inspect
import pickle
import struct
import sys

__all__ = [
    "ApplicationBuilder", "WallarooError", "WallarooParameterError",
    "computation", "computation_multi", "state_computation",
    "state_computation_multi", "partition", "key_extractor", "decoder", "encoder",
    "source", "build_application", "Pipeline",
    "TCPSourceConfig", "TCPSinkConfig", "GenSourceConfig",
    "KafkaSourceConfig", "KafkaSinkConfig",
    "CustomKafkaSourceCLIParser", "CustomKafkaSinkCLIParser",
    "DefaultKafkaSourceCLIParser", "DefaultKafkaSinkCLIParser",
    "range_windows", "count_windows", "session_windows", "late_to", "Aggregation",
    "nanoseconds", "microseconds", "milliseconds", "seconds", "minutes", "hours",
    "tcp_parse_input_addrs", "tcp_parse_output_addrs",
    "kafka_parse_source_options", "kafka_parse_sink_options",
    "serialize", "deserialize",
]


class WallarooError(Exception):
    """Misuse of the API (raised while the application is being built)."""


class WallarooParameterError(WallarooError):
    """Wallaroo 0.6.1's name for misuse of its pipeline API."""


# ---------------------------------------------------------------- serialization

def serialize(obj):
    return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def deserialize(data):
    return pickle.loads(data)


# ---------------------------------------------------------------- decorators

def _check_arity(fn, n, what):
    """Refuse, when it is decorated, a function that cannot be called with n
    positional arguments (as Wallaroo 0.6.1 does); it would fail on every
    message otherwise. Callables without a signature are let through."""
    if not callable(fn):
        raise WallarooParameterError("%s: expected a function, got %r" % (what, fn))
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    try:
        sig.bind(*([None] * n))
    except TypeError:
        raise WallarooParameterError(
            "%s: function %s%s must take %d positional argument%s"
            % (what, getattr(fn, "__name__", "?"), sig, n, "" if n == 1 else "s"))


class BaseWrapped(object):
    """Wallaroo's decorated objects return themselves when called, so that
    `.to(f)` and `.to(f())` are the same."""

    def __call__(self, *args):
        return self


class _Computation(BaseWrapped):
    kind = "computation"
    arity = 1

    def __init__(self, fn, name):
        _check_arity(fn, self.arity, "@wallaroo.%s" % self.kind)
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
    """A state computation. With `state=StateClass` (Wallaroo 0.6.1's form) it
    belongs in a `wallaroo.source(...)` pipeline and returns its output
    directly; without it, in an ApplicationBuilder step that names the state
    class, and returns `(output, state_changed)`."""

    kind = "state_computation"
    arity = 2

    def __init__(self, fn, name, state=None):
        _Computation.__init__(self, fn, name)
        if state is not None and not callable(state):
            raise WallarooParameterError("@wallaroo.%s(name=%r): state=%r is not a class"
                                         % (self.kind, self._name, state))
        self._bettong_state_class = state

    def compute(self, data, state):
        return self._bettong_fn(data, state)

    def initial_state(self):
        if self._bettong_state_class is None:
            raise WallarooParameterError("%r has no state class (state=)" % self)
        return self._bettong_state_class()


class _StateComputationMulti(_StateComputation):
    kind = "state_computation_multi"

    def compute_multi(self, data, state):
        return self._bettong_fn(data, state)

    compute = None


# Wallaroo 0.6.1's public-looking names of these classes.
Computation = _Computation
ComputationMulti = _ComputationMulti
StateComputation = _StateComputation
StateComputationMulti = _StateComputationMulti


def _named_decorator(cls):
    def decorator_factory(name=None):
        # Allow both @computation(name="x") and a bare @computation.
        if callable(name) and not isinstance(name, str):
            return cls(name, None)

        def wrap(fn):
            return cls(fn, name)
        return wrap
    return decorator_factory


def _state_decorator(cls):
    def decorator_factory(name=None, state=None):
        if callable(name) and not isinstance(name, str):
            return cls(name, None)

        def wrap(fn):
            return cls(fn, name, state)
        return wrap
    return decorator_factory


computation = _named_decorator(_Computation)
computation_multi = _named_decorator(_ComputationMulti)
state_computation = _state_decorator(_StateComputation)
state_computation_multi = _state_decorator(_StateComputationMulti)


class _Partition(BaseWrapped):
    def __init__(self, fn):
        _check_arity(fn, 1, "@wallaroo.partition")
        self._bettong_fn = fn

    def partition(self, data):
        return self._bettong_fn(data)


def partition(fn):
    return _Partition(fn)


class KeyExtractor(BaseWrapped):
    """`@wallaroo.key_extractor`: the key of a message (str or bytes; an int n
    stands for chr(n), as in Wallaroo 0.6.1). The engine calls the plain
    function and makes the key bytes itself (UTF-8 for a str), so "a" and b"a"
    are the same key."""

    def __init__(self, fn):
        _check_arity(fn, 1, "@wallaroo.key_extractor")
        self._bettong_fn = fn
        self._name = getattr(fn, "__name__", "key_extractor")

    def name(self):
        return self._name

    def extract_key(self, data):
        key = self._bettong_fn(data)
        return chr(key) if isinstance(key, int) else key

    def __repr__(self):
        return "<wallaroo key_extractor %r>" % self._name


def key_extractor(fn):
    return KeyExtractor(fn)


class _Decoder(BaseWrapped):
    def __init__(self, fn, header_length, length_fmt):
        _check_arity(fn, 1, "@wallaroo.decoder")
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


class _Encoder(BaseWrapped):
    def __init__(self, fn):
        _check_arity(fn, 1, "@wallaroo.encoder")
        self._bettong_fn = fn

    def encode(self, data):
        return self._bettong_fn(data)


def encoder(fn):
    return _Encoder(fn)


Decoder = OctetDecoder = _Decoder
Encoder = OctetEncoder = _Encoder


# ---------------------------------------------------------------- sources, sinks

def _check_port(port, what):
    try:
        p = int(port)
    except (TypeError, ValueError):
        raise WallarooError("%s: port %r is not a number" % (what, port))
    if not 0 <= p <= 65535:
        raise WallarooError("%s: port %r out of range" % (what, port))
    return p


def _check_parallelism(parallelism):
    """TCPSourceConfig's parallelism: how many clients the source serves at
    once (Wallaroo 0.6.1); None (the classic API's default) means no limit."""
    if parallelism is None:
        return None
    if isinstance(parallelism, bool) or not isinstance(parallelism, int) or parallelism < 1:
        raise WallarooParameterError(
            "TCPSourceConfig: parallelism=%r must be an int >= 1 (the number of clients "
            "the source serves at once)" % (parallelism,))
    return parallelism


class TCPSourceConfig:
    """A TCP source: the engine listens on host:port, each connection framed by
    `decoder`. `parallelism` (Wallaroo 0.6.1) is how many connections it serves
    at once; more wait, connected, until one of them closes. In a
    `wallaroo.source(...)` pipeline it defaults to 10, as in Wallaroo; in the
    classic API to no limit."""

    def __init__(self, host, port, decoder, parallelism=None):
        self.host = host
        self.port = port
        self.decoder = decoder
        self.parallelism = _check_parallelism(parallelism)

    def _describe(self):
        _require_methods(self.decoder, ("header_length", "payload_length", "decode"),
                         "TCPSourceConfig decoder")
        return {"kind": "tcp", "host": str(self.host or "127.0.0.1"),
                "port": _check_port(self.port, "TCPSourceConfig"),
                "decoder": self.decoder, "parallelism": self.parallelism}

    def to_tuple(self):
        parallelism = 10 if self.parallelism is None else self.parallelism
        return ("tcp", self.host, self.port, self.decoder, parallelism)


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

    def to_tuple(self):
        return ("tcp", self.host, self.port, self.encoder)


class GenSourceConfig:
    """A source fed by `generator.initial_value()` and then `generator.apply(prev)`.
    In Bettong, a value of None ends the source."""

    def __init__(self, generator):
        self.generator = generator

    def _describe(self):
        _require_methods(self.generator, ("initial_value", "apply"), "GenSourceConfig generator")
        return {"kind": "gen", "generator": self.generator}

    def to_tuple(self):
        return ("gen", self.generator)


# Kafka is not supported: these configs exist so that applications load, and
# the engine refuses them with a message naming the source or sink.

class KafkaSourceConfig:
    def __init__(self, topic, brokers, log_level, decoder):
        self.topic, self.brokers, self.log_level, self.decoder = topic, brokers, log_level, decoder

    def _describe(self):
        return {"kind": "kafka", "topic": self.topic, "brokers": self.brokers}

    def to_tuple(self):
        return ("kafka", self.topic, self.brokers, self.log_level, self.decoder)


class KafkaSinkConfig:
    def __init__(self, topic, brokers, log_level, max_produce_buffer_ms, max_message_size,
                 encoder):
        self.topic, self.brokers, self.log_level = topic, brokers, log_level
        self.max_produce_buffer_ms = max_produce_buffer_ms
        self.max_message_size = max_message_size
        self.encoder = encoder

    def _describe(self):
        return {"kind": "kafka", "topic": self.topic, "brokers": self.brokers}

    def to_tuple(self):
        return ("kafka", self.topic, self.brokers, self.log_level,
                self.max_produce_buffer_ms, self.max_message_size, self.encoder)


class CustomKafkaSourceCLIParser:
    """Wallaroo 0.6.1's Kafka source from --kafka_source_* flags (refused by the engine)."""

    def __init__(self, args, decoder):
        self.topic, self.brokers, self.log_level = kafka_parse_source_options(args)
        self.decoder = decoder

    def to_tuple(self):
        return ("kafka", self.topic, self.brokers, self.log_level, self.decoder)


class CustomKafkaSinkCLIParser:
    """Wallaroo 0.6.1's Kafka sink from --kafka_sink_* flags (refused by the engine)."""

    def __init__(self, args, encoder):
        (self.topic, self.brokers, self.log_level, self.max_produce_buffer_ms,
         self.max_message_size) = kafka_parse_sink_options(args)
        self.encoder = encoder

    def to_tuple(self):
        return ("kafka", self.topic, self.brokers, self.log_level,
                self.max_produce_buffer_ms, self.max_message_size, self.encoder)


class DefaultKafkaSourceCLIParser:
    def __init__(self, decoder, name="kafka_source"):
        self.decoder = decoder
        self.name = name

    def to_tuple(self):
        return ("kafka-internal", self.name, self.decoder)


class DefaultKafkaSinkCLIParser:
    def __init__(self, encoder, name="kafka_sink"):
        self.encoder = encoder
        self.name = name

    def to_tuple(self):
        return ("kafka-internal", self.name, self.encoder)


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
        if getattr(comp, "_bettong_state_class", None) is not None:
            # The two forms return different things: refuse rather than guess.
            raise WallarooError(
                "%s(%r): this state computation was declared with state= (Wallaroo 0.6's "
                "form, which returns its output directly and belongs in a wallaroo.source(...) "
                "pipeline); with ApplicationBuilder declare it without state= and return "
                "(output, state_changed)" % (call, comp))
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


# ---------------------------------------------------------------- Wallaroo 0.6 pipelines
#
# wallaroo.source(...).to(...).key_by(...).to_sink(...) and
# build_application(), as in Wallaroo 0.6.1: every method returns a new
# Pipeline; build_application() returns the tuple (app_name, root_idx, vs, es)
# in which vs[i] is the list of stages of node i (a leaf starts with
# ("source", name, config_tuple); a merge node holds the stages after the
# merge) and es[i] the node's inputs (none for a leaf, two for a merge). The
# engine compiles that tree onto its pipelines (src/stream/graph.c).

def _unbuffered_stdio():
    """Wallaroo 0.6.1 makes stdout and stderr flush on every write when they
    are not a terminal, and its examples print() as they go: so do we, for
    applications built with build_application()."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, _Unbuffered) and not stream.isatty():
            setattr(sys, name, _Unbuffered(stream))


class _Unbuffered(object):
    def __init__(self, stream):
        self.stream = stream

    def write(self, data):
        n = self.stream.write(data)
        self.stream.flush()
        return n

    def writelines(self, datas):
        self.stream.writelines(datas)
        self.stream.flush()

    def __getattr__(self, attr):
        return getattr(self.stream, attr)


class _PipelineTree(object):
    """The tree of a Pipeline; copied, never changed, by Pipeline's methods."""

    def __init__(self, vs, es, root_idx, closed=False, last_is_key_by=False):
        self.vs = vs
        self.es = es
        self.root_idx = root_idx
        self.is_closed = closed
        self.last_is_key_by = last_is_key_by

    def clone(self):
        return _PipelineTree([list(v) for v in self.vs], [list(e) for e in self.es],
                             self.root_idx, self.is_closed, self.last_is_key_by)

    def with_stage(self, stage):
        if self.is_closed:
            raise WallarooParameterError("You can't add stages after to_sink/s (%s)."
                                         % stage[0])
        t = self.clone()
        t.vs[t.root_idx].append(stage)
        t.is_closed = stage[0] in ("to_sink", "to_sinks")
        t.last_is_key_by = stage[0] in ("key_by", "collect")
        return t

    def merged(self, other):
        if self.is_closed or other.is_closed:
            raise WallarooParameterError("You can't merge with a terminated pipeline "
                                         "(one that ends with to_sink/s).")
        if self.last_is_key_by != other.last_is_key_by:
            raise WallarooParameterError("A pipeline ending with key_by can only be merged "
                                         "with another pipeline ending with key_by.")
        t = self.clone()
        # A new root holds the stages after the merge; its inputs are both roots.
        root = len(t.vs)
        t.vs.append([])
        t.es.append([t.root_idx])
        diff = len(t.vs)
        t.vs.extend(list(v) for v in other.vs)
        t.es.extend([e + diff for e in es] for es in other.es)
        t.es[root].append(other.root_idx + diff)
        t.root_idx = root
        return t


def _check_config(config, what):
    if not callable(getattr(config, "to_tuple", None)):
        raise WallarooParameterError("%s: %r is not a source or sink config" % (what, config))
    return config.to_tuple()


class Pipeline(object):
    def __init__(self, pipeline_tree):
        self._pipeline_tree = pipeline_tree

    @classmethod
    def from_source(cls, name, source_config):
        stage = ("source", name, _check_config(source_config, "wallaroo.source(%r)" % (name,)))
        return cls(_PipelineTree([[stage]], [[]], 0))

    def _is_closed(self):
        return self._pipeline_tree.is_closed

    def __to_tuple__(self, app_name):
        t = self._pipeline_tree.clone()
        return (app_name, t.root_idx, t.vs, t.es)

    def clone(self):
        return Pipeline(self._pipeline_tree.clone())

    def _then(self, stage):
        return Pipeline(self._pipeline_tree.with_stage(stage))

    def to(self, computation):
        if isinstance(computation, RangeWindows):
            stage = ("to_range_windows", computation.range, computation.slide,
                     computation.delay, computation.aggregation)
            if computation.event_time is not None:
                stage += (computation.event_time,)
            return self._then(stage)
        if isinstance(computation, SessionWindows):
            return self._then(("to_session_windows", computation.gap,
                               computation.aggregation, computation.event_time))
        if isinstance(computation, CountWindows):
            return self._then(("to_count_windows", computation.count,
                               computation.aggregation))
        if isinstance(computation, Aggregation):
            # Wallaroo 0.6.1 would take it for a stateless computation and
            # fail on its missing compute(): say what to write instead.
            raise WallarooParameterError(
                ".to(%r): an Aggregation runs over windows: "
                ".to(wallaroo.range_windows(...).over(Agg)) or "
                ".to(wallaroo.count_windows(n).over(Agg))" % (computation,))
        if not callable(getattr(computation, "name", None)) or not (
                callable(getattr(computation, "compute", None))
                or callable(getattr(computation, "compute_multi", None))):
            raise WallarooParameterError(".to(%r): not a computation (it needs name() and "
                                         "compute() or compute_multi())" % (computation,))
        if isinstance(computation, StateComputation):
            if getattr(computation, "_bettong_state_class", None) is None:
                raise WallarooParameterError(
                    ".to(%r): a state computation in a wallaroo.source(...) pipeline needs its "
                    "state class: @wallaroo.state_computation(name=..., state=StateClass)"
                    % (computation,))
            return self._then(("to_state", computation))
        return self._then(("to", computation))

    def key_by(self, key_extractor):
        if not callable(getattr(key_extractor, "extract_key", None)):
            raise WallarooParameterError(".key_by(%r): not a key extractor (decorate the "
                                         "function with @wallaroo.key_extractor)"
                                         % (key_extractor,))
        return self._then(("key_by", key_extractor))

    def collect(self):
        return self._then(("collect", ""))

    def merge(self, pipeline):
        if not isinstance(pipeline, Pipeline):
            raise WallarooParameterError(".merge(%r): not a pipeline" % (pipeline,))
        return Pipeline(self._pipeline_tree.merged(pipeline._pipeline_tree))

    def to_sink(self, sink_config):
        return self._then(("to_sink", _check_config(sink_config, ".to_sink")))

    def to_sinks(self, sink_configs):
        configs = [_check_config(c, ".to_sinks") for c in sink_configs]
        if not configs:
            raise WallarooParameterError("You must specify at least one sink when using "
                                         "to_sinks().")
        return self._then(("to_sinks", configs))


def source(name, source_config):
    return Pipeline.from_source(name, source_config)


def build_application(app_name, pipeline):
    if not isinstance(pipeline, Pipeline):
        raise WallarooParameterError("build_application(%r, %r): not a pipeline"
                                     % (app_name, pipeline))
    if not pipeline._is_closed():
        raise WallarooParameterError("An application must end with to_sink/s.")
    _unbuffered_stdio()
    return pipeline.__to_tuple__(app_name)


class Aggregation(BaseWrapped):
    """Wallaroo 0.6.1's base class of window aggregations: the engine calls
    initial_accumulator(), update(data, acc) (mutates acc), combine(a1, a2)
    (a new accumulator) and output(key, acc) (None: no output)."""

    def name(self):
        return self.__class__.__name__


def _validate_aggregation(agg):
    for method in ("name", "initial_accumulator", "update", "combine", "output"):
        if not hasattr(agg, method):
            raise WallarooParameterError("Aggregation must have method '%s'." % method)


def _check_int(value, what, minimum):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise WallarooParameterError("%s must be an int >= %d (nanoseconds: use "
                                     "wallaroo.seconds(...) and friends), not %r"
                                     % (what, minimum, value))
    return value


# with_event_time() without an extractor: the event time of the message's
# source (a connector frame's), which the engine keeps beside the message.
_SOURCE_TIME = "source"


class _EventTimeOptions(object):
    """Bettong's extension of the window builders: with_event_time() and
    with_late_data() (docs/user-guide.md, "Windows on event time")."""

    def _init_event_time(self):
        self.extractor = None
        self.max_out_of_order = None
        self.late_policy = None
        self.keep = None

    def with_event_time(self, extractor=None, max_out_of_order=0):
        """Windows on the time extractor(msg) returns (an int of ns since
        1970, or a datetime; a naive one is UTC) instead of the ingest time;
        with no extractor, on the event time the source gives each message
        (a connector frame's, in ms). A key's watermark trails its greatest
        event time by max_out_of_order (ns), and moves on with the wall clock
        while the key is idle."""
        if self.extractor is not None:
            raise WallarooParameterError("Only call `with_event_time()` once per window "
                                         "specification.")
        if extractor is None:
            self.extractor = _SOURCE_TIME
        elif callable(extractor):
            self.extractor = getattr(extractor, "_bettong_fn", extractor)
        else:
            raise WallarooParameterError("with_event_time(%r): the extractor must be "
                                         "callable (msg -> event time), or None for the "
                                         "source's event time" % (extractor,))
        self.max_out_of_order = _check_int(_timedelta_ns(max_out_of_order),
                                           "with_event_time: max_out_of_order", 0)
        return self

    def with_late_data(self, policy, keep=None):
        """What becomes of a message whose event time is before its key's
        watermark: "drop" (the default; counted and logged), "update" (it is
        added to its windows while they are kept, `keep` ns after they
        closed, by default the range (gap), and each closed one is output
        again) or a sink config / wallaroo.late_to(sink config) (it goes to
        that sink, encoded by its encoder)."""
        if self.late_policy is not None:
            raise WallarooParameterError("Only call `with_late_data()` once per window "
                                         "specification.")
        if isinstance(policy, LateTo):
            policy = policy.sink_config
        if policy == "drop" or policy == "update":
            self.late_policy = (policy, None)
        elif callable(getattr(policy, "to_tuple", None)):
            self.late_policy = ("side", _check_config(policy, "with_late_data"))
        else:
            raise WallarooParameterError("with_late_data(%r): the policy is \"drop\", "
                                         "\"update\" or a sink config (wallaroo.late_to"
                                         "(sink config))" % (policy,))
        if keep is not None:
            if self.late_policy[0] != "update":
                raise WallarooParameterError("with_late_data: keep= is for \"update\"")
            self.keep = _check_int(_timedelta_ns(keep), "with_late_data: keep", 0)
        return self

    def _event_time_stage(self, aggregation, default_keep):
        policy, sink = self.late_policy or ("drop", None)
        keep = default_keep if self.keep is None else self.keep
        return ("event_time", self.extractor, self.max_out_of_order or 0, policy, keep, sink,
                _output_takes_bounds(aggregation))


def _timedelta_ns(value):
    """A datetime.timedelta as int ns (Bytewax's spelling of durations); any
    other value as it is."""
    import datetime
    if isinstance(value, datetime.timedelta):
        return ((value.days * 86400 + value.seconds) * 10 ** 6 + value.microseconds) * 1000
    return value


def _output_takes_bounds(agg):
    """Whether the aggregation's output() takes a third argument: the
    window's (start, end) in ns."""
    try:
        sig = inspect.signature(agg.output)
    except (TypeError, ValueError):
        return False
    try:
        sig.bind(None, None, None)
    except TypeError:
        return False
    return True


class LateTo(object):
    """wallaroo.late_to(sink_config): late messages go to that sink."""

    def __init__(self, sink_config):
        _check_config(sink_config, "late_to")
        self.sink_config = sink_config


def late_to(sink_config):
    return LateTo(sink_config)


class RangeWindowsBuilder(_EventTimeOptions):
    def __init__(self, wrange):
        self.range = wrange
        self.slide = None
        self.delay = None
        self._init_event_time()

    def with_slide(self, slide):
        if self.slide is not None:
            raise WallarooParameterError("Only call `with_slide()` once per window "
                                         "specification.")
        self.slide = slide
        return self

    def with_delay(self, delay):
        if self.delay is not None:
            raise WallarooParameterError("Only call `with_delay()` once per window "
                                         "specification.")
        self.delay = delay
        return self

    def over(self, aggregation_cls):
        slide = self.range if self.slide is None else self.slide
        delay = 0 if self.delay is None else self.delay
        w = RangeWindows(self.range, slide, delay, aggregation_cls())
        if self.extractor is None:
            if self.late_policy is not None:
                raise WallarooParameterError("with_late_data() needs with_event_time(): "
                                             "ingest-time range windows drop nothing")
            return w
        if self.delay is not None:
            raise WallarooParameterError("with_delay() is for ingest time; on event time "
                                         "give max_out_of_order to with_event_time()")
        w.event_time = self._event_time_stage(w.aggregation, w.range)
        return w


class RangeWindows(object):
    def __init__(self, wrange, slide, delay, agg):
        # Wallaroo checks these when the application starts (fatal there).
        self.range = _check_int(wrange, "range_windows: the range", 1)
        self.slide = _check_int(slide, "range_windows: the slide", 1)
        self.delay = _check_int(delay, "range_windows: the delay", 0)
        if self.slide > self.range:
            raise WallarooParameterError("range_windows: the slide (%d) must not be larger "
                                         "than the range (%d)" % (slide, wrange))
        _validate_aggregation(agg)
        self.aggregation = agg
        self.event_time = None


class SessionWindowsBuilder(_EventTimeOptions):
    """Bettong's session windows: a key's messages at most `gap` ns apart
    are in one window; on the ingest time, or on event time."""

    def __init__(self, gap):
        self.gap = _check_int(gap, "session_windows: the gap", 1)
        self._init_event_time()

    def over(self, aggregation_cls):
        return SessionWindows(self.gap, aggregation_cls(), self)


class SessionWindows(object):
    def __init__(self, gap, agg, builder):
        _validate_aggregation(agg)
        self.gap = gap
        self.aggregation = agg
        self.event_time = builder._event_time_stage(agg, gap)


class CountWindowsBuilder(object):
    def __init__(self, count):
        self.count = count

    def over(self, aggregation_cls):
        return CountWindows(self.count, aggregation_cls())


class CountWindows(object):
    def __init__(self, count, agg):
        self.count = _check_int(count, "count_windows: the count", 0)
        _validate_aggregation(agg)
        self.aggregation = agg


def range_windows(wrange):
    return RangeWindowsBuilder(wrange)


def count_windows(count):
    return CountWindowsBuilder(count)


def session_windows(gap):
    return SessionWindowsBuilder(gap)


# Time units of Wallaroo 0.6.1: integer nanoseconds.

def nanoseconds(x):
    return x


def microseconds(x):
    return nanoseconds(x) * 1000


def milliseconds(x):
    return microseconds(x) * 1000


def seconds(x):
    return milliseconds(x) * 1000


def minutes(x):
    return seconds(x) * 60


def hours(x):
    return minutes(x) * 60


# As in Wallaroo 0.6.1, `import wallaroo` also imports wallaroo.experimental
# (the connectors), whose codec classes are wallaroo's too. Last: it builds on
# the names above.
from wallaroo import experimental  # noqa: E402
from wallaroo.experimental import ConnectorDecoder, ConnectorEncoder  # noqa: E402,F401
