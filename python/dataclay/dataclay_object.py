"""dataclay.DataClayObject on Bettong: bettong.Persistent with dataClay's API.

    from dataclay import DataClayObject, activemethod

    class Person(DataClayObject):
        name: str
        age: int

        @activemethod
        def add_year(self):
            self.age += 1

What it adds to bettong.Persistent (see the module documentation of
bettong.objects for everything else):

- Datasets: an alias lives in a dataset (the started Client's, default "admin").
  The store keeps the alias `x` of dataset `ds` as "ds/x": from Bettong's own API
  it is `Persistent.get_by_alias("ds/x")`. get_by_alias / delete_alias take
  dataset_name=..., add_alias and make_persistent use the current dataset, and
  get_aliases() lists the object's aliases of the current dataset.
- dataClay's exceptions (dataclay.exceptions), each also an instance of
  Bettong's class for the same failure; delete_alias of an alias that does not
  exist does nothing, as in dataClay.
- is_persistent and _dc_is_registered (properties), get_properties() and
  dc_update_properties() (persistent fields by name), dc_put(alias),
  dc_clone(recursive=...), dc_clone_by_alias(alias, recursive=...).
- The async a_* variants: each runs its synchronous method in a thread of
  dataclay.event_loop's pool and awaits it, so it can be awaited from any
  asyncio loop. A variant whose synchronous method this Bettong does not have
  raises the same AttributeError the synchronous call does.
- Versions: new_version(backend_id=None) and consolidate_version(), with
  _dc_meta.original_object_id / versions_object_ids.
- activemethod on an `async def`: on a local object the call returns the
  coroutine (await it); on a proxy it returns an awaitable running the call in
  the store.

backend_id: make_persistent(..., backend_id=None) and dc_put(..., backend_id=None)
accept None (any backend: there is one); another value is passed to Bettong's
make_persistent, which refuses it unless it supports several backends.
"""

import io
import pickle
import uuid

from bettong import objects as _bo
from bettong.objects import AliasTaken, NotAVersion, NotFound, Persistent, active
from bettong.objects import is_persistent as _is_persistent

from . import _errors
from .config import current_dataset
from . import event_loop as _loop

__all__ = ["DataClayObject", "activemethod"]

activemethod = active

_PROPERTY_PREFIX = "_dc_property_"   # dataClay's internal attribute prefix


def _qualified(alias, dataset=None):
    return f"{dataset or current_dataset()}/{alias}"


def _base(cls):
    return getattr(cls, "_bt_base", cls)


def _lookup_class(cls):
    """The class to hand to Persistent's lookups (a hint for the result's class)."""
    return Persistent if cls is DataClayObject else cls


def _what(obj):
    return f"<{type(obj).__qualname__} object (not persistent) at {id(obj):#x}>"


def _not_registered(obj):
    return _errors.ObjectNotRegisteredError(None, _what(obj))


async def _await_in_thread(fn, *args, **kwargs):
    return await _loop._dc_to_thread(fn, _loop.io_bound_executor, *args, **kwargs)


def _async_variant(name):
    """a_<name>: the method `name` run in a thread, awaited."""

    async def variant(self, *args, **kwargs):
        return await _await_in_thread(getattr(self, name), *args, **kwargs)

    variant.__name__ = variant.__qualname__ = "a_" + name
    variant.__doc__ = f"Async version of {name}(): awaitable from any asyncio loop."
    return variant


def _async_class_variant(name):
    """a_<name> for a classmethod."""
    return classmethod(_async_variant(name))


class _CloneUnpickler(pickle.Unpickler):
    """Loads a stored state, turning every persistent reference into a local
    copy of that object (recursively; each object copied once)."""

    def __init__(self, data, memo):
        super().__init__(io.BytesIO(data))
        self.clones = memo

    def persistent_load(self, pid):
        if not (type(pid) is tuple and len(pid) == 3 and pid[0] == _bo._REF_TAG):
            raise pickle.UnpicklingError(f"unknown persistent id {pid!r}")
        oid, cid = pid[1], pid[2]
        obj = self.clones.get(oid)
        if obj is None:
            cls = _base(_bo._class_for(cid))
            obj = object.__new__(cls)
            self.clones[oid] = obj
            obj.__dict__.update(_clone_state(oid, self.clones))
        return obj


def _clone_state(oid, memo):
    a = _bo._request(_bo._GET_STATE, oid)
    if a[0] != _bo._OK:
        raise _bo._answer_error(a)
    return _bo._version_state(_CloneUnpickler(a[2], memo).load())


class ObjectMetadata:
    """What DataClayObject._dc_meta gives (see there). master_backend_id is a
    view of where this process believes the master copy is: setting it (to a
    wrong backend, say) is corrected by the next request, which finds the
    object elsewhere and follows it, as dataClay's client does."""

    def __init__(self, obj):
        d = obj.__dict__
        self._obj = obj
        self.id = uuid.UUID(d["_bettong_id"])
        self.dataset_name = current_dataset()
        self.class_name = f"{type(obj).__module__}.{type(obj).__qualname__}"
        self._replicas = None
        self.is_read_only = False
        self._mark = None   # the version mark, asked of the store when first read

    @property
    def master_backend_id(self):
        return uuid.UUID(_bo.backend_of(self._obj))

    @master_backend_id.setter
    def master_backend_id(self, value):
        _bo._backend(value)   # KeyError for a backend the service lacks
        _bo._where[str(self.id)] = str(value)

    def _version(self):
        if self._mark is None:
            mark = _bo._version_mark(self._obj)
            self._mark = (uuid.UUID(mark[0]), [uuid.UUID(v) for v in mark[1]]) if mark \
                else (None, [])
        return self._mark

    @property
    def original_object_id(self):
        """For a version, the id of the object it is a version of (else None)."""
        return self._version()[0]

    @property
    def versions_object_ids(self):
        """For a version, the versions between the original and it."""
        return self._version()[1]

    @property
    def replica_backend_ids(self):
        """The backends holding a replica (a set of uuid.UUID), asked of the
        service the first time it is read from this metadata."""
        if self._replicas is None:
            self._replicas = {uuid.UUID(b) for b in _bo.replicas_of(self._obj)}
        return self._replicas

    @replica_backend_ids.setter
    def replica_backend_ids(self, value):
        self._replicas = set(value)

    def __repr__(self):
        return f"<ObjectMetadata {self.id} master={self.master_backend_id}>"


class DataClayObject(Persistent):
    """Base class of dataClay model classes (bettong.Persistent with dataClay's API:
    see the module documentation)."""

    # -- state
    @property
    def is_persistent(self):
        """Whether the object is persistent (a proxy, or the stored copy)."""
        return _is_persistent(self)

    @property
    def _dc_is_registered(self):
        return _is_persistent(self)

    @property
    def _dc_meta(self):
        """dataClay's object metadata, read now: id, dataset_name, class_name,
        master_backend_id (the backend holding the master copy),
        replica_backend_ids (those holding read-only replicas), is_read_only,
        original_object_id and versions_object_ids (for a version: the object
        it is a version of, and the versions in between)."""
        if not _is_persistent(self):
            raise _errors.ObjectNotRegisteredError(None)
        return ObjectMetadata(self)

    def sync(self):
        """Look up again where the master copy is (_dc_meta is read afresh each
        time anyway)."""
        if not _is_persistent(self):
            raise _errors.ObjectNotRegisteredError(None)
        _bo._where.pop(self.__dict__["_bettong_id"], None)
        _bo.backend_of(self)

    def new_replica(self, backend_id=None, recursive=False, remotes=True):
        """A read-only replica on backend_id (by default a backend without a
        copy yet; a warning when every backend has one): see
        bettong.Persistent.new_replica. ObjectNotRegisteredError on a local
        object."""
        if not _is_persistent(self):
            raise _not_registered(self)
        return super().new_replica(backend_id, recursive, remotes)

    # -- make_persistent and aliases
    def make_persistent(self, alias=None, backend_id=None, **kwargs):
        """Store the object (see bettong.Persistent.make_persistent); the alias, if
        any, in the current dataset. Already persistent: adds the alias."""
        if backend_id is not None:
            kwargs["backend_id"] = backend_id
        if not alias:
            return super().make_persistent(None, **kwargs)
        if _is_persistent(self):
            if kwargs:
                super().make_persistent(None, **kwargs)
            self.add_alias(alias)
            return None
        key = _qualified(alias)
        try:
            return super().make_persistent(key, **kwargs)
        except _errors.AlreadyExistError:
            raise
        except AliasTaken as e:
            raise _errors.AlreadyExistError(key) from e

    def dc_put(self, alias, backend_id=None):
        """make_persistent with an alias, which is required."""
        if not alias:
            raise AttributeError("Alias cannot be null or empty")
        self.make_persistent(alias=alias, backend_id=backend_id)

    @classmethod
    def get_by_alias(cls, alias, dataset_name=None):
        """The object with this alias in dataset_name (default: the current dataset).
        AliasDoesNotExistError (also a bettong.NotFound) if there is none."""
        try:
            return Persistent.get_by_alias.__func__(_lookup_class(cls),
                                                    _qualified(alias, dataset_name))
        except NotFound as e:
            if isinstance(e, _errors.AliasDoesNotExistError):
                raise
            raise _errors.AliasDoesNotExistError(alias, dataset_name) from e

    @classmethod
    def get_by_id(cls, object_id):
        """The object with this id; DoesNotExistError (also a bettong.NotFound)."""
        try:
            return Persistent.get_by_id.__func__(_lookup_class(cls), object_id)
        except NotFound as e:
            if isinstance(e, _errors.DoesNotExistError):
                raise
            raise _errors.DoesNotExistError(object_id) from e

    def add_alias(self, alias):
        """Add an alias (in the current dataset). ObjectNotRegisteredError on a local
        object, AttributeError for an empty alias, AlreadyExistError if taken."""
        if not _is_persistent(self):
            raise _not_registered(self)
        if not alias:
            raise AttributeError("Alias cannot be None or empty string")
        key = _qualified(alias)
        try:
            return super().add_alias(key)
        except AliasTaken as e:
            raise _errors.AlreadyExistError(key) from e

    @classmethod
    def delete_alias(cls, alias, dataset_name=None):
        """Remove an alias of dataset_name (default: the current dataset); an alias
        that does not exist is no error (as in dataClay)."""
        try:
            Persistent.delete_alias.__func__(cls, _qualified(alias, dataset_name))
        except NotFound:
            pass

    def get_aliases(self):
        """The object's aliases in the current dataset (a set of alias names)."""
        if not _is_persistent(self):
            raise _not_registered(self)
        prefix = _qualified("")
        return {a[len(prefix):] for a in super().get_aliases() if a.startswith(prefix)}

    # -- state as a dict
    def get_properties(self):
        """The persistent fields and their values (a dict by field name; a
        persistent object's from the store, in one request)."""
        oid = self.__dict__.get("_bettong_id")
        if oid is None or not type(self).__dict__.get("_bt_base"):
            d = self.__dict__
            return {f: d[f] for f in _bo.persistent_fields(type(self)) if f in d}
        a = _bo._request(_bo._GET_STATE, oid)
        if a[0] != _bo._OK:
            raise _bo._answer_error(a)
        return _bo._version_state(_bo._loads(a[2]))

    def dc_update_properties(self, new_properties):
        """Set these persistent fields (a dict by field name; dataClay's internal
        "_dc_property_<name>" keys are taken too) in one atomic update. A name that
        is no persistent field of the class is refused (TypeError)."""
        fields = set(_bo.persistent_fields(type(self)))
        props = {}
        for k, v in dict(new_properties).items():
            name = k[len(_PROPERTY_PREFIX):] if isinstance(k, str) and \
                k.startswith(_PROPERTY_PREFIX) else k
            if name not in fields:
                raise TypeError(f"{name!r} is not a persistent field of "
                                f"{_base(type(self)).__qualname__} (its fields: "
                                f"{', '.join(sorted(fields)) or 'none'})")
            props[name] = v
        oid = self.__dict__.get("_bettong_id")
        if oid is None or not type(self).__dict__.get("_bt_base"):
            self.__dict__.update(props)
            return None
        a = _bo._request(_bo._UPDATE, oid, _bo._dumps_refs(props))
        if a[0] != _bo._OK:
            raise _bo._answer_error(a)
        return None

    # -- copies and updates
    def dc_clone(self, recursive=False):
        """A local, non-persistent copy of the object's persistent state. The objects
        it references stay references (proxies), unless recursive=True: then they
        are copied too (each once, cycles kept)."""
        if not recursive or not _is_persistent(self) or not type(self).__dict__.get("_bt_base"):
            return super().dc_clone()
        oid = self.__dict__["_bettong_id"]
        memo = {}
        obj = object.__new__(_base(type(self)))
        memo[oid] = obj
        obj.__dict__.update(_clone_state(oid, memo))
        return obj

    @classmethod
    def dc_clone_by_alias(cls, alias, recursive=False):
        return cls.get_by_alias(alias).dc_clone(recursive=recursive)

    def dc_update(self, from_object):
        """Replace the persistent fields with from_object's (TypeError unless it is
        of this object's class)."""
        if not isinstance(from_object, _base(type(self))):
            raise TypeError("Objects must be of the same type")
        return super().dc_update(from_object)

    @classmethod
    def dc_update_by_alias(cls, alias, from_object):
        if _base(cls) is not _base(type(from_object)):
            raise TypeError("Objects must be of the same type")
        cls.get_by_alias(alias).dc_update(from_object)

    # -- versions
    def new_version(self, backend_id=None, recursive=False):
        """A version of this object (see bettong's Persistent.new_version): on
        backend_id, or the backend the client is connected to. recursive=True
        (versions of what it references too) is refused: versions are of one
        object, and references in the version name the same objects as the
        original's."""
        if not _is_persistent(self):
            raise _not_registered(self)
        if recursive:
            raise NotImplementedError("new_version(recursive=True): Bettong makes versions of "
                                      "one object; its references name the same objects")
        return super().new_version(backend_id)

    def consolidate_version(self):
        """Make this version the original (see bettong's
        Persistent.consolidate_version); ObjectIsNotVersionError for an object
        that is not a version."""
        if not _is_persistent(self):
            raise _not_registered(self)
        try:
            super().consolidate_version()
        except NotAVersion as e:
            raise _errors.ObjectIsNotVersionError(uuid.UUID(self.__dict__["_bettong_id"])) \
                from e

    # -- the async variants
    a_make_persistent = _async_variant("make_persistent")
    a_add_alias = _async_variant("add_alias")
    a_get_aliases = _async_variant("get_aliases")
    a_get_properties = _async_variant("get_properties")
    a_dc_update_properties = _async_variant("dc_update_properties")
    a_sync = _async_variant("sync")
    a_move = _async_variant("move")
    a_new_replica = _async_variant("new_replica")
    a_new_version = _async_variant("new_version")
    a_consolidate_version = _async_variant("consolidate_version")
    a_get_by_alias = _async_class_variant("get_by_alias")
    a_get_by_id = _async_class_variant("get_by_id")
    a_delete_alias = _async_class_variant("delete_alias")
