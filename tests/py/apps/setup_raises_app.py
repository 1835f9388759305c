"""Test app whose application_setup raises: the engine must refuse to start."""

import wallaroo  # noqa: F401


def application_setup(args):
    raise RuntimeError("setup exploded on purpose")
