"""Secrets out of argument vectors (--secret-file, --cluster-secret-file, the
environment; the argv forms still work but warn), and errors that name their
real cause (a full disk is "no space left on device", not "Input/output
error")."""

import os
import subprocess
import uuid

import pytest

from conftest import BIN, children_of, example_path

from bettong import objects
import store_models as m


def secret_file(tmp_path, secret, mode=0o600, name="secret"):
    path = tmp_path / name
    path.write_text(secret + "\n")
    os.chmod(path, mode)
    return path


def run_refusal(args, timeout=20):
    """Run a bettong command expected to refuse its arguments at start."""
    env = dict(os.environ)
    env.pop("BETTONG_SECRET", None)
    env.pop("BETTONG_CLUSTER_SECRET", None)
    p = subprocess.run([BIN] + [str(a) for a in args], stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                       timeout=timeout)
    return p.returncode, p.stdout.decode("utf-8", "replace")


@pytest.mark.parametrize("cmd", [["store", "--dir", "{tmp}/d", "--listen", "127.0.0.1:0"],
                                 ["pool", "--listen", "127.0.0.1:0", "--workers", "0"],
                                 ["worker", "--join", "127.0.0.1:1"]])
def test_a_secret_file_others_can_read_is_refused(tmp_path, cmd):
    path = secret_file(tmp_path, "s3cret", mode=0o644)
    args = [a.replace("{tmp}", str(tmp_path)) for a in cmd] + ["--secret-file", path]
    rc, out = run_refusal(args)
    assert rc != 0, out
    assert "only its owner can read" in out and "chmod 600" in out, out


def test_secret_file_and_flag_together_are_refused(tmp_path):
    path = secret_file(tmp_path, "s3cret")
    rc, out = run_refusal(["store", "--dir", tmp_path / "d", "--listen", "127.0.0.1:0",
                           "--secret", "x", "--secret-file", path])
    assert rc != 0 and "not both" in out, out


def test_missing_or_empty_secret_file_is_refused(tmp_path):
    rc, out = run_refusal(["pool", "--listen", "127.0.0.1:0", "--workers", "0",
                           "--secret-file", tmp_path / "absent"])
    assert rc != 0 and "cannot read the secret file" in out, out
    empty = secret_file(tmp_path, "", name="empty")
    rc, out = run_refusal(["pool", "--listen", "127.0.0.1:0", "--workers", "0",
                           "--secret-file", empty])
    assert rc != 0 and "is empty" in out, out


def test_store_takes_its_secret_from_a_file(stores, tmp_path):
    """The store reads the first line of a 0600 file; a client with that secret
    is served, one with another is refused; nothing warns about argv."""
    path = secret_file(tmp_path, "from-a-file")
    st = stores(extra=["--secret-file", path])
    with pytest.raises(Exception):
        objects.connect(st.address, secret="nope")
    objects.connect(st.address, secret="from-a-file")
    m.Counter(7).make_persistent(alias="from-file")
    assert m.Counter.get_by_alias("from-file").get() == 7
    assert "can be read by every user" not in st.log()


def test_store_secret_on_the_command_line_warns(stores):
    st = stores(secret="on-argv")
    objects.connect(st.address, secret="on-argv")
    assert "--secret on the command line can be read by every user" in st.log()


def test_workers_get_a_file_secret_through_their_environment(bt, tmp_path):
    """`bettong run --workers 2 --cluster-secret-file F`: the cluster forms, the
    children get the secret in their environment and neither it nor the flag in
    their argument vectors, and nothing warns."""
    secret = "file-%s" % uuid.uuid4().hex
    path = secret_file(tmp_path, secret)
    recv = bt.receiver()
    eng = bt.engine(example_path("word_count"), ins=[0], outs=[recv.port],
                    extra=["--workers", 2, "--cluster-secret-file", path])
    eng.wait_log(r"cluster: formed with 2 workers")
    children = children_of(eng.proc.pid)
    assert len(children) == 2, children
    for pid, cmdline in children.items():
        assert secret.encode() not in cmdline and b"--cluster-secret" not in cmdline, cmdline
        with open("/proc/%d/environ" % pid, "rb") as f:
            assert b"BETTONG_CLUSTER_SECRET=" + secret.encode() in f.read().split(b"\0")
    assert eng.count_log(r"can be read by every user") == 0
    rc, err = eng.stop(timeout=20)
    assert rc == 0, err


# ------------------------------------------------------------------ a full disk

@pytest.fixture
def tiny_fs(tmp_path):
    """A 2 MiB tmpfs, or a skip where this machine does not let us mount one."""
    where = tmp_path / "tiny"
    where.mkdir()
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(where)],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if p.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here: %s" % p.stdout.decode().strip())
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)])


def test_a_full_disk_is_named_as_such(stores, tiny_fs):
    """Objects are stored until the file system is full: the write that fails
    is answered with a storage error, and the store's log names the cause."""
    st = stores(dir=tiny_fs / "store")
    objects.connect(st.address)
    with pytest.raises(objects.StoreError):
        for i in range(100):
            m.Counter("x" * 200000).make_persistent(alias="big-%d" % i)
    log = st.log()
    assert "no space left on device" in log, log
    assert "Input/output error" not in log, log
    assert st.alive()
