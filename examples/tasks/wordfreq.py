"""Word frequencies over a directory of text files, through bettong's Storage.

The text files of a directory (default: examples/word_count/data/) are uploaded
into a bucket of a Storage; one parallel call per file reads its object through
the `storage` parameter and counts the file's words; a reduce on a worker adds
the counts up and keeps the top N, which are printed.

Words are split as in examples/word_count: whitespace-separated, lower-cased,
surrounding punctuation removed.

    PYTHONPATH=python python3 examples/tasks/wordfreq.py
    PYTHONPATH=python python3 examples/tasks/wordfreq.py some/dir/of/texts --top 50
"""

import argparse
import collections
import functools
import os
import string
import sys
import tempfile
import time

import bettong

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DIR = os.path.join(HERE, "..", "word_count", "data")

# Characters removed from both ends of every word (as in examples/word_count).
PUNCTUATION = string.punctuation + "\u2018\u2019\u201c\u201d\u2014\u2013\u2026"


def split_words(text):
    words = []
    for token in text.split():
        word = token.strip(PUNCTUATION).lower()
        if word:
            words.append(word)
    return words


def count_file(bucket, key, storage):
    """Runs on a worker: the word counts of one stored file."""
    text = storage.get_object(bucket, key).decode("utf-8", "replace")
    return collections.Counter(split_words(text))


def top_words(counters, n):
    """Runs on a worker: every file's counts added up; the n most frequent words,
    ties broken alphabetically, and the totals."""
    total = collections.Counter()
    for c in counters:
        total.update(c)
    top = sorted(total.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
    return {"top": top, "words": sum(total.values()), "distinct": len(total)}


def text_files(directory):
    for root, _dirs, files in os.walk(directory):
        for name in sorted(files):
            if not name.startswith("."):
                yield os.path.join(root, name)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("directory", nargs="?", default=DEFAULT_DIR,
                    help="directory of text files (default: examples/word_count/data)")
    ap.add_argument("--top", type=int, default=20, help="how many words to print (default 20)")
    ap.add_argument("--bucket", default="wordfreq")
    ap.add_argument("--storage-dir", default=None,
                    help="directory the local Storage keeps its objects in "
                         "(default: a temporary one, removed at the end)")
    ap.add_argument("--workers", type=int, default=None,
                    help="local pool size (default: one worker per core)")
    args = ap.parse_args()

    tmp = None
    if args.storage_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="bettong-wordfreq-")
        args.storage_dir = tmp.name
    storage = bettong.Storage(args.storage_dir)

    t0 = time.monotonic()
    keys, nbytes = [], 0
    for path in text_files(args.directory):
        key = "texts/" + os.path.relpath(path, args.directory)
        with open(path, "rb") as f:
            body = f.read()
        storage.put_object(args.bucket, key, body)
        keys.append(key)
        nbytes += len(body)
    if not keys:
        print("no files in %s" % args.directory, file=sys.stderr)
        return 1
    assert sorted(storage.list_keys(args.bucket, prefix="texts/")) == sorted(keys)
    t1 = time.monotonic()
    print("uploaded %d files (%d bytes) to bucket %r in %.2f s" % (len(keys), nbytes, args.bucket, t1 - t0))

    with bettong.FunctionExecutor(workers=args.workers, storage=storage) as ex:
        # one call per file; the reduce gets the list of counters (in `keys` order)
        fut = ex.map_reduce(count_file, [{"key": k} for k in keys],
                            functools.partial(top_words, n=args.top),
                            extra_args={"bucket": args.bucket})
        res = fut.result()
    t2 = time.monotonic()

    print("counted %d words (%d distinct) in %d files in %.2f s" % (
        res["words"], res["distinct"], len(keys), t2 - t1))
    print("top %d:" % len(res["top"]))
    width = max(len(w) for w, _ in res["top"])
    for word, count in res["top"]:
        print("  %-*s %d" % (width, word, count))
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
