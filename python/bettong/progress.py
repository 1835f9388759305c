"""The progress bar of wait()/get_result(): tqdm when it is installed, a plain text
bar otherwise; only when stderr is a terminal, and only once a wait has lasted a
moment (a quick wait draws nothing)."""

import sys
import time

try:
    from tqdm import tqdm as _tqdm
except ImportError:  # optional
    _tqdm = None

_DELAY = 0.3   # seconds before a bar appears
_TICK = 0.1    # seconds between redraws


def _wanted(show):
    if show is False:
        return False
    try:
        return sys.stderr is not None and sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class Progress:
    """`active` says whether the waiting loop should wake every `tick` seconds to
    call update(done)."""

    tick = _TICK

    def __init__(self, total, done=0, show=None):
        self.total = total
        self.active = total > 0 and done < total and _wanted(show)
        self._start = time.monotonic()
        self._bar = None
        self._last = -1
        self._width = 0

    def update(self, done):
        if not self.active:
            return
        if self._bar is None:
            if time.monotonic() - self._start < _DELAY and done < self.total:
                return
            self._open()
        if done == self._last:
            return
        if _tqdm is not None:
            self._bar.update(done - self._bar.n)
        else:
            self._draw(done)
        self._last = done

    def _open(self):
        if _tqdm is not None:
            self._bar = _tqdm(total=self.total, file=sys.stderr, unit="call", leave=True)
        else:
            self._bar = True

    def _draw(self, done):
        width = 30
        filled = width * done // self.total if self.total else width
        pct = 100.0 * done / self.total if self.total else 100.0
        elapsed = time.monotonic() - self._start
        line = (f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{self.total} "
                f"{pct:5.1f}% {elapsed:6.1f}s")
        self._width = len(line)
        try:
            sys.stderr.write(line)
            sys.stderr.flush()
        except (OSError, ValueError):
            self.active = False

    def close(self):
        if self._bar is None:
            return
        if _tqdm is not None:
            self._bar.close()
        else:
            try:
                sys.stderr.write("\n")
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
        self._bar = None
        self.active = False
