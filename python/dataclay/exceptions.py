"""dataClay's exception names and messages (dataclay.exceptions, dataClay 4.x).

Raised by Bettong's dataClay spellings (dataclay.DataClayObject, dataclay.Client):

    from dataclay.exceptions import AliasDoesNotExistError, DataClayException
    try:
        Person.get_by_alias("nobody")
    except AliasDoesNotExistError as e:
        print(e)                      # Alias None/nobody does not exist

What the dataClay spellings raise for a failure the store reports is an instance
of the dataClay class AND of Bettong's own class for it, so both kinds of
`except` catch it:

    failure                                    dataClay class            Bettong class
    get_by_alias: no such alias                AliasDoesNotExistError    bettong.NotFound
    get_by_id: no such object                  DoesNotExistError         bettong.NotFound
    make_persistent / add_alias: alias taken   AlreadyExistError         bettong.AliasTaken
    add_alias / get_aliases on a local object  ObjectNotRegisteredError  bettong.StoreError

(the classes raised are the subclasses of both in dataclay._errors). The messages
are dataClay's: a taken alias reads "<dataset>/<alias> already exists", an
unknown one "Alias <dataset_name>/<alias> does not exist", where dataset_name is
the argument the caller passed to get_by_alias (None when it passed none, as in
dataClay).
"""

__all__ = [
    "DataClayException", "AlreadyExistError", "DoesNotExistError",
    "AccountError", "AccountInvalidCredentialsError",
    "DatasetError", "DatasetIsNotAccessibleError",
    "AliasError", "AliasDoesNotExistError", "AliasAlreadyExistError",
    "ObjectError", "ObjectNotRegisteredError", "ObjectWithWrongBackendIdError",
    "ObjectIsNotVersionError", "ObjectIsMasterError", "ObjectNotFound", "ObjectStorageError",
    "BackendError", "NoOtherBackendsAvailable",
    "DataclayError", "DataclayIdError",
]


class DataClayException(Exception):
    """The base of every dataClay exception."""


# ------------------------------------------------------------------ keys in general

class AlreadyExistError(DataClayException):
    """A key (e.g. "<dataset>/<alias>") is already taken."""

    def __init__(self, id):
        self.id = id

    def __str__(self):
        return f"{self.id} already exists"


class DoesNotExistError(DataClayException):
    """A key (an object id, "<dataset>/<alias>", ...) names nothing."""

    def __init__(self, id):
        self.id = id

    def __str__(self):
        return f"{self.id} does not exist"


# ------------------------------------------------------------------ accounts

class AccountError(DataClayException):
    def __init__(self, username):
        self.username = username


class AccountInvalidCredentialsError(AccountError):
    def __str__(self):
        return f"Account {self.username} invalid credentials"


# ------------------------------------------------------------------ datasets

class DatasetError(DataClayException):
    def __init__(self, dataset_name):
        self.dataset_name = dataset_name


class DatasetIsNotAccessibleError(DatasetError):
    def __init__(self, dataset_name, username):
        self.dataset_name = dataset_name
        self.username = username

    def __str__(self):
        return f"Dataset {self.dataset_name} is not accessible by {self.username}"


# ------------------------------------------------------------------ aliases

class AliasError(DataClayException):
    def __init__(self, alias_name, dataset_name):
        self.alias_name = alias_name
        self.dataset_name = dataset_name


class AliasDoesNotExistError(AliasError):
    def __str__(self):
        return f"Alias {self.dataset_name}/{self.alias_name} does not exist"


class AliasAlreadyExistError(AliasError):
    def __str__(self):
        return f"Alias {self.dataset_name}/{self.alias_name} already exists"


# ------------------------------------------------------------------ objects

class ObjectError(DataClayException):
    def __init__(self, object_id):
        self.object_id = object_id


class ObjectNotRegisteredError(ObjectError):
    """The object is not persistent (make_persistent() it first)."""

    def __str__(self):
        return f"Object {self.object_id} is not registered!"


class ObjectWithWrongBackendIdError(ObjectError):
    """The backend recorded for an object does not hold it."""

    def __init__(self, backend_id, replica_backend_ids, object_id=None):
        self.backend_id = backend_id
        self.replica_backend_ids = replica_backend_ids
        self.object_id = object_id

    def __str__(self):
        return f"Object {self.object_id} with wrong backend_id!"


class ObjectIsNotVersionError(ObjectError):
    def __str__(self):
        return f"Object {self.object_id} is not a version!"


class ObjectIsMasterError(ObjectError):
    def __str__(self):
        return f"Object {self.object_id} is the master!"


class ObjectNotFound(ObjectError):
    def __str__(self):
        return f"Object {self.object_id} not found."


class ObjectStorageError(ObjectError):
    def __str__(self):
        return f"Could not store object {self.object_id}."


# ------------------------------------------------------------------ backends

class BackendError(DataClayException):
    def __init__(self, ee_id):
        self.ee_id = ee_id


class NoOtherBackendsAvailable(BackendError):
    def __str__(self):
        return "There are no other backends available"


# ------------------------------------------------------------------ dataClay ids

class DataclayError(DataClayException):
    def __init__(self, dataclay_id):
        self.dataclay_id = dataclay_id


class DataclayIdError(DataClayException):
    pass
