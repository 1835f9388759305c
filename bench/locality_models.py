"""The model classes of bench/locality.py (on the workers' path too)."""

from bettong.objects import Persistent


class Item(Persistent):
    value: int

    def __init__(self, value):
        self.value = value


class Bag(Persistent):
    items: list

    def __init__(self, items):
        self.items = items
