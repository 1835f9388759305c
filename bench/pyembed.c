/* pyembed: `python3 ARGS...`, but run through the shared libpython the engine
 * embeds (the same -lpython link as build/bettong and inproc) instead of the
 * python3 executable. The benchmark uses it to run the asyncio server on the
 * engine's interpreter build, separating "which libpython" from "which design".
 *
 *   pyembed SCRIPT.py [ARGS...]
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#ifndef BENCH_PYTHON
#define BENCH_PYTHON "python3"
#endif

int main(int argc, char **argv)
{
    PyConfig config;
    PyConfig_InitPythonConfig(&config);
    PyStatus st = PyConfig_SetBytesString(&config, &config.program_name, BENCH_PYTHON);
    if (!PyStatus_Exception(st))
        st = PyConfig_SetBytesArgv(&config, argc, argv);
    if (!PyStatus_Exception(st))
        st = Py_InitializeFromConfig(&config);
    PyConfig_Clear(&config);
    if (PyStatus_Exception(st))
        Py_ExitStatusException(st);
    return Py_RunMain();
}
