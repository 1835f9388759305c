"""dataClay's API and module layout on Bettong (python/dataclay, python/storage):
the modules dataClay code imports, dataClay's exceptions (also catchable as
Bettong's), datasets for aliases, the Client's options, the event loop
helpers, the async a_* variants from an asyncio program, get_properties /
dc_update_properties / dc_put / dc_clone(recursive), dataclay.contrib as a
namespace in a client and in a store process, and storage.api."""

import asyncio
import importlib
import inspect
import os
import sys
import textwrap
import threading
import uuid

import pytest

from store_helpers import PYDIR, Store

from bettong import objects
from bettong.objects import AliasTaken, NotFound, Persistent, StoreError

import dataclay
from dataclay import Client, DataClayObject, activemethod
from dataclay import config as dc_config
from dataclay import exceptions as dx
from dataclay import event_loop as dc_loop


class Person(DataClayObject):
    name: str
    age: int
    friend: "Person"

    def __init__(self, name, age):
        self.name = name
        self.age = age
        self.friend = None

    @activemethod
    def add_year(self):
        self.age += 1
        return self.age

    @activemethod
    async def older(self, years):
        await asyncio.sleep(0)
        self.age += years
        return self.age


class Dog(DataClayObject):
    name: str


@pytest.fixture(autouse=True)
def _dc_reset():
    yield
    dc_config.set_runtime(None)
    from dataclay.client import api
    api._init_client = None


@pytest.fixture
def store(stores):
    return stores()


@pytest.fixture
def client(store):
    host, port = store.address.rsplit(":", 1)
    c = Client(host=host, port=int(port))
    c.start()
    yield c
    if c.is_active:
        c.stop()


# ------------------------------------------------------------------ layout

def test_module_layout():
    from dataclay.client.api import Client as C2, init, finish
    from dataclay.dataclay_object import DataClayObject as D2, activemethod as a2
    from dataclay.event_loop import get_dc_event_loop, run_dc_coroutine
    from dataclay.config import get_runtime
    import dataclay.contrib
    import storage.api

    assert C2 is Client and D2 is DataClayObject and a2 is activemethod
    assert callable(init) and callable(finish)
    assert callable(get_dc_event_loop) and callable(run_dc_coroutine)
    assert dataclay.StorageObject is DataClayObject
    assert issubclass(DataClayObject, Persistent)
    assert get_runtime() is None                  # no Client started
    assert os.path.join(str(PYDIR), "dataclay", "contrib") in list(dataclay.contrib.__path__)
    for name in ("getByID", "init", "finish", "initWorker", "initWorkerPostFork",
                 "finishWorkerPostFork", "finishWorker", "TaskContext", "StorageObject"):
        assert hasattr(storage.api, name), name


def test_exception_names_messages_bases():
    assert str(dx.AlreadyExistError("admin/x")) == "admin/x already exists"
    assert str(dx.DoesNotExistError("abc")) == "abc does not exist"
    assert str(dx.AliasDoesNotExistError("x", None)) == "Alias None/x does not exist"
    assert str(dx.AliasAlreadyExistError("x", "ds")) == "Alias ds/x already exists"
    assert str(dx.ObjectNotRegisteredError("o1")) == "Object o1 is not registered!"
    assert str(dx.ObjectIsNotVersionError("o1")) == "Object o1 is not a version!"
    assert str(dx.ObjectIsMasterError("o1")) == "Object o1 is the master!"
    assert str(dx.ObjectNotFound("o1")) == "Object o1 not found."
    assert str(dx.ObjectStorageError("o1")) == "Could not store object o1."
    assert str(dx.NoOtherBackendsAvailable(None)) == "There are no other backends available"
    assert str(dx.DatasetIsNotAccessibleError("d", "u")) == "Dataset d is not accessible by u"
    assert str(dx.AccountInvalidCredentialsError("u")) == "Account u invalid credentials"
    e = dx.ObjectWithWrongBackendIdError("b1", {"b2"})
    assert e.backend_id == "b1" and e.replica_backend_ids == {"b2"} and "wrong backend_id" in str(e)
    for name in dx.__all__:
        assert issubclass(getattr(dx, name), dx.DataClayException), name
    assert issubclass(dx.AliasDoesNotExistError, dx.AliasError)
    assert issubclass(dx.ObjectNotRegisteredError, dx.ObjectError)
    assert issubclass(dx.NoOtherBackendsAvailable, dx.BackendError)
    assert dataclay.DataClayException is dx.DataClayException


def test_errors_are_dataclay_and_bettong(client):
    p = Person("Marc", 24)
    p.make_persistent(alias="taken")
    q = Person("Alice", 21)
    with pytest.raises(dx.AlreadyExistError) as ei:
        q.make_persistent(alias="taken")
    assert str(ei.value) == "admin/taken already exists"
    assert isinstance(ei.value, AliasTaken) and not objects.is_persistent(q)
    q.make_persistent()
    with pytest.raises(AliasTaken) as ei:
        q.add_alias("taken")
    assert isinstance(ei.value, dx.AlreadyExistError)

    with pytest.raises(dx.AliasDoesNotExistError) as ei:
        Person.get_by_alias("nobody")
    assert str(ei.value) == "Alias None/nobody does not exist"
    assert isinstance(ei.value, NotFound)
    with pytest.raises(NotFound) as ei:
        Person.get_by_alias("nobody", dataset_name="other")
    assert str(ei.value) == "Alias other/nobody does not exist"
    oid = str(uuid.uuid4())
    with pytest.raises(dx.DoesNotExistError) as ei:
        DataClayObject.get_by_id(oid)
    assert str(ei.value) == f"{oid} does not exist" and isinstance(ei.value, NotFound)

    local = Person("Bob", 1)
    for call in (lambda: local.add_alias("a"), local.get_aliases):
        with pytest.raises(dx.ObjectNotRegisteredError) as ei:
            call()
        assert "is not registered!" in str(ei.value) and isinstance(ei.value, StoreError)
    with pytest.raises(AttributeError):
        p.add_alias("")
    Person.delete_alias("never-there")              # no error, as in dataClay
    # Bettong's own API keeps its own errors.
    with pytest.raises(NotFound) as ei:
        Persistent.get_by_alias("nobody")
    assert not isinstance(ei.value, dx.DataClayException)


def test_is_persistent_and_registered(client):
    p = Person("Marc", 24)
    assert p.is_persistent is False and p._dc_is_registered is False
    p.make_persistent()
    assert p.is_persistent is True and p._dc_is_registered is True
    assert objects.is_persistent(p)
    assert p.getID() == p.id and uuid.UUID(p.getID())
    assert p.add_year() == 25


# ------------------------------------------------------------------ datasets

def test_aliases_live_in_datasets(store):
    host, port = store.address.rsplit(":", 1)
    with Client(host=host, port=int(port), dataset="ds1"):
        a = Person("A", 1)
        a.make_persistent(alias="x")
        assert Person.get_by_alias("x") is a
        assert Persistent.get_by_alias("ds1/x") is a     # how the store keeps it
        with pytest.raises(dx.AliasDoesNotExistError):
            Person.get_by_alias("x", dataset_name="admin")
        a.add_alias("y")
        assert a.get_aliases() == {"x", "y"}
    with Client(host=host, port=int(port), dataset="ds2") as c:
        assert dc_config.get_runtime().dataset == "ds2" and c.dataset == "ds2"
        b = Person("B", 2)
        b.make_persistent(alias="x")                      # not taken in ds2
        assert Person.get_by_alias("x") is b
        assert Person.get_by_alias("x", dataset_name="ds1") is a
        assert a.get_aliases() == set()                   # none in ds2
        Person.delete_alias("x", dataset_name="ds1")
        with pytest.raises(NotFound):
            Person.get_by_alias("x", dataset_name="ds1")
        assert Person.get_by_alias("x") is b
    with Client(host=host, port=int(port)):                # default dataset
        c = Person("C", 3)
        c.dc_put("x")
        assert Persistent.get_by_alias("admin/x") is c


def test_dataset_from_environment(store, monkeypatch):
    monkeypatch.setenv("DC_DATASET", "envds")
    host, port = store.address.rsplit(":", 1)
    with Client(host=host, port=int(port)) as c:
        assert c.dataset == "envds"
        p = Person("A", 1)
        p.make_persistent(alias="e")
        assert Persistent.get_by_alias("envds/e") is p


# ------------------------------------------------------------------ the Client

@pytest.mark.parametrize("kw, words", [
    ({"username": "bob"}, "shared secret"),
    ({"password": "secret"}, "BETTONG_STORE_SECRET"),
    ({"local_backend": "b1"}, "local_backend"),
    ({"proxy_host": "h"}, "proxy"),
    ({"proxy_port": 8676}, "proxy"),
    ({"dataset": "a/b"}, "dataset"),
    ({"dataset": ""}, "dataset"),
])
def test_client_refuses_what_it_cannot_do(kw, words):
    with pytest.raises(ValueError) as ei:
        Client(host="127.0.0.1", port=1, **kw)
    assert words in str(ei.value)


def test_client_refuses_unknown_and_environment_options(monkeypatch):
    with pytest.raises(TypeError):
        Client(host="127.0.0.1", port=1, flavour="x")
    monkeypatch.setenv("DC_USERNAME", "bob")
    with pytest.raises(ValueError, match="shared secret"):
        Client(port=1)
    monkeypatch.delenv("DC_USERNAME")
    monkeypatch.setenv("DC_PROXY_HOST", "proxy.example")
    with pytest.raises(ValueError, match="proxy"):
        Client(port=1)
    from dataclay.api import init
    with pytest.raises(TypeError, match="configuration"):
        init("session.properties")


def test_client_address_resolution(monkeypatch):
    for v in ("DC_HOST", "DC_PORT", "DATACLAY_HOST", "DATACLAY_PORT", "DATACLAY_METADATA_HOST",
              "DATACLAY_METADATA_PORT", "BETTONG_STORE"):
        monkeypatch.delenv(v, raising=False)
    assert Client().address == "127.0.0.1:7450"
    assert Client(username="admin", password="admin").address == "127.0.0.1:7450"
    assert Client(host="h", port=1234).address == "h:1234"
    assert Client(port="99").address == "127.0.0.1:99"
    assert Client(host="h").address == "h:7450"
    assert Client(address="tls:h:5").address == "tls:h:5"
    monkeypatch.setenv("BETTONG_STORE", "b:1")
    assert Client().address == "b:1"
    monkeypatch.setenv("DC_HOST", "dch")
    monkeypatch.setenv("DC_PORT", "2")
    assert Client().address == "dch:2"
    assert Client(host="h").address == "h:2"
    assert Client(host="x", port=3).address == "x:3"
    with pytest.raises(ValueError):
        Client(port="abc")


def test_client_life_cycle(store):
    host, port = store.address.rsplit(":", 1)
    c = Client(host=host, port=int(port))
    assert c.is_active is False and dc_config.get_runtime() is None
    c.start()
    try:
        assert c.is_active is True
        rt = dc_config.get_runtime()
        assert isinstance(rt, dc_config.ClientRuntime)
        assert rt.address == store.address and rt.dataset == "admin"
        assert rt.is_backend is False and rt.backend_id is None
        with pytest.raises(AttributeError, match="inside a store"):
            rt.backend_clients
        loop = dc_loop.get_dc_event_loop()
        assert loop is not None and loop.is_running()
        p = Person("A", 1)
        p.make_persistent(alias="life")
        c.start()                                   # already active: nothing
        assert c.is_active
    finally:
        c.stop()
    assert c.is_active is False and dc_config.get_runtime() is None
    c.stop()                                        # not active: nothing

    async def main():
        async with Client(host=host, port=int(port)) as ac:
            assert ac.is_active
            return (await Person.a_get_by_alias("life")).name
    assert asyncio.run(main()) == "A"
    assert dc_config.get_runtime() is None


# ------------------------------------------------------------------ event loop

def test_event_loop_helpers(client):
    loop = dc_loop.get_dc_event_loop()

    async def where(x):
        return x * 2, threading.get_ident(), asyncio.get_running_loop()

    v, tid, running = dc_loop.run_dc_coroutine(where, 21)
    assert v == 42 and tid != threading.get_ident() and running is loop

    async def boom():
        raise KeyError("k")
    with pytest.raises(KeyError):
        dc_loop.run_dc_coroutine(boom)

    async def nested():
        return dc_loop.run_dc_coroutine(where, 1)
    with pytest.raises(RuntimeError, match="own"):
        dc_loop.run_dc_coroutine(nested)

    async def to_thread():
        return await dc_loop.dc_to_thread_io(threading.get_ident)
    assert dc_loop.run_dc_coroutine(to_thread) not in (threading.get_ident(), tid)


# ------------------------------------------------------------------ async API

def test_async_variants(client):
    async def main():
        p = Person("Marc", 24)
        await p.a_make_persistent(alias="am")
        assert p.is_persistent
        assert await Person.a_get_by_alias("am") is p
        assert await Person.a_get_by_id(p.id) is p
        await p.a_add_alias("am2")
        assert await p.a_get_aliases() == {"am", "am2"}
        props = await p.a_get_properties()
        assert props["name"] == "Marc" and props["age"] == 24
        await p.a_dc_update_properties({"age": 30})
        assert p.age == 30
        await Person.a_delete_alias("am2")
        assert await p.a_get_aliases() == {"am"}
        with pytest.raises(dx.AliasDoesNotExistError):
            await Person.a_get_by_alias("am2")
        with pytest.raises(dx.AlreadyExistError):
            await Person("X", 1).a_make_persistent(alias="am")
        # many at once, from this loop (not the dc loop)
        people = [Person("p%d" % i, i) for i in range(10)]
        await asyncio.gather(*(q.a_make_persistent(alias="am-%d" % i)
                               for i, q in enumerate(people)))
        assert all(q.is_persistent for q in people)
        got = await asyncio.gather(*(Person.a_get_by_alias("am-%d" % i) for i in range(10)))
        assert got == people
        # variants whose synchronous method this Bettong lacks raise what it raises
        for name in ("sync", "move", "new_replica", "new_version", "consolidate_version"):
            if hasattr(p, name):
                continue
            with pytest.raises(AttributeError, match=name):
                await getattr(p, "a_" + name)()
        # a store alone is a service of one backend, where p lives
        backends = await client.a_get_backends()
        assert list(backends) == [p._dc_meta.master_backend_id]
        await p.a_sync()
        return "done"

    assert asyncio.run(main()) == "done"


def test_async_active_method_local_and_proxy(client):
    p = Person("A", 1)
    assert asyncio.run(p.older(2)) == 3             # local: a coroutine, run here
    p.make_persistent()
    r = p.older(1)
    assert inspect.isawaitable(r)
    r.close()
    assert p.add_year() == 4                        # sync active methods unaffected


def test_async_active_method_runs_in_store(client):
    """The store runs an async active method's coroutine to its end: its result
    is the call's, its exception the call's (the object left as it was)."""
    p = Person("A", 1)
    p.make_persistent()

    async def main():
        return await p.older(5)
    assert asyncio.run(main()) == 6
    assert p.age == 6

    async def fails():
        return await p.older("not a number")
    with pytest.raises(TypeError):
        asyncio.run(fails())
    assert p.age == 6


# ------------------------------------------------------------------ properties, put, clone

def test_properties_put_clone_update(client):
    p = Person("Marc", 24)
    assert p.get_properties() == {"name": "Marc", "age": 24, "friend": None}
    p.dc_update_properties({"age": 25})
    assert p.age == 25
    with pytest.raises(AttributeError):
        p.dc_put("")
    p.dc_put("marc")
    assert Person.get_by_alias("marc") is p
    p.dc_update_properties({"_dc_property_name": "Marcus", "age": 26})
    assert (p.name, p.age) == ("Marcus", 26)
    assert p.get_properties() == {"name": "Marcus", "age": 26, "friend": None}
    with pytest.raises(TypeError, match="not a persistent field"):
        p.dc_update_properties({"colour": "red"})
    assert p.age == 26

    # references: kept as proxies, or copied with recursive=True (cycles kept)
    a, b = Person("A", 1), Person("B", 2)
    a.friend, b.friend = b, a
    a.make_persistent(alias="ring")
    shallow = a.dc_clone()
    assert not shallow.is_persistent and shallow.friend is b and b.is_persistent
    deep = Person.dc_clone_by_alias("ring", recursive=True)
    assert not deep.is_persistent and not deep.friend.is_persistent
    assert deep.friend.name == "B" and deep.friend.friend is deep
    assert type(deep) is Person and type(deep.friend) is Person

    with pytest.raises(TypeError):
        p.dc_update(Dog())
    p.dc_update(Person("New", 1))
    assert (p.name, p.age) == ("New", 1)
    with pytest.raises(TypeError):
        Person.dc_update_by_alias("marc", Dog())
    Person.dc_update_by_alias("marc", Person("Newer", 2))
    assert p.name == "Newer"


# ------------------------------------------------------------------ contrib namespace

MODEL = '''
import os
from dataclay import DataClayObject, activemethod


class Gadget(DataClayObject):
    size: int

    @activemethod
    def where(self):
        import importlib
        import sys
        extra = importlib.import_module("dataclay.contrib.{pkg}.extra")
        return os.getpid(), extra.VALUE, sys.modules[type(self).__module__].__file__

    @activemethod
    def import_late(self, path, name):
        import importlib
        import sys
        sys.path.append(path)
        return importlib.import_module("dataclay.contrib." + name).VALUE
'''


def _model_dir(root, pkg, value):
    d = root / "dataclay" / "contrib" / pkg
    d.mkdir(parents=True)
    (d / "__init__.py").write_text(textwrap.dedent(MODEL.replace("{pkg}", pkg)))
    (d / "extra.py").write_text(f"VALUE = {value!r}\n")
    return root


class _StoreWithPath(Store):
    """A store whose PYTHONPATH has extra directories after Bettong's python/."""

    def __init__(self, procs, tmp, pythonpath, **kw):
        self.pythonpath = [str(p) for p in pythonpath]
        super().__init__(procs, tmp, **kw)

    def start(self, wait=True):
        env = dict(os.environ)
        env.pop("BETTONG_SECRET", None)
        env.pop("BETTONG_STORE_SECRET", None)
        env["PYTHONPATH"] = os.pathsep.join([str(PYDIR)] + self.pythonpath)
        with open(self.err_path, "ab") as err:
            import time
            self.started_at = time.monotonic()
            self.proc = self.procs.spawn(self.args(), stdout=err, stderr=err, env=env,
                                         cwd=str(self.tmp))
        if wait:
            self.wait_ready()
        return self


def test_contrib_namespace_in_client_and_store(stores, tmp_path):
    import dataclay.contrib
    pkg = "bt_models_%s" % uuid.uuid4().hex[:8]
    late = "bt_late_%s" % uuid.uuid4().hex[:8]
    models = _model_dir(tmp_path / "models", pkg, "from-models")
    late_root = tmp_path / "late"
    (late_root / "dataclay" / "contrib" / late).mkdir(parents=True)
    (late_root / "dataclay" / "contrib" / late / "__init__.py").write_text("VALUE = 'late'\n")

    st = _StoreWithPath(stores.procs, tmp_path, [models])
    with pytest.raises(ImportError):                # not on sys.path yet
        importlib.import_module("dataclay.contrib." + pkg)
    sys.path.append(str(models))                    # after dataclay.contrib was imported
    try:
        mod = importlib.import_module("dataclay.contrib." + pkg)
        assert mod.__file__.startswith(str(models))
        assert str(models / "dataclay" / "contrib") in list(dataclay.contrib.__path__)
        host, port = st.address.rsplit(":", 1)
        with Client(host=host, port=int(port)):
            g = mod.Gadget()
            g.size = 3
            g.make_persistent(alias="gadget")
            pid, value, where = g.where()
            assert pid != os.getpid() and value == "from-models"
            assert where.startswith(str(models))     # the store imported it by name
            # a directory put on the store's sys.path at run time counts too
            assert g.import_late(str(late_root), late) == "late"
    finally:
        sys.path.remove(str(models))
        for name in list(sys.modules):
            if name.startswith("dataclay.contrib." + pkg):
                del sys.modules[name]
    with pytest.raises(ImportError):
        importlib.import_module("dataclay.contrib." + pkg + ".extra")


# ------------------------------------------------------------------ storage.api

def test_storage_api(store, tmp_path):
    import storage.api
    props = tmp_path / "storage.properties"
    props.write_text(f"# Bettong\nexport BETTONG_STORE={store.address}\nDC_DATASET='sds'\n\n")
    os.environ.pop("BETTONG_STORE", None)
    try:
        storage.api.init(str(props))
        assert storage.api.get_client().is_active and storage.api.get_client().dataset == "sds"
        p = Person("S", 1)
        p.make_persistent(alias="s")
        assert storage.api.getByID(p.getID()) is p
        assert storage.api.getByID('{"id": "%s", "dataset_name": "x"}' % p.getID()) is p
        with pytest.raises(NotFound):
            storage.api.getByID(str(uuid.uuid4()))
        with storage.api.TaskContext(__import__("logging").getLogger("t"), []):
            assert p.add_year() == 2
        storage.api.finish()
        assert not storage.api.get_client().is_active
    finally:
        os.environ.pop("DC_DATASET", None)
        storage.api._client = None
    bad = tmp_path / "bad.properties"
    bad.write_text("this is not a property\n")
    with pytest.raises(ValueError, match="KEY=VALUE"):
        storage.api.init(str(bad))
    with pytest.raises(TypeError):
        storage.api.init(str(props), flavour=1)


def test_event_loop_in_forked_child():
    """A forked child gets a loop and thread pools of its own (the parent's
    threads are not there)."""
    async def double(x):
        return 2 * x

    assert dc_loop.run_dc_coroutine(double, 1) == 2        # the parent's loop and pool
    assert asyncio.run(dc_loop.dc_to_thread_io(lambda: 5)) == 5
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                                           # the child
        try:
            v = dc_loop.run_dc_coroutine(double, 21)
            v += asyncio.run(dc_loop.dc_to_thread_io(lambda: 100))
            os.write(w, str(v).encode())
        finally:
            os._exit(0)
    os.close(w)
    import select
    import signal
    ready, _, _ = select.select([r], [], [], 20)
    if not ready:
        os.kill(pid, signal.SIGKILL)
    with os.fdopen(r) as f:
        out = f.read() if ready else ""
    os.waitpid(pid, 0)
    assert out == "142", "the forked child did not answer within 20 s"
