/* bettong._wproc: a pool's worker process hosted by the python3 executable
 * (src/pool/wproc.h). The pool starts workers as
 *
 *   python3 -u -c "import sys; <LIBDIR first on sys.path>; from bettong._wproc
 *       import main; sys.exit(main(sys.argv[2:]))" LIBDIR --connect ADDR ...
 *
 * (src/pool/spawn.c), so user code runs on the interpreter build of a plain
 * python3 process (PGO + LTO on Debian) instead of the bettong binary's static
 * libpython (the same code without LTO: about 1.07x the time). From here on it
 * is the worker of `bettong worker --connect`: the same C code.
 *
 *   main(args) -> int
 *       args: "--connect" ADDR, "--name" NAME, "--log-level" LEVEL,
 *       "--near-store" BACKEND (each optional but --connect). Returns only if
 *       the worker cannot start or connect (a WORKER_EXIT_* status); once it
 *       serves, the process ends when the pool closes the connection. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "net/auth.h"
#include "pool/tmpl.h"
#include "pool/tmplfork.h"
#include "pool/wio.h"
#include "pool/wproc.h"
#include "py/arenas.h"
#include "py/hugealloc.h"
#include "util/log.h"
#include "util/sigreset.h"

/* The value after flag `i` of `args` (borrowed UTF-8, owned by the list). */
static const char *flag_value(PyObject *args, Py_ssize_t i)
{
    if (i + 1 >= PyList_GET_SIZE(args)) {
        PyErr_Format(PyExc_ValueError, "%U needs a value", PyList_GET_ITEM(args, i));
        return NULL;
    }
    return PyUnicode_AsUTF8(PyList_GET_ITEM(args, i + 1));
}

static PyObject *wproc_main(PyObject *self, PyObject *args)
{
    if (!PyList_Check(args)) {
        PyErr_SetString(PyExc_TypeError, "main() takes the list of arguments");
        return NULL;
    }
    wproc_args_t a = {0};
    int template = 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(args); i += 2) {
        const char *flag = PyUnicode_AsUTF8(PyList_GET_ITEM(args, i));
        if (flag && strcmp(flag, "--template") == 0) {
            template = 1; /* (a flag without a value) */
            i--;
            continue;
        }
        const char *v = flag ? flag_value(args, i) : NULL;
        if (!v)
            return NULL;
        if (strcmp(flag, "--connect") == 0) {
            a.connect = v;
        } else if (strcmp(flag, "--name") == 0) {
            a.name = v;
        } else if (strcmp(flag, "--near-store") == 0) {
            a.near = v;
        } else if (strcmp(flag, "--log-level") == 0) {
            int level = log_parse_level(v);
            if (level < 0) {
                PyErr_Format(PyExc_ValueError, "unknown log level '%s'", v);
                return NULL;
            }
            log_set_level((log_level)level);
        } else {
            PyErr_Format(PyExc_ValueError, "unknown argument '%s'", flag);
            return NULL;
        }
    }
    if (!a.connect) {
        PyErr_SetString(PyExc_ValueError, "--connect ADDR is required");
        return NULL;
    }
    return PyLong_FromLong(template ? wproc_template(&a, 0) : wproc_run(&a, 0));
}

/* ------------------------------------------------------------ start_pool */

/* A NULL-terminated array of the list's bytes (borrowed from it, which must
 * outlive the array), with `extra` more NULL slots; NULL with an exception. */
static char **bytes_array(PyObject *list, size_t extra)
{
    Py_ssize_t n = PyList_GET_SIZE(list);
    char **out = calloc((size_t)n + extra + 1, sizeof *out);
    if (!out)
        return (char **)PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(list, i);
        if (!PyBytes_Check(item) || strlen(PyBytes_AS_STRING(item)) != (size_t)PyBytes_GET_SIZE(item)) {
            PyErr_SetString(PyExc_TypeError, "start_pool() takes lists of bytes without NUL");
            free(out);
            return NULL;
        }
        out[i] = PyBytes_AS_STRING(item);
    }
    return out;
}

/* fd moved to a number of at least 10 (so that putting others at 0, 1 and 3
 * cannot overwrite it), close-on-exec. */
static int above_std(int fd) { return fcntl(fd, F_DUPFD_CLOEXEC, 10); }

/* In the template: what the client had open on 3 and above, other than
 * regular files, directories and devices (a terminal, /dev/null), is replaced
 * by /dev/null, so the workers hold none of its sockets and pipes open (a
 * connection of its own would otherwise outlive its close) while the numbers
 * stay taken (a Python object of the client's that still names one writes
 * nowhere, never into a worker's connection). keep: our control socket. */
static void detach_inherited_fds(int devnull, int keep)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        int fd = atoi(e->d_name);
        struct stat st;
        if (fd < 3 || fd == keep || fd == devnull || fd == dirfd(d) || fstat(fd, &st) < 0)
            continue;
        if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode) && !S_ISCHR(st.st_mode))
            dup2(devnull, fd);
    }
    closedir(d);
}

typedef struct {
    char **argv, **env;
    int out[2];        /* the pool's stdout: the caller reads its first line */
    int ctl[2];        /* the control socket: [0] the pool's, [1] the template's */
    int devnull;
    sigset_t mask;     /* the caller's signal mask (all are blocked across fork) */
    const char *connect, *log_level;
    PyObject *in_template; /* called in the template before it serves */
} start_t;

/* The template, forked by the pool's process before it execs (so it is the
 * pool's child, as tmpl.h wants). Never returns. */
static void template_child(start_t *s, pid_t pool)
{
    PyOS_AfterFork_Child();
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != pool)
        _exit(WORKER_EXIT_ERROR);
    signal(SIGCHLD, SIG_DFL); /* the template waits for its middle processes */
    pthread_sigmask(SIG_SETMASK, &s->mask, NULL);
    /* The control socket stays where start_pool made it: a number no object
     * of the client's names (TMPL_FD may be one of its files). */
    close(s->out[0]);
    close(s->out[1]);
    close(s->ctl[0]);
    if (dup2(s->devnull, 0) < 0)
        _exit(WORKER_EXIT_ERROR);
    dup2(2, 1); /* as an exec'd worker's: prints go to stderr */
    detach_inherited_fds(s->devnull, s->ctl[1]);
    close(s->devnull);
    PyObject *r = PyObject_CallNoArgs(s->in_template);
    if (!r) {
        PyErr_Print();
        _exit(WORKER_EXIT_ERROR);
    }
    Py_DECREF(r);
    _exit(wproc_template_forked(s->ctl[1], s->connect, s->log_level));
}

/* The pool's process after the first fork: its own session, the template
 * forked, then exec. Only async-signal-safe calls (but in the template). */
static void pool_child(start_t *s)
{
    if (setsid() < 0)
        _exit(127);
    pid_t me = getpid();
    pid_t tmpl = fork();
    if (tmpl == 0)
        template_child(s, me);
    sig_reset_handlers(); /* Python's must not run here (they write to its pipe) */
    int devnull = above_std(s->devnull), out = above_std(s->out[1]), ctl = above_std(s->ctl[0]);
    if (devnull < 0 || out < 0 || ctl < 0 || dup2(devnull, 0) < 0 || dup2(out, 1) < 0)
        _exit(127);
    /* Like Popen(close_fds=True): nothing of the caller's but 0-2 (and the
     * control socket, at TMPL_FD) reaches the pool. */
    int keep = 3;
    char pidbuf[24];
    if (tmpl > 0 && dup2(ctl, TMPL_FD) == TMPL_FD) {
        size_t k = 0;
        while (s->argv[k])
            k++;
        /* (a tiny itoa: snprintf is not async-signal-safe) */
        char rev[24];
        int n = 0;
        for (unsigned long v = (unsigned long)tmpl; v; v /= 10)
            rev[n++] = (char)('0' + v % 10);
        for (int i = 0; i < n; i++)
            pidbuf[i] = rev[n - 1 - i];
        pidbuf[n] = '\0';
        s->argv[k++] = "--template-pid";
        s->argv[k++] = pidbuf;
        keep = 4;
    }
    close_range((unsigned)keep, ~0U, 0);
    signal(SIGPIPE, SIG_DFL); /* what Popen restores; the pool sets its own */
    signal(SIGXFSZ, SIG_DFL);
    pthread_sigmask(SIG_SETMASK, &s->mask, NULL);
    execve(s->argv[0], s->argv, s->env);
    _exit(127);
}

static PyObject *wproc_start_pool(PyObject *self, PyObject *args)
{
    PyObject *argv_list, *env_list;
    start_t s = {.out = {-1, -1}, .ctl = {-1, -1}, .devnull = -1};
    if (!PyArg_ParseTuple(args, "O!O!szO:start_pool", &PyList_Type, &argv_list, &PyList_Type,
                          &env_list, &s.connect, &s.log_level, &s.in_template))
        return NULL;
    if (!PyCallable_Check(s.in_template)) {
        PyErr_SetString(PyExc_TypeError, "start_pool(): in_template must be callable");
        return NULL;
    }
#ifdef BETTONG_WORKER_EMBEDDED_ONLY
    Py_RETURN_NONE; /* a sanitizer build: its workers run in the bettong binary */
#endif
    /* Another thread may hold a lock (malloc's, a Python object's) that the
     * template would then never see released: the caller execs instead. */
    if (tmpl_thread_count() != 1)
        Py_RETURN_NONE;
    s.argv = bytes_array(argv_list, 2);
    s.env = s.argv ? bytes_array(env_list, 0) : NULL;
    PyObject *ret = NULL;
    if (!s.env)
        goto done;
    if (pipe2(s.out, O_CLOEXEC) < 0 ||
        socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, s.ctl) < 0 ||
        (s.devnull = open("/dev/null", O_RDWR | O_CLOEXEC)) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        goto done;
    }
    /* OpenSSL set up once here, for our own handshake to come and for the
     * template and its workers (auth_warm: its configuration, the random
     * generator, which reseeds in a child, HMAC). */
    auth_warm();
    fflush(NULL); /* C stdio's buffers: written once, not again by each worker's exit */
    /* No handler of Python's may run in the pool's process before it execs. */
    sigset_t all;
    sigfillset(&all);
    PyOS_BeforeFork();
    pthread_sigmask(SIG_SETMASK, &all, &s.mask);
    pid_t pid = fork();
    if (pid == 0)
        pool_child(&s);
    int fork_errno = errno;
    pthread_sigmask(SIG_SETMASK, &s.mask, NULL);
    PyOS_AfterFork_Parent();
    if (pid < 0) {
        errno = fork_errno;
        PyErr_SetFromErrno(PyExc_OSError);
        goto done;
    }
    ret = Py_BuildValue("(ii)", (int)pid, s.out[0]);
    if (ret)
        s.out[0] = -1; /* the caller's now */
    else
        kill(pid, SIGKILL);
done:
    for (int i = 0; i < 2; i++) {
        if (s.out[i] >= 0)
            close(s.out[i]);
        if (s.ctl[i] >= 0)
            close(s.ctl[i]);
    }
    if (s.devnull >= 0)
        close(s.devnull);
    free(s.argv);
    free(s.env);
    return ret;
}

/* tune_memory(huge_pages): this process's Python memory as in the pool's
 * workers, from now on: its small-object arenas populated in one call
 * (py/arenas.h) and, with huge_pages, its large blocks in transparent huge
 * pages (py/hugealloc.h), so that a caller's 100 MB argument or result is
 * made, and first read, 512 times fewer pages at a time. A template forked
 * after it has them already. */
static PyObject *wproc_tune_memory(PyObject *self, PyObject *args)
{
    (void)self;
    int huge_pages;
    if (!PyArg_ParseTuple(args, "p", &huge_pages))
        return NULL;
    arenas_install();
    if (huge_pages)
        hugealloc_install();
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"tune_memory", wproc_tune_memory, METH_VARARGS,
     "tune_memory(huge_pages): from now on in this process, Python's small-object\n"
     "arenas populated at once when made and, with huge_pages, its blocks of 32 MiB\n"
     "and more in transparent huge pages (madvise before first use)."},
    {"main", wproc_main, METH_O,
     "main(args): run this process as a pool's worker (returns only if it cannot start)."},
    {"start_pool", wproc_start_pool, METH_VARARGS,
     "start_pool(argv, env, connect, log_level, in_template) -> (pid, stdout fd) | None\n"
     "Start `bettong pool` (argv, env: lists of bytes; argv[0] the binary's path)\n"
     "with its worker template forked from this process: the template is the\n"
     "pool's child, runs in_template() and then forks the pool's local workers,\n"
     "which connect to `connect`. None (nothing started) when this process has\n"
     "more than one thread. The pool's stdout is the pipe returned."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moddef = {PyModuleDef_HEAD_INIT, "bettong._wproc",
                                    "A pool's worker process hosted by python3.", -1, methods};

PyMODINIT_FUNC PyInit__wproc(void) { return PyModule_Create(&moddef); }
