#include "pool/worker.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "net/auth.h"
#include "net/guard.h"
#include "pool/join.h"
#include "pool/proto.h"
#include "pool/spawn.h"
#include "pool/subcall.h"
#include "pool/tmpl.h"
#include "pool/wio.h"
#include "pool/wrun.h"
#include "py/bridge.h"
#include "util/args.h"
#include "util/log.h"

#define PROG "bettong worker"
/* Results at least this large are written from the bytes object itself. */
#define PIN_MIN (64 * 1024)

typedef struct {
    const char *connect;
    const char *join;
    const char *name;
    const char *secret, *secret_file;
    const char *log_level;
    const char *near; /* --near-store: a store backend's name */
    long procs;       /* -1: one per CPU */
    double give_up_s;
    int template;     /* --template: the pool's worker template (pool/tmpl.h) */
} worker_args_t;

static void usage(FILE *f)
{
    fprintf(f,
"usage: bettong worker --join HOST:PORT [--procs N] [--secret-file PATH] [--name NAME]\n"
"                      [--near-store BACKEND] [--give-up SECONDS] [--log-level LEVEL]\n"
"       bettong worker --connect ADDR [--name NAME] [--near-store BACKEND]\n"
"                      [--log-level LEVEL]\n"
"\n"
"--join lends this machine's cores to a `bettong pool` listening on HOST:PORT: it\n"
"starts N worker processes (default: one per CPU), starts again any that dies,\n"
"and stops them on SIGTERM or SIGINT. It gives up (exit 1) when none can connect\n"
"for --give-up seconds (default 30), stops at once (exit 2) if the pool\n"
"refuses them (another version), and stops at once (exit 3) if the pool cannot\n"
"prove it knows the secret (a wrong secret on either side, or not the real pool):\n"
"no task of such a pool is ever read.\n"
"\n"
"--connect ADDR is one worker process (what the pool and --join start): ADDR is\n"
"unix:PATH or HOST:PORT. It runs the pool's tasks with the embedded Python until\n"
"the connection closes.\n"
"\n"
"  --secret-file PATH  the pool's secret: the first line of PATH (mode 0600 or\n"
"                      0400). Default: $BETTONG_SECRET (--connect reads only\n"
"                      the environment)\n"
"  --secret S          the same on the command line (works, but warns: every\n"
"                      user of the machine can read it with ps)\n"
"  --name NAME         shown in the pool's log lines (default: HOST-PID)\n"
"  --near-store B      these workers run next to the store backend named B (its\n"
"                      `bettong store --name`): the pool sends them first the\n"
"                      calls on objects of B (FunctionExecutor.map over\n"
"                      persistent objects), and their results say so. User code\n"
"                      sees it as $BETTONG_NEAR_STORE\n"
"\n"
"(--template, with --connect, is the pool's own: the process that starts Python\n"
"once and forks the pool's local workers from it, on the pool's request.)\n"
"\n"
"Environment: BETTONG_SECRET (the secret), BETTONG_WORKER_PATH (directories to\n"
"add to sys.path, separated by ':', so the caller's modules import).\n");
}


static int parse_number(const char *s, double max, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end != '\0' || !(v >= 0) || v > max)
        return -1;
    *out = v;
    return 0;
}

static int parse_args(int argc, char **argv, worker_args_t *a)
{
    memset(a, 0, sizeof *a);
    a->procs = -1;
    a->give_up_s = 30;
    for (int i = 1; i < argc; i++) {
        int missing = 0;
        const char *v;
        double d;
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            exit(0);
        } else if (strcmp(argv[i], "--template") == 0) {
            a->template = 1;
        } else if ((v = args_flag_value(argc, argv, &i, "--connect", &missing))) {
            a->connect = v;
        } else if ((v = args_flag_value(argc, argv, &i, "--join", &missing))) {
            a->join = v;
        } else if ((v = args_flag_value(argc, argv, &i, "--name", &missing))) {
            a->name = v;
        } else if ((v = args_flag_value(argc, argv, &i, "--near-store", &missing))) {
            if (!*v || strlen(v) > PROTO_PLACE_MAX) {
                fprintf(stderr, PROG ": --near-store takes a store backend's name of 1 to %d "
                        "bytes\n", PROTO_PLACE_MAX);
                return -1;
            }
            a->near = v;
        } else if ((v = args_flag_value(argc, argv, &i, "--secret", &missing))) {
            a->secret = v;
        } else if ((v = args_flag_value(argc, argv, &i, "--secret-file", &missing))) {
            a->secret_file = v;
        } else if ((v = args_flag_value(argc, argv, &i, "--log-level", &missing))) {
            if (log_parse_level(v) < 0) {
                fprintf(stderr, PROG ": unknown log level '%s'\n", v);
                return -1;
            }
            a->log_level = v;
        } else if ((v = args_flag_value(argc, argv, &i, "--procs", &missing))) {
            if (parse_number(v, 4096, &d) < 0 || d < 1 || d != (long)d) {
                fprintf(stderr, PROG ": --procs takes a number from 1 to 4096\n");
                return -1;
            }
            a->procs = (long)d;
        } else if ((v = args_flag_value(argc, argv, &i, "--give-up", &missing))) {
            if (parse_number(v, 1e9, &a->give_up_s) < 0) {
                fprintf(stderr, PROG ": --give-up takes a number of seconds\n");
                return -1;
            }
        } else {
            fprintf(stderr, missing ? PROG ": option '%s' needs a value\n"
                                    : PROG ": unknown argument '%s'\n", argv[i]);
            return -1;
        }
    }
    if (!a->connect == !a->join) {
        fprintf(stderr, PROG ": give one of --join HOST:PORT or --connect ADDR\n");
        return -1;
    }
    if (a->template && !a->connect) {
        fprintf(stderr, PROG ": --template goes with --connect\n");
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------ process mode */

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

/* Runs the task and frees its message (as soon as its arguments are read). */
static void run_task(wmsg_t *m)
{
    wrun_out_t out;
    wrun_call_t call;
    uint64_t task_id = m->id;
    int ok = wrun_prepare(m->gid, m->payload, m->len, &call, &out) == 0;
    wio_msg_free(m);
    if (ok) {
        sub_task = task_id;
        wrun_run(&call, &out);
        sub_task = 0;
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

/* Connect to the pool and do the handshake as `name`; derive the sub-call key.
 * Takes the secret (wiped and freed). Returns 0 or the exit status. */
static int join_pool(const char *connect, const char *name, const char *near, char *secret)
{
    char err[512];
    if (wio_connect(connect, err, sizeof err) < 0) {
        OPENSSL_cleanse(secret, strlen(secret));
        free(secret);
        log_error("%s", err);
        return WORKER_EXIT_NO_CONNECT;
    }
    uint32_t id = 0;
    int rc = wio_hello(connect, name, near, secret, &id, err, sizeof err);
    int keyed = rc == 0 ? subcall_worker_key(secret, strlen(secret), sub_key) : 0;
    OPENSSL_cleanse(secret, strlen(secret));
    free(secret);
    sub_address = strdup(connect);
    if (keyed < 0 || !sub_address) {
        log_error("cannot derive the sub-call key (out of memory?)");
        return WORKER_EXIT_ERROR;
    }
    if (rc != 0) {
        log_error("%s", err);
        return rc;
    }
    log_debug("connected to %s as worker %u", connect, id);
    return 0;
}

/* Start the embedded Python with what every task needs (pickle, cloudpickle,
 * the caller's sys.path) and keep its GIL. Returns 0 or the exit status. */
static int start_python(const char *near)
{
    char err[512];
    /* Prints from user code reach the log promptly. */
    setenv("PYTHONUNBUFFERED", "1", 0);
    /* User code may want to know which backend it runs next to. */
    if (near)
        setenv("BETTONG_NEAR_STORE", near, 1);
    else
        unsetenv("BETTONG_NEAR_STORE");
    char *pyargv[] = {"", NULL};
    if (py_start(1, pyargv, NULL, err, sizeof err) < 0) {
        log_error("%s", err);
        return WORKER_EXIT_ERROR;
    }
    py_gil_enter();
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

static int run_process(const worker_args_t *a)
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
    char *secret = take_secret();
    if (!secret) {
        log_error("out of memory");
        return WORKER_EXIT_ERROR;
    }
    /* The pool proves itself before Python even starts. */
    int rc = join_pool(a->connect, name, a->near, secret);
    if (rc == 0)
        rc = start_python(a->near);
    return rc == 0 ? serve_tasks() : rc;
}

/* --template: what a forked worker runs, and what it needs of the template. */
typedef struct {
    char *connect;    /* copies: the argv strings are written over (show_args) */
    char *log_level;  /* NULL: none */
    char *secret;     /* the template's copy */
    char *args;       /* the template's argv strings, one after the other */
    size_t args_len;  /* from argv[0] to the end of the last one */
} forked_t;

/* A forked worker shows (ps, /proc/PID/cmdline) the command line an exec'd
 * one would have, not the template's: written over the template's argv
 * strings, which it fits in (a name of TMPL_NAME_MAX in place of "template"
 * and "--template" gone), the rest zeroed. */
static void show_args(const forked_t *f, const char *name)
{
    if (!f->args)
        return;
    const char *parts[] = {f->args, "worker", "--connect", f->connect, "--name", name,
                           f->log_level ? "--log-level" : NULL, f->log_level};
    char buf[4096];
    size_t n = 0;
    for (size_t i = 0; i < sizeof parts / sizeof *parts && parts[i]; i++) {
        size_t len = strlen(parts[i]) + 1;
        if (n + len > sizeof buf)
            return;
        memcpy(buf + n, parts[i], len);
        n += len;
    }
    if (n > f->args_len)
        return;
    memcpy(f->args, buf, n);
    memset(f->args + n, 0, f->args_len - n);
}

static int run_forked(const char *name, void *arg)
{
    forked_t *f = arg;
    show_args(f, name);
    set_role(name);
    char *secret = strdup(f->secret);
    OPENSSL_cleanse(f->secret, strlen(f->secret)); /* this process's copy of it */
    if (!secret) {
        log_error("out of memory");
        return WORKER_EXIT_ERROR;
    }
    int rc = join_pool(f->connect, name, NULL, secret);
    if (rc == 0 && tmpl_adopted() < 0) {
        log_error("the pool is gone");
        rc = WORKER_EXIT_ERROR;
    }
    return rc == 0 ? serve_tasks() : rc;
}

/* The program's argv strings as one area, if they lie one after the other as
 * exec laid them out: argv here is main's from its [1] ("worker"), so [-1] is
 * the program's path. */
static void args_area(int argc, char **argv, forked_t *f)
{
    char **all = argv - 1;
    for (int i = 1; i <= argc; i++)
        if (all[i] != all[i - 1] + strlen(all[i - 1]) + 1)
            return;
    f->args = all[0];
    f->args_len = (size_t)(all[argc] + strlen(all[argc]) + 1 - all[0]);
}

static int run_template(const worker_args_t *a, int argc, char **argv)
{
    log_set_role("worker template");
    forked_t f = {.connect = strdup(a->connect),
                  .log_level = a->log_level ? strdup(a->log_level) : NULL,
                  .secret = take_secret()};
    args_area(argc, argv, &f);
    int rc = WORKER_EXIT_ERROR;
    if (!f.secret || !f.connect || (a->log_level && !f.log_level))
        log_error("out of memory");
    else if ((rc = start_python(NULL)) == 0) {
        auth_warm(); /* once, not in every worker (else each does it) */
        rc = tmpl_serve(run_forked, &f);
    }
    if (f.secret)
        OPENSSL_cleanse(f.secret, strlen(f.secret));
    free(f.secret);
    free(f.connect);
    free(f.log_level);
    return rc;
}

int cmd_worker(int argc, char **argv)
{
    worker_args_t a;
    if (parse_args(argc, argv, &a) < 0) {
        fprintf(stderr, "(bettong worker --help for the options)\n");
        return 2;
    }
    if (a.log_level)
        log_set_level((log_level)log_parse_level(a.log_level));
    if (a.template)
        return run_template(&a, argc, argv);
    if (a.connect)
        return run_process(&a);
    log_set_role("worker --join");
    char host[64] = "worker";
    gethostname(host, sizeof host - 1);
    char name[128];
    snprintf(name, sizeof name, "%s", a.name ? a.name : host);
    char secret[256];
    size_t secret_len;
    if (guard_service_secret("bettong worker", a.secret, a.secret_file, secret, sizeof secret,
                             &secret_len) < 0)
        return 2;
    join_args_t j = {.address = a.join,
                     .procs = a.procs > 0 ? (unsigned)a.procs : spawn_ncpu(),
                     .secret = secret_len ? secret : NULL,
                     .name = name,
                     .give_up_s = a.give_up_s,
                     .log_level = a.log_level,
                     .near = a.near};
    return join_run(&j);
}
