#include "py/bridge.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "py/arenas.h"
#include "util/log.h"

#ifndef BETTONG_PYTHON
#define BETTONG_PYTHON "python3"
#endif
#ifndef BETTONG_PYLIB
#define BETTONG_PYLIB ""
#endif

/* The main thread's state while it does not hold the GIL. Owned by the
 * interpreter; we only park it here. */
static PyThreadState *saved_tstate;
static char library_dir[PATH_MAX];

static int is_library_dir(const char *dir)
{
    char probe[PATH_MAX + 32];
    snprintf(probe, sizeof probe, "%s/wallaroo/__init__.py", dir);
    return access(probe, R_OK) == 0;
}

/* Prefer BETTONG_PYTHONLIB, then <dir of binary>/../python (a build tree or an
 * install prefix), then the path compiled in. */
static void find_library_dir(void)
{
    const char *env = getenv("BETTONG_PYTHONLIB");
    if (env && is_library_dir(env)) {
        snprintf(library_dir, sizeof library_dir, "%s", env);
        return;
    }
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = '\0';
            char cand[PATH_MAX + 64];
            snprintf(cand, sizeof cand, "%s/../python", exe);
            char real[PATH_MAX];
            if (realpath(cand, real) && is_library_dir(real)) {
                snprintf(library_dir, sizeof library_dir, "%s", real);
                return;
            }
            snprintf(cand, sizeof cand, "%s/../lib/bettong/python", exe);
            if (realpath(cand, real) && is_library_dir(real)) {
                snprintf(library_dir, sizeof library_dir, "%s", real);
                return;
            }
        }
    }
    snprintf(library_dir, sizeof library_dir, "%s", BETTONG_PYLIB);
}

const char *py_library_dir(void)
{
    if (!library_dir[0])
        find_library_dir();
    return library_dir;
}

static int status_failed(PyStatus st, PyConfig *config, char *err, size_t errlen)
{
    if (!PyStatus_Exception(st))
        return 0;
    snprintf(err, errlen, "cannot start Python (%s): %s", BETTONG_PYTHON,
             st.err_msg ? st.err_msg : "unknown error");
    PyConfig_Clear(config);
    return 1;
}

static int prepend_sys_path(const char *dir)
{
    PyObject *path = PySys_GetObject("path"); /* borrowed */
    PyObject *entry = PyUnicode_DecodeFSDefault(dir);
    if (!path || !entry) {
        Py_XDECREF(entry);
        return -1;
    }
    int rc = PyList_Insert(path, 0, entry);
    Py_DECREF(entry);
    return rc;
}

int py_start(int argc, char **argv, const char *const *paths, char *err, size_t errlen)
{
    find_library_dir();
    PyConfig config;
    PyConfig_InitPythonConfig(&config);
    config.install_signal_handlers = 0;
    config.parse_argv = 0;
    /* Computing the prefix from the configured interpreter's path makes the
     * embedded one find that interpreter's stdlib and site-packages. */
    PyStatus st = PyConfig_SetBytesString(&config, &config.program_name, BETTONG_PYTHON);
    if (status_failed(st, &config, err, errlen))
        return -1;
    st = PyConfig_SetBytesArgv(&config, argc, argv);
    if (status_failed(st, &config, err, errlen))
        return -1;
    st = Py_InitializeFromConfig(&config);
    if (status_failed(st, &config, err, errlen))
        return -1;
    PyConfig_Clear(&config);
    arenas_install();

    /* Inserted in reverse so the first of `paths` ends up first, and the
     * library directory ahead of all of them. */
    size_t n = 0;
    while (paths && paths[n])
        n++;
    for (size_t i = n; i > 0; i--)
        if (prepend_sys_path(paths[i - 1]) < 0)
            goto fail;
    if (prepend_sys_path(library_dir) < 0)
        goto fail;
    saved_tstate = PyEval_SaveThread();
    return 0;
fail:
    PyErr_Clear();
    snprintf(err, errlen, "cannot set sys.path");
    return -1;
}

void py_stop(void)
{
    if (!saved_tstate)
        return;
    PyEval_RestoreThread(saved_tstate);
    saved_tstate = NULL;
    if (Py_FinalizeEx() < 0)
        log_warn("Python finalization reported an error");
}

void py_adopt(void) { saved_tstate = PyEval_SaveThread(); }

void py_gil_enter(void) { PyEval_RestoreThread(saved_tstate); }

void py_gil_leave(void) { saved_tstate = PyEval_SaveThread(); }

void py_thread_init(py_thread_t *t)
{
    /* PyGILState_Ensure makes this thread's state and records it as the
     * thread's own, so extension code that calls PyGILState_Ensure in it
     * finds it. */
    t->gstate = PyGILState_Ensure();
    t->ts = PyEval_SaveThread();
}

void py_thread_enter(py_thread_t *t) { PyEval_RestoreThread(t->ts); }

void py_thread_leave(py_thread_t *t) { t->ts = PyEval_SaveThread(); }

void py_thread_done(py_thread_t *t)
{
    PyEval_RestoreThread(t->ts);
    PyGILState_Release(t->gstate);
}

static char *dup_or(const char *s, const char *fallback)
{
    char *r = strdup(s ? s : fallback);
    if (!r)
        abort(); /* out of memory while reporting an error: nothing sane is left */
    return r;
}

char *py_take_traceback(void)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (!type)
        return dup_or(NULL, "(no exception)");
    PyErr_NormalizeException(&type, &value, &tb);
    char *result = NULL;
    PyObject *mod = PyImport_ImportModule("traceback");
    PyObject *lines = mod ? PyObject_CallMethod(mod, "format_exception", "OOO", type,
                                                value ? value : Py_None, tb ? tb : Py_None)
                          : NULL;
    PyObject *sep = lines ? PyUnicode_FromString("") : NULL;
    PyObject *text = sep ? PyUnicode_Join(sep, lines) : NULL;
    const char *utf8 = text ? PyUnicode_AsUTF8(text) : NULL;
    if (utf8) {
        result = dup_or(utf8, "");
        /* Drop the final newline: log lines add their own. */
        size_t len = strlen(result);
        if (len && result[len - 1] == '\n')
            result[len - 1] = '\0';
    } else {
        PyErr_Clear();
        result = dup_or(NULL, "(traceback unavailable)");
    }
    Py_XDECREF(text);
    Py_XDECREF(sep);
    Py_XDECREF(lines);
    Py_XDECREF(mod);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    return result;
}

char *py_exception_summary(void)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (!type)
        return dup_or(NULL, "(no exception)");
    PyErr_NormalizeException(&type, &value, &tb);
    const char *tname = ((PyTypeObject *)type)->tp_name;
    PyObject *s = value ? PyObject_Str(value) : NULL;
    const char *msg = s ? PyUnicode_AsUTF8(s) : NULL;
    if (!msg)
        PyErr_Clear();
    size_t len = strlen(tname) + (msg ? strlen(msg) : 0) + 3;
    char *out = malloc(len);
    if (!out)
        abort();
    if (msg && *msg)
        snprintf(out, len, "%s: %s", tname, msg);
    else
        snprintf(out, len, "%s", tname);
    Py_XDECREF(s);
    PyErr_Restore(type, value, tb);
    return out;
}

PyObject *py_getattr_opt(PyObject *obj, const char *name)
{
    PyObject *r = PyObject_GetAttrString(obj, name);
    if (!r)
        PyErr_Clear();
    return r;
}

PyObject *py_call_method0(PyObject *obj, const char *name)
{
    return PyObject_CallMethod(obj, name, NULL);
}
