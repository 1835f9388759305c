"""Imported by import_by_ref.py from the script's own directory (sys.path[0])."""


def triple(x):
    return 3 * x
