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

#include <string.h>

#include "pool/wproc.h"
#include "util/log.h"

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

static PyMethodDef methods[] = {
    {"main", wproc_main, METH_O,
     "main(args): run this process as a pool's worker (returns only if it cannot start)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moddef = {PyModuleDef_HEAD_INIT, "bettong._wproc",
                                    "A pool's worker process hosted by python3.", -1, methods};

PyMODINIT_FUNC PyInit__wproc(void) { return PyModule_Create(&moddef); }
