"""Processes under /proc, for tests and benchmarks (tests/py/conftest.py
re-exports it)."""

import os


def children_of(parent):
    """{pid: argument list (bytes)} of the live child processes of `parent`."""
    kids = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                stat = f.read()
            with open("/proc/%s/cmdline" % entry, "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == parent and fields[0] != "Z":
            kids[int(entry)] = args
    return kids
