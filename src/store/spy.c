#include "store/spy.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "py/bridge.h"
#include "store/omap.h"
#include "store/sproto.h"
#include "store/sreply.h"
#include "store/srefs.h"
#include "util/log.h"

#define PID_TAG "bettong.obj"
/* Containers up to this many items are checked for a plain pickle (is_flat). */
#define FLAT_MAX 64
#define TRIM_SCAN 256
/* Inline runs: a request kind qualifies after this many threaded runs in a row
 * that were short and did not wait (spy_run_inline). */
#define INLINE_AFTER 4
/* Long inline runs (more CPU than inline_ns, or a wait and more wall time
 * than that) that send a kind to the threads for good. */
#define INLINE_STRIKES 3
/* Kinds remembered per class: names past this are decoded per request and
 * never run inline (a client inventing field names cannot grow the table). */
#define STATS_MAX 256

/* What the store learned about one request kind of a class: a CALL of a method,
 * a GET_FIELD or a SET_FIELD of a name. */
typedef struct mstat {
    struct mstat *next;
    PyObject *name;   /* owned, interned str: the method or field */
    uint32_t fast;    /* threaded runs in a row that were short (run_short) */
    unsigned strikes; /* inline runs that were not short */
    int banned;       /* INLINE_STRIKES of them: Python threads only from now on */
    uint8_t type;
    size_t namelen;
    char text[];      /* the name's UTF-8 bytes */
} mstat_t;

typedef struct {
    uint64_t class_id;
    PyObject *cls;       /* owned: the class */
    PyObject *annotated; /* owned: tuple of the annotated field names (MRO) */
    mstat_t *stats;      /* owned list */
    unsigned nstats;
    /* The class defines its own __getstate__ / __setstate__: the persistent
     * state is what __getstate__ returns, restored by __setstate__ (see
     * state_value, state_apply). */
    int getstate, setstate;
    /* owned, or NULL: for a class the store registered itself (its first
     * object was made in a call), "module:qualname" and the class pickle,
     * written (idempotently) with every unit that creates one of its objects */
    PyObject *qualname, *pickle;
} sclass_t;

/* A registry entry: a live object, or a tombstone (obj NULL) for an object
 * deleted by a unit that may not be on disk yet. */
typedef struct reg {
    onode_t node;            /* first: a reg_t is its node */
    PyObject *obj;           /* owned */
    PyObject *state;         /* owned bytes: the stored state */
    PyObject *fields;        /* owned tuple of str: the persistent fields */
    /* owned: when every persistent field held an immutable atom as `state` was
     * pickled, those values (sp->absent for a missing one) and the `fields`
     * tuple they go with; else NULL. The same objects still there mean the
     * same pickle (snap_unchanged). */
    PyObject *snap, *snap_fields;
    sclass_t *cls;
    uint64_t write_seq;      /* its last write handed to the committer */
    uint64_t tomb_seq;       /* tombstone: the deleting unit */
    int loading;
    int fresh;               /* made in a call whose unit is not submitted yet */
    int replica;             /* a read-only replica of another backend's object */
    int moved;               /* a move that a crash interrupted after the other
                                backend took the object: its copy is that
                                backend's now; only MOVE (finishing it) runs */
    /* owned tuple of str, or NULL (none): the backends holding replicas of
     * this object (a master here), as its LMDB list says once written */
    PyObject *replicas;
    struct reg *prev, *next; /* LRU list (live) or the tombstone list */
} reg_t;

typedef struct {
    reg_t *head, *tail; /* head: most recent */
} rlist_t;

struct spy {
    sdb_t *db;
    committer_t *cm;
    size_t cache;
    uint64_t inline_ns; /* the longest inline run allowed; 0: never inline */
    omap_t objs;
    size_t live;
    /* For the metrics (spy_cache_stats), read by the loop thread without the
     * GIL: relaxed atomics, written with the GIL held. live_pub is `live` as
     * of the last spy_trim (after every job). */
    _Atomic uint64_t hits, loads, live_pub;
    rlist_t lru, tombs;
    idmap_t classes; /* class_id -> sclass_t */
    idmap_t types;   /* (uintptr_t)class object -> sclass_t */
    /* owned references, made once by spy_init */
    PyObject *Pickler, *Unpickler, *BytesIO, *import_module;
    PyObject *plain_dumps, *plain_loads, *protocol, *no_args, *absent;
    PyObject *pid_fn, *load_strict, *load_lenient;
    PyObject *MissingObject; /* exception: a reference to an object that does not exist */
    /* In a service of several backends: bettong.objects._proxy_for, which makes
     * the client's proxy of an object another backend holds; else NULL. */
    PyObject *remote_ref;
    PyObject *adopt; /* bettong.objects._adopt (MOVE), in a service; else NULL */
    PyObject *became_remote; /* bettong.objects._became_remote (after MOVE) */
    PyObject *became_forward; /* bettong.objects._became_forward (after FORWARD) */
    /* bettong.objects._move_held and _move_finish (moves a crash interrupted),
     * in a service; else NULL */
    PyObject *move_held, *move_finish;
    PyObject *asyncio_run;   /* asyncio.run, once an async method ran */
    /* bettong.objects._replicate, _replica_push, _replica_drop (replicas), in a
     * service; else NULL */
    PyObject *replicate, *replica_push, *replica_drop;
    PyObject *tag, *s_bettong_id, *s_persistent_id, *s_persistent_load, *s_dump, *s_load,
        *s_getvalue, *s_new, *s_annotations, *s_module, *s_qualname, *s_bt, *s_bettong_cid,
        *s_getstate, *s_setstate;
    PyObject *object_getstate; /* owned: object.__getstate__ (NULL before 3.11) */
    /* owned, given by bettong.objects (setup()) when it is imported in the
     * store: the Persistent base class, _class_record, _new_oid, and the
     * exceptions NotFound and AliasTaken; NULL: objects made in calls are not
     * adopted (stored by value, as before) */
    PyObject *Persistent, *class_record, *new_oid, *NotFound, *AliasTaken;
    /* owned dict: alias -> [object id, unit seq (0: not submitted)] for
     * aliases added by calls whose units are not on disk yet */
    PyObject *pending_aliases;
    /* owned: _bettong_instore, the module of the C functions Python calls
     * (persistent_id, persistent_load, the module's own): its state points
     * back here (spy_of) */
    PyObject *module;
};

/* The store's Python side, for a C function Python calls: its self is the
 * module, whose state holds it. NULL with an exception once the store has
 * stopped (a reference kept by Python code may outlive it). */
static spy_t *spy_of(PyObject *module)
{
    spy_t **slot = PyModule_GetState(module);
    if (slot && *slot)
        return *slot;
    if (!PyErr_Occurred())
        PyErr_SetString(PyExc_RuntimeError, "the object store has stopped");
    return NULL;
}

enum {
    FOUND = 0,
    MISSING = 1,
    BROKEN = 2,   /* exception set */
    FORWARDED = 3 /* a consolidated version's id: t_forward names its original */
};

/* Set with status FORWARDED: the id the looked-up id was forwarded to. */
static _Thread_local char t_forward[SDB_ID_MAX];
static _Thread_local size_t t_forward_len;

/* ------------------------------------------------------------ calls

 * Objects made in a call. While a CALL's method runs (and its result and
 * the object's new state are pickled), the thread running it has a call
 * context: an object of a Persistent class made then (Persistent.__new__ in
 * the store calls call_created), made persistent (make_persistent), or found
 * without an id while the state or the result is pickled (persistent_id) is
 * adopted: it gets an id and a registry entry at once, and its state is
 * written by the call's own unit, with the target's change and the aliases
 * the call added, in one transaction (write_many). A call that fails drops
 * them (call_discard). Loading an object (reg_load) is not a creation:
 * t_loading. */
typedef struct {
    reg_t **created;     /* owned array; the entries are the registry's */
    size_t ncreated, cap;
    PyObject *aliases;   /* owned list of (alias, object id) str tuples, or NULL */
} scall_t;

/* Per thread, not in spy_t: user code between the request and these
 * (Persistent.__new__ calling _bettong_instore.created, pickling) has no path
 * to the request, and a thread runs one request at a time while several
 * threads run theirs interleaved. */
static _Thread_local scall_t *t_call;
static _Thread_local int t_loading;

/* ------------------------------------------------------------ lists */

static void rlist_push(rlist_t *l, reg_t *e)
{
    e->prev = NULL;
    e->next = l->head;
    if (l->head)
        l->head->prev = e;
    else
        l->tail = e;
    l->head = e;
}

static void rlist_remove(rlist_t *l, reg_t *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        l->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        l->tail = e->prev;
    e->prev = e->next = NULL;
}

static void lru_touch(spy_t *sp, reg_t *e)
{
    if (sp->lru.head != e) {
        rlist_remove(&sp->lru, e);
        rlist_push(&sp->lru, e);
    }
}

/* ------------------------------------------------------------ pickles */

/* Values of these exact types hold no other object and never change. */
static int is_atom(PyObject *v)
{
    PyTypeObject *t = Py_TYPE(v);
    return t == &PyFloat_Type || t == &PyLong_Type || t == &PyUnicode_Type ||
           t == &PyBytes_Type || t == &PyBool_Type || v == Py_None || t == &PyComplex_Type;
}

/* Nothing inside that our persistent_id could turn into a reference: an atom,
 * or a tuple, list or dict of at most FLAT_MAX atoms. Pickled by plain
 * pickle.dumps, such a value gives the same bytes as through our Pickler. */
static int is_flat(PyObject *v)
{
    if (is_atom(v))
        return 1;
    PyTypeObject *t = Py_TYPE(v);
    if (t == &PyTuple_Type || t == &PyList_Type) {
        Py_ssize_t n = PySequence_Fast_GET_SIZE(v);
        if (n > FLAT_MAX)
            return 0;
        PyObject **items = PySequence_Fast_ITEMS(v);
        for (Py_ssize_t i = 0; i < n; i++)
            if (!is_atom(items[i]))
                return 0;
        return 1;
    }
    if (t == &PyDict_Type && PyDict_GET_SIZE(v) <= FLAT_MAX) {
        PyObject *k, *x;
        Py_ssize_t pos = 0;
        while (PyDict_Next(v, &pos, &k, &x))
            if (!is_atom(k) || !is_atom(x))
                return 0;
        return 1;
    }
    return 0;
}

/* pickle.Pickler(BytesIO(), 5) with our persistent_id, dump(obj): the bytes
 * (new reference), or NULL with an exception. A flat value takes plain
 * pickle.dumps (no Pickler and file objects to make). */
static PyObject *dumps(spy_t *sp, PyObject *obj)
{
    if (is_flat(obj)) {
        PyObject *args[2] = {obj, sp->protocol};
        return PyObject_Vectorcall(sp->plain_dumps, args, 2, NULL);
    }
    PyObject *out = NULL, *res = NULL;
    PyObject *f = PyObject_CallNoArgs(sp->BytesIO);
    PyObject *p = f ? PyObject_CallFunction(sp->Pickler, "Oi", f, 5) : NULL;
    if (p && PyObject_SetAttr(p, sp->s_persistent_id, sp->pid_fn) == 0)
        res = PyObject_CallMethodOneArg(p, sp->s_dump, obj);
    if (res)
        out = PyObject_CallMethodNoArgs(f, sp->s_getvalue);
    Py_XDECREF(res);
    Py_XDECREF(p);
    Py_XDECREF(f);
    return out;
}

/* Unpickle p[0..n) resolving persistent ids (strictly: a missing object raises
 * MissingObject; leniently: it becomes None). New reference or NULL. Bytes
 * without the opcodes of a persistent id (BINPERSID 'Q', PERSID 'P') anywhere
 * take plain pickle.loads. */
static PyObject *loads(spy_t *sp, const uint8_t *p, size_t n, int strict)
{
    PyObject *out = NULL;
    PyObject *mv = PyMemoryView_FromMemory((char *)p, (Py_ssize_t)n, PyBUF_READ);
    if (mv && !memchr(p, 'Q', n) && !memchr(p, 'P', n)) {
        out = PyObject_CallOneArg(sp->plain_loads, mv);
        Py_DECREF(mv);
        return out;
    }
    PyObject *f = mv ? PyObject_CallOneArg(sp->BytesIO, mv) : NULL;
    PyObject *u = f ? PyObject_CallOneArg(sp->Unpickler, f) : NULL;
    PyObject *load = strict ? sp->load_strict : sp->load_lenient;
    if (u && PyObject_SetAttr(u, sp->s_persistent_load, load) == 0)
        out = PyObject_CallMethodNoArgs(u, sp->s_load);
    Py_XDECREF(u);
    Py_XDECREF(f);
    Py_XDECREF(mv);
    return out;
}

static PyObject *loads_bytes(spy_t *sp, PyObject *b, int strict)
{
    return loads(sp, (const uint8_t *)PyBytes_AS_STRING(b), (size_t)PyBytes_GET_SIZE(b), strict);
}

/* ------------------------------------------------------------ instances */

/* The instance dict (new reference), or NULL with an exception. */
static PyObject *instance_dict(PyObject *obj)
{
    if (Py_TYPE(obj)->tp_dictoffset == 0) {
        PyErr_Format(PyExc_TypeError, "instances of %s have no __dict__: a persistent class "
                     "cannot use __slots__ alone", Py_TYPE(obj)->tp_name);
        return NULL;
    }
    return PyObject_GenericGetDict(obj, NULL);
}

/* The object's `_bettong_id` if it is a live instance of a loaded class
 * (new reference), else NULL (no exception). */
static PyObject *instance_id(spy_t *sp, PyObject *obj)
{
    if (Py_TYPE(obj)->tp_dictoffset == 0)
        return NULL;
    PyObject *d = PyObject_GenericGetDict(obj, NULL);
    PyObject *oid = d ? PyDict_GetItemWithError(d, sp->s_bettong_id) : NULL;
    if (oid && PyUnicode_Check(oid))
        Py_INCREF(oid);
    else
        oid = NULL;
    Py_XDECREF(d);
    PyErr_Clear();
    return oid;
}

static PyObject *other_pid(spy_t *sp, PyObject *obj);

static PyObject *persistent_id(PyObject *self, PyObject *obj)
{
    spy_t *sp = spy_of(self);
    if (!sp)
        return NULL;
    sclass_t *c = idmap_get(&sp->types, (uint64_t)(uintptr_t)Py_TYPE(obj));
    PyObject *oid = c ? instance_id(sp, obj) : NULL;
    if (!oid)
        return other_pid(sp, obj);
    uint64_t cid = c->class_id;
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(oid, &n);
    reg_t *e = s ? (reg_t *)omap_get(&sp->objs, s, (size_t)n) : NULL;
    if (e && e->cls)
        cid = e->cls->class_id;
    PyErr_Clear();
    PyObject *pid = Py_BuildValue("(OOK)", sp->tag, oid, (unsigned long long)cid);
    Py_DECREF(oid);
    return pid;
}

static reg_t *reg_get(spy_t *sp, const char *id, size_t n, int *status);

/* The live object a persistent id names: reg_get's entry, following the
 * forwards of consolidated versions (new reference in *oid: the id at the
 * end); NULL with *status MISSING or BROKEN. */
static reg_t *reg_follow(spy_t *sp, PyObject **oid, const char **s, Py_ssize_t *n, int *status)
{
    reg_t *e = reg_get(sp, *s, (size_t)*n, status);
    for (int hops = 0; !e && *status == FORWARDED; hops++) {
        if (hops == 64) {
            *status = MISSING; /* forwards without end: logged by the caller */
            break;
        }
        PyObject *next = PyUnicode_DecodeUTF8(t_forward, (Py_ssize_t)t_forward_len, "strict");
        if (!next || !(*s = PyUnicode_AsUTF8AndSize(next, n))) {
            Py_XDECREF(next);
            *status = BROKEN;
            return NULL;
        }
        Py_SETREF(*oid, next);
        e = reg_get(sp, *s, (size_t)*n, status);
    }
    return e;
}

static PyObject *persistent_load(spy_t *sp, PyObject *pid, int strict)
{
    PyObject *oid = PyTuple_Check(pid) && PyTuple_GET_SIZE(pid) == 3 ? PyTuple_GET_ITEM(pid, 1)
                                                                     : NULL;
    if (!oid || !PyUnicode_Check(oid) ||
        PyObject_RichCompareBool(PyTuple_GET_ITEM(pid, 0), sp->tag, Py_EQ) != 1) {
        PyErr_Clear();
        PyErr_SetString(PyExc_ValueError, "unsupported persistent id in a pickle");
        return NULL;
    }
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(oid, &n);
    if (!s)
        return NULL;
    int status;
    Py_INCREF(oid);
    reg_t *e = reg_follow(sp, &oid, &s, &n, &status);
    PyObject *res = NULL;
    if (e && (e->replica || e->moved) && sp->remote_ref) /* its master's: go there */
        res = PyObject_CallFunctionObjArgs(sp->remote_ref, oid, PyTuple_GET_ITEM(pid, 2), NULL);
    else if (e)
        res = Py_NewRef(e->obj);
    else if (status == BROKEN)
        res = NULL;
    else if (sp->remote_ref) /* held by another backend of the service (or by none) */
        res = PyObject_CallFunctionObjArgs(sp->remote_ref, oid, PyTuple_GET_ITEM(pid, 2), NULL);
    else if (strict)
        PyErr_Format(sp->MissingObject, "no object with id '%s'", s);
    else {
        log_warn("store: a stored state refers to object %s, which no longer exists: None in "
                 "its place", s);
        res = Py_NewRef(Py_None);
    }
    Py_DECREF(oid);
    return res;
}

static PyObject *persistent_load_strict(PyObject *self, PyObject *pid)
{
    spy_t *sp = spy_of(self);
    if (!sp)
        return NULL;
    return persistent_load(sp, pid, 1);
}

static PyObject *persistent_load_lenient(PyObject *self, PyObject *pid)
{
    spy_t *sp = spy_of(self);
    if (!sp)
        return NULL;
    return persistent_load(sp, pid, 0);
}

static PyMethodDef pid_def = {"persistent_id", persistent_id, METH_O, NULL};
static PyMethodDef load_strict_def = {"persistent_load", persistent_load_strict, METH_O, NULL};
static PyMethodDef load_lenient_def = {"persistent_load", persistent_load_lenient, METH_O, NULL};

/* ------------------------------------------------------------ classes */

/* Import module q[0..modlen) and follow the dotted attributes in `attrs`.
 * New reference; NULL if the module does not import (exception cleared), or
 * *imported set and NULL if an attribute is missing. */
static PyObject *resolve(spy_t *sp, const char *q, size_t modlen, const char *attrs, int *imported)
{
    PyObject *obj = PyObject_CallFunction(sp->import_module, "s#", q, (Py_ssize_t)modlen);
    *imported = obj != NULL;
    while (obj && *attrs) {
        const char *dot = strchr(attrs, '.');
        size_t n = dot ? (size_t)(dot - attrs) : strlen(attrs);
        PyObject *name = PyUnicode_FromStringAndSize(attrs, (Py_ssize_t)n);
        PyObject *next = name ? PyObject_GetAttr(obj, name) : NULL;
        Py_XDECREF(name);
        Py_DECREF(obj);
        obj = next;
        attrs += n + (dot != NULL);
    }
    PyErr_Clear();
    return obj;
}

/* Import "pkg.mod:Qual.name" or "pkg.mod.Qual.name" (the longest importable
 * module prefix). A class (new reference) or NULL (no exception). */
static PyObject *import_qualname(spy_t *sp, const char *q)
{
    if (strstr(q, "<locals>") || !strncmp(q, "__main__", 8))
        return NULL;
    const char *colon = strchr(q, ':');
    PyObject *obj = NULL;
    int imported = 0;
    if (colon) {
        obj = resolve(sp, q, (size_t)(colon - q), colon + 1, &imported);
    } else {
        for (size_t i = strlen(q); i > 1 && !imported; i--)
            if (q[i - 1] == '.')
                obj = resolve(sp, q, i - 1, q + i, &imported);
    }
    if (obj && !PyType_Check(obj))
        Py_CLEAR(obj);
    return obj;
}

/* 1 if an annotation names a class variable (not a field). */
static int is_classvar(PyObject *ann)
{
    PyObject *text = PyUnicode_Check(ann) ? Py_NewRef(ann) : PyObject_Repr(ann);
    const char *t = text ? PyUnicode_AsUTF8(text) : NULL;
    int yes = t && (!strncmp(t, "ClassVar", 8) || !strncmp(t, "typing.ClassVar", 15));
    Py_XDECREF(text);
    PyErr_Clear();
    return yes;
}

/* The annotated field names of cls and its bases (base first), as the client
 * computes them (bettong.objects.persistent_fields): ClassVar annotations and
 * names starting with "_bt" are not fields. */
static PyObject *annotated_fields(spy_t *sp, PyObject *cls)
{
    PyObject *names = PyList_New(0);
    PyObject *mro = ((PyTypeObject *)cls)->tp_mro; /* borrowed */
    for (Py_ssize_t i = mro ? PyTuple_GET_SIZE(mro) - 1 : -1; names && i >= 0; i--) {
        PyObject *d = ((PyTypeObject *)PyTuple_GET_ITEM(mro, i))->tp_dict; /* borrowed */
        PyObject *ann = d ? PyDict_GetItemWithError(d, sp->s_annotations) : NULL;
        if (!ann || !PyDict_Check(ann))
            continue;
        PyObject *k, *v;
        Py_ssize_t pos = 0;
        while (names && PyDict_Next(ann, &pos, &k, &v)) {
            if (!PyUnicode_Check(k) || PyUnicode_Tailmatch(k, sp->s_bt, 0, 3, -1) == 1 ||
                is_classvar(v))
                continue;
            int has = PySequence_Contains(names, k);
            if (has < 0 || (has == 0 && PyList_Append(names, k) < 0))
                Py_CLEAR(names);
        }
    }
    PyErr_Clear();
    PyObject *t = names ? PyList_AsTuple(names) : NULL;
    Py_XDECREF(names);
    return t;
}

/* Read a class's record from LMDB: qualname and pickle as new objects. */
static int read_class(spy_t *sp, uint64_t cid, PyObject **qualname, PyObject **pickle)
{
    sdb_read_t r;
    const char *q;
    const uint8_t *p;
    size_t qn, pn;
    int rc = sdb_read_begin(sp->db, &r);
    if (rc == SDB_OK)
        rc = sdb_get_class(&r, cid, &q, &qn, &p, &pn);
    if (rc == SDB_OK) {
        *qualname = PyUnicode_DecodeUTF8(q, (Py_ssize_t)qn, "replace");
        *pickle = PyBytes_FromStringAndSize((const char *)p, (Py_ssize_t)pn);
        if (!*qualname || !*pickle)
            rc = SDB_ERROR;
    }
    sdb_read_end(&r);
    if (rc == SDB_NOTFOUND)
        PyErr_Format(PyExc_LookupError, "class id %llu is not registered",
                     (unsigned long long)cid);
    else if (rc && !PyErr_Occurred())
        PyErr_SetString(PyExc_RuntimeError, "storage failure reading a class");
    return rc;
}

static void class_flags(spy_t *sp, sclass_t *c);

static sclass_t *class_get(spy_t *sp, uint64_t cid)
{
    sclass_t *c = idmap_get(&sp->classes, cid);
    if (c)
        return c;
    PyObject *qualname = NULL, *pickle = NULL, *cls = NULL;
    if (read_class(sp, cid, &qualname, &pickle) == SDB_OK) {
        const char *q = PyUnicode_AsUTF8(qualname);
        cls = q ? import_qualname(sp, q) : NULL;
        if (!cls)
            cls = loads_bytes(sp, pickle, 1);
        if (cls && !PyType_Check(cls)) {
            PyErr_Format(PyExc_TypeError, "class id %llu (%s) did not unpickle to a class",
                         (unsigned long long)cid, q ? q : "?");
            Py_CLEAR(cls);
        }
    }
    PyObject *ann = cls ? annotated_fields(sp, cls) : NULL;
    /* Loading ran Python, which lets other threads run: one of them may have
     * loaded this class meanwhile. Its record stays the class's (replacing it
     * would leak it and split the kinds' statistics between two records). */
    sclass_t *other = ann ? idmap_get(&sp->classes, cid) : NULL;
    if (other) {
        Py_DECREF(cls);
        Py_DECREF(ann);
        Py_XDECREF(qualname);
        Py_XDECREF(pickle);
        return other;
    }
    c = ann ? calloc(1, sizeof *c) : NULL;
    if (c && idmap_put(&sp->classes, cid, c) == 0) {
        c->class_id = cid;
        c->cls = cls;
        c->annotated = ann;
        class_flags(sp, c);
        if (!idmap_get(&sp->types, (uint64_t)(uintptr_t)cls))
            idmap_put(&sp->types, (uint64_t)(uintptr_t)cls, c); /* best effort */
        log_debug("store: class %llu is %s", (unsigned long long)cid,
                  ((PyTypeObject *)cls)->tp_name);
    } else {
        if (ann && !PyErr_Occurred())
            PyErr_NoMemory();
        free(c);
        c = NULL;
        Py_XDECREF(cls);
        Py_XDECREF(ann);
    }
    Py_XDECREF(qualname);
    Py_XDECREF(pickle);
    return c;
}

/* ------------------------------------------------------------ request kinds */

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* This thread's CPU time and voluntary context switches so far. */
typedef struct {
    uint64_t cpu_us;
    long waits;
} tusage_t;

static tusage_t thread_usage(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_THREAD, &ru) < 0)
        return (tusage_t){0, 0};
    return (tusage_t){(uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000u +
                          (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec),
                      ru.ru_nvcsw};
}

/* A run was short: at most inline_ns of CPU, and it never gave up the CPU
 * (sleep, I/O, a lock, the GIL: a voluntary context switch). Being preempted
 * does not count against it. */
static int run_short(spy_t *sp, tusage_t a, tusage_t b)
{
    return b.waits == a.waits && (b.cpu_us - a.cpu_us) * 1000 <= sp->inline_ns;
}

static int has_kind(uint8_t type)
{
    return type == SMSG_CALL || type == SMSG_GET_FIELD || type == SMSG_SET_FIELD;
}

static mstat_t *stat_find(sclass_t *c, const sreq_t *r)
{
    for (mstat_t *m = c->stats; m; m = m->next)
        if (m->type == r->type && m->namelen == r->namelen &&
            memcmp(m->text, r->name, r->namelen) == 0)
            return m;
    return NULL;
}

/* The request's kind, made on first use (NULL past STATS_MAX or out of memory:
 * no exception). */
static mstat_t *stat_get(sclass_t *c, const sreq_t *r)
{
    mstat_t *m = stat_find(c, r);
    if (m || c->nstats >= STATS_MAX)
        return m;
    PyObject *name = PyUnicode_DecodeUTF8(r->name, (Py_ssize_t)r->namelen, "strict");
    m = name ? calloc(1, sizeof *m + r->namelen) : NULL;
    if (!m) {
        Py_XDECREF(name);
        PyErr_Clear();
        return NULL;
    }
    PyUnicode_InternInPlace(&name);
    m->name = name;
    m->type = r->type;
    m->namelen = r->namelen;
    memcpy(m->text, r->name, r->namelen);
    m->next = c->stats;
    c->stats = m;
    c->nstats++;
    return m;
}

static void stats_free(sclass_t *c)
{
    while (c->stats) {
        mstat_t *m = c->stats;
        c->stats = m->next;
        Py_XDECREF(m->name);
        free(m);
    }
    c->nstats = 0;
}

/* ------------------------------------------------------------ state */

/* The persistent fields: the state's keys, then annotated names not among them. */
static PyObject *fields_of(PyObject *state, sclass_t *c, PyObject *extra)
{
    PyObject *names = PyDict_Keys(state);
    Py_ssize_t n = c->annotated ? PyTuple_GET_SIZE(c->annotated) : 0;
    for (Py_ssize_t i = 0; names && i < n; i++) {
        PyObject *a = PyTuple_GET_ITEM(c->annotated, i);
        if (!PyDict_Contains(state, a) && PyList_Append(names, a) < 0)
            Py_CLEAR(names);
    }
    if (names && extra) {
        int has = PySequence_Contains(names, extra);
        if (has < 0 || (has == 0 && PyList_Append(names, extra) < 0))
            Py_CLEAR(names);
    }
    PyObject *t = names ? PyList_AsTuple(names) : NULL;
    Py_XDECREF(names);
    return t;
}

/* {field: value} for the persistent fields the instance has. */
static PyObject *persistent_dict(reg_t *e)
{
    PyObject *d = instance_dict(e->obj);
    PyObject *out = d ? PyDict_New() : NULL;
    for (Py_ssize_t i = 0; out && i < PyTuple_GET_SIZE(e->fields); i++) {
        PyObject *k = PyTuple_GET_ITEM(e->fields, i);
        PyObject *v = PyDict_GetItemWithError(d, k);
        if ((!v && PyErr_Occurred()) || (v && PyDict_SetItem(out, k, v) < 0))
            Py_CLEAR(out);
    }
    Py_XDECREF(d);
    return out;
}

/* ------------------------------------------------------------ changes */

/* An atom, or a tuple of at most FLAT_MAX atoms: nothing in it can change. */
static int is_immutable(PyObject *v)
{
    if (is_atom(v))
        return 1;
    if (Py_TYPE(v) != &PyTuple_Type || PyTuple_GET_SIZE(v) > FLAT_MAX)
        return 0;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(v); i++)
        if (!is_atom(PyTuple_GET_ITEM(v, i)))
            return 0;
    return 1;
}

/* e->state was just pickled from `pd` (persistent_dict): remember its values
 * if they are all immutable. */
static void snap_take(spy_t *sp, reg_t *e, PyObject *pd)
{
    Py_CLEAR(e->snap);
    Py_CLEAR(e->snap_fields);
    if (e->cls->getstate || !PyDict_Check(pd))
        return; /* __getstate__ may read anything: always pickle and compare */
    Py_ssize_t n = PyTuple_GET_SIZE(e->fields);
    PyObject *t = PyTuple_New(n);
    for (Py_ssize_t i = 0; t && i < n; i++) {
        PyObject *v = PyDict_GetItemWithError(pd, PyTuple_GET_ITEM(e->fields, i));
        if (!v && !PyErr_Occurred())
            v = sp->absent;
        if (!v || !is_immutable(v)) {
            Py_CLEAR(t);
            break;
        }
        PyTuple_SET_ITEM(t, i, Py_NewRef(v));
    }
    PyErr_Clear();
    if (t) {
        e->snap = t;
        e->snap_fields = Py_NewRef(e->fields);
    }
}

/* 1 if every persistent field still holds the very (immutable) object it held
 * when e->state was pickled: the state would pickle to the same bytes, so
 * nothing changed. 0: it may have changed (pickle and compare). */
static int snap_unchanged(spy_t *sp, reg_t *e)
{
    if (!e->snap || e->snap_fields != e->fields)
        return 0;
    PyObject *d = instance_dict(e->obj);
    int same = d != NULL;
    for (Py_ssize_t i = 0; same && i < PyTuple_GET_SIZE(e->fields); i++) {
        PyObject *v = PyDict_GetItemWithError(d, PyTuple_GET_ITEM(e->fields, i));
        same = (v ? v : PyErr_Occurred() ? NULL : sp->absent) == PyTuple_GET_ITEM(e->snap, i);
    }
    Py_XDECREF(d);
    PyErr_Clear();
    return same;
}

/* Put the stored state back into the instance (after a failed call). */
static int restore_custom(spy_t *sp, reg_t *e);

static void restore(spy_t *sp, reg_t *e)
{
    if (e->cls->getstate || e->cls->setstate) {
        if (restore_custom(sp, e) < 0) {
            char *tb = py_take_traceback();
            log_error("store: object %s could not be restored after a failed call:\n%s",
                      e->node.id, tb);
            free(tb);
        }
        return;
    }
    if (snap_unchanged(sp, e))
        return; /* the call changed no persistent field */
    PyObject *st = loads_bytes(sp, e->state, 0);
    PyObject *d = st && PyDict_Check(st) ? instance_dict(e->obj) : NULL;
    int ok = d != NULL;
    for (Py_ssize_t i = 0; ok && i < PyTuple_GET_SIZE(e->fields); i++) {
        PyObject *k = PyTuple_GET_ITEM(e->fields, i);
        PyObject *v = PyDict_GetItemWithError(st, k);
        if (v)
            ok = PyDict_SetItem(d, k, v) == 0;
        else if (!PyErr_Occurred() && PyDict_Contains(d, k) == 1)
            ok = PyDict_DelItem(d, k) == 0;
        else
            ok = !PyErr_Occurred();
    }
    if (!ok) {
        char *tb = py_take_traceback();
        log_error("store: object %s could not be restored after a failed call:\n%s",
                  e->node.id, tb);
        free(tb);
    }
    Py_XDECREF(d);
    Py_XDECREF(st);
}

/* ------------------------------------------------------------ registry */

static void reg_free(reg_t *e)
{
    Py_XDECREF(e->replicas);
    Py_XDECREF(e->obj);
    Py_XDECREF(e->state);
    Py_XDECREF(e->fields);
    Py_XDECREF(e->snap);
    Py_XDECREF(e->snap_fields);
    free(e);
}

/* Remove a live entry from the registry (the object lives on while referenced). */
static void reg_evict(spy_t *sp, reg_t *e)
{
    omap_del(&sp->objs, &e->node);
    rlist_remove(&sp->lru, e);
    sp->live--;
    reg_free(e);
}

static void tomb_drop(spy_t *sp, reg_t *e)
{
    omap_del(&sp->objs, &e->node);
    rlist_remove(&sp->tombs, e);
    free(e);
}

static int read_object(spy_t *sp, const char *id, size_t n, uint64_t *cid, PyObject **state)
{
    sdb_read_t r;
    const uint8_t *p;
    size_t len;
    int rc = sdb_read_begin(sp->db, &r);
    if (rc == SDB_OK)
        rc = sdb_get_object(&r, id, n, cid, &p, &len);
    if (rc == SDB_OK && !(*state = PyBytes_FromStringAndSize((const char *)p, (Py_ssize_t)len)))
        rc = SDB_ERROR;
    sdb_read_end(&r);
    if (rc == SDB_ERROR && !PyErr_Occurred())
        PyErr_SetString(PyExc_RuntimeError, "storage failure reading an object");
    return rc;
}

/* Fill a fresh entry's object from its stored state. */
static int state_apply(spy_t *sp, reg_t *e, PyObject *st);
static PyObject *state_value(spy_t *sp, reg_t *e);

static int reg_fill(spy_t *sp, reg_t *e)
{
    PyObject *st = loads_bytes(sp, e->state, 0);
    int ok = st && state_apply(sp, e, st) == 0 &&
             (e->fields = PyDict_Check(st) ? fields_of(st, e->cls, NULL)
                                           : Py_NewRef(e->cls->annotated));
    Py_XDECREF(st);
    if (!ok)
        return -1;
    /* Our own pickle of it, so an unchanged object pickles to equal bytes. */
    PyObject *pd = state_value(sp, e);
    PyObject *mine = pd ? dumps(sp, pd) : NULL;
    if (mine) {
        Py_SETREF(e->state, mine);
        snap_take(sp, e, pd);
    }
    Py_XDECREF(pd);
    PyErr_Clear();
    return 0;
}

/* Whether id is a replica here, and (a master) the backends holding its
 * replicas: NULL for none, else a new tuple. -1 with an exception. */
static int read_replication(spy_t *sp, const char *id, size_t n, int *replica, PyObject **replicas)
{
    sdb_read_t r;
    buf_t names;
    buf_init(&names);
    uint32_t count = 0;
    *replica = 0;
    *replicas = NULL;
    int rc = sdb_read_begin(sp->db, &r);
    if (rc == SDB_OK) {
        *replica = sdb_replica_master(&r, id, n, NULL) == SDB_OK;
        rc = sdb_list_replicas(&r, id, n, &names, &count);
    }
    sdb_read_end(&r);
    if (rc == SDB_OK && count)
        *replicas = PyTuple_New(count);
    const uint8_t *p = buf_head(&names);
    for (uint32_t i = 0; *replicas && i < count; i++) {
        size_t len = (size_t)p[0] << 8 | p[1];
        PyObject *b = PyUnicode_DecodeUTF8((const char *)p + 2, (Py_ssize_t)len, "replace");
        if (!b)
            Py_CLEAR(*replicas);
        else
            PyTuple_SET_ITEM(*replicas, i, b);
        p += 2 + len;
    }
    buf_free(&names);
    if (rc != SDB_OK && !PyErr_Occurred())
        PyErr_SetString(PyExc_RuntimeError, "storage failure reading an object's replicas");
    return rc == SDB_OK && (count == 0 || *replicas) ? 0 : -1;
}

/* An id not held here: a forward (status FORWARDED, t_forward set), or
 * MISSING. Requests naming it are sent on to the original (spy_run), so
 * that each object has one queue; references to it load as the original
 * (persistent_load). */
static void read_forward(spy_t *sp, const char *id, size_t n, int *status)
{
    sdb_read_t r;
    int rc = sdb_read_begin(sp->db, &r);
    if (rc == SDB_OK)
        rc = sdb_get_forward(&r, id, n, t_forward, &t_forward_len);
    sdb_read_end(&r);
    *status = rc == SDB_OK ? FORWARDED : rc == SDB_NOTFOUND ? MISSING : BROKEN;
    if (rc == SDB_ERROR)
        PyErr_SetString(PyExc_RuntimeError, "storage failure reading a forward");
}

/* ------------------------------------------------------------ moves

 * MOVE marks the object as moving (sdb `moving`, durable) before it hands it
 * over, and the delete that ends the move clears the mark. A store killed in
 * between finds the mark when it loads the object and asks the other backend:
 * holding it, the move went through (the copy here is stale: requests about it
 * go there, and a MOVE to this store finishes the move: the other backend's
 * copy is kept and this one deleted); not holding it, the move did not happen
 * (the mark goes, the object stays here). */

/* A write of its own, from a Python thread (the GIL released meanwhile):
 * marks are few and must be on disk before the hand-over. */
static int write_move_mark(spy_t *sp, const char *id, size_t n, const char *dest)
{
    int rc;
    Py_BEGIN_ALLOW_THREADS
    sdb_write_t w;
    rc = sdb_write_begin(sp->db, &w);
    if (rc == SDB_OK) {
        rc = dest ? sdb_set_moving(&w, id, n, dest, strlen(dest)) : sdb_clear_moving(&w, id, n);
        if (rc == SDB_OK)
            rc = sdb_write_commit(&w);
        else
            sdb_write_abort(&w);
    }
    Py_END_ALLOW_THREADS
    if (rc != SDB_OK)
        PyErr_SetString(PyExc_OSError, "the store could not record a move");
    return rc == SDB_OK ? 0 : -1;
}

/* 1: an interrupted move of id went through (the other backend holds it);
 * 0: no mark, or the move did not happen (the mark is cleared); -1: cannot
 * tell now (exception set). */
static int resolve_move(spy_t *sp, const char *id, size_t n)
{
    char dest[SDB_BACKEND_ID_LEN + 1];
    sdb_read_t rd;
    int rc = sdb_read_begin(sp->db, &rd);
    if (rc == SDB_OK)
        rc = sdb_get_moving(&rd, id, n, dest);
    sdb_read_end(&rd);
    if (rc == SDB_NOTFOUND || (rc == SDB_OK && !sp->move_held))
        return 0;
    if (rc != SDB_OK) {
        PyErr_SetString(PyExc_OSError, "the store could not read a move mark");
        return -1;
    }
    PyObject *held = PyObject_CallFunction(sp->move_held, "ss#", dest, id, (Py_ssize_t)n);
    int yes = held ? PyObject_IsTrue(held) : -1;
    Py_XDECREF(held);
    if (yes < 0)
        return -1;
    if (!yes) {
        log_info("store: the move of %.*s to backend %s did not reach it: the object stays "
                 "here", (int)n, id, dest);
        return write_move_mark(sp, id, n, NULL);
    }
    log_warn("store: the move of %.*s to backend %s was interrupted after it took the "
             "object: requests go there; finishing the move", (int)n, id, dest);
    PyObject *res = PyObject_CallFunction(sp->move_finish, "s#s", id, (Py_ssize_t)n, dest);
    if (!res)
        return -1;
    Py_DECREF(res);
    return 1;
}

static PyObject *attr_of(const char *module, const char *name);

/* The ids of the objects with a move mark, appended to a list. */
static int list_marked(void *ctx, const char *id, size_t idlen, const char *dest, size_t dlen)
{
    PyObject *s = PyUnicode_DecodeUTF8(id, (Py_ssize_t)idlen, "replace");
    int rc = s ? PyList_Append(ctx, s) : -1;
    Py_XDECREF(s);
    return rc < 0 ? 1 : 0;
}

/* At start, in a service: the marks a crash left are resolved as soon as the
 * store serves (bettong.objects._resolve_moves: a request about each object
 * loads it, which resolves it), not when a client happens to ask. */
static int resolve_moves_at_start(spy_t *sp)
{
    PyObject *ids = PyList_New(0);
    sdb_read_t rd;
    int rc = ids ? sdb_read_begin(sp->db, &rd) : SDB_ERROR;
    if (rc == SDB_OK) {
        rc = sdb_each_moving(&rd, list_marked, ids);
        sdb_read_end(&rd);
    }
    PyObject *res = NULL;
    if (rc == SDB_OK && PyList_GET_SIZE(ids) > 0) {
        log_info("store: %zd move(s) a stop interrupted: resolving them",
                 PyList_GET_SIZE(ids));
        PyObject *fn = attr_of("bettong.objects", "_resolve_moves");
        res = fn ? PyObject_CallOneArg(fn, ids) : NULL;
        Py_XDECREF(fn);
    } else if (rc == SDB_OK) {
        res = Py_NewRef(Py_None);
    }
    Py_XDECREF(ids);
    Py_XDECREF(res);
    return res ? 0 : -1;
}

static reg_t *reg_load(spy_t *sp, const char *id, size_t n, int *status)
{
    uint64_t cid;
    PyObject *state = NULL, *replicas = NULL;
    int replica = 0;
    int rc = read_object(sp, id, n, &cid, &state);
    *status = rc == SDB_NOTFOUND ? MISSING : BROKEN;
    if (rc == SDB_NOTFOUND)
        read_forward(sp, id, n, status);
    if (rc)
        return NULL;
    int moved = resolve_move(sp, id, n);
    if (moved < 0 || read_replication(sp, id, n, &replica, &replicas) < 0) {
        Py_DECREF(state);
        return NULL;
    }
    sclass_t *c = class_get(sp, cid);
    t_loading++; /* Persistent.__new__ here is no creation (call_created) */
    PyObject *obj = c ? PyObject_CallMethodOneArg(c->cls, sp->s_new, c->cls) : NULL;
    t_loading--;
    PyObject *d = obj ? instance_dict(obj) : NULL;
    PyObject *oid = d ? PyUnicode_DecodeUTF8(id, (Py_ssize_t)n, "strict") : NULL;
    PyObject *pcid = oid ? PyLong_FromUnsignedLongLong(cid) : NULL;
    int ok = pcid && PyDict_SetItem(d, sp->s_bettong_id, oid) == 0 &&
             PyDict_SetItem(d, sp->s_bettong_cid, pcid) == 0;
    Py_XDECREF(pcid);
    Py_XDECREF(oid);
    Py_XDECREF(d);
    reg_t *e = ok ? calloc(1, sizeof *e) : NULL;
    if (!e) {
        if (ok)
            PyErr_NoMemory();
        Py_XDECREF(obj);
        Py_DECREF(state);
        Py_XDECREF(replicas);
        return NULL;
    }
    onode_set(&e->node, id, n);
    e->obj = obj;
    e->state = state;
    e->cls = c;
    e->replica = replica;
    e->replicas = replicas;
    e->moved = moved;
    e->loading = 1;
    if (omap_add(&sp->objs, &e->node) < 0) {
        PyErr_NoMemory();
        reg_free(e);
        return NULL;
    }
    rlist_push(&sp->lru, e);
    sp->live++;
    /* Registered before its state is loaded: a cycle back to it resolves. */
    t_loading++;
    int filled = reg_fill(sp, e);
    t_loading--;
    if (filled < 0) {
        reg_evict(sp, e);
        return NULL;
    }
    e->loading = 0;
    *status = FOUND;
    return e;
}

static reg_t *reg_get(spy_t *sp, const char *id, size_t n, int *status)
{
    reg_t *e = (reg_t *)omap_get(&sp->objs, id, n);
    if (e && !e->obj) {
        if (e->tomb_seq > committer_durable(sp->cm)) {
            *status = MISSING;
            return NULL;
        }
        tomb_drop(sp, e); /* deleted on disk too */
        e = NULL;
    }
    if (!e) {
        atomic_fetch_add_explicit(&sp->loads, 1, memory_order_relaxed);
        return reg_load(sp, id, n, status);
    }
    atomic_fetch_add_explicit(&sp->hits, 1, memory_order_relaxed);
    lru_touch(sp, e);
    *status = FOUND;
    return e;
}

/* The request's object, once no other thread is still loading it. */
static reg_t *reg_target(spy_t *sp, const char *id, size_t n, int *status)
{
    reg_t *e;
    while ((e = reg_get(sp, id, n, status)) && e->loading) {
        Py_BEGIN_ALLOW_THREADS
        usleep(200);
        Py_END_ALLOW_THREADS
    }
    return e;
}

static void pending_aliases_trim(spy_t *sp, uint64_t durable);

void spy_trim(spy_t *sp)
{
    uint64_t durable = committer_durable(sp->cm);
    pending_aliases_trim(sp, durable);
    while (sp->tombs.tail && sp->tombs.tail->tomb_seq <= durable)
        tomb_drop(sp, sp->tombs.tail);
    reg_t *e = sp->lru.tail;
    for (int scanned = 0; e && sp->live > sp->cache && scanned < TRIM_SCAN; scanned++) {
        reg_t *prev = e->prev;
        if (!e->loading && !e->fresh && Py_REFCNT(e->obj) == 1 && e->write_seq <= durable)
            reg_evict(sp, e);
        e = prev;
    }
    atomic_store_explicit(&sp->live_pub, sp->live, memory_order_relaxed);
}

void spy_cache_stats(const spy_t *sp, uint64_t *hits, uint64_t *loads, uint64_t *live)
{
    *hits = atomic_load_explicit(&sp->hits, memory_order_relaxed);
    *loads = atomic_load_explicit(&sp->loads, memory_order_relaxed);
    *live = atomic_load_explicit(&sp->live_pub, memory_order_relaxed);
}

void spy_unload(spy_t *sp, buf_t *answer, uint64_t req)
{
    uint64_t durable = committer_durable(sp->cm);
    size_t dropped = 0, before;
    do { /* dropping a referrer can leave what it held unreferenced */
        before = dropped;
        for (reg_t *e = sp->lru.tail, *prev; e; e = prev) {
            prev = e->prev;
            if (!e->loading && !e->fresh && Py_REFCNT(e->obj) == 1 && e->write_seq <= durable) {
                reg_evict(sp, e);
                dropped++;
            }
        }
    } while (dropped > before);
    PyObject *n = PyLong_FromSize_t(dropped);
    PyObject *b = n ? dumps(sp, n) : NULL;
    Py_XDECREF(n);
    if (b)
        sreply_ok(answer, req, PyBytes_AS_STRING(b), (size_t)PyBytes_GET_SIZE(b));
    else
        sreply_failed(answer, req, STORE_ERR_INTERNAL, "out of memory");
    Py_XDECREF(b);
    PyErr_Clear();
}

size_t spy_cached(const spy_t *sp) { return sp->live; }

/* ------------------------------------------------------------ answers */

static void answer_internal(sreq_t *r, const char *what)
{
    char *summary = py_exception_summary();
    char *tb = py_take_traceback();
    log_warn("store: %s (object %.*s): %s", what, (int)r->oidlen, r->oid, tb);
    sreply_failed(&r->answer, r->id, STORE_ERR_INTERNAL, "%s: %s", what, summary);
    free(summary);
    free(tb);
}

/* "module.Qualname" of the exception's type ("ValueError" for builtins). */
static PyObject *type_name(spy_t *sp, PyObject *type)
{
    PyObject *mod = PyObject_GetAttr(type, sp->s_module);
    PyObject *qn = PyObject_GetAttr(type, sp->s_qualname);
    PyObject *out = NULL;
    if (qn && mod && PyUnicode_Check(mod) && PyUnicode_CompareWithASCIIString(mod, "builtins"))
        out = PyUnicode_FromFormat("%U.%U", mod, qn);
    else if (qn)
        out = Py_NewRef(qn);
    PyErr_Clear();
    Py_XDECREF(mod);
    Py_XDECREF(qn);
    return out ? out : PyUnicode_FromString(((PyTypeObject *)type)->tp_name);
}

/* The current exception as RAISED: (exception or None, type, message, traceback). */
static void answer_raised(spy_t *sp, sreq_t *r)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb && value)
        PyException_SetTraceback(value, tb);
    PyObject *tname = type_name(sp, type);
    PyObject *msg = value ? PyObject_Str(value) : NULL;
    if (!msg) {
        PyErr_Clear();
        msg = PyUnicode_FromString("");
    }
    Py_XINCREF(type);
    Py_XINCREF(value);
    Py_XINCREF(tb);
    PyErr_Restore(type, value, tb);
    char *text = py_take_traceback();
    PyObject *tbtext = PyUnicode_DecodeUTF8(text, (Py_ssize_t)strlen(text), "replace");
    free(text);
    PyObject *t = Py_BuildValue("(OOOO)", value ? value : Py_None, tname, msg, tbtext);
    PyObject *b = t ? dumps(sp, t) : NULL;
    if (!b) {
        PyErr_Clear();
        Py_XDECREF(t);
        t = Py_BuildValue("(OOOO)", Py_None, tname, msg, tbtext);
        b = t ? dumps(sp, t) : NULL;
    }
    if (b)
        sreply_raised(&r->answer, r->id, PyBytes_AS_STRING(b), (size_t)PyBytes_GET_SIZE(b));
    else
        answer_internal(r, "the exception could not be pickled");
    Py_XDECREF(b);
    Py_XDECREF(t);
    Py_XDECREF(tbtext);
    Py_XDECREF(msg);
    Py_XDECREF(tname);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
}

/* An AttributeError from looking up a method or field: NO_ATTRIBUTE with its
 * text; anything else raised there: RAISED. */
static void answer_lookup_error(spy_t *sp, sreq_t *r)
{
    if (!PyErr_ExceptionMatches(PyExc_AttributeError)) {
        answer_raised(sp, r);
        return;
    }
    char *summary = py_exception_summary(); /* "AttributeError: text" */
    const char *text = strncmp(summary, "AttributeError: ", 16) == 0 ? summary + 16 : summary;
    PyErr_Clear();
    sreply_failed(&r->answer, r->id, STORE_ERR_NO_ATTRIBUTE, "%s", text);
    free(summary);
}

/* Arguments that would not unpickle: a reference to a missing object is
 * NOT_FOUND, anything else BAD_REQUEST. */
static void answer_bad_payload(spy_t *sp, sreq_t *r, const char *what)
{
    int missing = PyErr_ExceptionMatches(sp->MissingObject);
    char *summary = py_exception_summary();
    PyErr_Clear();
    sreply_failed(&r->answer, r->id, missing ? STORE_ERR_NOT_FOUND : STORE_ERR_BAD_REQUEST,
                  "%s: %s", what, summary);
    free(summary);
}

static void answer_pickled(spy_t *sp, sreq_t *r, PyObject *value)
{
    PyObject *b = dumps(sp, value);
    if (b)
        sreply_ok(&r->answer, r->id, PyBytes_AS_STRING(b), (size_t)PyBytes_GET_SIZE(b));
    else
        answer_internal(r, "the result could not be pickled");
    Py_XDECREF(b);
}

/* ------------------------------------------------------------ writes */

/* Hand the request's unit (nops ops at ops) to the committer: the answer in
 * r->answer goes once the unit is on disk, and from now on the run touches
 * neither (spy.h). The unit's sequence number. */
static uint64_t unit_submit(spy_t *sp, sreq_t *r, wop_t *ops, size_t nops)
{
    r->unit.ops = ops;
    r->unit.nops = nops;
    r->write_seq = committer_submit(sp->cm, &r->unit);
    return r->write_seq;
}

/* The request changed the object (maybe): pickle its persistent fields; if they
 * differ from the stored state, the answer in r->answer goes with a unit that
 * writes them. Returns 0, or -1 (state not picklable: object restored, the
 * answer replaced by FAILED). */
static int call_pending(void);
static int write_many(spy_t *sp, sreq_t *r, reg_t *e, PyObject *b, PyObject *pd, PyObject *drops);
static void call_discard(spy_t *sp);
static PyObject *replicas_push(spy_t *sp, reg_t *e, PyObject *b);
static void replicas_forget(reg_t *e, PyObject *drops);

static int write_back(spy_t *sp, sreq_t *r, reg_t *e)
{
    if (snap_unchanged(sp, e))
        return call_pending() ? write_many(sp, r, e, NULL, NULL, NULL) : 0; /* else read-only */
    PyObject *pd = state_value(sp, e);
    PyObject *b = pd ? dumps(sp, pd) : NULL;
    if (!b) {
        Py_XDECREF(pd);
        buf_clear(&r->answer);
        answer_internal(r, "the object's state could not be pickled (the change is undone)");
        call_discard(sp);
        restore(sp, e);
        return -1;
    }
    Py_ssize_t n = PyBytes_GET_SIZE(b);
    if (n == PyBytes_GET_SIZE(e->state) &&
        memcmp(PyBytes_AS_STRING(b), PyBytes_AS_STRING(e->state), (size_t)n) == 0) {
        Py_DECREF(b);
        snap_take(sp, e, pd); /* equal values, maybe other objects */
        Py_DECREF(pd);
        return call_pending() ? write_many(sp, r, e, NULL, NULL, NULL) : 0; /* else read-only */
    }
    /* Write-through: every replica holds the new state durably before this
     * backend commits it, so before the answer (sproto.h). Those that fail
     * are unlisted by this write's unit. */
    PyObject *drops = replicas_push(sp, e, b);
    if (drops && PyList_GET_SIZE(drops)) {
        int rc = write_many(sp, r, e, b, pd, drops); /* takes b and pd */
        Py_DECREF(drops);
        return rc;
    }
    Py_XDECREF(drops);
    if (call_pending())
        return write_many(sp, r, e, b, pd, NULL); /* takes b and pd */
    buf_clear(&r->unit_bytes);
    if (buf_append(&r->unit_bytes, PyBytes_AS_STRING(b), (size_t)n) < 0) {
        Py_DECREF(b);
        Py_DECREF(pd);
        buf_clear(&r->answer);
        PyErr_NoMemory();
        answer_internal(r, "out of memory (the change is undone)");
        restore(sp, e);
        return -1;
    }
    r->op = (wop_t){.kind = WOP_PUT, .id = e->node.id, .idlen = e->node.len,
                    .class_id = e->cls->class_id, .data = buf_head(&r->unit_bytes),
                    .len = (size_t)n};
    Py_SETREF(e->state, b);
    snap_take(sp, e, pd);
    Py_DECREF(pd);
    e->write_seq = unit_submit(sp, r, &r->op, 1);
    return 0;
}

/* ------------------------------------------------------------ custom state

 * A class that defines its own __getstate__ (not object's) or __setstate__
 * keeps the state pickle would: __getstate__() if it has one, else the
 * persistent fields; restored with __setstate__(state) if it has one, else the
 * (dict) state's items go into the instance dict. */

static void class_flags(spy_t *sp, sclass_t *c)
{
    PyObject *g = PyObject_GetAttr(c->cls, sp->s_getstate);
    c->getstate = g && g != sp->object_getstate;
    Py_XDECREF(g);
    c->setstate = PyObject_HasAttr(c->cls, sp->s_setstate);
    PyErr_Clear();
}

/* What is pickled as the object's stored state (new reference). */
static PyObject *state_value(spy_t *sp, reg_t *e)
{
    if (!e->cls->getstate)
        return persistent_dict(e);
    return PyObject_CallMethodNoArgs(e->obj, sp->s_getstate);
}

/* Give a (new or cleared) object its state. */
static int state_apply(spy_t *sp, reg_t *e, PyObject *st)
{
    if (e->cls->setstate) {
        PyObject *r = PyObject_CallMethodOneArg(e->obj, sp->s_setstate, st);
        Py_XDECREF(r);
        return r ? 0 : -1;
    }
    if (!PyDict_Check(st)) {
        PyErr_Format(PyExc_TypeError, "the stored state of %s is not a dict (and its class "
                     "has no __setstate__)", e->node.id);
        return -1;
    }
    PyObject *d = instance_dict(e->obj);
    int rc = d ? PyDict_Update(d, st) : -1;
    Py_XDECREF(d);
    return rc;
}

/* After a failed call, a custom-state object becomes what loading its stored
 * state makes: its instance dict emptied (but its id), then state_apply. */
static int restore_custom(spy_t *sp, reg_t *e)
{
    PyObject *st = loads_bytes(sp, e->state, 0);
    PyObject *d = st ? instance_dict(e->obj) : NULL;
    PyObject *oid = d ? PyDict_GetItemWithError(d, sp->s_bettong_id) : NULL;
    PyObject *cid = d ? PyDict_GetItemWithError(d, sp->s_bettong_cid) : NULL;
    Py_XINCREF(oid);
    Py_XINCREF(cid);
    int rc = -1;
    if (oid && cid) {
        PyDict_Clear(d);
        if (PyDict_SetItem(d, sp->s_bettong_id, oid) == 0 &&
            PyDict_SetItem(d, sp->s_bettong_cid, cid) == 0) {
            t_loading++;
            rc = state_apply(sp, e, st);
            t_loading--;
        }
    }
    Py_XDECREF(oid);
    Py_XDECREF(cid);
    Py_XDECREF(d);
    Py_XDECREF(st);
    return rc;
}

/* ------------------------------------------------------------ adoption */

static void call_begin(scall_t *c)
{
    *c = (scall_t){0};
    t_call = c;
}

/* The context ends (its objects were submitted or discarded). */
static void call_end(scall_t *c)
{
    free(c->created);
    Py_XDECREF(c->aliases);
    *c = (scall_t){0};
    t_call = NULL;
}

static int call_pending(void)
{
    return t_call && (t_call->ncreated || (t_call->aliases && PyList_GET_SIZE(t_call->aliases)));
}

/* A failed call: its objects leave the registry and lose their ids, its
 * aliases are given back. */
static void call_discard(spy_t *sp)
{
    scall_t *c = t_call;
    if (!c)
        return;
    PyObject *et, *ev, *etb;
    PyErr_Fetch(&et, &ev, &etb); /* kept for the answer */
    for (size_t i = 0; i < c->ncreated; i++) {
        reg_t *e = c->created[i];
        PyObject *d = e->obj ? instance_dict(e->obj) : NULL;
        if (d) {
            PyDict_DelItem(d, sp->s_bettong_id);
            PyDict_DelItem(d, sp->s_bettong_cid);
        }
        Py_XDECREF(d);
        PyErr_Clear();
        reg_evict(sp, e);
    }
    c->ncreated = 0;
    for (Py_ssize_t i = 0; c->aliases && i < PyList_GET_SIZE(c->aliases); i++)
        PyDict_DelItem(sp->pending_aliases, PyTuple_GET_ITEM(PyList_GET_ITEM(c->aliases, i), 0));
    PyErr_Clear();
    Py_CLEAR(c->aliases);
    PyErr_Restore(et, ev, etb);
}

/* The store's class record of a Persistent class (made with bettong.objects'
 * _class_record, as a client makes it, the first time). */
static sclass_t *class_of_type(spy_t *sp, PyTypeObject *type)
{
    sclass_t *c = idmap_get(&sp->types, (uint64_t)(uintptr_t)type);
    if (c)
        return c;
    PyObject *rec = PyObject_CallOneArg(sp->class_record, (PyObject *)type);
    unsigned long long cid = 0;
    PyObject *qual, *data;
    if (!rec || !PyArg_ParseTuple(rec, "KUS", &cid, &qual, &data)) {
        Py_XDECREF(rec);
        return NULL;
    }
    c = idmap_get(&sp->classes, cid);
    if (!c) {
        PyObject *ann = annotated_fields(sp, (PyObject *)type);
        c = ann ? calloc(1, sizeof *c) : NULL;
        if (!c || idmap_put(&sp->classes, cid, c) < 0) {
            free(c);
            Py_XDECREF(ann);
            Py_DECREF(rec);
            if (!PyErr_Occurred())
                PyErr_NoMemory();
            return NULL;
        }
        c->class_id = cid;
        c->cls = Py_NewRef((PyObject *)type);
        c->annotated = ann;
        c->qualname = Py_NewRef(qual);
        c->pickle = Py_NewRef(data);
        class_flags(sp, c);
        log_debug("store: class %llu is %s (registered by the store)", cid, type->tp_name);
    }
    Py_DECREF(rec);
    if (idmap_put(&sp->types, (uint64_t)(uintptr_t)type, c) < 0) {
        PyErr_NoMemory();
        return NULL;
    }
    return c;
}

/* Give obj (an instance of a Persistent class, without an id) an id and a
 * registry entry, in the current call. The entry (borrowed) or NULL. */
static reg_t *adopt(spy_t *sp, PyObject *obj)
{
    scall_t *call = t_call;
    sclass_t *c = class_of_type(sp, Py_TYPE(obj));
    if (!c)
        return NULL;
    if (call->ncreated == call->cap) {
        size_t cap = call->cap ? call->cap * 2 : 8;
        reg_t **a = realloc(call->created, cap * sizeof *a);
        if (!a) {
            PyErr_NoMemory();
            return NULL;
        }
        call->created = a;
        call->cap = cap;
    }
    PyObject *oid = PyObject_CallNoArgs(sp->new_oid);
    Py_ssize_t n = 0;
    const char *s = oid && PyUnicode_Check(oid) ? PyUnicode_AsUTF8AndSize(oid, &n) : NULL;
    PyObject *d = s ? instance_dict(obj) : NULL;
    PyObject *pcid = d ? PyLong_FromUnsignedLongLong(c->class_id) : NULL;
    reg_t *e = pcid && n >= 1 && n <= SDB_ID_MAX ? calloc(1, sizeof *e) : NULL;
    if (e && PyDict_SetItem(d, sp->s_bettong_id, oid) == 0 &&
        PyDict_SetItem(d, sp->s_bettong_cid, pcid) == 0) {
        onode_set(&e->node, s, (size_t)n);
        e->obj = Py_NewRef(obj);
        e->cls = c;
        e->fresh = 1;
        if (omap_add(&sp->objs, &e->node) == 0) {
            rlist_push(&sp->lru, e);
            sp->live++;
            call->created[call->ncreated++] = e;
        } else {
            PyErr_NoMemory();
            reg_free(e);
            e = NULL;
        }
    } else {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_RuntimeError, "cannot give a new object an id");
        free(e);
        e = NULL;
    }
    Py_XDECREF(pcid);
    Py_XDECREF(d);
    Py_XDECREF(oid);
    return e;
}

/* An instance of a Persistent class: already persistent (a proxy, or a class
 * this registry has not met by that type) -> its reference; without an id in
 * a call -> adopted; anything else is pickled by value. */
static PyObject *other_pid(spy_t *sp, PyObject *obj)
{
    if (!sp->Persistent || !PyType_IsSubtype(Py_TYPE(obj), (PyTypeObject *)sp->Persistent))
        Py_RETURN_NONE;
    PyObject *oid = instance_id(sp, obj);
    if (oid) {
        PyObject *d = instance_dict(obj);
        PyObject *cid = d ? PyDict_GetItemWithError(d, sp->s_bettong_cid) : NULL;
        PyObject *pid = cid ? PyTuple_Pack(3, sp->tag, oid, cid) : NULL;
        Py_XDECREF(d);
        Py_DECREF(oid);
        if (!pid && !PyErr_Occurred())
            Py_RETURN_NONE;
        return pid;
    }
    if (!t_call || t_loading)
        Py_RETURN_NONE;
    reg_t *e = adopt(sp, obj);
    if (!e)
        return NULL;
    return Py_BuildValue("(Os#K)", sp->tag, e->node.id, (Py_ssize_t)e->node.len,
                         (unsigned long long)e->cls->class_id);
}

/* A new object's first state: its persistent fields (as the client's
 * make_persistent takes them: the annotated ones it has) pickled; pickling
 * may adopt more objects. */
static int fresh_fill(spy_t *sp, reg_t *e)
{
    if (!e->fields) {
        PyObject *d = instance_dict(e->obj);
        PyObject *names = d ? PyList_New(0) : NULL;
        for (Py_ssize_t i = 0; names && i < PyTuple_GET_SIZE(e->cls->annotated); i++) {
            PyObject *k = PyTuple_GET_ITEM(e->cls->annotated, i);
            int has = PyDict_Contains(d, k);
            if (has < 0 || (has && PyList_Append(names, k) < 0))
                Py_CLEAR(names);
        }
        e->fields = names ? PyList_AsTuple(names) : NULL;
        Py_XDECREF(names);
        Py_XDECREF(d);
        if (!e->fields)
            return -1;
    }
    PyObject *pd = state_value(sp, e);
    PyObject *b = pd ? dumps(sp, pd) : NULL;
    if (b) {
        Py_XSETREF(e->state, b);
        snap_take(sp, e, pd);
    }
    Py_XDECREF(pd);
    return b ? 0 : -1;
}

/* ------------------------------------------------------------ the call's unit */

/* Bytes laid out after the ops in the unit's buffer. */
typedef struct {
    uint8_t *base;
    size_t off;
} lay_t;

static const void *lay_copy(lay_t *l, const void *p, size_t n)
{
    uint8_t *d = l->base + l->off;
    if (n)
        memcpy(d, p, n);
    l->off += n;
    return d;
}

static int class_listed(reg_t **created, size_t upto, sclass_t *c)
{
    for (size_t i = 0; i < upto; i++)
        if (created[i]->cls == c)
            return 1;
    return 0;
}

/* The call made objects or aliases: one unit creates the objects (and the
 * classes the store registered), writes the target's new state b (NULL:
 * unchanged) and adds the aliases; the answer goes with it. b and pd are
 * taken. Returns 0 or -1 (everything undone, the answer replaced). */
static int write_many(spy_t *sp, sreq_t *r, reg_t *e, PyObject *b, PyObject *pd, PyObject *drops)
{
    scall_t none = {0}; /* SET_FIELD, UPDATE: no call context */
    scall_t *call = t_call ? t_call : &none;
    Py_ssize_t ndrops = drops ? PyList_GET_SIZE(drops) : 0;
    /* the target's op lays out its id and its state */
    size_t i, nops = b != NULL, bytes = b ? e->node.len + (size_t)PyBytes_GET_SIZE(b) : 0;
    for (Py_ssize_t d = 0; d < ndrops; d++) {
        Py_ssize_t bl;
        if (!PyUnicode_AsUTF8AndSize(PyList_GET_ITEM(drops, d), &bl))
            goto fail;
        nops++;
        bytes += e->node.len + (size_t)bl;
    }
    for (i = 0; i < call->ncreated; i++) { /* grows while states adopt objects */
        if (fresh_fill(sp, call->created[i]) < 0)
            goto fail;
    }
    for (i = 0; i < call->ncreated; i++) {
        reg_t *n = call->created[i];
        nops++;
        bytes += n->node.len + (size_t)PyBytes_GET_SIZE(n->state);
        if (n->cls->pickle && !class_listed(call->created, i, n->cls)) {
            Py_ssize_t ql;
            if (!PyUnicode_AsUTF8AndSize(n->cls->qualname, &ql))
                goto fail;
            nops++;
            bytes += (size_t)ql + (size_t)PyBytes_GET_SIZE(n->cls->pickle);
        }
    }
    Py_ssize_t nal = call->aliases ? PyList_GET_SIZE(call->aliases) : 0;
    for (Py_ssize_t k = 0; k < nal; k++) {
        PyObject *t = PyList_GET_ITEM(call->aliases, k);
        Py_ssize_t al, il;
        if (!PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(t, 0), &al) ||
            !PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(t, 1), &il))
            goto fail;
        nops++;
        bytes += (size_t)al + (size_t)il;
    }
    buf_clear(&r->unit_bytes);
    if (buf_reserve(&r->unit_bytes, nops * sizeof(wop_t) + bytes) < 0) {
        PyErr_NoMemory();
        goto fail;
    }
    wop_t *ops = (wop_t *)buf_head(&r->unit_bytes);
    lay_t l = {(uint8_t *)(ops + nops), 0};
    size_t k = 0;
    for (i = 0; i < call->ncreated; i++) { /* classes first, then the objects */
        sclass_t *c = call->created[i]->cls;
        if (!c->pickle || class_listed(call->created, i, c))
            continue;
        Py_ssize_t ql;
        const char *q = PyUnicode_AsUTF8AndSize(c->qualname, &ql);
        ops[k] = (wop_t){.kind = WOP_CLASS_PUT, .class_id = c->class_id,
                         .namelen = (size_t)ql, .len = (size_t)PyBytes_GET_SIZE(c->pickle)};
        ops[k].name = lay_copy(&l, q, (size_t)ql);
        ops[k].data = lay_copy(&l, PyBytes_AS_STRING(c->pickle), ops[k].len);
        k++;
    }
    for (i = 0; i < call->ncreated; i++) {
        reg_t *n = call->created[i];
        ops[k] = (wop_t){.kind = WOP_CREATE, .idlen = n->node.len, .class_id = n->cls->class_id,
                         .len = (size_t)PyBytes_GET_SIZE(n->state)};
        ops[k].id = lay_copy(&l, n->node.id, n->node.len);
        ops[k].data = lay_copy(&l, PyBytes_AS_STRING(n->state), ops[k].len);
        k++;
    }
    if (b) {
        ops[k] = (wop_t){.kind = WOP_PUT, .idlen = e->node.len, .class_id = e->cls->class_id,
                         .len = (size_t)PyBytes_GET_SIZE(b)};
        ops[k].id = lay_copy(&l, e->node.id, e->node.len);
        ops[k].data = lay_copy(&l, PyBytes_AS_STRING(b), ops[k].len);
        k++;
    }
    for (Py_ssize_t d = 0; d < ndrops; d++) { /* replicas that missed this write */
        Py_ssize_t bl;
        const char *bid = PyUnicode_AsUTF8AndSize(PyList_GET_ITEM(drops, d), &bl);
        ops[k] = (wop_t){.kind = WOP_REPLICA_DEL, .idlen = e->node.len, .namelen = (size_t)bl};
        ops[k].id = lay_copy(&l, e->node.id, e->node.len);
        ops[k].name = lay_copy(&l, bid, (size_t)bl);
        k++;
    }
    for (Py_ssize_t a = 0; a < nal; a++) { /* after the objects they name */
        PyObject *t = PyList_GET_ITEM(call->aliases, a);
        Py_ssize_t al, il;
        const char *as = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(t, 0), &al);
        const char *is = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(t, 1), &il);
        ops[k] = (wop_t){.kind = WOP_ALIAS_ADD, .namelen = (size_t)al, .idlen = (size_t)il};
        ops[k].name = lay_copy(&l, as, (size_t)al);
        ops[k].id = lay_copy(&l, is, (size_t)il);
        k++;
    }
    r->unit_bytes.len = r->unit_bytes.off + nops * sizeof(wop_t) + l.off;
    if (b) {
        Py_SETREF(e->state, b);
        snap_take(sp, e, pd);
    }
    Py_XDECREF(pd);
    unit_submit(sp, r, ops, nops);
    if (b || ndrops)
        e->write_seq = r->write_seq;
    replicas_forget(e, drops);
    for (i = 0; i < call->ncreated; i++) {
        call->created[i]->write_seq = r->write_seq;
        call->created[i]->fresh = 0;
    }
    call->ncreated = 0;
    PyObject *seq = PyLong_FromUnsignedLongLong(r->write_seq);
    for (Py_ssize_t a = 0; seq && a < nal; a++) {
        PyObject *ent = PyDict_GetItem(sp->pending_aliases,
                                       PyTuple_GET_ITEM(PyList_GET_ITEM(call->aliases, a), 0));
        if (ent && PyList_Check(ent))
            PyList_SetItem(ent, 1, Py_NewRef(seq));
    }
    Py_XDECREF(seq);
    Py_CLEAR(call->aliases);
    PyErr_Clear();
    return 0;
fail:
    Py_XDECREF(b);
    Py_XDECREF(pd);
    buf_clear(&r->answer);
    answer_internal(r, "the objects the call made could not be stored (the call is undone)");
    call_discard(sp);
    restore(sp, e);
    return -1;
}

/* Aliases whose units are on disk are no longer pending. */
static void pending_aliases_trim(spy_t *sp, uint64_t durable)
{
    if (!sp->pending_aliases || !PyDict_GET_SIZE(sp->pending_aliases))
        return;
    PyObject *done = PyList_New(0);
    PyObject *k, *v;
    Py_ssize_t pos = 0;
    while (done && PyDict_Next(sp->pending_aliases, &pos, &k, &v)) {
        unsigned long long seq = PyLong_AsUnsignedLongLong(PyList_GET_ITEM(v, 1));
        if (seq && seq <= durable && PyList_Append(done, k) < 0)
            Py_CLEAR(done);
    }
    for (Py_ssize_t i = 0; done && i < PyList_GET_SIZE(done); i++)
        PyDict_DelItem(sp->pending_aliases, PyList_GET_ITEM(done, i));
    Py_XDECREF(done);
    PyErr_Clear();
}

/* DELETE of an object that stored objects refer to: FAILED REFERENCED now
 * (the committer checks again, for references written meanwhile). */
static int refuse_referenced(spy_t *sp, sreq_t *r, reg_t *e)
{
    sdb_read_t rd;
    uint64_t n = 0;
    if (sdb_read_begin(sp->db, &rd) == SDB_OK) {
        srefs_count(&rd, e->node.id, e->node.len, &n);
        sdb_read_end(&rd);
    }
    if (!n)
        return 0;
    sreply_failed(&r->answer, r->id, STORE_ERR_REFERENCED, STORE_REFERENCED_FMT,
                  (int)e->node.len, e->node.id, (unsigned long long)n);
    return 1;
}

/* ------------------------------------------------------------ _bettong_instore

 * The module bettong.objects uses when it runs inside the store (it imports
 * it; clients cannot): make_persistent, aliases and lookups on this store's
 * registry, with no network round trip, in the current call's unit. */

static PyObject *live_id(spy_t *sp, PyObject *obj)
{
    PyObject *oid = instance_id(sp, obj);
    if (!oid)
        PyErr_SetString(PyExc_ValueError, "the object is not persistent");
    return oid;
}

static int in_call(void) { return t_call != NULL && !t_loading; }

/* Persistent.__new__ in the store: adopt the new object in a call. */
static PyObject *mod_created(PyObject *self, PyObject *obj)
{
    if (!in_call()) /* every object made outside a call: nothing to look up */
        Py_RETURN_NONE;
    spy_t *sp = spy_of(self);
    if (!sp)
        return NULL;
    if (!sp->Persistent)
        Py_RETURN_NONE;
    PyObject *oid = instance_id(sp, obj);
    if (oid) {
        Py_DECREF(oid);
        Py_RETURN_NONE;
    }
    return adopt(sp, obj) ? Py_NewRef(Py_None) : NULL;
}

static PyObject *mod_in_call(PyObject *self, PyObject *noargs)
{
    return PyBool_FromLong(in_call());
}

/* Reserve alias for oid in the current call (AliasTaken if another object
 * has it, on disk or in a unit not on disk yet). */
static int alias_reserve(spy_t *sp, PyObject *alias, PyObject *oid)
{
    Py_ssize_t al, il;
    const char *a = PyUnicode_AsUTF8AndSize(alias, &al);
    const char *id = a ? PyUnicode_AsUTF8AndSize(oid, &il) : NULL;
    if (!id)
        return -1;
    if (al < 1 || al > SDB_ALIAS_MAX) {
        PyErr_Format(PyExc_ValueError, "an alias is 1 to %d bytes", SDB_ALIAS_MAX);
        return -1;
    }
    PyObject *ent = PyDict_GetItemWithError(sp->pending_aliases, alias);
    if (ent) {
        int same = PyUnicode_Compare(PyList_GET_ITEM(ent, 0), oid) == 0;
        if (!same)
            PyErr_Format(sp->AliasTaken, "the alias '%U' is taken", alias);
        return same ? 0 : -1;
    }
    if (PyErr_Occurred())
        return -1;
    sdb_read_t rd;
    const char *held;
    size_t hl;
    int rc = sdb_read_begin(sp->db, &rd);
    if (rc == SDB_OK)
        rc = sdb_get_alias(&rd, a, (size_t)al, &held, &hl);
    int same = rc == SDB_OK && hl == (size_t)il && memcmp(held, id, hl) == 0;
    sdb_read_end(&rd);
    if (rc == SDB_OK) {
        if (!same)
            PyErr_Format(sp->AliasTaken, "the alias '%U' is taken", alias);
        return same ? 0 : -1;
    }
    if (rc != SDB_NOTFOUND) {
        PyErr_SetString(PyExc_RuntimeError, "storage failure reading an alias");
        return -1;
    }
    scall_t *c = t_call;
    PyObject *pair = PyTuple_Pack(2, alias, oid);
    PyObject *val = Py_BuildValue("[Oi]", oid, 0);
    if (!c->aliases)
        c->aliases = PyList_New(0);
    rc = pair && val && c->aliases && PyList_Append(c->aliases, pair) == 0 &&
                 PyDict_SetItem(sp->pending_aliases, alias, val) == 0
             ? 0
             : -1;
    Py_XDECREF(pair);
    Py_XDECREF(val);
    return rc;
}

/* persist(obj, alias or None): make_persistent inside a call. */
static PyObject *mod_persist(PyObject *self, PyObject *args)
{
    spy_t *sp = spy_of(self);
    if (!sp)
        return NULL;
    PyObject *obj, *alias;
    if (!PyArg_ParseTuple(args, "OO", &obj, &alias))
        return NULL;
    if (!in_call() || !sp->Persistent) {
        PyErr_SetString(PyExc_RuntimeError, "not in a call");
        return NULL;
    }
    PyObject *oid = instance_id(sp, obj);
    if (!oid) {
        reg_t *e = adopt(sp, obj);
        if (!e)
            return NULL;
        oid = instance_id(sp, obj);
        if (!oid)
            return NULL;
    }
    int rc = alias == Py_None ? 0 : alias_reserve(sp, alias, oid);
    Py_DECREF(oid);
    return rc < 0 ? NULL : Py_NewRef(Py_None);
}

/* release(obj): inside a call, obj was made by it (adopted, not on disk):
 * it leaves the call and the registry, without its id, and the aliases the
 * call reserved for it are given back (a list of str), so that it can be
 * stored on another backend instead (make_persistent(backend_id=...)). None
 * for an object the call did not make. */
static PyObject *mod_release(PyObject *self, PyObject *obj)
{
    scall_t *c = in_call() ? t_call : NULL;
    size_t i = 0;
    while (c && i < c->ncreated && c->created[i]->obj != obj)
        i++;
    if (!c || i == c->ncreated)
        Py_RETURN_NONE;
    spy_t *sp = spy_of(self);
    if (!sp)
        return NULL;
    reg_t *e = c->created[i];
    PyObject *oid = PyUnicode_DecodeUTF8(e->node.id, (Py_ssize_t)e->node.len, "strict");
    PyObject *names = oid ? PyList_New(0) : NULL;
    Py_ssize_t n = c->aliases ? PyList_GET_SIZE(c->aliases) : 0;
    for (Py_ssize_t k = 0; names && k < n; k++) {
        PyObject *pair = PyList_GET_ITEM(c->aliases, k);
        if (PyUnicode_Compare(PyTuple_GET_ITEM(pair, 1), oid) != 0)
            continue;
        if (PyList_Append(names, PyTuple_GET_ITEM(pair, 0)) < 0 ||
            PyDict_DelItem(sp->pending_aliases, PyTuple_GET_ITEM(pair, 0)) < 0 ||
            PySequence_DelItem(c->aliases, k) < 0)
            Py_CLEAR(names);
        k--, n--;
    }
    PyObject *d = names ? instance_dict(obj) : NULL;
    int ok = d && PyDict_DelItem(d, sp->s_bettong_id) == 0 &&
             PyDict_DelItem(d, sp->s_bettong_cid) == 0;
    Py_XDECREF(d);
    Py_XDECREF(oid);
    if (!ok) {
        Py_XDECREF(names);
        return NULL;
    }
    c->created[i] = c->created[--c->ncreated];
    reg_evict(sp, e);
    return names;
}

/* add_alias(obj, alias): inside a call. */
static PyObject *mod_add_alias(PyObject *self, PyObject *args)
{
    spy_t *sp = spy_of(self);
    if (!sp)
        return NULL;
    PyObject *obj, *alias;
    if (!PyArg_ParseTuple(args, "OU", &obj, &alias))
        return NULL;
    if (!in_call()) {
        PyErr_SetString(PyExc_RuntimeError, "not in a call");
        return NULL;
    }
    PyObject *oid = live_id(sp, obj);
    int rc = oid ? alias_reserve(sp, alias, oid) : -1;
    Py_XDECREF(oid);
    return rc < 0 ? NULL : Py_NewRef(Py_None);
}

/* aliases(obj): a set: on disk, and added by this call. */
static PyObject *mod_aliases(PyObject *self, PyObject *obj)
{
    spy_t *sp = spy_of(self);
    if (!sp)
        return NULL;
    PyObject *oid = live_id(sp, obj);
    Py_ssize_t il;
    const char *id = oid ? PyUnicode_AsUTF8AndSize(oid, &il) : NULL;
    PyObject *out = id ? PySet_New(NULL) : NULL;
    if (out) {
        sdb_read_t rd;
        buf_t b;
        uint32_t n = 0;
        buf_init(&b);
        int rc = sdb_read_begin(sp->db, &rd);
        if (rc == SDB_OK && il <= SDB_ID_MAX)
            rc = sdb_list_aliases(&rd, id, (size_t)il, &b, &n);
        sdb_read_end(&rd);
        const uint8_t *p = buf_head(&b);
        for (uint32_t i = 0; out && rc == SDB_OK && i < n; i++) {
            size_t len = (size_t)p[0] << 8 | p[1];
            PyObject *s = PyUnicode_DecodeUTF8((const char *)p + 2, (Py_ssize_t)len, "replace");
            if (!s || PySet_Add(out, s) < 0)
                Py_CLEAR(out);
            Py_XDECREF(s);
            p += 2 + len;
        }
        buf_free(&b);
        scall_t *c = t_call; /* and those this call added (call_alias) */
        for (Py_ssize_t i = 0; out && c && c->aliases && i < PyList_GET_SIZE(c->aliases); i++) {
            PyObject *t = PyList_GET_ITEM(c->aliases, i);
            if (PyUnicode_Compare(PyTuple_GET_ITEM(t, 1), oid) == 0 &&
                PySet_Add(out, PyTuple_GET_ITEM(t, 0)) < 0)
                Py_CLEAR(out);
        }
    }
    Py_XDECREF(oid);
    return out;
}

static PyObject *live_object(spy_t *sp, const char *id, size_t n)
{
    int status;
    reg_t *e = n >= 1 && n <= SDB_ID_MAX ? reg_target(sp, id, n, &status) : NULL;
    if (e && !e->replica)
        return Py_NewRef(e->obj);
    if (e) /* a replica: its master's object (the caller then asks the service) */
        status = MISSING;
    if (n < 1 || n > SDB_ID_MAX || status == MISSING)
        PyErr_Format(sp->NotFound ? sp->NotFound : PyExc_LookupError, "no object with id '%.*s'",
                     (int)(n > SDB_ID_MAX ? SDB_ID_MAX : n), id);
    return NULL;
}

/* lookup_id(oid): the live object. */
static PyObject *mod_lookup_id(PyObject *self, PyObject *arg)
{
    spy_t *sp = spy_of(self);
    if (!sp)
        return NULL;
    Py_ssize_t n;
    const char *id = PyUnicode_AsUTF8AndSize(arg, &n);
    return id ? live_object(sp, id, (size_t)n) : NULL;
}

/* The object id the current call named `alias` (borrowed), or NULL. Only the
 * call's own: another call's alias is not on disk yet, and a read must not
 * see what a crash could still lose. */
static PyObject *call_alias(PyObject *alias)
{
    scall_t *c = t_call;
    for (Py_ssize_t i = 0; c && c->aliases && i < PyList_GET_SIZE(c->aliases); i++) {
        PyObject *t = PyList_GET_ITEM(c->aliases, i);
        if (PyUnicode_Compare(PyTuple_GET_ITEM(t, 0), alias) == 0)
            return PyTuple_GET_ITEM(t, 1);
    }
    PyErr_Clear();
    return NULL;
}

/* lookup_alias(alias): the live object it names (on disk, or named by this
 * call). */
static PyObject *mod_lookup_alias(PyObject *self, PyObject *alias)
{
    spy_t *sp = spy_of(self);
    if (!sp)
        return NULL;
    PyObject *oid = call_alias(alias);
    if (oid)
        return mod_lookup_id(self, oid);
    Py_ssize_t al;
    const char *a = PyErr_Occurred() ? NULL : PyUnicode_AsUTF8AndSize(alias, &al);
    if (!a)
        return NULL;
    sdb_read_t rd;
    const char *id;
    size_t n;
    char copy[SDB_ID_MAX];
    int rc = sdb_read_begin(sp->db, &rd);
    if (rc == SDB_OK)
        rc = sdb_get_alias(&rd, a, (size_t)al, &id, &n);
    if (rc == SDB_OK && n <= SDB_ID_MAX)
        memcpy(copy, id, n);
    sdb_read_end(&rd);
    if (rc == SDB_NOTFOUND) {
        PyErr_Format(sp->NotFound ? sp->NotFound : PyExc_LookupError,
                     "no object with alias '%U'", alias);
        return NULL;
    }
    if (rc || n > SDB_ID_MAX) {
        PyErr_SetString(PyExc_RuntimeError, "storage failure reading an alias");
        return NULL;
    }
    return live_object(sp, copy, n);
}

/* setup(Persistent, _class_record, _new_oid, NotFound, AliasTaken): called
 * by bettong.objects when it is imported in the store. */
static PyObject *mod_setup(PyObject *self, PyObject *args)
{
    spy_t *sp = spy_of(self);
    if (!sp)
        return NULL;
    PyObject *p, *cr, *no, *nf, *at;
    if (!PyArg_ParseTuple(args, "O!OOOO", &PyType_Type, &p, &cr, &no, &nf, &at))
        return NULL;
    Py_XSETREF(sp->Persistent, Py_NewRef(p));
    Py_XSETREF(sp->class_record, Py_NewRef(cr));
    Py_XSETREF(sp->new_oid, Py_NewRef(no));
    Py_XSETREF(sp->NotFound, Py_NewRef(nf));
    Py_XSETREF(sp->AliasTaken, Py_NewRef(at));
    Py_RETURN_NONE;
}

static PyMethodDef instore_methods[] = {
    {"setup", mod_setup, METH_VARARGS, NULL},
    {"created", mod_created, METH_O, NULL},
    {"in_call", mod_in_call, METH_NOARGS, NULL},
    {"persist", mod_persist, METH_VARARGS, NULL},
    {"release", mod_release, METH_O, NULL},
    {"add_alias", mod_add_alias, METH_VARARGS, NULL},
    {"aliases", mod_aliases, METH_O, NULL},
    {"lookup_id", mod_lookup_id, METH_O, NULL},
    {"lookup_alias", mod_lookup_alias, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

/* The module's state is a pointer to its store's spy_t (spy_of). */
static struct PyModuleDef instore_def = {
    PyModuleDef_HEAD_INIT, "_bettong_instore",
    "The store's side of bettong.objects (only inside `bettong store`).", sizeof(spy_t *),
    instore_methods, NULL, NULL, NULL, NULL,
};

/* Make _bettong_instore, pointing at sp, and importable. bettong.objects
 * calls its setup() when it is imported, which is when the first model class
 * loads (they all derive from its Persistent): nothing is imported here, so
 * start-up stays fast, and until then there is no Persistent object to adopt.
 *
 * The one singleton left: bettong.objects imports the module by name, from
 * sys.modules, which is the interpreter's, so there is one _bettong_instore,
 * and one store's Python side, per process (`bettong store` runs one). All
 * else is reached from its state. */
static int instore_init(spy_t *sp)
{
    PyObject *m = PyModule_Create(&instore_def);
    spy_t **slot = m ? PyModule_GetState(m) : NULL;
    if (!slot || PyDict_SetItemString(PyImport_GetModuleDict(), "_bettong_instore", m) < 0) {
        Py_XDECREF(m);
        return -1;
    }
    *slot = sp;
    sp->module = m;
    return 0;
}

/* ------------------------------------------------------------ requests */

/* The method or field name (new reference): the kind's interned name, or
 * decoded from the request. */
static PyObject *name_of(sreq_t *r, mstat_t *m)
{
    if (m)
        return Py_NewRef(m->name);
    return PyUnicode_DecodeUTF8(r->name, (Py_ssize_t)r->namelen, "strict");
}

/* args and kwargs (NULL: none) from a CALL's payload: a pickled (tuple, dict),
 * or nothing for no arguments. -1 with the answer written. */
static int call_args(spy_t *sp, sreq_t *r, PyObject **args, PyObject **kwargs)
{
    if (r->len == 0) { /* no arguments */
        *args = Py_NewRef(sp->no_args);
        *kwargs = NULL;
        return 0;
    }
    PyObject *t = loads(sp, r->payload, r->len, 1);
    if (!t) {
        answer_bad_payload(sp, r, "the arguments could not be unpickled");
        return -1;
    }
    if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) != 2 || !PyTuple_Check(PyTuple_GET_ITEM(t, 0)) ||
        !PyDict_Check(PyTuple_GET_ITEM(t, 1))) {
        Py_DECREF(t);
        sreply_failed(&r->answer, r->id, STORE_ERR_BAD_REQUEST,
                      "CALL arguments must be a pickled (tuple, dict)");
        return -1;
    }
    *args = Py_NewRef(PyTuple_GET_ITEM(t, 0));
    *kwargs = Py_NewRef(PyTuple_GET_ITEM(t, 1));
    Py_DECREF(t);
    return 0;
}

/* An `async def` active method's coroutine, run to its end on this thread (an
 * event loop of its own, asyncio.run): the call's outcome is the coroutine's,
 * and the object stays locked for the whole of it, as for any call. Steals
 * coro; new reference or NULL. */
static PyObject *run_coroutine(spy_t *sp, PyObject *coro)
{
    if (!sp->asyncio_run && !(sp->asyncio_run = attr_of("asyncio", "run"))) {
        Py_DECREF(coro);
        return NULL;
    }
    PyObject *res = PyObject_CallOneArg(sp->asyncio_run, coro);
    Py_DECREF(coro);
    return res;
}

static void run_call(spy_t *sp, sreq_t *r, reg_t *e, mstat_t *m)
{
    PyObject *name = name_of(r, m);
    PyObject *meth = name ? PyObject_GenericGetAttr(e->obj, name) : NULL;
    Py_XDECREF(name);
    if (!meth) {
        answer_lookup_error(sp, r);
        return;
    }
    PyObject *args, *kwargs;
    if (call_args(sp, r, &args, &kwargs) < 0) {
        Py_DECREF(meth);
        return;
    }
    scall_t call = {0};
    call_begin(&call);
    PyObject *res;
    if (PyTuple_GET_SIZE(args) == 0 && (!kwargs || PyDict_GET_SIZE(kwargs) == 0))
        res = PyObject_CallNoArgs(meth);
    else
        res = PyObject_Call(meth, args, kwargs && PyDict_GET_SIZE(kwargs) ? kwargs : NULL);
    if (res && PyCoro_CheckExact(res))
        res = run_coroutine(sp, res);
    Py_DECREF(meth);
    Py_DECREF(args);
    Py_XDECREF(kwargs);
    if (!res) {
        call_discard(sp);
        call_end(&call);
        answer_raised(sp, r);
        restore(sp, e);
        return;
    }
    PyObject *b = dumps(sp, res); /* may adopt new objects: they travel as references */
    Py_DECREF(res);
    if (!b) {
        call_discard(sp);
        call_end(&call);
        answer_internal(r, "the result could not be pickled (the call is undone)");
        restore(sp, e);
        return;
    }
    int ok = sreply_ok(&r->answer, r->id, PyBytes_AS_STRING(b), (size_t)PyBytes_GET_SIZE(b));
    Py_DECREF(b);
    if (ok < 0) {
        call_discard(sp);
        call_end(&call);
        restore(sp, e);
        return; /* out of memory: the caller answers */
    }
    write_back(sp, r, e);
    call_end(&call);
}

static void run_get_field(spy_t *sp, sreq_t *r, reg_t *e, mstat_t *m)
{
    PyObject *name = name_of(r, m);
    PyObject *v = name ? PyObject_GenericGetAttr(e->obj, name) : NULL;
    Py_XDECREF(name);
    if (!v) {
        answer_lookup_error(sp, r);
        return;
    }
    answer_pickled(sp, r, v);
    Py_DECREF(v);
}

/* Make `name` persistent from now on (a field set explicitly). */
static int add_field(reg_t *e, PyObject *name)
{
    int has = PySequence_Contains(e->fields, name);
    if (has != 0)
        return has < 0 ? -1 : 0;
    PyObject *t = PyTuple_Pack(1, name);
    PyObject *n = t ? PySequence_Concat(e->fields, t) : NULL;
    Py_XDECREF(t);
    if (!n)
        return -1;
    Py_SETREF(e->fields, n);
    return 0;
}

static void run_set_field(spy_t *sp, sreq_t *r, reg_t *e, mstat_t *m)
{
    PyObject *v = loads(sp, r->payload, r->len, 1);
    if (!v) {
        answer_bad_payload(sp, r, "the value could not be unpickled");
        return;
    }
    PyObject *name = name_of(r, m);
    int rc = name ? PyObject_GenericSetAttr(e->obj, name, v) : -1;
    if (rc == 0)
        rc = add_field(e, name);
    Py_XDECREF(name);
    Py_DECREF(v);
    if (rc < 0) {
        answer_lookup_error(sp, r);
        restore(sp, e);
        return;
    }
    if (sreply_none(&r->answer, r->id) == 0)
        write_back(sp, r, e);
}

static void run_update(spy_t *sp, sreq_t *r, reg_t *e)
{
    PyObject *d = loads(sp, r->payload, r->len, 1);
    if (!d || !PyDict_Check(d)) {
        if (d)
            PyErr_SetString(PyExc_TypeError, "UPDATE takes a pickled dict");
        answer_bad_payload(sp, r, "the new state could not be used");
        Py_XDECREF(d);
        return;
    }
    PyObject *k, *v;
    Py_ssize_t pos = 0;
    int rc = 0;
    while (rc == 0 && PyDict_Next(d, &pos, &k, &v)) {
        rc = PyUnicode_Check(k) ? PyObject_GenericSetAttr(e->obj, k, v) : -1;
        if (rc == 0)
            rc = add_field(e, k);
        else if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "field names must be str");
    }
    Py_DECREF(d);
    if (rc < 0) {
        answer_raised(sp, r);
        restore(sp, e);
        return;
    }
    if (sreply_none(&r->answer, r->id) == 0)
        write_back(sp, r, e);
}

/* The entry becomes a tombstone until the unit seq that deletes it is on disk. */
static void reg_tombstone(spy_t *sp, reg_t *e, uint64_t seq)
{
    rlist_remove(&sp->lru, e);
    sp->live--;
    Py_CLEAR(e->obj);
    Py_CLEAR(e->state);
    Py_CLEAR(e->fields);
    Py_CLEAR(e->snap);
    Py_CLEAR(e->snap_fields);
    Py_CLEAR(e->replicas);
    e->tomb_seq = seq;
    rlist_push(&sp->tombs, e);
}

static void replicas_drop_all(spy_t *sp, reg_t *e);
static void run_forward(spy_t *sp, sreq_t *r, reg_t *e);

/* Delete the object (kind WOP_DELETE, or WOP_DELETE_MOVED after MOVE). */
static void run_delete(spy_t *sp, sreq_t *r, reg_t *e, uint8_t kind)
{
    /* A moved object's referrers reach it on the other backend. */
    if (kind == WOP_DELETE && refuse_referenced(sp, r, e))
        return;
    if (kind == WOP_DELETE)
        replicas_drop_all(sp, e); /* (MOVE dropped them before handing it over) */
    if (sreply_none(&r->answer, r->id) < 0)
        return;
    r->op = (wop_t){.kind = kind, .id = e->node.id, .idlen = e->node.len};
    /* The id must outlive the entry: the op points at the unit's own copy. */
    buf_clear(&r->unit_bytes);
    if (buf_append(&r->unit_bytes, e->node.id, e->node.len) < 0) {
        buf_clear(&r->answer);
        return;
    }
    r->op.id = (const char *)buf_head(&r->unit_bytes);
    unit_submit(sp, r, &r->op, 1);
    reg_tombstone(sp, e, r->write_seq);
}

/* The object's class (qualname, pickle) and aliases, as MOVE sends them:
 * new references, or -1 with an exception. */
static int move_parts(spy_t *sp, reg_t *e, PyObject **qual, PyObject **pickle, PyObject **aliases)
{
    sdb_read_t rd;
    const char *q;
    const uint8_t *p;
    size_t qn, pn;
    buf_t names;
    buf_init(&names);
    uint32_t count = 0;
    *qual = *pickle = *aliases = NULL;
    if (sdb_read_begin(sp->db, &rd) != SDB_OK) {
        PyErr_SetString(PyExc_OSError, "cannot read the store");
        return -1;
    }
    if (sdb_get_class(&rd, e->cls->class_id, &q, &qn, &p, &pn) == SDB_OK &&
        sdb_list_aliases(&rd, e->node.id, e->node.len, &names, &count) == SDB_OK) {
        *qual = PyUnicode_DecodeUTF8(q, (Py_ssize_t)qn, "replace");
        *pickle = *qual ? PyBytes_FromStringAndSize((const char *)p, (Py_ssize_t)pn) : NULL;
        *aliases = *pickle ? PyList_New(0) : NULL;
        const uint8_t *s = buf_head(&names);
        for (uint32_t i = 0; *aliases && i < count; i++) {
            size_t n = (size_t)s[0] << 8 | s[1];
            PyObject *a = PyUnicode_DecodeUTF8((const char *)s + 2, (Py_ssize_t)n, "replace");
            if (!a || PyList_Append(*aliases, a) < 0)
                Py_CLEAR(*aliases);
            Py_XDECREF(a);
            s += 2 + n;
        }
    } else {
        PyErr_SetString(PyExc_OSError, "the object's class or aliases cannot be read");
    }
    sdb_read_end(&rd);
    buf_free(&names);
    if (*aliases)
        return 0;
    Py_CLEAR(*qual);
    Py_CLEAR(*pickle);
    return -1;
}

/* MOVE: hand the object to the backend named in the request (this store is
 * then that backend's client: bettong.objects._adopt), and only once it holds
 * it, delete it here. Requests queued behind the move find it gone and follow
 * it (sproto.h). */
static void run_move(spy_t *sp, sreq_t *r, reg_t *e)
{
    if (!sp->adopt) {
        sreply_failed(&r->answer, r->id, STORE_ERR_BAD_REQUEST,
                      "this store is not part of a service of several backends");
        return;
    }
    const char *self = sdb_backend_id(sp->db);
    if (r->namelen == strlen(self) && memcmp(r->name, self, r->namelen) == 0) {
        sreply_none(&r->answer, r->id); /* already here */
        return;
    }
    PyObject *qual, *pickle, *aliases;
    if (!e->state) {
        answer_internal(r, "the object has no stored state to move");
        return;
    }
    /* Its replicas go: the new master starts without any (sproto.h). */
    replicas_drop_all(sp, e);
    if (move_parts(sp, e, &qual, &pickle, &aliases) < 0) {
        answer_raised(sp, r);
        return;
    }
    char dest[SDB_BACKEND_ID_LEN + 1];
    snprintf(dest, sizeof dest, "%.*s", (int)r->namelen, r->name);
    /* A move a crash interrupted is finished without a new hand-over: the
     * other backend holds the object (resolve_move). */
    PyObject *res = e->moved ? Py_NewRef(Py_None)
                    : write_move_mark(sp, e->node.id, e->node.len, dest) == 0
                        ? PyObject_CallFunction(sp->adopt, "s#s#KOOOO", r->name,
                                                (Py_ssize_t)r->namelen, e->node.id,
                                                (Py_ssize_t)e->node.len,
                                                (unsigned long long)e->cls->class_id, qual,
                                                pickle, e->state, aliases)
                        : NULL;
    Py_DECREF(qual);
    Py_DECREF(pickle);
    Py_DECREF(aliases);
    if (!res) {
        /* Not handed over (the other backend refused it, or is down): it stays. */
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        if (!e->moved && write_move_mark(sp, e->node.id, e->node.len, NULL) < 0)
            PyErr_Clear(); /* logged by the next load, which resolves it */
        PyErr_Restore(type, value, tb);
        answer_raised(sp, r);
        return;
    }
    Py_DECREF(res);
    /* Live objects here that refer to it hold this very Python object: it
     * becomes a proxy of the moved one, so they reach it there. */
    res = PyObject_CallFunction(sp->became_remote, "O", e->obj);
    if (!res) {
        char *tb = py_take_traceback();
        log_warn("store: a moved object could not become a proxy here: %s", tb);
        free(tb);
    }
    Py_XDECREF(res);
    run_delete(sp, r, e, WOP_DELETE_MOVED);
}

/* FORWARD (versions): the object goes and its id names the target from now
 * on (the unit's WOP_FORWARD). The live object here, which other live
 * objects may hold, becomes the target's (bettong.objects._became_forward). */
static void run_forward(spy_t *sp, sreq_t *r, reg_t *e)
{
    if (r->namelen == e->node.len && memcmp(r->name, e->node.id, r->namelen) == 0) {
        /* A version consolidated before: its FORWARD was sent on to the
         * original, which names itself already. */
        sreply_none(&r->answer, r->id);
        return;
    }
    if (sreply_none(&r->answer, r->id) < 0)
        return;
    replicas_drop_all(sp, e);
    /* The ids must outlive the entry: the op points at the unit's own copies. */
    buf_clear(&r->unit_bytes);
    if (buf_append(&r->unit_bytes, e->node.id, e->node.len) < 0 ||
        buf_append(&r->unit_bytes, r->name, r->namelen) < 0) {
        buf_clear(&r->answer);
        return;
    }
    const char *ids = (const char *)buf_head(&r->unit_bytes);
    r->op = (wop_t){.kind = WOP_FORWARD, .id = ids, .idlen = e->node.len,
                    .name = ids + e->node.len, .namelen = r->namelen};
    PyObject *res = PyObject_CallFunction(sp->became_forward, "Os#", e->obj, r->name,
                                          (Py_ssize_t)r->namelen);
    if (!res) {
        char *tb = py_take_traceback();
        log_warn("store: a consolidated version could not become its original here: %s", tb);
        free(tb);
    }
    Py_XDECREF(res);
    unit_submit(sp, r, &r->op, 1);
    reg_tombstone(sp, e, r->write_seq);
}

/* ------------------------------------------------------------ replicas

 * The master side (REPLICATE, write-through in write_back, drops on DELETE
 * and MOVE) calls bettong.objects (_replicate, _replica_push, _replica_drop)
 * as a client of the replicas' backends, from the Python thread running the
 * request, as MOVE does; e->replicas mirrors the object's LMDB list. The
 * replica side (REPLICA_PUT, REPLICA_DROP) writes the replica and refreshes
 * or forgets its live object. */

static void log_failures(reg_t *e, PyObject *failed, const char *what)
{
    for (Py_ssize_t i = 0; failed && i < PyList_GET_SIZE(failed); i++) {
        PyObject *t = PyList_GET_ITEM(failed, i);
        const char *bid = PyTuple_Check(t) && PyTuple_GET_SIZE(t) == 2
                              ? PyUnicode_AsUTF8(PyTuple_GET_ITEM(t, 0)) : NULL;
        const char *why = bid ? PyUnicode_AsUTF8(PyTuple_GET_ITEM(t, 1)) : NULL;
        PyErr_Clear();
        log_warn("store: the replica of object %s on backend %s %s: %s", e->node.id,
                 bid ? bid : "?", what, why ? why : "?");
    }
}

/* Send the new state b to every replica of e (waiting for each one's durable
 * answer, or its timeout). A new list of the backend ids (str) that failed,
 * each logged, or NULL when there are no replicas (or the push could not be
 * made at all: then every replica is kept, logged). */
static PyObject *replicas_push(spy_t *sp, reg_t *e, PyObject *b)
{
    if (!e->replicas || !PyTuple_GET_SIZE(e->replicas) || !sp->replica_push)
        return NULL;
    PyObject *failed = PyObject_CallFunction(sp->replica_push, "s#KsOO", e->node.id,
                                             (Py_ssize_t)e->node.len,
                                             (unsigned long long)e->cls->class_id,
                                             sdb_backend_id(sp->db), b, e->replicas);
    PyObject *ids = failed && PyList_Check(failed) ? PyList_New(0) : NULL;
    for (Py_ssize_t i = 0; ids && i < PyList_GET_SIZE(failed); i++) {
        PyObject *t = PyList_GET_ITEM(failed, i);
        if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) != 2 ||
            PyList_Append(ids, PyTuple_GET_ITEM(t, 0)) < 0)
            Py_CLEAR(ids);
    }
    if (!ids) {
        char *tb = py_take_traceback();
        log_error("store: the new state of object %s could not be sent to its replicas: %s",
                  e->node.id, tb);
        free(tb);
    } else {
        log_failures(e, failed, "missed a write and is dropped");
    }
    Py_XDECREF(failed);
    return ids;
}

/* Unlist the backends in drops (a list of str, or NULL) from e->replicas. */
static void replicas_forget(reg_t *e, PyObject *drops)
{
    if (!drops || !PyList_GET_SIZE(drops) || !e->replicas)
        return;
    PyObject *keep = PyList_New(0);
    for (Py_ssize_t i = 0; keep && i < PyTuple_GET_SIZE(e->replicas); i++) {
        PyObject *bid = PyTuple_GET_ITEM(e->replicas, i);
        int gone = PySequence_Contains(drops, bid);
        if (gone < 0 || (!gone && PyList_Append(keep, bid) < 0))
            Py_CLEAR(keep);
    }
    PyObject *t = keep ? PyList_AsTuple(keep) : NULL;
    Py_XDECREF(keep);
    if (t)
        Py_SETREF(e->replicas, t);
    PyErr_Clear(); /* out of memory: the list on disk is right; a reload fixes it */
}

/* Before a DELETE or MOVE: tell every replica to forget the object (best
 * effort: one that cannot be reached is logged; its copy is no longer listed
 * anywhere, so no client reads it). */
static void replicas_drop_all(spy_t *sp, reg_t *e)
{
    if (!e->replicas || !PyTuple_GET_SIZE(e->replicas) || !sp->replica_drop)
        return;
    PyObject *failed = PyObject_CallFunction(sp->replica_drop, "s#O", e->node.id,
                                             (Py_ssize_t)e->node.len, e->replicas);
    if (!failed) {
        char *tb = py_take_traceback();
        log_warn("store: the replicas of object %s could not be dropped: %s", e->node.id, tb);
        free(tb);
    }
    log_failures(e, failed, "could not be dropped");
    Py_XDECREF(failed);
}

/* REPLICATE (on the master): give the backend named in the request a replica
 * (its class, the stored state), then list it, durably, before the answer. */
static void run_replicate(spy_t *sp, sreq_t *r, reg_t *e)
{
    if (!sp->replicate) {
        sreply_failed(&r->answer, r->id, STORE_ERR_BAD_REQUEST,
                      "this store is not part of a service of several backends");
        return;
    }
    const char *self = sdb_backend_id(sp->db);
    if (r->namelen == strlen(self) && memcmp(r->name, self, r->namelen) == 0) {
        sreply_none(&r->answer, r->id); /* the master is here: nothing to copy */
        return;
    }
    PyObject *target = PyUnicode_DecodeUTF8(r->name, (Py_ssize_t)r->namelen, "strict");
    int listed = target && e->replicas ? PySequence_Contains(e->replicas, target) : 0;
    PyObject *qual = NULL, *pickle = NULL, *aliases = NULL;
    if (!target || listed < 0 || (!listed && move_parts(sp, e, &qual, &pickle, &aliases) < 0)) {
        Py_XDECREF(target);
        answer_raised(sp, r);
        return;
    }
    if (listed) { /* already there, and kept up to date */
        Py_DECREF(target);
        sreply_none(&r->answer, r->id);
        return;
    }
    PyObject *res = PyObject_CallFunction(sp->replicate, "Os#KsOOO", target, e->node.id,
                                          (Py_ssize_t)e->node.len,
                                          (unsigned long long)e->cls->class_id, self, e->state,
                                          qual, pickle);
    Py_DECREF(qual);
    Py_DECREF(pickle);
    Py_DECREF(aliases);
    PyObject *one = res ? PyTuple_Pack(1, target) : NULL;
    PyObject *all = one ? (e->replicas ? PySequence_Concat(e->replicas, one) : Py_NewRef(one))
                        : NULL;
    Py_XDECREF(one);
    Py_DECREF(target);
    Py_XDECREF(res);
    if (!all || sreply_none(&r->answer, r->id) < 0) {
        /* R holds a copy no one lists: harmless, never read */
        Py_XDECREF(all);
        if (PyErr_Occurred())
            answer_raised(sp, r);
        return;
    }
    r->op = (wop_t){.kind = WOP_REPLICA_ADD, .id = r->oid, .idlen = r->oidlen,
                    .name = r->name, .namelen = r->namelen};
    e->write_seq = unit_submit(sp, r, &r->op, 1);
    Py_XSETREF(e->replicas, all);
}

/* A live replica takes the state just received: its instance dict emptied
 * (but its id), then given the state as a load would. */
static int replica_refresh(spy_t *sp, reg_t *e)
{
    Py_CLEAR(e->snap);
    Py_CLEAR(e->snap_fields);
    if (restore_custom(sp, e) < 0)
        return -1;
    PyObject *st = loads_bytes(sp, e->state, 0);
    PyObject *f = !st ? NULL : PyDict_Check(st) ? fields_of(st, e->cls, NULL)
                                                : Py_NewRef(e->cls->annotated);
    Py_XDECREF(st);
    if (!f)
        return -1;
    Py_XSETREF(e->fields, f);
    return 0;
}

/* REPLICA_PUT (on a replica's backend): store the state as the replica of
 * the master's object, in one unit; a live replica is refreshed at once (the
 * answers of reads after it wait for the unit, sobj.c). */
static void run_replica_put(spy_t *sp, sreq_t *r)
{
    reg_t *e = (reg_t *)omap_get(&sp->objs, r->oid, r->oidlen);
    while (e && e->obj && e->loading) { /* another thread is loading it */
        Py_BEGIN_ALLOW_THREADS
        usleep(200);
        Py_END_ALLOW_THREADS
        e = (reg_t *)omap_get(&sp->objs, r->oid, r->oidlen);
    }
    if (e && e->obj && !e->replica) {
        sreply_failed(&r->answer, r->id, STORE_ERR_BAD_REQUEST,
                      "object '%.*s' is held here as a master, not a replica", (int)r->oidlen,
                      r->oid);
        return;
    }
    if (e && e->obj) {
        if (e->cls->class_id != r->class_id) {
            sreply_failed(&r->answer, r->id, STORE_ERR_BAD_REQUEST,
                          "a replica keeps its class");
            return;
        }
        PyObject *b = PyBytes_FromStringAndSize((const char *)r->payload, (Py_ssize_t)r->len);
        if (!b) {
            answer_internal(r, "out of memory");
            return;
        }
        Py_SETREF(e->state, b);
        if (replica_refresh(sp, e) < 0) { /* it is loaded again from disk */
            char *tb = py_take_traceback();
            log_warn("store: replica %s could not take its new state (dropped from memory): "
                     "%s", e->node.id, tb);
            free(tb);
            e->write_seq = 0;
            if (Py_REFCNT(e->obj) == 1)
                reg_evict(sp, e);
            e = NULL;
        }
    }
    if (sreply_none(&r->answer, r->id) < 0)
        return;
    r->op = (wop_t){.kind = WOP_REPLICA_PUT, .id = r->oid, .idlen = r->oidlen,
                    .class_id = r->class_id, .name = r->name, .namelen = r->namelen,
                    .data = r->payload, .len = r->len};
    unit_submit(sp, r, &r->op, 1);
    if (e && e->obj)
        e->write_seq = r->write_seq;
}

/* REPLICA_DROP (on a replica's backend): forget the replica. */
static void run_replica_drop(spy_t *sp, sreq_t *r)
{
    reg_t *e = (reg_t *)omap_get(&sp->objs, r->oid, r->oidlen);
    if (e && e->obj && !e->replica) {
        sreply_failed(&r->answer, r->id, STORE_ERR_NOT_FOUND, "no replica with id '%.*s'",
                      (int)r->oidlen, r->oid);
        return;
    }
    if (sreply_none(&r->answer, r->id) < 0)
        return;
    r->op = (wop_t){.kind = WOP_REPLICA_DROP, .id = r->oid, .idlen = r->oidlen};
    unit_submit(sp, r, &r->op, 1);
    if (e && e->obj && !e->loading)
        reg_tombstone(sp, e, r->write_seq);
}

/* Run a request on its live object (GIL held). */
static void run_on(spy_t *sp, sreq_t *r, reg_t *e, mstat_t *m)
{
    PyObject *hold = Py_NewRef(e->obj); /* keeps it out of spy_trim meanwhile */
    switch (r->type) {
    case SMSG_CALL:
        run_call(sp, r, e, m);
        break;
    case SMSG_GET_FIELD:
        run_get_field(sp, r, e, m);
        break;
    case SMSG_SET_FIELD:
        run_set_field(sp, r, e, m);
        break;
    case SMSG_GET_STATE:
        if (e->state)
            sreply_ok(&r->answer, r->id, PyBytes_AS_STRING(e->state),
                      (size_t)PyBytes_GET_SIZE(e->state));
        else
            sreply_failed(&r->answer, r->id, STORE_ERR_NOT_FOUND, "no object with id '%s' "
                          "(not stored yet)", e->node.id);
        break;
    case SMSG_UPDATE:
        run_update(sp, r, e);
        break;
    case SMSG_DELETE:
        run_delete(sp, r, e, WOP_DELETE);
        break;
    case SMSG_MOVE:
        run_move(sp, r, e);
        break;
    case SMSG_REPLICATE:
        run_replicate(sp, r, e);
        break;
    case SMSG_FORWARD:
        run_forward(sp, r, e);
        break;
    default:
        sreply_failed(&r->answer, r->id, STORE_ERR_BAD_REQUEST, "not a Python request");
    }
    Py_DECREF(hold);
    if (PyErr_Occurred()) {
        char *tb = py_take_traceback();
        log_warn("store: unexpected Python error left over: %s", tb);
        free(tb);
    }
}

void spy_run(spy_t *sp, sreq_t *r)
{
    r->write_seq = 0;
    if (r->type == SMSG_REPLICA_PUT || r->type == SMSG_REPLICA_DROP) {
        (r->type == SMSG_REPLICA_PUT ? run_replica_put : run_replica_drop)(sp, r);
        return;
    }
    int status;
    reg_t *e = reg_target(sp, r->oid, r->oidlen, &status);
    if (e && e->replica && r->type != SMSG_GET_FIELD && r->type != SMSG_GET_STATE)
        e = NULL, status = MISSING; /* a replica only reads: the rest is its master's */
    if (e && e->moved && r->type != SMSG_MOVE)
        e = NULL, status = MISSING; /* the other backend's now (resolve_move) */
    if (!e) {
        if (status == MISSING)
            sreply_failed(&r->answer, r->id, STORE_ERR_NOT_FOUND, "no object with id '%.*s'",
                          (int)r->oidlen, r->oid);
        else if (status == FORWARDED) /* the client sends it on (sproto.h) */
            sreply_failed(&r->answer, r->id, STORE_ERR_FORWARDED, "%.*s", (int)t_forward_len,
                          t_forward);
        else
            answer_internal(r, "the object could not be loaded");
        return;
    }
    mstat_t *m = has_kind(r->type) ? stat_get(e->cls, r) : NULL;
    if (!m || !sp->inline_ns) {
        run_on(sp, r, e, m);
        return;
    }
    tusage_t u0 = thread_usage();
    run_on(sp, r, e, m);
    tusage_t u1 = thread_usage();
    if (run_short(sp, u0, u1)) {
        if (m->fast < UINT32_MAX)
            m->fast++;
    } else {
        m->fast = 0;
    }
}

int spy_run_inline(spy_t *sp, sreq_t *r)
{
    if (!sp->inline_ns)
        return 0;
    reg_t *e = (reg_t *)omap_get(&sp->objs, r->oid, r->oidlen);
    if (!e || !e->obj || e->loading)
        return 0; /* not live: loading it may take long */
    mstat_t *m = NULL;
    if (r->type != SMSG_GET_STATE) {
        if (!has_kind(r->type) || !(m = stat_find(e->cls, r)) || m->banned ||
            m->fast < INLINE_AFTER)
            return 0;
    }
    r->write_seq = 0;
    lru_touch(sp, e);
    tusage_t u0 = thread_usage();
    uint64_t w0 = mono_ns();
    run_on(sp, r, e, m);
    uint64_t wall = mono_ns() - w0;
    tusage_t u1 = thread_usage();
    if (m && ((u1.cpu_us - u0.cpu_us) * 1000 > sp->inline_ns ||
              (u1.waits != u0.waits && wall > sp->inline_ns))) {
        /* It held the loop too long: more CPU than inline_ns, or it waited
         * (sleep, I/O, a lock) and took longer than that (being preempted
         * does not count). Back to the Python threads (it must qualify
         * again); a kind that is long here INLINE_STRIKES times never runs
         * here again. */
        m->fast = 0;
        unsigned long long cpu = (unsigned long long)(u1.cpu_us - u0.cpu_us);
        unsigned long long took = (unsigned long long)(wall / 1000);
        const char *waited = u1.waits != u0.waits ? ", waiting" : "";
        if (++m->strikes >= INLINE_STRIKES) {
            m->banned = 1;
            log_info("store: %s.%.*s took %llu us (%llu us of CPU%s) on the network thread: "
                     "it runs on the Python threads from now on",
                     ((PyTypeObject *)e->cls->cls)->tp_name, (int)m->namelen, m->text, took,
                     cpu, waited);
        } else {
            log_debug("store: %s.%.*s took %llu us (%llu us of CPU%s) on the network thread",
                      ((PyTypeObject *)e->cls->cls)->tp_name, (int)m->namelen, m->text, took,
                      cpu, waited);
        }
    }
    return 1;
}

/* ------------------------------------------------------------ start, stop */

static PyObject *attr_of(const char *module, const char *name)
{
    PyObject *m = PyImport_ImportModule(module);
    PyObject *a = m ? PyObject_GetAttrString(m, name) : NULL;
    Py_XDECREF(m);
    return a;
}

static int intern_all(spy_t *sp)
{
    struct {
        PyObject **slot;
        const char *text;
    } names[] = {
        {&sp->tag, PID_TAG},
        {&sp->s_bettong_id, "_bettong_id"},
        {&sp->s_persistent_id, "persistent_id"},
        {&sp->s_persistent_load, "persistent_load"},
        {&sp->s_dump, "dump"},
        {&sp->s_load, "load"},
        {&sp->s_getvalue, "getvalue"},
        {&sp->s_new, "__new__"},
        {&sp->s_annotations, "__annotations__"},
        {&sp->s_module, "__module__"},
        {&sp->s_qualname, "__qualname__"},
        {&sp->s_bt, "_bt"},
        {&sp->s_bettong_cid, "_bettong_cid"},
        {&sp->s_getstate, "__getstate__"},
        {&sp->s_setstate, "__setstate__"},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!(*names[i].slot = PyUnicode_InternFromString(names[i].text)))
            return -1;
    return 0;
}

/* The Python objects the store uses, made once. -1 with err set. */
static int spy_setup(spy_t *sp, int service, char *err, size_t errlen)
{
    /* The module first: the C functions below take it as their self. */
    if (instore_init(sp) < 0 || intern_all(sp) < 0 ||
        !(sp->Pickler = attr_of("pickle", "Pickler")) ||
        !(sp->Unpickler = attr_of("pickle", "Unpickler")) ||
        !(sp->BytesIO = attr_of("io", "BytesIO")) ||
        !(sp->import_module = attr_of("importlib", "import_module")) ||
        !(sp->plain_dumps = attr_of("pickle", "dumps")) ||
        !(sp->plain_loads = attr_of("pickle", "loads")) || !(sp->protocol = PyLong_FromLong(5)) ||
        !(sp->no_args = PyTuple_New(0)) ||
        !(sp->absent = PyObject_CallNoArgs((PyObject *)&PyBaseObject_Type)) ||
        !(sp->pid_fn = PyCFunction_New(&pid_def, sp->module)) ||
        !(sp->load_strict = PyCFunction_New(&load_strict_def, sp->module)) ||
        !(sp->load_lenient = PyCFunction_New(&load_lenient_def, sp->module)) ||
        !(sp->MissingObject = PyErr_NewException("bettong_store.MissingObject",
                                                 PyExc_LookupError, NULL)) ||
        !(sp->pending_aliases = PyDict_New())) {
        char *tb = py_take_traceback();
        snprintf(err, errlen, "cannot set up the store's Python side: %s", tb);
        free(tb);
        return -1;
    }
    sp->object_getstate = PyObject_GetAttr((PyObject *)&PyBaseObject_Type, sp->s_getstate);
    PyErr_Clear(); /* none before Python 3.11 */
    /* After instore_init: importing bettong.objects sets it up. */
    if (!(sp->became_forward = attr_of("bettong.objects", "_became_forward"))) {
        char *tb = py_take_traceback();
        snprintf(err, errlen, "cannot load bettong.objects: %s", tb);
        free(tb);
        return -1;
    }
    if (service && (!(sp->remote_ref = attr_of("bettong.objects", "_proxy_for")) ||
                    !(sp->adopt = attr_of("bettong.objects", "_adopt")) ||
                    !(sp->move_held = attr_of("bettong.objects", "_move_held")) ||
                    !(sp->move_finish = attr_of("bettong.objects", "_move_finish")) ||
                    resolve_moves_at_start(sp) < 0 ||
                    !(sp->became_remote = attr_of("bettong.objects", "_became_remote")) ||
                    !(sp->replicate = attr_of("bettong.objects", "_replicate")) ||
                    !(sp->replica_push = attr_of("bettong.objects", "_replica_push")) ||
                    !(sp->replica_drop = attr_of("bettong.objects", "_replica_drop")))) {
        char *tb = py_take_traceback();
        snprintf(err, errlen, "cannot load bettong.objects for references to other "
                 "backends: %s", tb);
        free(tb);
        return -1;
    }
    return 0;
}

spy_t *spy_init(sdb_t *db, committer_t *cm, size_t cache, unsigned inline_us, int service,
                char *err, size_t errlen)
{
    spy_t *sp = calloc(1, sizeof *sp);
    if (!sp) {
        snprintf(err, errlen, "out of memory setting up the store's Python side");
        return NULL;
    }
    sp->db = db;
    sp->inline_ns = (uint64_t)inline_us * 1000;
    sp->cm = cm;
    sp->cache = cache;
    omap_init(&sp->objs);
    idmap_init(&sp->classes);
    idmap_init(&sp->types);
    if (spy_setup(sp, service, err, errlen) < 0) {
        spy_fini(sp);
        return NULL;
    }
    /* cloudpickle makes classes defined in a client's script loadable. */
    PyObject *cp = PyImport_ImportModule("cloudpickle");
    if (!cp) {
        PyErr_Clear();
        log_warn("store: cloudpickle is not importable: classes sent by value will not load");
    }
    Py_XDECREF(cp);
    return sp;
}

void spy_fini(spy_t *sp)
{
    while (sp->lru.head)
        reg_evict(sp, sp->lru.head);
    while (sp->tombs.head)
        tomb_drop(sp, sp->tombs.head);
    size_t pos = 0;
    uint64_t key;
    sclass_t *c;
    while ((c = idmap_next(&sp->classes, &pos, &key))) {
        stats_free(c);
        Py_XDECREF(c->cls);
        Py_XDECREF(c->annotated);
        Py_XDECREF(c->qualname);
        Py_XDECREF(c->pickle);
        free(c);
    }
    idmap_free(&sp->classes);
    idmap_free(&sp->types);
    omap_free(&sp->objs);
    PyObject **refs[] = {&sp->Pickler, &sp->Unpickler, &sp->BytesIO, &sp->import_module,
                         &sp->plain_dumps, &sp->plain_loads, &sp->protocol, &sp->no_args,
                         &sp->absent, &sp->pid_fn, &sp->load_strict, &sp->load_lenient,
                         &sp->MissingObject, &sp->remote_ref, &sp->adopt, &sp->move_held,
                         &sp->move_finish, &sp->became_remote, &sp->became_forward, &sp->asyncio_run, &sp->replicate,
                         &sp->replica_push, &sp->replica_drop, &sp->tag, &sp->s_bettong_id,
                         &sp->s_persistent_id, &sp->s_persistent_load, &sp->s_dump,
                         &sp->s_load, &sp->s_getvalue, &sp->s_new, &sp->s_annotations,
                         &sp->s_module, &sp->s_qualname, &sp->s_bt, &sp->s_bettong_cid,
                         &sp->s_getstate, &sp->s_setstate, &sp->object_getstate,
                         &sp->Persistent, &sp->class_record, &sp->new_oid, &sp->NotFound,
                         &sp->AliasTaken, &sp->pending_aliases};
    for (size_t i = 0; i < sizeof refs / sizeof refs[0]; i++)
        Py_CLEAR(*refs[i]);
    /* Python may keep the module (bettong.objects does): its functions now
     * raise instead of reaching freed memory. */
    spy_t **slot = sp->module ? PyModule_GetState(sp->module) : NULL;
    if (slot)
        *slot = NULL;
    Py_CLEAR(sp->module);
    free(sp);
}
