"""Model classes for test_store_semantics.py. The store cannot import this module
(it is not on the store's path), so its classes reach the store by value -- and
with them this module, so classes the store itself instantiates (Puppy inside
Dog.new_puppy) are the module's too."""

from bettong.objects import Persistent, active
from dataclay import DataClayObject, dclayMethod


class Puppy(Persistent):
    name: str
    age: int

    def __init__(self, name, age=0):
        self.name = name
        self.age = age

    @active
    def birthday(self):
        self.age += 1
        return self.age

    @active
    def where(self):
        import os
        return os.getpid()

    def is_persistent_here(self):
        from bettong import objects
        return objects.is_persistent(self)


class Dog(Persistent):
    name: str
    puppies: list

    def __init__(self, name):
        self.name = name
        self.puppies = []

    @active
    def new_puppy(self, name):
        """dataClay's family.Dog.new_puppy: made in the store, appended."""
        puppy = Puppy(name)
        self.puppies.append(puppy)
        return puppy

    @active
    def adopt_with_alias(self, name, alias):
        """make_persistent(alias=...) in the store: the alias is this store's."""
        puppy = Puppy(name)
        puppy.make_persistent(alias=alias)
        self.puppies.append(puppy)
        return sorted(puppy.get_aliases())

    @active
    def made_and_dropped(self, name):
        """dataClay's test_remote_automatic_register: persistent at once, even if
        nothing keeps it."""
        p = Puppy(name)
        assert p.id is not None and p.is_persistent_here()
        p.age = 55
        return p.id

    @active
    def alias_taken_inside(self, alias):
        try:
            Puppy("dup").make_persistent(alias=alias)
        except Exception as e:
            return type(e).__name__
        return "no error"

    @active
    def lookup_inside(self, alias):
        """get_by_alias in the store: the live object, no network."""
        return Puppy.get_by_alias(alias).name

    @active
    def litter_then_fail(self, n):
        for i in range(n):
            self.puppies.append(Puppy("ghost%d" % i))
        raise ValueError("litter refused")

    @active
    def forget_puppies(self):
        self.puppies = []

    @active
    def count(self):
        return len(self.puppies)

    @active
    def puppy_ages(self):
        return [p.age for p in self.puppies]


class TextReader(Persistent):
    """dataClay's modeltest TextReader: `file` is rebuilt by __setstate__."""

    filename: str
    lineno: int

    def __init__(self, filename):
        self.filename = filename
        self.file = "mock_" + filename
        self.lineno = 0

    @active
    def readline(self):
        self.lineno += 1
        return f"{self.file}:{self.lineno}"

    @active
    def fail_after_read(self):
        self.lineno += 100
        self.file = "changed"
        raise RuntimeError("read failed")

    def __getstate__(self):
        return {"lineno": self.lineno, "filename": self.filename}

    def __setstate__(self, state):
        self.lineno = state["lineno"]
        self.filename = state["filename"]
        self.file = "mock_" + self.filename


class Box(Persistent):
    value: object

    def __init__(self, value=None):
        self.value = value


class Pair(Persistent):
    """State as a tuple: __getstate__ need not return a dict."""

    a: int
    b: int

    def __init__(self, a, b):
        self.a, self.b = a, b

    def __getstate__(self):
        return (self.a, self.b)

    def __setstate__(self, st):
        self.a, self.b = st

    @active
    def total(self):
        return self.a + self.b


class Legacy(DataClayObject):
    """A dataClay 2.x model: fields in the docstring, dclayMethod.

    @ClassField message str
    @ClassField counts dict <<word:str>, n:int>
    """

    @dclayMethod(message="str")
    def __init__(self, message):
        self.message = message
        self.counts = {}
        self.scratch = "not a field"

    @dclayMethod(word="str", return_="int")
    def add(self, word):
        self.counts[word] = self.counts.get(word, 0) + 1
        return self.counts[word]

    @dclayMethod
    def get(self):
        return self.message
