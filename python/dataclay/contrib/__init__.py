"""dataclay.contrib: a namespace for model packages.

dataClay applications keep their model packages as dataclay/contrib/<pkg> in a
directory of their own. Here `dataclay.contrib.<pkg>` is found in EVERY
directory D on sys.path that has D/dataclay/contrib/<pkg> (this package's own
directory first), in clients and in the store process alike (the store imports
a model class by its module name). __path__ is computed from sys.path each
time it is read, so a directory put on sys.path after this package was
imported counts too. Entries appended to __path__ are kept (after the computed
ones).

pkgutil.extend_path cannot do this for a subpackage: it only looks in the
parent package's __path__ (Bettong's dataclay), not in every sys.path entry.
"""

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))


class _ContribPath:
    """A __path__ recomputed from sys.path on every use (like importlib's
    namespace paths): this package's directory, then D/dataclay/contrib for
    every sys.path entry D that has one, then the entries appended by hand."""

    def __init__(self):
        self._extra = []

    def _compute(self):
        out = [_HERE]
        seen = {os.path.realpath(_HERE)}
        for entry in list(sys.path) + self._extra:
            if not isinstance(entry, str):
                continue
            if entry in self._extra:
                d = entry
            else:
                d = os.path.join(entry or os.getcwd(), "dataclay", "contrib")
            try:
                if not os.path.isdir(d):
                    continue
                real = os.path.realpath(d)
            except (OSError, ValueError):
                continue
            if real not in seen:
                seen.add(real)
                out.append(d)
        return out

    def __iter__(self):
        return iter(self._compute())

    def __len__(self):
        return len(self._compute())

    def __getitem__(self, i):
        return self._compute()[i]

    def __contains__(self, item):
        return item in self._compute()

    def append(self, d):
        if d not in self._extra:
            self._extra.append(d)

    def extend(self, ds):
        for d in ds:
            self.append(d)

    def insert(self, i, d):
        self.append(d)

    def __repr__(self):
        return f"_ContribPath({self._compute()!r})"


__path__ = _ContribPath()
if __spec__ is not None:
    __spec__.submodule_search_locations = __path__
