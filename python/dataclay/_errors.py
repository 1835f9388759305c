"""The exceptions the dataClay spellings raise: each is an instance of the
dataClay class (dataclay.exceptions) and of Bettong's class for the same failure
(bettong.objects), so that `except AliasDoesNotExistError` and `except
bettong.NotFound` both catch a missing alias. Not for users to name: catch the
classes of dataclay.exceptions or bettong."""

from bettong.objects import AliasTaken, NotAVersion, NotFound, StoreError

from . import exceptions as dx


class AlreadyExistError(dx.AlreadyExistError, AliasTaken):
    """An alias is taken: id is "<dataset>/<alias>"."""


class AliasDoesNotExistError(dx.AliasDoesNotExistError, NotFound):
    """get_by_alias found no object with that alias."""


class DoesNotExistError(dx.DoesNotExistError, NotFound):
    """No object with that id (or alias key)."""


class ObjectNotRegisteredError(dx.ObjectNotRegisteredError, StoreError):
    """The operation needs a persistent object. object_id is None for a local
    object (Bettong gives an object its id when it is stored); the message names
    the object instead."""

    def __init__(self, object_id=None, what=None):
        self.object_id = object_id
        self.what = what

    def __str__(self):
        return f"Object {self.object_id if self.object_id is not None else self.what} " \
               "is not registered!"

    def __reduce__(self):
        return (type(self), (self.object_id, self.what))


class ObjectIsNotVersionError(dx.ObjectIsNotVersionError, NotAVersion):
    """consolidate_version() of an object that is not a version."""
