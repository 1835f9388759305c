/* The submit side of FunctionExecutor.call_async's hot path (see _hot.h).
 *
 * A loop of call_async on one function spent most of its time in Python: the
 * checks of executor._Hot.call, the pickle call, the call id (a lock), the
 * future's __init__, Client.submit_one and FunctionExecutor._note_call, each a
 * Python call. HotCall does all of it in one C call, with the same checks in
 * the same order, and calls back into Python only where Python has to run
 * (pickle.dumps, a function whose identities changed, a new Job, waking the
 * flusher).
 *
 * Threads: the caller holds the executor's _hot_lock (as for _Hot.call); the
 * call id counter is changed only here and in CallIds.take, with the GIL held
 * and no Python code in between the read and the write.
 *
 * Ownership: a HotCall owns a reference to every object in `obj` (given by
 * _Hot, released by tp_clear); what a call makes is released on every path
 * except the future returned, whose reference goes to the caller. */
#include "_hot.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* ------------------------------------------------------------------ CallIds */

typedef struct {
    PyObject_HEAD
    unsigned long long next; /* the next call id to hand out */
} CallIds;

static PyObject *CallIds_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    if ((kw && PyDict_GET_SIZE(kw)) || PyTuple_GET_SIZE(args)) {
        PyErr_SetString(PyExc_TypeError, "CallIds() takes no arguments");
        return NULL;
    }
    CallIds *c = (CallIds *)type->tp_alloc(type, 0);
    if (c)
        c->next = 1;
    return (PyObject *)c;
}

/* take(n) -> the first of n consecutive call ids, reserved. */
static PyObject *CallIds_take(CallIds *c, PyObject *arg)
{
    unsigned long long n = PyLong_AsUnsignedLongLong(arg);
    if (n == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    PyObject *first = PyLong_FromUnsignedLongLong(c->next);
    if (first)
        c->next += n;
    return first;
}

static PyMethodDef CallIds_methods[] = {
    {"take", (PyCFunction)CallIds_take, METH_O,
     "take(n) -> the first of n consecutive call ids, reserved."},
    {NULL},
};

static PyTypeObject CallIdsType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "bettong._bettong.CallIds",
    .tp_basicsize = sizeof(CallIds),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A pool connection's call id counter (ids from 1).",
    .tp_new = CallIds_new,
    .tp_methods = CallIds_methods,
};

/* ------------------------------------------------------------------ HotCall */

/* The objects a HotCall holds, by the keyword that gives each. */
enum {
    F_IDS,          /* CallIds: the client's call id counter */
    F_CLIENT,       /* _pool.Client */
    F_PENDING,      /* dict: the client's call_id -> future */
    F_OUTQ,         /* deque: the client's calls held back */
    F_PID_LIST,     /* list: _pool.PID, [this process's id] */
    F_STALE,        /* executor._stale_subcall(client) -> bool */
    F_QUICK,        /* None, or _serial.quick_snapshot of the function */
    F_MISSING,      /* _serial's marker of a global not there */
    F_CHECK,        /* None (by reference: never checked) or check(func) -> bool */
    F_BINDING,      /* executor._Binding */
    F_DUMPS,        /* pickle.dumps */
    F_KWARGS,       /* the empty kwargs of a call (never mutated) */
    F_PROTOCOL,     /* 5 */
    F_FUNC_ID,      /* int: the pinned function's id */
    F_TMS,          /* int: the executor's timeout in ms */
    F_RETRIES,      /* int: the executor's retries */
    F_FUTURE_TYPE,  /* futures.ResponseFuture */
    F_PAYLOAD_SIZE, /* _serial.payload_size, for a payload that is not bytes */
    F_JOBS,         /* dict: the executor's Jobs */
    N_OBJ
};

static const char *const obj_names[N_OBJ] = {
    "ids", "client", "pending", "outq", "pid_list", "stale", "quick", "missing", "check",
    "binding", "dumps", "kwargs", "protocol", "func_id", "tms", "retries", "future_type",
    "payload_size", "jobs",
};

/* The numbers a HotCall holds, by keyword. */
enum { I_PID, I_PARENT_TASK, I_SIMPLE, I_MAX_ARGS, I_OUTQ_MAX, I_PER_JOB, N_INT };

static const char *const int_names[N_INT] = {
    "pid", "parent_task", "simple", "max_args", "outq_max", "per_job",
};

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *obj[N_OBJ];     /* owned */
    long long num[N_INT];
    PyObject *noargs;         /* owned: () for the future type's tp_new */
} HotCall;

/* The quick snapshot's items (see _serial.quick_snapshot). */
enum { Q_CODE, Q_DEFAULTS, Q_NAME, Q_QUAL, Q_MODULE, Q_GLOBALS, Q_NAMES, Q_VALUES, N_Q };

/* Attribute names, interned once (owned by this module for its lifetime). */
static PyObject *s_closed, *s_closing, *s__client, *s__call_id, *s__calls_job,
    *s_left, *s_futures, *s__job, *s_append, *s_one, *s__note_call, *s__kick, *s_flush, *s_zero;

static int intern_names(void)
{
    struct {
        PyObject **p;
        const char *s;
    } t[] = {
        {&s_closed, "closed"},       {&s_closing, "_closing"},
        {&s__client, "_client"},    {&s__call_id, "_call_id"},   {&s__calls_job, "_calls_job"},
        {&s_left, "left"},          {&s_futures, "futures"},     {&s__job, "_job"},
        {&s_append, "append"},      {&s_one, "one"},             {&s__note_call, "_note_call"},
        {&s__kick, "_kick"},        {&s_flush, "flush"},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        if (!*t[i].p && !(*t[i].p = PyUnicode_InternFromString(t[i].s)))
            return -1;
    if (!s_zero && !(s_zero = PyLong_FromLong(0)))
        return -1;
    return 0;
}

static PyObject *hot_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf,
                                PyObject *kwnames);

/* Whether the quick snapshot has the shape quick_same reads. */
static int quick_valid(PyObject *q)
{
    if (q == Py_None)
        return 1;
    if (!PyTuple_CheckExact(q) || PyTuple_GET_SIZE(q) != N_Q)
        return 0;
    PyObject *names = PyTuple_GET_ITEM(q, Q_NAMES), *values = PyTuple_GET_ITEM(q, Q_VALUES);
    return PyDict_CheckExact(PyTuple_GET_ITEM(q, Q_GLOBALS)) && PyTuple_CheckExact(names) &&
           PyTuple_CheckExact(values) && PyTuple_GET_SIZE(names) == PyTuple_GET_SIZE(values);
}

/* Every keyword is required, none other accepted; the types C reads without a
 * check are checked here. */
static int HotCall_fill(HotCall *h, PyObject *kw)
{
    if (!kw || PyDict_GET_SIZE(kw) != N_OBJ + N_INT) {
        PyErr_SetString(PyExc_TypeError, "HotCall takes exactly its keyword arguments");
        return -1;
    }
    for (int i = 0; i < N_OBJ; i++) {
        PyObject *v = PyDict_GetItemString(kw, obj_names[i]);   /* borrowed */
        if (!v) {
            PyErr_Format(PyExc_TypeError, "HotCall: missing %s", obj_names[i]);
            return -1;
        }
        Py_INCREF(v);
        h->obj[i] = v;
    }
    for (int i = 0; i < N_INT; i++) {
        PyObject *v = PyDict_GetItemString(kw, int_names[i]);   /* borrowed */
        if (!v) {
            PyErr_Format(PyExc_TypeError, "HotCall: missing %s", int_names[i]);
            return -1;
        }
        h->num[i] = PyLong_AsLongLong(v);
        if (h->num[i] == -1 && PyErr_Occurred())
            return -1;
    }
    PyObject *ft = h->obj[F_FUTURE_TYPE];
    if (!Py_IS_TYPE(h->obj[F_IDS], &CallIdsType) || !PyDict_CheckExact(h->obj[F_PENDING]) ||
        !PyDict_CheckExact(h->obj[F_JOBS]) || !PyList_CheckExact(h->obj[F_PID_LIST]) ||
        !PyType_Check(ft) || ((PyTypeObject *)ft)->tp_new != PyBaseObject_Type.tp_new ||
        !quick_valid(h->obj[F_QUICK])) {
        PyErr_SetString(PyExc_TypeError, "HotCall: an argument of the wrong type");
        return -1;
    }
    return 0;
}

static PyObject *HotCall_new(PyTypeObject *type, PyObject *args, PyObject *kw)
{
    if (PyTuple_GET_SIZE(args)) {
        PyErr_SetString(PyExc_TypeError, "HotCall takes keyword arguments only");
        return NULL;
    }
    HotCall *h = (HotCall *)type->tp_alloc(type, 0);
    if (!h)
        return NULL;
    h->vectorcall = hot_vectorcall;
    if (!(h->noargs = PyTuple_New(0)) || HotCall_fill(h, kw) < 0) {
        Py_DECREF(h);
        return NULL;
    }
    return (PyObject *)h;
}

static int HotCall_traverse(HotCall *h, visitproc visit, void *arg)
{
    for (int i = 0; i < N_OBJ; i++)
        Py_VISIT(h->obj[i]);
    return 0;
}

static int HotCall_clear(HotCall *h)
{
    for (int i = 0; i < N_OBJ; i++)
        Py_CLEAR(h->obj[i]);
    Py_CLEAR(h->noargs);
    return 0;
}

static void HotCall_dealloc(HotCall *h)
{
    PyObject_GC_UnTrack(h);
    HotCall_clear(h);
    Py_TYPE(h)->tp_free((PyObject *)h);
}

/* ---- the checks of _Hot.call */

/* bool(getattr(o, name)): 1, 0, or -1 with an exception set. */
static int attr_true(PyObject *o, PyObject *name)
{
    PyObject *v = PyObject_GetAttr(o, name);
    if (!v)
        return -1;
    int r = PyObject_IsTrue(v);
    Py_DECREF(v);
    return r;
}

/* Whether the executor may still send on the client this was made for (its
 * current one, not closed or closing, made by this process, and for a sub-call
 * client, made in the call running now): 1, 0, or -1 (exception set). */
static int client_usable(HotCall *h, PyObject *ex)
{
    PyObject *client = h->obj[F_CLIENT];
    PyObject *cur = PyObject_GetAttr(ex, s__client);
    if (!cur)
        return -1;
    int same = cur == client;
    Py_DECREF(cur);
    if (!same)
        return 0;
    int r = attr_true(client, s_closed);
    if (r != 0)
        return r < 0 ? -1 : 0;
    r = attr_true(client, s_closing);
    if (r != 0)
        return r < 0 ? -1 : 0;
    PyObject *pids = h->obj[F_PID_LIST];
    if (PyList_GET_SIZE(pids) < 1)
        return 0;
    long long pid = PyLong_AsLongLong(PyList_GET_ITEM(pids, 0));
    if (pid == -1 && PyErr_Occurred())
        return -1;
    if (pid != h->num[I_PID])
        return 0;
    if (h->num[I_PARENT_TASK]) {
        PyObject *stale = PyObject_CallOneArg(h->obj[F_STALE], client);
        if (!stale)
            return -1;
        r = PyObject_IsTrue(stale);
        Py_DECREF(stale);
        if (r != 0)
            return r < 0 ? -1 : 0;
    }
    return 1;
}

/* _serial.quick_check's identity checks, on the snapshot: 1 when func still
 * has the fingerprint it had, 0 when that cannot be told so, -1 (exception). */
static int quick_same(HotCall *h, PyObject *func)
{
    PyObject *q = h->obj[F_QUICK];
    if (!Py_IS_TYPE(func, &PyFunction_Type))
        return 0;
    PyFunctionObject *fo = (PyFunctionObject *)func;
    PyObject *defaults = fo->func_defaults ? fo->func_defaults : Py_None;
    PyObject *module = fo->func_module ? fo->func_module : Py_None;
    if (fo->func_code != PyTuple_GET_ITEM(q, Q_CODE) ||
        defaults != PyTuple_GET_ITEM(q, Q_DEFAULTS) ||
        (fo->func_dict && PyDict_GET_SIZE(fo->func_dict)) || fo->func_closure ||
        fo->func_kwdefaults || fo->func_name != PyTuple_GET_ITEM(q, Q_NAME) ||
        fo->func_qualname != PyTuple_GET_ITEM(q, Q_QUAL) ||
        module != PyTuple_GET_ITEM(q, Q_MODULE) || fo->func_globals != PyTuple_GET_ITEM(q, Q_GLOBALS))
        return 0;
    PyObject *g = fo->func_globals, *names = PyTuple_GET_ITEM(q, Q_NAMES),
             *values = PyTuple_GET_ITEM(q, Q_VALUES);
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(names); i++) {
        PyObject *v = PyDict_GetItemWithError(g, PyTuple_GET_ITEM(names, i));   /* borrowed */
        if (!v && PyErr_Occurred())
            return -1;
        if ((v ? v : h->obj[F_MISSING]) != PyTuple_GET_ITEM(values, i))
            return 0;
    }
    return 1;
}

/* Whether func would still pickle as the pinned function: 1, 0, -1. */
static int function_unchanged(HotCall *h, PyObject *func)
{
    PyObject *check = h->obj[F_CHECK];
    if (check == Py_None)
        return 1;   /* it travels by reference */
    if (h->obj[F_QUICK] != Py_None) {
        int r = quick_same(h, func);
        if (r != 0)
            return r;
    }
    PyObject *same = PyObject_CallOneArg(check, func);
    if (!same)
        return -1;
    int r = PyObject_IsTrue(same);
    Py_DECREF(same);
    return r;
}

/* ---- the call */

/* ---- the pickle of the plainest arguments */

#if PY_VERSION_HEX < 0x030B0000
#define PyFloat_Pack8 _PyFloat_Pack8   /* (public from 3.11) */
#endif

enum { PICKLE_HEAD = 11 };   /* PROTO 5, FRAME and its 8-byte length */

/* The opcodes of data alone for simple_payload, into out (at least 258 bytes):
 * their length, 0 when data is of none of those kinds. */
static size_t simple_arg(PyObject *data, unsigned char *out)
{
    PyTypeObject *t = Py_TYPE(data);
    size_t n = 0;
    if (data == Py_None) {
        out[n++] = 'N';
    } else if (data == Py_True || data == Py_False) {
        out[n++] = data == Py_True ? 0x88 : 0x89;
    } else if (t == &PyLong_Type) {
        int overflow = 0;
        long long v = PyLong_AsLongLongAndOverflow(data, &overflow);
        if (overflow || (v == -1 && PyErr_Occurred())) {
            PyErr_Clear();   /* (an exact int: only overflow) */
            return 0;
        }
        uint64_t u = (uint64_t)v;
        if (v >= 0 && v < 256) {
            out[n++] = 'K';   /* BININT1 */
            out[n++] = (unsigned char)v;
        } else if (v >= 0 && v < 65536) {
            out[n++] = 'M';   /* BININT2 */
            out[n++] = (unsigned char)u;
            out[n++] = (unsigned char)(u >> 8);
        } else if (v >= INT32_MIN && v <= INT32_MAX) {
            out[n++] = 'J';   /* BININT, little-endian */
            for (int i = 0; i < 4; i++)
                out[n++] = (unsigned char)(u >> (8 * i));
        } else {
            /* LONG1: the fewest little-endian two's complement bytes, as
             * _pickle's save_long counts them (bits of |v|, / 8, + 1; a
             * negative's redundant top 0xff dropped). */
            unsigned char b[9];
            uint64_t mag = v < 0 ? (uint64_t)(-(v + 1)) + 1 : u;
            int nbits = 64 - __builtin_clzll(mag);
            int nbytes = nbits / 8 + 1;
            for (int i = 0; i < 8; i++)
                b[i] = (unsigned char)(u >> (8 * i));
            b[8] = v < 0 ? 0xff : 0x00;
            if (v < 0 && nbytes > 1 && b[nbytes - 1] == 0xff && (b[nbytes - 2] & 0x80))
                nbytes--;
            out[n++] = 0x8a;
            out[n++] = (unsigned char)nbytes;
            memcpy(out + n, b, (size_t)nbytes);
            n += (size_t)nbytes;
        }
    } else if (t == &PyFloat_Type) {
        out[n++] = 'G';   /* BINFLOAT, big-endian */
        if (PyFloat_Pack8(PyFloat_AS_DOUBLE(data), (void *)(out + n), 0) < 0) {
            PyErr_Clear();
            return 0;
        }
        n += 8;
    } else if (t == &PyUnicode_Type && PyUnicode_IS_ASCII(data) &&
               PyUnicode_GET_LENGTH(data) < 256) {
        Py_ssize_t len = PyUnicode_GET_LENGTH(data);
        out[n++] = 0x8c;   /* SHORT_BINUNICODE */
        out[n++] = (unsigned char)len;
        memcpy(out + n, PyUnicode_DATA(data), (size_t)len);
        n += (size_t)len;
        out[n++] = 0x94;   /* MEMOIZE */
    }
    return n;
}

/* pickle.dumps(((data,), {}), 5), written here when data is None, a bool, an
 * int of 64 bits, a float or an ASCII str of under 256 characters (the C
 * pickler's own bytes for them: its fixed opcodes for those types come before
 * any dispatch table or reducer_override, and test_executor_hot compares the
 * two); NULL without an exception for any other data, NULL with one when out
 * of memory. */
static PyObject *simple_payload(PyObject *data)
{
    static const unsigned char tail[] = {0x85, 0x94, '}', 0x94, 0x86, 0x94, '.'};
    unsigned char arg[260];
    size_t n = simple_arg(data, arg);
    if (n == 0)
        return NULL;
    uint64_t body = n + sizeof tail;   /* the frame: all after its header */
    PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(PICKLE_HEAD + body));
    if (!out)
        return NULL;
    unsigned char *p = (unsigned char *)PyBytes_AS_STRING(out);
    p[0] = 0x80;   /* PROTO 5 */
    p[1] = 5;
    p[2] = 0x95;   /* FRAME */
    for (int i = 0; i < 8; i++)
        p[3 + i] = (unsigned char)(body >> (8 * i));
    memcpy(p + PICKLE_HEAD, arg, n);
    memcpy(p + PICKLE_HEAD + n, tail, sizeof tail);
    return out;
}

/* simple_args_pickle(data) -> simple_payload(data), or None: for the tests. */
static PyObject *mod_simple_args_pickle(PyObject *m, PyObject *data)
{
    PyObject *p = simple_payload(data);
    return p || PyErr_Occurred() ? p : Py_NewRef(Py_None);
}

/* Whether a pickle names something of the caller's script. */
static int main_named(PyObject *payload)
{
    return memmem(PyBytes_AS_STRING(payload), (size_t)PyBytes_GET_SIZE(payload), "__main__",
                  8) != NULL;
}

/* binding.one(0, data), dropping `drop` (a payload not to be sent, or NULL). */
static PyObject *from_binding(HotCall *h, PyObject *data, PyObject *drop)
{
    Py_XDECREF(drop);
    return PyObject_CallMethodObjArgs(h->obj[F_BINDING], s_one, s_zero, data, NULL);
}

/* The pickled (args, kwargs) of data: ((data,), {}) pickled here when the
 * binding is the simple one and data is not a tuple, dict or bytes, and the
 * pickle names nothing of the caller's script; else binding.one(0, data).
 * A new reference, or NULL (exception set). */
static PyObject *make_payload(HotCall *h, PyObject *data)
{
    PyTypeObject *t = Py_TYPE(data);
    PyObject *payload = NULL;
    if (h->num[I_SIMPLE] && t != &PyTuple_Type && t != &PyDict_Type && t != &PyBytes_Type) {
        payload = simple_payload(data);
        if (payload || PyErr_Occurred())
            return payload && main_named(payload) ? from_binding(h, data, payload) : payload;
        PyObject *obj = Py_BuildValue("((O)O)", data, h->obj[F_KWARGS]);
        if (!obj)
            return NULL;
        PyObject *argv[2] = {obj, h->obj[F_PROTOCOL]};
        payload = PyObject_Vectorcall(h->obj[F_DUMPS], argv, 2, NULL);
        Py_DECREF(obj);
        if (!payload) {
            if (!PyErr_ExceptionMatches(PyExc_Exception))
                return NULL;
            PyErr_Clear();   /* binding.one says why */
        } else if (!PyBytes_Check(payload) || main_named(payload)) {
            Py_CLEAR(payload);   /* something of the caller's script: by value */
        }
    }
    return payload ? payload : from_binding(h, data, NULL);
}

/* The size of a payload as sent, or -1 (exception set). */
static Py_ssize_t payload_size(HotCall *h, PyObject *payload)
{
    if (PyBytes_CheckExact(payload))
        return PyBytes_GET_SIZE(payload);
    PyObject *n = PyObject_CallOneArg(h->obj[F_PAYLOAD_SIZE], payload);
    if (!n)
        return -1;
    Py_ssize_t size = PyLong_AsSsize_t(n);
    Py_DECREF(n);
    return size;
}

/* A new future of call_id on the client, made as ResponseFuture(client,
 * call_id) would be without running __init__: every other attribute __init__
 * sets keeps its class default (see futures.ResponseFuture). New reference. */
static PyObject *new_future(HotCall *h, PyObject *call_id)
{
    PyTypeObject *ft = (PyTypeObject *)h->obj[F_FUTURE_TYPE];
    PyObject *f = ft->tp_new(ft, h->noargs, NULL);
    if (!f)
        return NULL;
    if (PyObject_SetAttr(f, s__client, h->obj[F_CLIENT]) < 0 ||
        PyObject_SetAttr(f, s__call_id, call_id) < 0) {
        Py_DECREF(f);
        return NULL;
    }
    return f;
}

/* Whether job is the last Job recorded in jobs (next(reversed(jobs)) ==
 * id(job), and jobs[id(job)] is job): 1, 0, -1. */
static int job_is_last(PyObject *jobs, PyObject *job)
{
    if (PyDict_GET_SIZE(jobs) == 0)
        return 0;
    PyObject *key = PyLong_FromVoidPtr(job);
    if (!key)
        return -1;
    int r = -1;
    PyObject *it = PyObject_CallOneArg((PyObject *)&PyReversed_Type, jobs);
    if (it) {
        PyObject *last = PyIter_Next(it);
        if (last) {
            r = PyObject_RichCompareBool(last, key, Py_EQ);
            Py_DECREF(last);
        } else if (!PyErr_Occurred()) {
            r = 0;
        }
        Py_DECREF(it);
    }
    if (r == 1) {
        PyObject *got = PyDict_GetItemWithError(jobs, key);   /* borrowed */
        r = got == job ? 1 : (!got && PyErr_Occurred()) ? -1 : 0;
    }
    Py_DECREF(key);
    return r;
}

/* FunctionExecutor._note_call(f): f joins the Job of the call_asyncs just
 * before it when that Job may take it; else Python makes a new one. 0 or -1. */
static int note_call(HotCall *h, PyObject *ex, PyObject *f)
{
    PyObject *job = PyObject_GetAttr(ex, s__calls_job);
    if (!job)
        return -1;
    PyObject *futures = NULL, *left = NULL, *more = NULL;
    int rc = -1, fits = 0;
    long long n = 0;
    if (job != Py_None) {
        if (!(left = PyObject_GetAttr(job, s_left)))
            goto done;
        n = PyLong_AsLongLong(left);
        if (n == -1 && PyErr_Occurred())
            goto done;
        if (!(futures = PyObject_GetAttr(job, s_futures)))
            goto done;
        fits = 0 < n && PyList_CheckExact(futures) &&
               PyList_GET_SIZE(futures) < h->num[I_PER_JOB];
        if (fits && (fits = job_is_last(h->obj[F_JOBS], job)) < 0)
            goto done;
    }
    if (!fits) {
        PyObject *r = PyObject_CallMethodOneArg(ex, s__note_call, f);
        rc = r ? 0 : -1;
        Py_XDECREF(r);
        goto done;
    }
    if (!(more = PyLong_FromLongLong(n + 1)) || PyList_Append(futures, f) < 0 ||
        PyObject_SetAttr(job, s_left, more) < 0 || PyObject_SetAttr(f, s__job, job) < 0)
        goto done;
    rc = 0;
done:
    Py_XDECREF(more);
    Py_XDECREF(futures);
    Py_XDECREF(left);
    Py_DECREF(job);
    return rc;
}

/* Drop call_id from pending again, keeping the exception being raised. */
static void forget_pending(PyObject *pending, PyObject *call_id)
{
#if PY_VERSION_HEX >= 0x030C0000
    PyObject *exc = PyErr_GetRaisedException();
    if (PyDict_DelItem(pending, call_id) < 0)
        PyErr_Clear();
    PyErr_SetRaisedException(exc);
#else
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (PyDict_DelItem(pending, call_id) < 0)
        PyErr_Clear();
    PyErr_Restore(type, value, tb);
#endif
}

/* Client.submit_one without `near`: f registered, the call held back in the
 * out queue, the flusher woken for a first call, a full queue flushed; and the
 * call noted in the executor's Jobs. 0 or -1. */
static int submit(HotCall *h, PyObject *ex, PyObject *call_id, PyObject *payload,
                  PyObject *f)
{
    PyObject *item = PyTuple_Pack(6, h->obj[F_FUNC_ID], h->obj[F_TMS], h->obj[F_RETRIES],
                                  call_id, payload, Py_None);
    if (!item)
        return -1;
    if (PyBytes_CheckExact(payload))
        PyObject_GC_UnTrack(item);   /* ints, bytes, None: in no cycle, not to be walked */
    PyObject *pending = h->obj[F_PENDING];
    if (PyDict_SetItem(pending, call_id, f) < 0) {
        Py_DECREF(item);
        return -1;
    }
    PyObject *r = PyObject_CallMethodOneArg(h->obj[F_OUTQ], s_append, item);
    Py_DECREF(item);
    if (!r) {
        forget_pending(pending, call_id);
        return -1;
    }
    Py_DECREF(r);
    Py_ssize_t n = PyObject_Length(h->obj[F_OUTQ]);
    if (n < 0)
        return -1;
    if (note_call(h, ex, f) < 0)
        return -1;
    r = NULL;
    if (n == 1)
        r = PyObject_CallMethodNoArgs(h->obj[F_CLIENT], s__kick);
    else if (n >= h->num[I_OUTQ_MAX])
        r = PyObject_CallMethodNoArgs(h->obj[F_CLIENT], s_flush);
    else
        return 0;
    Py_XDECREF(r);
    return r ? 0 : -1;
}

/* hot(executor, func, data) -> the future of func(data), or None when the
 * slow path must run (what _Hot.call did). */
static PyObject *hot_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf,
                                PyObject *kwnames)
{
    HotCall *h = (HotCall *)op;
    if (PyVectorcall_NARGS(nargsf) != 3 || (kwnames && PyTuple_GET_SIZE(kwnames)))
        return PyErr_Format(PyExc_TypeError, "HotCall takes (executor, func, data)");
    PyObject *ex = args[0], *func = args[1], *data = args[2];
    int ok = client_usable(h, ex);
    if (ok > 0)
        ok = function_unchanged(h, func);
    if (ok <= 0)
        return ok < 0 ? NULL : Py_NewRef(Py_None);
    PyObject *payload = make_payload(h, data);
    if (!payload)
        return NULL;
    Py_ssize_t size = payload_size(h, payload);
    if (size > h->num[I_MAX_ARGS]) {
        PyErr_Format(PyExc_ValueError, "the arguments are too large to send (%zd bytes pickled)",
                     size);
        size = -1;
    }
    if (size < 0) {
        Py_DECREF(payload);
        return NULL;
    }
    /* Taken before anything that may run Python (a collection while the
     * future is made): the GIL keeps the read and the write together. An id
     * lost to a failure below is only skipped. */
    CallIds *ids = (CallIds *)h->obj[F_IDS];
    PyObject *call_id = PyLong_FromUnsignedLongLong(ids->next++);
    PyObject *f = call_id ? new_future(h, call_id) : NULL;
    if (f && submit(h, ex, call_id, payload, f) < 0)
        Py_CLEAR(f);
    Py_XDECREF(call_id);
    Py_DECREF(payload);
    return f;
}

static PyTypeObject HotCallType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "bettong._bettong.HotCall",
    .tp_basicsize = sizeof(HotCall),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "call_async's prepared submission of one function (executor._Hot).",
    .tp_new = HotCall_new,
    .tp_traverse = (traverseproc)HotCall_traverse,
    .tp_clear = (inquiry)HotCall_clear,
    .tp_dealloc = (destructor)HotCall_dealloc,
    .tp_vectorcall_offset = offsetof(HotCall, vectorcall),
    .tp_call = PyVectorcall_Call,
};

static PyMethodDef hot_functions[] = {
    {"simple_args_pickle", mod_simple_args_pickle, METH_O,
     "simple_args_pickle(x) -> pickle.dumps(((x,), {}), 5) as HotCall writes it, or None "
     "when it leaves x to pickle.dumps."},
    {NULL},
};

int hot_add_types(PyObject *module)
{
    if (intern_names() < 0 || PyType_Ready(&CallIdsType) < 0 || PyType_Ready(&HotCallType) < 0 ||
        PyModule_AddFunctions(module, hot_functions) < 0)
        return -1;
    Py_INCREF(&CallIdsType);
    if (PyModule_AddObject(module, "CallIds", (PyObject *)&CallIdsType) < 0) {
        Py_DECREF(&CallIdsType);
        return -1;
    }
    Py_INCREF(&HotCallType);
    if (PyModule_AddObject(module, "HotCall", (PyObject *)&HotCallType) < 0) {
        Py_DECREF(&HotCallType);
        return -1;
    }
    return 0;
}
