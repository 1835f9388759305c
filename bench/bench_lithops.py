"""Word count over text in object storage with the `lithops` compatibility
package (issue 13, item 6): map_reduce over a prefix, objects chunked
(obj_chunk_size, whole lines), on 1 and 2 Bettong workers; against the local
directory store and a local S3 server (s3rver, `make deps`); and the same job
with multiprocessing.Pool reading the same files with the same chunks.

    /usr/bin/python3 bench/bench_lithops.py [--mb 1024] [--chunk-mb 64] [--append]

The text is a 16 MiB block of random words (a Zipf-like vocabulary of 50,000)
repeated; every run's counts are checked against the block's counts times the
repetitions. MB/s = MiB of text / wall seconds of the map_reduce (submission
to result), the data already in storage.
"""

import argparse
import collections
import datetime
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from multiprocessing import Pool

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "python"))
os.environ.setdefault("BETTONG_BIN", os.path.join(REPO, "build", "bettong"))

import lithops  # noqa: E402
from lithops.partitioner import partition_bytes  # noqa: E402

BLOCK = 16 << 20
S3RVER = os.path.join(REPO, "build", "npm", "node_modules", ".bin", "s3rver")


def make_block(seed=13):
    import itertools
    rnd = random.Random(seed)
    vocab = ["w%d" % i for i in range(50000)]
    cum = list(itertools.accumulate(1.0 / (i + 1) for i in range(len(vocab))))
    out, size = [], 0
    while size < BLOCK:
        words = rnd.choices(vocab, cum_weights=cum, k=12 * 4096)
        lines = [" ".join(words[i:i + 12]) for i in range(0, len(words), 12)]
        text = "\n".join(lines) + "\n"
        out.append(text)
        size += len(text)
    data = "".join(out).encode()
    cut = data.rfind(b"\n", 0, BLOCK) + 1
    return data[:cut]


def count_words(data):
    return collections.Counter(data.split())


def map_count(obj):
    return count_words(obj.data_stream.read())


def reduce_counts(results):
    total = collections.Counter()
    for c in results:
        total.update(c)
    return total


# ---- the multiprocessing.Pool baseline: the same files, the same chunks

def mp_chunk(args):
    path, s, e, size = args
    with open(path, "rb") as f:
        def get(a, b):
            f.seek(a)
            return f.read(b - a + 1)
        return count_words(partition_bytes(get, size, s, e, "\n"))


def run_mp(files, chunk, workers):
    tasks = []
    for p in files:
        size = os.path.getsize(p)
        tasks += [(p, s, min(size, s + chunk), size) for s in range(0, size, chunk)]
    t0 = time.perf_counter()
    with Pool(workers) as pool:
        total = reduce_counts(pool.imap_unordered(mp_chunk, tasks))
    return time.perf_counter() - t0, total, len(tasks)


def run_lithops(config, prefix, chunk, workers):
    ex = lithops.FunctionExecutor(config=config, max_workers=workers)
    try:
        ex.get_result(ex.map(abs, [-1] * workers))  # the pool is up
        t0 = time.perf_counter()
        fs = ex.map_reduce(map_count, prefix, reduce_counts, obj_chunk_size=chunk)
        total = ex.get_result(fs, show_progressbar=False)
        return time.perf_counter() - t0, total, len(fs) - 1
    finally:
        ex._bx.close()


def start_s3rver(directory):
    p = subprocess.Popen([S3RVER, "-d", directory, "-a", "127.0.0.1", "-p", "0",
                          "--configure-bucket", "bench", "-s"], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, start_new_session=True)
    seen = []
    for _ in range(20):  # -s silences the request log, not the address line
        line = p.stdout.readline().decode()
        seen.append(line)
        m = re.search(r"listening on (\S+)", line)
        if m:
            return p, m.group(1)
        if not line:
            break
    raise SystemExit("s3rver did not start: %r" % "".join(seen))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=int, default=1024, help="MiB of text (default 1024)")
    ap.add_argument("--chunk-mb", type=int, default=64, help="chunk size, MiB (default 64)")
    ap.add_argument("--files", type=int, default=8, help="objects (default 8)")
    ap.add_argument("--no-s3", action="store_true")
    ap.add_argument("--append", action="store_true", help="add a section to bench/RESULTS.md")
    args = ap.parse_args()

    block = make_block()
    per_file = max(1, (args.mb << 20) // args.files // len(block))
    expected = collections.Counter()
    for w, n in count_words(block).items():
        expected[w] = n * per_file * args.files
    mib = len(block) * per_file * args.files / (1 << 20)
    chunk = args.chunk_mb << 20
    scratch = tempfile.mkdtemp(prefix="bench-lithops-")
    rows = []
    load0 = os.getloadavg()
    try:
        store = os.path.join(scratch, "store")
        os.environ["BETTONG_STORAGE_DIR"] = store
        files_dir = os.path.join(store, "bench", "text")
        os.makedirs(files_dir)
        files = []
        for i in range(args.files):
            p = os.path.join(files_dir, "part-%02d.txt" % i)
            with open(p, "wb") as f:
                for _ in range(per_file):
                    f.write(block)
            files.append(p)
        local = {"lithops": {"backend": "localhost", "storage": "localhost",
                             "storage_bucket": "bench"}}
        for workers in (1, 2):
            secs, total, n = run_lithops(local, "localhost://bench/text/", chunk, workers)
            assert total == expected, "wrong counts (directory store)"
            rows.append(("lithops on Bettong, directory store", workers, n, secs))
            secs, total, n = run_mp(files, chunk, workers)
            assert total == expected, "wrong counts (multiprocessing)"
            rows.append(("multiprocessing.Pool, the same files", workers, n, secs))
        if not args.no_s3:
            s3dir = os.path.join(scratch, "s3")
            os.makedirs(s3dir)
            proc, addr = start_s3rver(s3dir)
            try:
                s3 = {"lithops": {"backend": "localhost", "storage": "minio"},
                      "minio": {"endpoint": "http://" + addr, "access_key_id": "S3RVER",
                                "secret_access_key": "S3RVER", "storage_bucket": "bench"}}
                st = lithops.Storage(config=s3)
                t0 = time.perf_counter()
                for p in files:
                    with open(p, "rb") as f:
                        st.put_object("bench", "text/" + os.path.basename(p), f)
                upload = time.perf_counter() - t0
                for workers in (1, 2):
                    secs, total, n = run_lithops(s3, "minio://bench/text/", chunk, workers)
                    assert total == expected, "wrong counts (S3)"
                    rows.append(("lithops on Bettong, S3 server (s3rver)", workers, n, secs))
            finally:
                os.killpg(proc.pid, 9)
                proc.wait()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    load1 = os.getloadavg()

    lines = ["| job | workers | calls | seconds | MiB/s |", "|---|---|---|---|---|"]
    for name, w, n, secs in rows:
        lines.append("| %s | %d | %d | %.2f | %.1f |" % (name, w, n, secs, mib / secs))
    table = "\n".join(lines)
    print(table)
    notes = ["- text: %.0f MiB in %d objects, chunks of %d MiB (whole lines); every count "
             "checked" % (mib, args.files, args.chunk_mb),
             "- load average %.2f at the start, %.2f at the end (other work shares the "
             "machine)" % (load0[0], load1[0])]
    if not args.no_s3:
        notes.append("- upload to the S3 server before the runs: %.1f s (%.1f MiB/s)"
                     % (upload, mib / upload))
    print("\n".join(notes))
    if args.append:
        tree = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True).stdout.strip()
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        section = ("\n## Lithops word count over object storage, %s\n\n- tree: %s\n"
                   "- command (from the repository root): `/usr/bin/python3 bench/bench_lithops.py%s`\n\n"
                   "%s\n\n%s\n" % (now, tree, " " + " ".join(sys.argv[1:]) if sys.argv[1:] else "",
                                   table, "\n".join(notes)))
        path = os.path.join(HERE, "RESULTS.md")
        with open(path) as f:
            text = f.read()
        head, sep, rest = text.partition("\n## ")
        with open(path, "w") as f:
            f.write(head.rstrip("\n") + "\n" + section + (sep + rest if sep else ""))


if __name__ == "__main__":
    main()
