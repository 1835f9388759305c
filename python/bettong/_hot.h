/* The submit side of FunctionExecutor.call_async's hot path in C, for
 * bettong._bettong (see _hot.c and executor._Hot).
 *
 *   CallIds()          a connection's call id counter; take(n) reserves n
 *                      consecutive ids and returns the first (atomic under the GIL)
 *   HotCall(...)       what _Hot prepared for one function; called as
 *                      hot(executor, func, data) -> the call's future, or None
 *                      when the slow path must run
 *   simple_args_pickle(x)  the pickle of ((x,), {}) as HotCall writes it for
 *                      the plainest x (None otherwise): for the tests
 */
#ifndef BETTONG_PY_HOT_H
#define BETTONG_PY_HOT_H

#include <Python.h>

/* Add CallIds, HotCall and simple_args_pickle to the module. Returns 0, or -1 with an exception set. */
int hot_add_types(PyObject *module);

#endif
