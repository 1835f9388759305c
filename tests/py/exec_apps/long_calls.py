"""A caller that is killed or interrupted while its calls run.

argv: DIR MODE [N_CALLS]. Each call writes DIR/started-<i> (its worker's pid) and
sleeps 30 s. Once two calls have started the script prints "READY <pids>" (the
workers running them) and then, per MODE:
  sleep        sleeps (to be killed: SIGKILL/SIGTERM)
  idle         (no long calls) one quick call, then READY and a sleep: the pool
               is idle when the script is killed
  getresult    blocks in get_result; on KeyboardInterrupt prints INTERRUPTED
  uncaught     blocks in get_result and lets KeyboardInterrupt escape
  noclose      (no long calls) one quick call, prints DONE and returns without
               closing the executor
"""

import json
import os
import sys
import time

import bettong


def long_call(d, i):
    tmp = os.path.join(d, "tmp-%d" % i)
    with open(tmp, "w") as f:
        f.write(str(os.getpid()))
    os.rename(tmp, os.path.join(d, "started-%d" % i))
    time.sleep(30)
    return i


def quick(x):
    return os.getpid()


def main():
    d, mode = sys.argv[1], sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 6
    ex = bettong.FunctionExecutor(workers=2)
    if mode in ("idle", "noclose"):
        pids = [ex.call_async(quick, 0).result(timeout=30)]
        if mode == "noclose":
            print("DONE %d" % pids[0], flush=True)
            return 0
        print("READY " + json.dumps(pids), flush=True)
        time.sleep(60)
        return 0
    fs = ex.map(long_call, [(d, i) for i in range(n)])
    deadline = time.monotonic() + 30
    while sum(1 for name in os.listdir(d) if name.startswith("started-")) < 2:
        if time.monotonic() > deadline:
            print("TIMEOUT waiting for calls to start", flush=True)
            return 3
        time.sleep(0.01)
    pids = sorted(int(open(os.path.join(d, name)).read())
                  for name in os.listdir(d) if name.startswith("started-"))
    print("READY " + json.dumps(pids), flush=True)
    if mode == "sleep":
        time.sleep(60)
        return 0
    if mode == "uncaught":
        ex.get_result(fs, timeout=60)
        return 0
    try:
        ex.get_result(fs, timeout=60)
    except KeyboardInterrupt:
        print("INTERRUPTED", flush=True)
        t0 = time.monotonic()
        ex.close()
        print("CLOSED %.2f" % (time.monotonic() - t0), flush=True)
        return 0
    print("NOT INTERRUPTED", flush=True)
    return 4


if __name__ == "__main__":
    sys.exit(main())
