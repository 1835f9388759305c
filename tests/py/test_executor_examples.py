"""The parallel-function examples (examples/tasks/) run as programs: pi.py's
estimate is close to pi, wordfreq.py's top words are those a local Counter finds."""

import collections
import math
import re
import string

from executor_helpers import REPO, run_script

TASKS = REPO / "examples" / "tasks"
WORD_DATA = REPO / "examples" / "word_count" / "data"
PUNCTUATION = string.punctuation + "\u2018\u2019\u201c\u201d\u2014\u2013\u2026"


def test_pi_example():
    r = run_script(TASKS / "pi.py", ["--tasks", 8, "--samples", 50000, "--workers", 2])
    assert r.returncode == 0, r.stderr
    m = re.search(r"pi ~= ([0-9.]+)", r.stdout)
    assert m, r.stdout
    assert abs(float(m.group(1)) - math.pi) < 0.05, r.stdout
    assert "400000 points in 8 tasks" in r.stdout
    assert re.search(r"time: [0-9.]+ s", r.stdout), r.stdout
    assert r.stderr == "", r.stderr


def local_counts(paths):
    c = collections.Counter()
    for p in paths:
        for token in p.read_text("utf-8").split():
            w = token.strip(PUNCTUATION).lower()
            if w:
                c[w] += 1
    return c


def printed_top(stdout):
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(r"top \d+:", line))
    out = []
    for line in lines[start + 1:]:
        word, count = line.split()
        out.append((word, int(count)))
    return out


def expected_top(counts, n):
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]


def test_wordfreq_example_default_data():
    r = run_script(TASKS / "wordfreq.py", ["--workers", 2])
    assert r.returncode == 0, r.stderr
    counts = local_counts(sorted(WORD_DATA.glob("*.txt")))
    top = printed_top(r.stdout)
    assert len(top) == 20
    assert top == expected_top(counts, 20), r.stdout
    assert "counted %d words (%d distinct)" % (sum(counts.values()), len(counts)) in r.stdout


def test_wordfreq_example_many_files(tmp_path):
    data, store = tmp_path / "texts", tmp_path / "store"
    (data / "sub").mkdir(parents=True)
    corpus = (WORD_DATA / "bettong_tales.txt").read_text("utf-8").splitlines()
    paths = []
    for i in range(7):
        p = data / ("sub" if i % 2 else ".") / ("part-%d.txt" % i)
        p.write_text("\n".join(corpus[i::7]) + "\nZebra zebra, ZEBRA! extra%d\n" % i, "utf-8")
        paths.append(p)
    r = run_script(TASKS / "wordfreq.py", [data, "--top", 5, "--workers", 2,
                                           "--storage-dir", store, "--bucket", "b1"])
    assert r.returncode == 0, r.stderr
    counts = local_counts(paths)
    assert printed_top(r.stdout) == expected_top(counts, 5), r.stdout
    assert "uploaded 7 files" in r.stdout
