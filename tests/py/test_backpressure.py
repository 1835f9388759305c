"""Memory stays bounded under load: when the sink cannot keep up the sources stop
reading, so the sender blocks instead of the engine buffering without limit."""

import socket
import time

from conftest import example_path, wait_until


def rss_mb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise AssertionError("no VmRSS for %d" % pid)


def test_stalled_sink_bounds_memory_and_blocks_the_sender(bt):
    # A receiver that accepts and never reads: the kernel buffers fill, then the
    # engine's own sink buffer, then the engine must stop reading its sources.
    stalled = socket.socket()
    stalled.bind(("127.0.0.1", 0))
    stalled.listen(1)
    out_port = stalled.getsockname()[1]
    eng = bt.engine(example_path("reverse"), ins=[0], outs=[out_port],
                    extra=["--flush-timeout", "1", "--log-level", "debug"])
    port = eng.in_ports[0]
    base_rss = rss_mb(eng.proc.pid)
    # 300 MB of input (and as much output) on the wire if nothing pushed back.
    payloads = ["%08d " % i + "x" * 200 for i in range(50000)]
    sender = bt.send_async(port, bt.framed_file(payloads), repeat=30)
    try:
        conn, _ = stalled.accept()
        # The engine says when it stops reading; memory is measured after that,
        # and again after the sender has had time to push (it must not grow).
        eng.wait_log(r"pausing sources \(sink backlog", timeout=30)
        first = rss_mb(eng.proc.pid)
        eng.wait_log(r"in \d+, out \d+, failed \d+, backlog", timeout=30,
                     count=eng.count_log(r"in \d+, out \d+, failed \d+, backlog") + 1)
        assert eng.alive(), eng.stderr()
        assert sender.poll() is None, "the sender finished: nothing pushed back"
        grown = rss_mb(eng.proc.pid) - base_rss
        assert rss_mb(eng.proc.pid) - first < 20, "engine kept growing while paused"
        # Sink high-water mark (8 MiB) + one read batch + Python's own arenas.
        assert grown < 60, "engine grew by %.1f MB with a stalled sink" % grown
        # Reading the output lets everything flow again.
        conn.settimeout(10)
        got = 0
        deadline = time.monotonic() + 20
        while got < 50 * 1024 * 1024 and time.monotonic() < deadline:
            data = conn.recv(1 << 20)
            assert data, "engine closed the sink"
            got += len(data)
        assert got >= 50 * 1024 * 1024
        conn.close()
    finally:
        sender.kill()
        stalled.close()
    rc, err = eng.stop()
    # The sink is gone with output still waiting for it: the stop says so and
    # the exit status is not 0.
    assert rc == 1, err
    assert "not delivered" in err, err
