#include "pool/wproc.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "net/auth.h"

#include "pool/proto.h"
#include "pool/subcall.h"
#include "pool/tmpl.h"
#include "pool/tmplfork.h"
#include "pool/wio.h"
#include "pool/wrun.h"
#include "py/bridge.h"
#include "py/arenas.h"
#include "py/hugealloc.h"
#include "py/shmblock.h"
#include "util/log.h"

/* Results at least this large are written from the bytes object itself. */
#define PIN_MIN (64 * 1024)

static void release_pin(void *pin) { Py_DECREF((PyObject *)pin); }

static void send_text_error(uint64_t task_id, const wrun_out_t *out, const char *text)
{
    if (wio_done(task_id, CALL_ERROR, out->started_us, out->finished_us, text, strlen(text),
                 NULL) < 0) {
        log_error("cannot queue a result: out of memory");
        _exit(WORKER_EXIT_ERROR);
    }
}

/* The way back into the pool for the function running (pool/subcall.h): the
 * worker key (derived from the secret, which is then forgotten), the address
 * this worker joined and the task running now (0: none). Python reads them
 * only through _bettong_worker.subcall(), which gives the running task's token. */
static uint8_t sub_key[SUBCALL_KEY_LEN];
static char *sub_address;
static uint64_t sub_task;

static PyObject *py_subcall(PyObject *self, PyObject *noargs)
{
    uint8_t token[SUBCALL_KEY_LEN];
    if (!sub_task || !sub_address)
        Py_RETURN_NONE;
    if (subcall_token(sub_key, sub_task, token) < 0) {
        PyErr_SetString(PyExc_RuntimeError, "cannot derive the sub-call token");
        return NULL;
    }
    return Py_BuildValue("(sKy#)", sub_address, (unsigned long long)sub_task, (const char *)token,
                         (Py_ssize_t)sizeof token);
}

static PyMethodDef subcall_methods[] = {
    {"subcall", py_subcall, METH_NOARGS,
     "(pool address, task id, token) of the call running now, or None: what a nested "
     "executor connects with (a token holds only while its call runs)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef subcall_module = {PyModuleDef_HEAD_INIT, "_bettong_worker", NULL, -1,
                                            subcall_methods};

/* Put _bettong_worker in sys.modules. With the GIL. Returns 0 or -1. */
static int add_subcall_module(void)
{
    PyObject *m = PyModule_Create(&subcall_module);
    if (!m)
        return -1;
    PyObject *mods = PyImport_GetModuleDict(); /* borrowed */
    int rc = PyDict_SetItemString(mods, "_bettong_worker", m);
    Py_DECREF(m);
    if (rc < 0)
        PyErr_Clear();
    return rc;
}

/* A result with out-of-band buffers (wrun_out_t.oob) queued as an
 * out-of-band file, written from the pickle and the buffers where they lie
 * (pinned by a tuple of them). Returns 0, or -1 (nothing queued). */
static int send_parts(uint64_t task_id, wrun_out_t *out)
{
    Py_ssize_t n = PyList_GET_SIZE(out->oob);
    struct iovec *parts = malloc(((size_t)n + 1) * sizeof *parts);
    PyObject *pin = PyTuple_New(n + 1);
    if (!parts || !pin) {
        free(parts);
        Py_XDECREF(pin);
        PyErr_Clear();
        return -1;
    }
    parts[0] = (struct iovec){PyBytes_AS_STRING(out->bytes), (size_t)PyBytes_GET_SIZE(out->bytes)};
    PyTuple_SET_ITEM(pin, 0, Py_NewRef(out->bytes));
    for (Py_ssize_t i = 0; i < n; i++) {
        /* (contiguous: take_buffer took only such buffers) */
        PyObject *mv = PyMemoryView_FromObject(PyList_GET_ITEM(out->oob, i));
        if (!mv) {
            free(parts);
            Py_DECREF(pin);
            PyErr_Clear();
            return -1;
        }
        Py_buffer *v = PyMemoryView_GET_BUFFER(mv);
        parts[i + 1] = (struct iovec){v->buf, (size_t)v->len};
        PyTuple_SET_ITEM(pin, i + 1, mv);
    }
    int rc = wio_done_parts(task_id, out->status, out->started_us, out->finished_us, parts,
                            (int)n + 1, pin);
    free(parts);
    if (rc < 0)
        Py_DECREF(pin);
    return rc;
}

/* Runs the task and frees its message (as soon as its arguments are read). */
static void run_task(wmsg_t *m)
{
    wrun_out_t out;
    wrun_call_t call;
    uint64_t task_id = m->id;
    int ok = wrun_prepare(m->gid, m->payload, m->len, m->fd, &call, &out) == 0;
    wio_msg_free(m);
    if (ok) {
        sub_task = task_id;
        wrun_run(&call, &out);
        sub_task = 0;
    }
    if (out.oob && send_parts(task_id, &out) == 0) {
        wrun_out_clear(&out);
        return;
    }
    /* (A result whose out-of-band file could not be queued is sent pickled
     * again, in band.) */
    if (out.oob && wrun_inband(&out) < 0) {
        send_text_error(task_id, &out, "the result could not be pickled again in band");
        wrun_out_clear(&out);
        return;
    }
    const void *data;
    size_t len;
    wrun_payload(&out, &data, &len);
    /* A large result is written from its bytes object: no copy. */
    PyObject *pin = out.bytes && len >= PIN_MIN ? out.bytes : NULL;
    if (wio_done_wrapped(task_id, out.status, out.started_us, out.finished_us, out.head,
                         out.head_len, data, len, pin, out.tail, out.tail_len) == 0) {
        if (pin)
            out.bytes = NULL; /* comes back through wio_released */
    } else {
        char text[200];
        snprintf(text, sizeof text, "the result (%zu bytes) is too large to send (the limit is "
                 "%llu bytes) or memory ran out", len, (unsigned long long)PROTO_MAX_FRAME);
        send_text_error(task_id, &out, text);
    }
    wrun_out_clear(&out);
}

/* Handles and frees the message. */
static void handle(wmsg_t *m)
{
    switch (m->type) {
    case MSG_FUNCDEF:
        log_debug("function %llu (%zu bytes)", (unsigned long long)m->id, m->len);
        wrun_funcdef(m->id, m->payload, m->len);
        wio_msg_free(m);
        break;
    case MSG_FUNCDROP:
        log_debug("function %llu dropped", (unsigned long long)m->id);
        wrun_funcdrop(m->id);
        wio_msg_free(m);
        break;
    default:
        run_task(m);
        break;
    }
}

/* Messages until the connection closes (the I/O thread exits the process). */
static void serve(void)
{
    for (;;) {
        wmsg_t *m = wio_take(0);
        if (!m) {
            /* Nothing to do: let user threads have the GIL while we wait. */
            py_gil_leave();
            m = wio_take(1);
            py_gil_enter();
        }
        wio_released(release_pin);
        handle(m);
    }
}

/* The secret is for the handshake only: user code never sees it. */
static char *take_secret(void)
{
    const char *s = getenv("BETTONG_SECRET");
    char *copy = strdup(s ? s : "");
    unsetenv("BETTONG_SECRET");
    return copy;
}

/* The python3 host read the environment at its start-up: drop `name` from
 * os.environ (the same dict as posix.environ), its value's bytes zeroed first,
 * so no copy of the secret stays in memory that user code can read. With the
 * GIL. Returns 0 or -1 (exception cleared). */
static int forget_python_env(const char *name)
{
    int rc = -1;
    PyObject *key = PyBytes_FromString(name);
    PyObject *posix = PyImport_ImportModule("posix");
    PyObject *environ = posix ? PyObject_GetAttrString(posix, "environ") : NULL;
    if (key && environ && PyDict_Check(environ)) {
        PyObject *value = PyDict_GetItemWithError(environ, key); /* borrowed */
        if (value && PyBytes_Check(value))
            OPENSSL_cleanse(PyBytes_AS_STRING(value), (size_t)PyBytes_GET_SIZE(value));
        if (value)
            rc = PyDict_DelItem(environ, key);
        else
            rc = PyErr_Occurred() ? -1 : 0;
    }
    Py_XDECREF(environ);
    Py_XDECREF(posix);
    Py_XDECREF(key);
    if (rc < 0)
        PyErr_Clear();
    return rc;
}

/* os.environ[name] = value (NULL: removed), so Python and the C environment
 * agree (os.environ calls putenv/unsetenv). With the GIL. Returns 0 or -1. */
static int set_python_env(const char *name, const char *value)
{
    PyObject *os = PyImport_ImportModule("os");
    PyObject *environ = os ? PyObject_GetAttrString(os, "environ") : NULL;
    int rc = -1;
    if (environ) {
        if (value) {
            PyObject *v = PyUnicode_DecodeFSDefault(value);
            rc = v ? PyMapping_SetItemString(environ, name, v) : -1;
            Py_XDECREF(v);
        } else {
            PyObject *r = PyObject_CallMethod(environ, "pop", "sO", name, Py_None);
            rc = r ? 0 : -1;
            Py_XDECREF(r);
        }
    }
    Py_XDECREF(environ);
    Py_XDECREF(os);
    if (rc < 0)
        PyErr_Clear();
    return rc;
}

/* What user code finds in the environment, in either host: prints reach the
 * log promptly, and $BETTONG_NEAR_STORE names the backend it runs next to. */
static int set_user_env(const char *near, int embedded)
{
    if (embedded) {
        setenv("PYTHONUNBUFFERED", "1", 0);
        if (near)
            setenv("BETTONG_NEAR_STORE", near, 1);
        else
            unsetenv("BETTONG_NEAR_STORE");
        return 0;
    }
    /* The python3 host's stdout is unbuffered already (spawn starts it with -u). */
    if (!getenv("PYTHONUNBUFFERED") && set_python_env("PYTHONUNBUFFERED", "1") < 0)
        return -1;
    return set_python_env("BETTONG_NEAR_STORE", near);
}

/* The Python side: start the embedded interpreter, or adopt the running one
 * (python3 host, GIL held): either way py_gil_enter/py_gil_leave work after it.
 * Returns with the GIL held; 0 or -1 with err set. */
static int start_python(int embedded, char *err, size_t errlen)
{
    if (embedded) {
        char *pyargv[] = {"", NULL};
        if (py_start(1, pyargv, NULL, err, errlen) < 0)
            return -1;
    } else {
        /* sys.argv as the embedded host has it (python3 -c gave '-c' ...). */
        PyObject *argv = Py_BuildValue("[s]", "");
        int rc = argv ? PySys_SetObject("argv", argv) : -1;
        Py_XDECREF(argv);
        if (rc < 0) {
            PyErr_Clear();
            snprintf(err, errlen, "cannot set sys.argv");
            return -1;
        }
        py_adopt();
    }
    py_gil_enter();
    return 0;
}

/* Connect and do the handshake as `name`, then derive the sub-call key.
 * Takes the secret (wiped and freed). When Python runs already (its GIL held
 * by this thread), the GIL is let go meanwhile: the handshake may wait up to
 * 30 s. Returns 0 or a WORKER_EXIT_* status, with why in err (the caller
 * logs it). */
static int join_pool(const char *connect, const char *name, const char *near, char *secret,
                     int python_running, char *err, size_t errlen)
{
    PyThreadState *ts = python_running ? PyEval_SaveThread() : NULL;
    int rc = wio_connect(connect, err, errlen) < 0 ? WORKER_EXIT_NO_CONNECT : 0;
    uint32_t id = 0;
    if (rc == 0)
        rc = wio_hello(connect, name, near, secret, &id, err, errlen);
    int keyed = rc == 0 ? subcall_worker_key(secret, strlen(secret), sub_key) : 0;
    OPENSSL_cleanse(secret, strlen(secret));
    free(secret);
    if (ts)
        PyEval_RestoreThread(ts);
    if (rc != 0)
        return rc;
    sub_address = strdup(connect);
    if (keyed < 0 || !sub_address) {
        snprintf(err, errlen, "cannot derive the sub-call key (out of memory?)");
        return WORKER_EXIT_ERROR;
    }
    log_debug("connected to %s as worker %u", connect, id);
    return 0;
}

/* Python as a task needs it, GIL held: the environment user code sees, the
 * interpreter (started or adopted), _bettong_worker, and wrun's imports.
 * Returns 0 or WORKER_EXIT_ERROR (logged). */
static int prepare_python(const char *near, int embedded)
{
    char err[512];
    if (set_user_env(near, embedded) < 0) {
        log_error("cannot set the environment of user code");
        return WORKER_EXIT_ERROR;
    }
    if (start_python(embedded, err, sizeof err) < 0) {
        log_error("%s", err);
        return WORKER_EXIT_ERROR;
    }
    arenas_install(); /* (a template forked from a caller may have it already) */
    if (add_subcall_module() < 0) {
        log_error("cannot make the _bettong_worker module");
        return WORKER_EXIT_ERROR;
    }
    if (wrun_init(err, sizeof err) < 0) {
        log_error("%s", err);
        return WORKER_EXIT_ERROR;
    }
    return 0;
}

/* The I/O threads, then tasks until the connection closes. */
static int serve_tasks(void)
{
    char err[512];
    wrun_use_oob(wio_passes_fds()); /* large buffers of results as out-of-band files */
    if (wio_passes_fds())
        shmblock_install(); /* large bytes results as the files they were made in */
    if (wio_start(err, sizeof err) < 0) {
        log_error("%s", err);
        return WORKER_EXIT_ERROR;
    }
    serve();
    return WORKER_EXIT_OK;
}

static void set_role(const char *name)
{
    char role[160];
    snprintf(role, sizeof role, "worker %s", name);
    log_set_role(role);
}

/* The secret for the handshake, out of the environment user code sees (in
 * the python3 host, os.environ's copy too). NULL when out of memory (logged). */
static char *secret_for_handshake(int embedded)
{
    char *secret = take_secret();
    if (!secret) {
        log_error("out of memory");
        return NULL;
    }
    if (!embedded && forget_python_env("BETTONG_SECRET") < 0) {
        OPENSSL_cleanse(secret, strlen(secret));
        free(secret);
        log_error("cannot remove the secret from os.environ");
        return NULL;
    }
    return secret;
}

int wproc_run(const wproc_args_t *a, int embedded)
{
    char name[128];
    if (a->name) {
        snprintf(name, sizeof name, "%s", a->name);
    } else {
        char host[64] = "worker";
        gethostname(host, sizeof host - 1);
        snprintf(name, sizeof name, "%s-%d", host, (int)getpid());
    }
    set_role(name);
    /* The secret is the handshake's key; it is never sent. */
    char *secret = secret_for_handshake(embedded);
    if (!secret)
        return WORKER_EXIT_ERROR;
    /* In the embedded host, the pool proves itself before Python even starts. */
    char err[512];
    int rc = join_pool(a->connect, name, a->near, secret, !embedded, err, sizeof err);
    if (rc != 0)
        log_error("%s", err);
    if (rc == 0)
        rc = prepare_python(a->near, embedded);
    return rc == 0 ? serve_tasks() : rc;
}

/* ------------------------------------------------------------ the worker template */

/* What a forked worker needs of the template (pool/tmpl.h). */
typedef struct {
    char *connect; /* copies: the command line's strings are written over */
    char *secret;  /* the template's copy; each worker wipes its own */
    char *cmd;     /* this process's command line area (/proc/PID/cmdline) */
    size_t cmd_len;
    char *orig;    /* a copy of the template's command line, as it was */
} forked_t;

/* The process's command line area, from /proc/self/stat's arg_start and
 * arg_end (fields 48 and 49), and with copy, a copy of what it holds. */
static void find_cmdline(forked_t *f, int copy)
{
    FILE *st = fopen("/proc/self/stat", "r");
    char line[2048];
    size_t n = st ? fread(line, 1, sizeof line - 1, st) : 0;
    if (st)
        fclose(st);
    line[n] = '\0';
    char *p = strrchr(line, ')'); /* after the command name, which may hold spaces */
    unsigned long long start = 0, end = 0;
    for (int field = 2; p && field < 48; field++)
        p = strchr(p + 1, ' ');
    if (!p || sscanf(p, " %llu %llu", &start, &end) != 2 || end <= start)
        return;
    f->cmd = (char *)(uintptr_t)start;
    f->cmd_len = (size_t)(end - start);
    if (!copy)
        return;
    f->orig = malloc(f->cmd_len);
    if (f->orig)
        memcpy(f->orig, f->cmd, f->cmd_len);
}

/* A forked worker shows (`ps`, the tests' process checks) the command line an
 * exec'd one has: the template's without "--template" and with its own name
 * after "--name", written over the template's (it fits: "template" is as long
 * as a local worker's name, and "--template" goes), the rest zeroed. */
static void show_cmdline(const forked_t *f, const char *name)
{
    if (!f->orig || f->orig[f->cmd_len - 1] != '\0')
        return;
    char buf[8192];
    size_t n = 0;
    int after_name = 0;
    for (const char *part = f->orig; part < f->orig + f->cmd_len; part += strlen(part) + 1) {
        const char *shown = after_name ? name : part;
        after_name = strcmp(part, "--name") == 0;
        if (strcmp(part, "--template") == 0)
            continue;
        size_t len = strlen(shown) + 1;
        if (n + len > sizeof buf)
            return;
        memcpy(buf + n, shown, len);
        n += len;
    }
    if (n > f->cmd_len) {
        n = f->cmd_len; /* what fits */
        buf[n - 1] = '\0';
    }
    memcpy(f->cmd, buf, n);
    memset(f->cmd + n, 0, f->cmd_len - n);
}

static int run_forked(const char *name, void *arg)
{
    forked_t *f = arg;
    show_cmdline(f, name);
    set_role(name);
    char *secret = strdup(f->secret);
    OPENSSL_cleanse(f->secret, strlen(f->secret)); /* this process's copy of it */
    if (!secret) {
        log_error("out of memory");
        return WORKER_EXIT_ERROR;
    }
    char err[512];
    int rc = join_pool(f->connect, name, NULL, secret, 1, err, sizeof err);
    if (tmpl_adopted() < 0) {
        /* Forked as the pool stopped (its pid never reached it, so it could
         * not stop us): nothing to say. */
        log_debug("the pool is gone%s%s", rc ? ": " : "", rc ? err : "");
        rc = WORKER_EXIT_ERROR;
    } else if (rc != 0) {
        log_error("%s", err);
    }
    return rc == 0 ? serve_tasks() : rc;
}

/* A template forked from a python3 client has the client's command line
 * area: it shows what an exec'd template would, short of the python3 -c
 * prologue and the address, or as much of it as fits. */
static void cmdline_of_template(forked_t *f, const char *log_level)
{
    const char *parts[] = {"bettong-worker", "--name", "template", "--template",
                           log_level ? "--log-level" : NULL, log_level};
    char shown[512];
    size_t n = 0;
    for (size_t i = 0; i < sizeof parts / sizeof *parts && parts[i]; i++) {
        size_t len = strlen(parts[i]) + 1;
        if (n + len > sizeof shown)
            break;
        memcpy(shown + n, parts[i], len);
        n += len;
    }
    if (!f->cmd || !(f->orig = calloc(1, f->cmd_len)))
        return;
    memcpy(f->orig, shown, n < f->cmd_len ? n : f->cmd_len);
    f->orig[f->cmd_len - 1] = '\0'; /* cut at the end of the area if it is short */
    memcpy(f->cmd, f->orig, f->cmd_len);
}

int wproc_template_forked(int fd, const char *connect, const char *log_level)
{
    log_set_role("worker template");
    forked_t f = {.connect = strdup(connect), .secret = strdup("")};
    find_cmdline(&f, 0); /* the caller's: what it shows is made up below */
    cmdline_of_template(&f, log_level);
    /* The caller's glibc has no malloc.hugetlb tunable (spawn.c gives it to
     * exec'd workers unless GLIBC_TUNABLES is set): the same for Python's
     * large blocks, unless the caller set tunables of its own. */
    const char *tunables = getenv("GLIBC_TUNABLES");
    if (!tunables || !*tunables)
        hugealloc_install();
    int rc = WORKER_EXIT_ERROR;
    if (!f.connect || !f.secret)
        log_error("out of memory");
    else if ((rc = prepare_python(NULL, 0)) == 0)
        rc = tmpl_serve(fd, run_forked, &f); /* (OpenSSL set up by the caller: start_pool) */
    free(f.secret);
    free(f.connect);
    free(f.orig);
    return rc;
}

int wproc_template(const wproc_args_t *a, int embedded)
{
    log_set_role("worker template");
    forked_t f = {.connect = strdup(a->connect), .secret = secret_for_handshake(embedded)};
    find_cmdline(&f, 1);
    int rc = WORKER_EXIT_ERROR;
    if (!f.connect || !f.secret)
        log_error("out of memory");
    else if ((rc = prepare_python(NULL, embedded)) == 0) {
        auth_warm(); /* once, not in every worker */
        rc = tmpl_serve(TMPL_FD, run_forked, &f);
    }
    if (f.secret)
        OPENSSL_cleanse(f.secret, strlen(f.secret));
    free(f.secret);
    free(f.connect);
    free(f.orig);
    return rc;
}
