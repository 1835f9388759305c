"""Failures and bad input: load errors, exceptions in user code under each
--on-error policy, bad frames on a connection, signals, and a sink that is late
or goes away."""

import signal
import socket
import struct
import threading
import time

import pytest

from conftest import (APPS, SOURCE_RE, app_path, closed_by_peer, example_path, frame, frames,
                      lines_of, py_send)

ERRORS_APP = app_path("errors_app")


def stop_ok(engine):
    rc, err = engine.stop()
    assert rc == 0, "engine exited with %d after SIGTERM:\n%s" % (rc, err)
    return err


def reverse_expected(texts):
    return "".join(t[::-1] + "\n" for t in texts).encode("utf-8")


# ------------------------------------------------------------------ load errors

def run_load_error(bt, app, extra=()):
    """Start an engine that must refuse to load: it exits 2 with a message, and
    its --in source never listens (no "listening on" line: the engine logs one
    the moment a source listens)."""
    eng = bt.engine(app, ins=[0], outs=[bt.reserve_port()], extra=extra, wait=False)
    rc, err = eng.wait_exit()
    assert rc == 2, "exit %d, expected 2:\n%s" % (rc, err)
    assert not SOURCE_RE.search(err), "engine listened although the application did not load"
    return err


def test_no_such_module(bt):
    err = run_load_error(bt, None, ["--application-module", "no_such_module_bt42",
                                    "--application-path", str(APPS)])
    assert "no_such_module_bt42" in err


def test_no_such_app_file(bt):
    err = run_load_error(bt, APPS / "does_not_exist_app.py")
    assert "does_not_exist_app" in err


def test_application_setup_raises(bt):
    err = run_load_error(bt, app_path("setup_raises_app"))
    assert "setup exploded on purpose" in err
    assert "RuntimeError" in err


def test_to_before_new_pipeline(bt):
    err = run_load_error(bt, app_path("to_before_pipeline_app"))
    assert "WallarooError" in err or "new_pipeline" in err
    assert "new_pipeline" in err


def test_build_with_unfinished_pipeline(bt):
    err = run_load_error(bt, app_path("unfinished_pipeline_app"))
    assert "not finished" in err


def test_module_without_application_setup(bt):
    err = run_load_error(bt, app_path("no_setup_app"))
    assert "application_setup" in err


def test_module_with_syntax_error(bt):
    path = bt.tmp / "broken_syntax_app.py"
    path.write_text("import wallaroo\n\ndef application_setup(args)\n    return None\n")
    err = run_load_error(bt, path)
    assert "SyntaxError" in err


# ------------------------------------------------------------------ user exceptions

def mixed_messages(n_good, n_boom):
    """Good messages ("good N", all in partition 'g') interleaved with failing ones."""
    msgs, good, boom = [], [], []
    for i in range(max(n_good, n_boom)):
        if i < n_good:
            msgs.append("good %d" % i)
            good.append(msgs[-1])
        if i < n_boom:
            msgs.append("boom %d \u00fc" % i)
            boom.append(msgs[-1])
    return msgs, good, boom


def assert_logged_once(err, step):
    """The failure is logged with its traceback, but not once per message."""
    assert "Traceback" in err, err
    assert "ValueError" in err and "deliberate failure in %s" % step in err, err
    assert 1 <= err.count("Traceback (most recent call last)") <= 5, err[:5000]
    assert err.count("deliberate failure in %s" % step) <= 10, err[:5000]


@pytest.mark.parametrize("step,policy", [("compute", ["--on-error", "skip"]),
                                         ("partition", []),
                                         ("state", ["--on-error=skip"]),
                                         ("encoder", [])])
def test_exception_skipped(bt, step, policy):
    """1000 failures: each failed message dropped, the others all go on, in order;
    one traceback, not 1000."""
    msgs, good, boom = mixed_messages(300, 1000)
    recv = bt.receiver()
    eng = bt.engine(ERRORS_APP, ins=[0], outs=[recv.port],
                    extra=["--fail-in", step] + policy)
    port = eng.in_ports[0]
    bt.send_payloads(port, msgs)
    expected = "".join(g + "\n" for g in good).encode()
    assert recv.wait_bytes(len(expected)) == expected
    assert eng.alive()
    # The engine still works after the failures.
    bt.send_payloads(port, ["good again"])
    assert recv.wait_bytes(len(expected) + 11) == expected + b"good again\n"
    err = stop_ok(eng)
    assert_logged_once(err, step)


def test_encoder_returning_the_wrong_type_names_the_encoder(bt):
    """No traceback points into an encoder that returned an int: the report
    names the encoder and where it is defined; the message is skipped."""
    recv = bt.receiver()
    eng = bt.engine(ERRORS_APP, ins=[0], outs=[recv.port], extra=["--fail-in", "encoder-type"])
    bt.send_payloads(eng.in_ports[0], ["good 1", "boom 1", "boom 2", "good 2"])
    assert recv.wait_bytes(14) == b"good 1\ngood 2\n"
    line = eng.wait_log(r"user code raised in encoder .*").group(0)
    place = "encoder 'LineEncoder.encode' (%s:%d)" % (
        ERRORS_APP, 1 + next(i for i, l in enumerate(open(ERRORS_APP))
                             if l.strip().startswith("def encode(")))
    assert place in line, line
    err = stop_ok(eng)
    assert "TypeError: encoder returned int, expected bytes or str" in err, err
    assert " at ?" not in err, err


@pytest.mark.parametrize("step", ["compute", "state", "encoder"])
def test_exception_dead_letter(bt, step):
    """--on-error dead-letter:FILE appends each failed message's input frame,
    header and payload byte for byte."""
    msgs, good, boom = mixed_messages(200, 50)
    boom.append("boom " + "\u00e9" * 700)  # a bigger frame too
    msgs.append(boom[-1])
    msgs.append("good last")
    good.append("good last")
    dead = bt.tmp / ("dead-%s.bin" % step)
    recv = bt.receiver()
    eng = bt.engine(ERRORS_APP, ins=[0], outs=[recv.port],
                    extra=["--fail-in", step, "--on-error", "dead-letter:%s" % dead])
    port = eng.in_ports[0]
    bt.send_payloads(port, msgs)
    expected = "".join(g + "\n" for g in good).encode()
    assert recv.wait_bytes(len(expected)) == expected
    err = stop_ok(eng)
    assert dead.exists(), "no dead-letter file:\n" + err
    assert dead.read_bytes() == frames(boom)
    assert_logged_once(err, step)


def test_exception_stop_policy(bt):
    """--on-error stop: the engine flushes what it processed and exits non-zero."""
    recv = bt.receiver()
    eng = bt.engine(ERRORS_APP, ins=[0], outs=[recv.port],
                    extra=["--fail-in", "compute", "--on-error", "stop"])
    port = eng.in_ports[0]
    first = ["good %d" % i for i in range(100)]
    bt.send_payloads(port, first)
    expected = "".join(g + "\n" for g in first).encode()
    assert recv.wait_bytes(len(expected)) == expected
    before = ["good before %d" % i for i in range(50)]
    after = ["good after %d" % i for i in range(50)]
    bt.send_payloads(port, before + ["boom now"] + after)
    rc, err = eng.wait_exit(15)
    assert rc != 0, err
    assert_logged_once(err, "compute")
    got = lines_of(recv.wait_bytes(len(expected) + sum(len(b) + 1 for b in before)))
    good = first + before + after
    # Everything before the failure was flushed; nothing out of order.
    assert got[:len(first) + len(before)] == first + before
    assert got == good[:len(got)]


# ------------------------------------------------------------------ bad input

BAD_INPUTS = {
    "too large": struct.pack(">I", 2000) + b"x" * 2000,
    "garbage": b"\xff\xff\xff\xffGARBAGE GARBAGE",
    "decoder raises": frame(b"!decoder please fail"),
    "not utf-8": frame(b"\xff\xfe\xfd bad bytes"),
}


@pytest.mark.parametrize("kind", sorted(BAD_INPUTS))
def test_bad_connection_closed_others_go_on(bt, kind):
    recv = bt.receiver()
    eng = bt.engine(ERRORS_APP, ins=[0], outs=[recv.port], extra=["--max-frame", "1024"])
    port = eng.in_ports[0]
    a_texts = ["a%d" % i for i in range(200)] + ["a" * 1024]  # exactly the limit: fine
    c_texts = ["c%d" % i for i in range(200)]

    # A connects first and stays open across the bad connection.
    a = py_send(port, frames(a_texts[:100]), close=False)
    first = "".join(t + "\n" for t in a_texts[:100]).encode()
    assert recv.wait_bytes(len(first)) == first
    err_before = len(eng.stderr())

    # B: one good frame, then the bad input.
    b = py_send(port, frame("b good before") + BAD_INPUTS[kind], close=False)
    assert closed_by_peer(b), "engine did not close the connection after %s" % kind
    b.close()
    assert eng.alive()
    deadline = time.monotonic() + 5
    while len(eng.stderr()) <= err_before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(eng.stderr()) > err_before, "nothing logged about the bad connection"

    a.sendall(frames(a_texts[100:]))
    a.close()
    bt.send_payloads(port, c_texts)

    expected = a_texts + ["b good before"] + c_texts
    total = sum(len(t) + 1 for t in expected)
    got = lines_of(recv.wait_bytes(total))
    assert [g for g in got if g.startswith("a")] == a_texts
    assert [g for g in got if g.startswith("c")] == c_texts
    assert sorted(got) == sorted(expected)
    stop_ok(eng)


def test_default_max_frame_allows_large_frames(bt):
    """The default limit is 16 MiB: a 1 MiB frame goes through."""
    big = "z" * (1 << 20)
    recv = bt.receiver()
    eng = bt.engine(example_path("reverse"), ins=[0], outs=[recv.port])
    port = eng.in_ports[0]
    bt.send_payloads(port, ["small", big, "end"])
    expected = reverse_expected(["small", big, "end"])
    assert recv.wait_bytes(len(expected)) == expected
    # One byte over 16 MiB: refused from its header alone.
    bad = py_send(port, struct.pack(">I", 16 * 1024 * 1024 + 1) + b"x" * 1000, close=False)
    assert closed_by_peer(bad), "a frame over the default 16 MiB limit was not refused"
    bad.close()
    bt.send_payloads(port, ["after"])
    assert recv.wait_bytes(len(expected) + 6) == expected + b"retfa\n"
    stop_ok(eng)


# ------------------------------------------------------------------ signals

@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_flushes_and_exits_0(bt, sig):
    """Stopped mid-stream (frames still arriving, a backlog being processed), the
    engine exits 0 and every message it encoded reaches the sink: the output is a
    whole-line prefix of the input, one line per encoder mark."""
    marker = bt.tmp / "marks"
    texts = ["message %04d" % i for i in range(400)]
    recv = bt.receiver()
    eng = bt.engine(app_path("marked_app"), ins=[0], outs=[recv.port],
                    extra=["--marker", marker, "--delay", "0.01"])
    port = eng.in_ports[0]
    stop_sending = threading.Event()

    def trickle():  # a frame every 5 ms: faster than the app's 10 ms per message
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                for t in texts:
                    if stop_sending.is_set():
                        return
                    s.sendall(frame(t))
                    time.sleep(0.005)
        except OSError:
            pass

    sender = threading.Thread(target=trickle, daemon=True)
    sender.start()
    try:
        recv.wait_lines(1, settle=0.3)
        rc, err = eng.stop(sig)
    finally:
        stop_sending.set()
        sender.join(5)
    assert rc == 0, "exit %d after signal %d:\n%s" % (rc, sig, err)
    time.sleep(0.3)  # the receiver flushes its file on a 100 ms timer
    got = lines_of(recv.data())
    marks = marker.read_bytes() if marker.exists() else b""
    assert 1 <= len(got) < len(texts)
    assert got == texts[:len(got)]
    assert len(got) == len(marks), "%d messages encoded, %d reached the sink" % (len(marks),
                                                                                len(got))


def test_sigint_after_all_output(bt):
    texts = ["x%d" % i for i in range(1000)]
    recv = bt.receiver()
    eng = bt.engine(example_path("reverse"), ins=[0], outs=[recv.port])
    port = eng.in_ports[0]
    bt.send_payloads(port, texts)
    expected = reverse_expected(texts)
    assert recv.wait_bytes(len(expected)) == expected
    rc, err = eng.stop(signal.SIGINT)
    assert rc == 0, err


# ------------------------------------------------------------------ sinks

def sink_refused(out_port):
    """The engine's line saying that its sink on `out_port` refused it."""
    return (r"sink 127\.0\.0\.1:%d: cannot connect \(connection refused\); retrying, "
            r"output waits" % out_port)


def test_sink_not_up_at_start(bt):
    """The receiver starts after the data was sent and the engine found the
    sink down: the engine retries and the output, held meanwhile, arrives
    exactly. (The sink's port is reserved: refused until the receiver listens.)"""
    out_port = bt.reserve_port()
    eng = bt.engine(example_path("reverse"), ins=[0], outs=[out_port])
    port = eng.in_ports[0]
    texts = ["late %d" % i for i in range(500)]
    bt.send_payloads(port, texts)
    eng.wait_log(sink_refused(out_port))
    assert eng.alive(), eng.stderr()
    recv = bt.receiver(port=out_port)
    expected = reverse_expected(texts)
    assert recv.wait_bytes(len(expected)) == expected
    stop_ok(eng)


def test_sink_drops_mid_stream(bt):
    """Receiver 1 gets batch 1 and dies; receiver 2 on the same port (reserved)
    gets all of batch 2."""
    out_port = bt.reserve_port()
    recv1 = bt.receiver(port=out_port)
    eng = bt.engine(example_path("reverse"), ins=[0], outs=[out_port])
    port = eng.in_ports[0]
    batch1 = ["one %d" % i for i in range(300)]
    batch2 = ["two %d" % i for i in range(300)]
    bt.send_payloads(port, batch1)
    expected1 = reverse_expected(batch1)
    assert recv1.wait_bytes(len(expected1)) == expected1
    recv1.kill()
    recv2 = bt.receiver(port=out_port)
    bt.send_payloads(port, batch2)
    expected2 = reverse_expected(batch2)
    assert recv2.wait_bytes(len(expected2)) == expected2
    stop_ok(eng)


def test_sink_down_backpressure_drops_nothing(bt):
    """About 20 MB of output waits for a sink that is not up: the engine may stop
    reading (the sender then waits), but once the receiver comes up every output
    arrives, in order. (The sink's port is reserved: refused until the
    receiver listens.)"""
    out_port = bt.reserve_port()
    eng = bt.engine(example_path("reverse"), ins=[0], outs=[out_port],
                    extra=["--log-level", "debug"])
    port = eng.in_ports[0]
    texts = ["%06d " % i + "p" * 90 for i in range(200000)]
    sender = bt.send_async(port, bt.framed_file(texts))
    eng.wait_log(sink_refused(out_port))
    # The output that waits passed the sink's high-water mark: sources paused.
    eng.wait_log(r"DEBUG: pausing sources \(sink backlog \d+ bytes\)", timeout=20)
    assert eng.alive(), eng.stderr()
    recv = bt.receiver(port=out_port)
    bt.wait_senders([sender], timeout=40)
    expected = reverse_expected(texts)
    got = recv.wait_bytes(len(expected), timeout=40)
    assert len(got) == len(expected)
    assert got == expected
    stop_ok(eng)


# ------------------------------------------------------------------ Wallaroo flags without effect

def test_ignored_wallaroo_flags_warned_once(bt):
    """Wallaroo worker flags that mean nothing here are each named in exactly one
    warning at start-up (even when given twice or in their short form), the
    flags the application reads are not, and the application runs as usual."""
    recv = bt.receiver()
    eng = bt.engine(example_path("reverse"), ins=[0], outs=[recv.port],
                    extra=["--stop-pause", "5", "--stop-pause", "6",
                           "--ponythreads", "4", "--ponynoblock", "--ponythreads=2",
                           "--spike-drop"])
    port = eng.in_ports[0]
    texts = ["abc", "hello"]
    bt.send_payloads(port, texts)
    expected = reverse_expected(texts)
    assert recv.wait_bytes(len(expected)) == expected
    err = stop_ok(eng)
    ready = err.index("ready:")
    for flag in ("--stop-pause", "--ponythreads", "--ponynoblock", "--spike-drop"):
        warning = "%s is accepted for Wallaroo compatibility but has no effect" % flag
        assert err.count(warning) == 1, err
        assert err.index(warning) < ready, err
    assert "--in is accepted" not in err and "--out is accepted" not in err, err
    assert err.count("for Wallaroo compatibility") == 4, err
