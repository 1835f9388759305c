/* The embedded interpreter: start-up, the GIL, importing the application and
 * turning a Python exception into text. Everything Python-specific that more
 * than one service needs lives here.
 *
 * Threading: py_start() returns with the GIL released. A thread that runs Python
 * brackets the work with py_gil_enter()/py_gil_leave(); the engine does that once
 * per batch of messages, not per message. */
#ifndef BETTONG_BRIDGE_H
#define BETTONG_BRIDGE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>

/* Start the interpreter that the build was configured with (BETTONG_PYTHON), with
 * `argv` as sys.argv, the Bettong Python library directory first on sys.path and
 * then `paths` (NULL-terminated, may be NULL). Python's own signal handlers are not
 * installed: the engine owns SIGINT and SIGTERM. Returns 0, or -1 with err set. */
int py_start(int argc, char **argv, const char *const *paths, char *err, size_t errlen);
/* Finalize (takes the GIL itself). */
void py_stop(void);

/* Python runs already, started by its own executable, and this thread holds
 * the GIL (an extension module's code): take it as if py_start had started it.
 * Returns with the GIL released, like py_start. */
void py_adopt(void);

void py_gil_enter(void);
void py_gil_leave(void);

/* A thread of the program's own (not the one that called py_start) that runs
 * Python: py_thread_init once at its start (GIL not held; returns with it not
 * held), then py_thread_enter / py_thread_leave around each piece of Python
 * work, and py_thread_done before the thread ends. */
typedef struct {
    PyThreadState *ts;
    PyGILState_STATE gstate;
} py_thread_t;

void py_thread_init(py_thread_t *t);
void py_thread_enter(py_thread_t *t);
void py_thread_leave(py_thread_t *t);
void py_thread_done(py_thread_t *t);

/* The directory holding the `wallaroo` and `bettong` packages (found on the
 * first call if py_start has not run). */
const char *py_library_dir(void);

/* Fetch the current exception and return its formatted traceback (malloc'd;
 * never NULL). Clears the exception. With GIL. */
char *py_take_traceback(void);
/* "Type: message" of the current exception without clearing it (malloc'd). */
char *py_exception_summary(void);

/* getattr that returns a new reference or NULL without leaving an exception set. */
PyObject *py_getattr_opt(PyObject *obj, const char *name);

/* Call `obj.name()` and return a new reference (NULL with exception on error). */
PyObject *py_call_method0(PyObject *obj, const char *name);

static inline PyObject *py_call1(PyObject *fn, PyObject *a)
{
    PyObject *args[2] = {NULL, a};
    return PyObject_Vectorcall(fn, args + 1, 1 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
}

static inline PyObject *py_call2(PyObject *fn, PyObject *a, PyObject *b)
{
    PyObject *args[3] = {NULL, a, b};
    return PyObject_Vectorcall(fn, args + 1, 2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
}

#endif
