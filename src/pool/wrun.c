#include "pool/wrun.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/idmap.h"
#include "pool/preader.h"
#include "pool/proto.h"
#include "pool/shm.h"
#include "py/bridge.h"
#include "py/mapped.h"
#include "util/log.h"

/* A function the pool sent, or why it could not be unpickled. */
typedef struct {
    PyObject *fn;
    char *error;
} fentry_t;

static PyObject *pickle_loads, *pickle_load, *pickle_dumps;
/* Imported when first needed (see lazy_attr): NULL before, and after a failure. */
static PyObject *cloudpickle_dumps, *format_exception;
static int cloudpickle_tried, traceback_tried;
static PyObject *protocol5;
static idmap_t funcs; /* gid -> fentry_t */

/* Put the caller's sys.path entries (BETTONG_WORKER_PATH) on ours: its own
 * directories (the script's, the project's) near the front, so the user's
 * modules import; library directories of an interpreter (a stdlib, a
 * site-packages) at the back, so a caller running another build of Python
 * cannot shadow this interpreter's own standard library. */
static const char PATH_CODE[] =
    "def add(entries):\n"
    "    import os, sys\n"
    "    have = set(sys.path)\n"
    "    front, back = [], []\n"
    "    for p in entries.split(os.pathsep):\n"
    "        if not p or p in have:\n"
    "            continue\n"
    "        have.add(p)\n"
    "        base = os.path.basename(p.rstrip(os.sep))\n"
    "        lib = (base in ('site-packages', 'dist-packages', 'lib-dynload')\n"
    "               or p.endswith('.zip') or os.path.isfile(os.path.join(p, 'os.py')))\n"
    "        (back if lib else front).append(p)\n"
    "    sys.path[1:1] = front\n"
    "    sys.path.extend(back)\n";

/* ------------------------------------------------------------ helpers */

static char *text_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *text_printf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0)
        s = NULL;
    va_end(ap);
    if (!s)
        abort(); /* out of memory while describing an error: nothing sane is left */
    return s;
}

/* The current exception as text ("Type: message") and cleared. */
static char *take_summary(void)
{
    char *s = py_exception_summary();
    PyErr_Clear();
    return s;
}

static PyObject *import_attr(const char *module, const char *name)
{
    PyObject *m = PyImport_ImportModule(module);
    if (!m)
        return NULL;
    PyObject *a = PyObject_GetAttrString(m, name);
    Py_DECREF(m);
    return a;
}

/* module.name imported on first use, not at start: a worker template forks its
 * workers sooner without them (cloudpickle alone takes ~30 ms to import), and
 * most workers never need them (a function that arrived cloudpickled imports
 * cloudpickle by itself as it loads). NULL, with the exception cleared, when
 * it cannot be imported; what for says what is lost then (logged once). */
static PyObject *lazy_attr(PyObject **slot, int *tried, const char *module, const char *name,
                           const char *what_for)
{
    if (*tried)
        return *slot;
    *tried = 1;
    *slot = import_attr(module, name);
    if (!*slot) {
        char *why = take_summary();
        log_warn("%s is not importable (%s): %s", module, why, what_for);
        free(why);
    }
    return *slot;
}

static int add_caller_path(void)
{
    const char *env = getenv("BETTONG_WORKER_PATH");
    if (!env || !*env)
        return 0;
    PyObject *globals = PyDict_New();
    if (!globals || PyDict_SetItemString(globals, "__builtins__", PyEval_GetBuiltins()) < 0) {
        Py_XDECREF(globals);
        return -1;
    }
    PyObject *r = PyRun_String(PATH_CODE, Py_file_input, globals, globals);
    PyObject *add = r ? PyDict_GetItemString(globals, "add") : NULL; /* borrowed */
    PyObject *arg = add ? PyUnicode_DecodeFSDefault(env) : NULL;
    PyObject *done = arg ? py_call1(add, arg) : NULL;
    int rc = done ? 0 : -1;
    Py_XDECREF(done);
    Py_XDECREF(arg);
    Py_XDECREF(r);
    Py_DECREF(globals);
    return rc;
}

int wrun_init(char *err, size_t errlen)
{
    idmap_init(&funcs);
    /* A large bytes argument is then taken as its memfd mapped. */
    mapped_install();
    if (add_caller_path() < 0) {
        char *why = take_summary();
        log_warn("cannot add BETTONG_WORKER_PATH to sys.path: %s", why);
        free(why);
    }
    /* _pickle: pickle's own functions, without the pure-Python module around
     * them (which imports re, struct...). */
    const char *pickler = "_pickle";
    PyObject *probe = PyImport_ImportModule(pickler);
    if (!probe) {
        PyErr_Clear();
        pickler = "pickle";
    }
    Py_XDECREF(probe);
    pickle_loads = import_attr(pickler, "loads");
    pickle_load = pickle_loads ? import_attr(pickler, "load") : NULL;
    pickle_dumps = pickle_load ? import_attr(pickler, "dumps") : NULL;
    protocol5 = PyLong_FromLong(5);
    if (!pickle_dumps || !protocol5) {
        char *why = take_summary();
        snprintf(err, errlen, "cannot import pickle: %s", why);
        free(why);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------ functions */

static void fentry_free(fentry_t *e)
{
    if (!e)
        return;
    Py_XDECREF(e->fn);
    free(e->error);
    free(e);
}

/* Unpickle from memory the caller owns, without copying it into a bytes. */
static PyObject *loads_in_place(const uint8_t *p, size_t n)
{
    PyObject *mv = PyMemoryView_FromMemory((char *)p, (Py_ssize_t)n, PyBUF_READ);
    if (!mv)
        return NULL;
    PyObject *obj = py_call1(pickle_loads, mv);
    /* The memory goes away after this call: make sure nothing can read it later
     * through a view that escaped. A loads error stays the current exception. */
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyObject *rel = PyObject_CallMethod(mv, "release", NULL);
    if (!rel)
        PyErr_Clear();
    Py_XDECREF(rel);
    Py_DECREF(mv);
    PyErr_Restore(type, value, tb);
    return obj;
}

void wrun_funcdef(uint64_t gid, const uint8_t *p, size_t n)
{
    fentry_t *e = calloc(1, sizeof *e);
    if (!e) {
        log_error("out of memory storing function %llu", (unsigned long long)gid);
        return;
    }
    e->fn = loads_in_place(p, n);
    if (!e->fn) {
        char *tb = py_take_traceback();
        e->error = text_printf("the function could not be unpickled in the worker (pid %d):\n%s",
                               (int)getpid(), tb);
        free(tb);
    }
    fentry_t *old = idmap_get(&funcs, gid);
    if (idmap_put(&funcs, gid, e) < 0) {
        log_error("out of memory storing function %llu", (unsigned long long)gid);
        fentry_free(e);
        return;
    }
    fentry_free(old);
}

void wrun_funcdrop(uint64_t gid) { fentry_free(idmap_del(&funcs, gid)); }

/* ------------------------------------------------------------ pickling */

/* Buffers from this size go out of band. */
#define OOB_MIN SHM_MIN

static int use_oob;

void wrun_use_oob(int on) { use_oob = on; }

/* pickle's buffer_callback, bound to a list: a contiguous buffer of at least
 * OOB_MIN bytes joins the list and goes out of band (False); any other stays
 * in the pickle (True). */
static PyObject *take_buffer(PyObject *list, PyObject *pb)
{
    Py_buffer v;
    if (PyList_GET_SIZE(list) >= SHM_OOB_MAX || PyObject_GetBuffer(pb, &v, PyBUF_ANY_CONTIGUOUS) < 0) {
        PyErr_Clear();
        Py_RETURN_TRUE;
    }
    Py_ssize_t n = v.len;
    PyBuffer_Release(&v);
    if (n < OOB_MIN)
        Py_RETURN_TRUE;
    if (PyList_Append(list, pb) < 0)
        return NULL;
    Py_RETURN_FALSE;
}

static PyMethodDef take_buffer_def = {"take_buffer", take_buffer, METH_O, NULL};

/* dumps(obj, 5, buffer_callback=...) with the large buffers into *oob (a new
 * list when there are any, else NULL). NULL with a Python exception. */
static PyObject *dumps_oob(PyObject *dumps, PyObject *obj, PyObject **oob)
{
    *oob = NULL;
    PyObject *list = PyList_New(0);
    PyObject *cb = list ? PyCFunction_New(&take_buffer_def, list) : NULL;
    PyObject *args = cb ? PyTuple_Pack(2, obj, protocol5) : NULL;
    PyObject *kw = args ? Py_BuildValue("{sO}", "buffer_callback", cb) : NULL;
    PyObject *b = kw ? PyObject_Call(dumps, args, kw) : NULL;
    Py_XDECREF(kw);
    Py_XDECREF(args);
    Py_XDECREF(cb);
    if (b && PyList_GET_SIZE(list) > 0)
        *oob = Py_NewRef(list);
    Py_XDECREF(list);
    return b;
}

/* pickle.dumps(obj, 5), else cloudpickle.dumps(obj, 5); with oob, large
 * buffers out of band into *oob (see dumps_oob). On failure NULL, with both
 * reasons in *why (malloc'd) if given. */
static PyObject *dumps_any_oob(PyObject *obj, char **why, PyObject **oob)
{
    PyObject *b = oob ? dumps_oob(pickle_dumps, obj, oob) : py_call2(pickle_dumps, obj, protocol5);
    if (b)
        return b;
    char *e1 = take_summary();
    char *e2 = NULL;
    PyObject *cp_dumps = lazy_attr(&cloudpickle_dumps, &cloudpickle_tried, "cloudpickle", "dumps",
                                   "results that pickle cannot handle will not be sent");
    if (cp_dumps) {
        b = oob ? dumps_oob(cp_dumps, obj, oob) : py_call2(cp_dumps, obj, protocol5);
        if (b) {
            free(e1);
            return b;
        }
        e2 = take_summary();
    }
    if (why)
        *why = e2 ? text_printf("pickle: %s; cloudpickle: %s", e1, e2) : text_printf("%s", e1);
    free(e1);
    free(e2);
    return NULL;
}

static PyObject *dumps_any(PyObject *obj, char **why)
{
    return dumps_any_oob(obj, why, NULL);
}

/* "module.QualName", or "QualName" for builtins. New reference. */
static PyObject *type_name(PyTypeObject *t)
{
    PyObject *mod = PyObject_GetAttrString((PyObject *)t, "__module__");
    PyObject *qn = PyObject_GetAttrString((PyObject *)t, "__qualname__");
    PyObject *name = NULL;
    if (qn && PyUnicode_Check(qn)) {
        if (mod && PyUnicode_Check(mod) && PyUnicode_CompareWithASCIIString(mod, "builtins") != 0)
            name = PyUnicode_FromFormat("%U.%U", mod, qn);
        else
            name = Py_NewRef(qn);
    }
    Py_XDECREF(mod);
    Py_XDECREF(qn);
    if (!name) {
        PyErr_Clear();
        name = PyUnicode_FromString(t->tp_name);
    }
    return name;
}

static PyObject *traceback_text(PyObject *type, PyObject *value, PyObject *tb)
{
    PyObject *fmt = lazy_attr(&format_exception, &traceback_tried, "traceback",
                              "format_exception", "errors will carry no traceback");
    PyObject *lines = fmt ? PyObject_CallFunctionObjArgs(fmt, type, value, tb ? tb : Py_None,
                                                         NULL)
                          : NULL;
    PyObject *sep = lines ? PyUnicode_FromString("") : NULL;
    PyObject *text = sep ? PyUnicode_Join(sep, lines) : NULL;
    Py_XDECREF(sep);
    Py_XDECREF(lines);
    if (!text) {
        PyErr_Clear();
        text = PyUnicode_FromString("(traceback unavailable)");
    }
    return text;
}

static PyObject *message_text(PyObject *value)
{
    PyObject *s = PyObject_Str(value);
    if (!s) {
        PyErr_Clear();
        s = PyUnicode_FromString("<exception str() failed>");
    }
    return s;
}

/* The user's function raised: out gets CALL_RAISED with the pickled
 * (exception or None, type name, message, traceback). */
static void raised(wrun_out_t *out)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (!value)
        value = Py_NewRef(Py_None);
    if (tb && value != Py_None)
        PyException_SetTraceback(value, tb);
    PyObject *name = type_name(type ? (PyTypeObject *)type : Py_TYPE(value));
    PyObject *msg = message_text(value);
    PyObject *text = traceback_text(type ? type : (PyObject *)Py_TYPE(value), value, tb);
    PyObject *t = name && msg && text ? PyTuple_Pack(4, value, name, msg, text) : NULL;
    out->bytes = t ? dumps_any(t, NULL) : NULL;
    if (!out->bytes && name && msg && text) {
        /* The exception itself does not pickle: send its description. */
        Py_XDECREF(t);
        t = PyTuple_Pack(4, Py_None, name, msg, text);
        out->bytes = t ? dumps_any(t, NULL) : NULL;
    }
    if (out->bytes) {
        out->status = CALL_RAISED;
    } else {
        PyErr_Clear();
        out->status = CALL_ERROR;
        out->text = text_printf("the call raised, and its exception could not be reported");
    }
    Py_XDECREF(t);
    Py_XDECREF(name);
    Py_XDECREF(msg);
    Py_XDECREF(text);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
}

/* Unpickle bytes [0, n) of the memfd fd (pool/preader.h): a large bytes
 * object in them is read straight into the bytes object made for it. */
static PyObject *load_from_fd(int fd, size_t n)
{
    PyObject *reader = preader_new(fd, n);
    if (!reader)
        return NULL;
    PyObject *obj = py_call1(pickle_load, reader);
    /* fd is closed after this call: a reader that escaped must not read
     * whatever file gets its number next. */
    preader_detach(reader);
    Py_DECREF(reader);
    return obj;
}

/* ------------------------------------------------------------ tasks */

static void error_out(wrun_out_t *out, char *text)
{
    out->status = CALL_ERROR;
    out->text = text;
}

/* The one bytes argument of an object file (pool/shm.h): the memfd's pages
 * mapped (py/mapped.h) or read, or, from a pool that could not pass the
 * descriptor, the payload's bytes. NULL with no exception when the payload
 * is not an object file (a pickle); NULL with one on failure. */
static PyObject *object_file_arg(const uint8_t *p, size_t n, int fd)
{
    uint8_t head[SHM_OBJ_HEAD];
    uint64_t len;
    if (fd < 0) {
        if (!shm_obj_parse(p, n, n, &len))
            return NULL;
        return PyBytes_FromStringAndSize((const char *)p + SHM_OBJ_DATA, (Py_ssize_t)len);
    }
    if (n < SHM_OBJ_HEAD || shm_read(fd, 0, head, SHM_OBJ_HEAD) < 0 ||
        !shm_obj_parse(head, SHM_OBJ_HEAD, n, &len))
        return NULL;
    PyObject *b = mapped_bytes(fd, SHM_OBJ_DATA, (size_t)len);
    if (b)
        return b;
    if (len > PY_SSIZE_T_MAX)
        return PyErr_NoMemory();
    b = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)len); /* (mapping refused: a copy) */
    if (!b)
        return NULL;
    if (shm_read(fd, SHM_OBJ_DATA, PyBytes_AS_STRING(b), (size_t)len) < 0) {
        Py_DECREF(b);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return b;
}

/* args, kwargs from the task's payload, or an error in out. */
static int unpack_args(const uint8_t *p, size_t n, int fd, PyObject **args, PyObject **kwargs,
                       wrun_out_t *out)
{
    PyObject *arg = object_file_arg(p, n, fd);
    if (arg || PyErr_Occurred()) {
        *args = arg ? PyTuple_Pack(1, arg) : NULL;
        Py_XDECREF(arg);
        *kwargs = NULL;
        if (*args)
            return 0;
        char *tb = py_take_traceback();
        error_out(out, text_printf("the call's argument could not be read in the worker "
                                   "(pid %d):\n%s", (int)getpid(), tb));
        free(tb);
        return -1;
    }
    PyObject *pair = fd >= 0 ? load_from_fd(fd, n) : loads_in_place(p, n);
    if (!pair) {
        char *tb = py_take_traceback();
        error_out(out, text_printf("the call's arguments could not be unpickled in the worker "
                                   "(pid %d):\n%s", (int)getpid(), tb));
        free(tb);
        return -1;
    }
    if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
        Py_DECREF(pair);
        error_out(out, text_printf("the call's payload is not an (args, kwargs) pair"));
        return -1;
    }
    PyObject *a = PyTuple_GET_ITEM(pair, 0);
    PyObject *k = PyTuple_GET_ITEM(pair, 1);
    *args = PyTuple_Check(a) ? Py_NewRef(a) : PySequence_Tuple(a);
    if (!*args || (k != Py_None && !PyDict_Check(k))) {
        PyErr_Clear();
        Py_XDECREF(*args);
        Py_DECREF(pair);
        error_out(out, text_printf("the call's payload is not an (args tuple, kwargs dict) "
                                   "pair"));
        return -1;
    }
    *kwargs = k == Py_None ? NULL : Py_NewRef(k);
    Py_DECREF(pair);
    return 0;
}

/* Results from this size that are bytes objects are sent as they are. */
#define RAW_BYTES_MIN (64 * 1024)

static void result_out(PyObject *res, wrun_out_t *out)
{
    char *why = NULL;
    Py_ssize_t n = PyBytes_CheckExact(res) ? PyBytes_GET_SIZE(res) : 0;
    if (n >= RAW_BYTES_MIN && (uint64_t)n <= UINT32_MAX) {
        /* pickle.dumps(res, 5) without copying the bytes (proto.h). */
        proto_bytes_pickle(out->head, out->tail, (uint32_t)n);
        out->head_len = PROTO_BYTES_HEAD;
        out->tail_len = PROTO_BYTES_TAIL;
        out->bytes = Py_NewRef(res);
        out->status = CALL_OK;
        return;
    }
    out->bytes = dumps_any_oob(res, &why, use_oob ? &out->oob : NULL);
    if (out->bytes) {
        out->status = CALL_OK;
        return;
    }
    PyObject *tn = type_name(Py_TYPE(res));
    const char *name = tn ? PyUnicode_AsUTF8(tn) : NULL;
    if (!name)
        PyErr_Clear();
    error_out(out, text_printf("the result of the call (of type %s) could not be pickled: %s",
                               name ? name : Py_TYPE(res)->tp_name, why ? why : "?"));
    Py_XDECREF(tn);
    free(why);
}

int wrun_prepare(uint64_t gid, const uint8_t *p, size_t n, int fd, wrun_call_t *call,
                 wrun_out_t *out)
{
    memset(out, 0, sizeof *out);
    memset(call, 0, sizeof *call);
    out->started_us = proto_now_us();
    fentry_t *e = idmap_get(&funcs, gid);
    if (!e)
        error_out(out, text_printf("function %llu was never sent to this worker",
                                   (unsigned long long)gid));
    else if (e->error)
        error_out(out, text_printf("%s", e->error));
    else if (unpack_args(p, n, fd, &call->args, &call->kwargs, out) == 0)
        call->fn = Py_NewRef(e->fn);
    if (!call->fn) {
        out->finished_us = proto_now_us();
        return -1;
    }
    return 0;
}

void wrun_run(wrun_call_t *call, wrun_out_t *out)
{
    PyObject *res = PyObject_Call(call->fn, call->args, call->kwargs);
    /* The arguments may be large: let them go before pickling the result. */
    Py_CLEAR(call->args);
    Py_CLEAR(call->kwargs);
    Py_CLEAR(call->fn);
    if (res) {
        result_out(res, out);
        Py_DECREF(res);
    } else {
        raised(out);
    }
    out->finished_us = proto_now_us();
}

void wrun_payload(const wrun_out_t *out, const void **data, size_t *len)
{
    if (out->bytes) {
        *data = PyBytes_AS_STRING(out->bytes);
        *len = (size_t)PyBytes_GET_SIZE(out->bytes);
    } else {
        *data = out->text ? out->text : "";
        *len = out->text ? strlen(out->text) : 0;
    }
}

int wrun_inband(wrun_out_t *out)
{
    PyObject *args = PyTuple_Pack(1, out->bytes);
    PyObject *kw = args ? Py_BuildValue("{sO}", "buffers", out->oob) : NULL;
    PyObject *obj = kw ? PyObject_Call(pickle_loads, args, kw) : NULL;
    Py_XDECREF(kw);
    Py_XDECREF(args);
    PyObject *b = obj ? dumps_any(obj, NULL) : NULL;
    Py_XDECREF(obj);
    if (!b) {
        PyErr_Clear();
        return -1;
    }
    Py_SETREF(out->bytes, b);
    Py_CLEAR(out->oob);
    return 0;
}

void wrun_out_clear(wrun_out_t *out)
{
    Py_CLEAR(out->bytes);
    Py_CLEAR(out->oob);
    free(out->text);
    out->text = NULL;
}
