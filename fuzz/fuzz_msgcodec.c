/* Fuzz target: the codec of messages between workers (py/msgcodec.c), which
 * reads bytes from another worker of the cluster.
 *
 * msgcodec needs a running interpreter: it is started once, in
 * LLVMFuzzerInitialize, as the engine starts it (the configured Python's
 * stdlib), and every input runs with the GIL held. The decoder is given
 * `bytes` as its `loads`: a real unpickler would run whatever a pickle says,
 * which is the trust boundary the HELLO check guards, not a codec bug.
 *
 * Checks: decoding never crashes; what decodes from the C-encoded form
 * (not a pickle) encodes back to exactly the same bytes, unless it had to fall
 * back to pickle (a tuple nested deeper than the encoder goes). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "py/msgcodec.h"
#include "util/buf.h"

#define CHECK(c) do { if (!(c)) __builtin_trap(); } while (0)

static PyObject *loads, *dumps, *protocol;

/* The interpreter's allocations live until exit; Python is not built for
 * LeakSanitizer, so its caches would be reported at every run. */
const char *__asan_default_options(void);
const char *__asan_default_options(void) { return "detect_leaks=0"; }

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    PyConfig config;
    PyConfig_InitIsolatedConfig(&config);
    config.install_signal_handlers = 0;
    /* The prefix is computed from the configured interpreter's path, so the
     * embedded one finds that interpreter's stdlib (as py/bridge.c does). */
    PyStatus st = PyConfig_SetBytesString(&config, &config.program_name, BETTONG_PYTHON);
    if (!PyStatus_Exception(st))
        st = Py_InitializeFromConfig(&config);
    PyConfig_Clear(&config);
    if (PyStatus_Exception(st))
        Py_ExitStatusException(st);
    PyObject *pickle = PyImport_ImportModule("pickle");
    CHECK(pickle);
    dumps = PyObject_GetAttrString(pickle, "dumps");
    Py_DECREF(pickle);
    loads = (PyObject *)&PyBytes_Type;
    protocol = PyLong_FromLong(5);
    CHECK(dumps && protocol);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Exactly the input's size, so a read past it is caught. */
    uint8_t *p = malloc(size ? size : 1);
    CHECK(p);
    memcpy(p, data, size);
    PyObject *obj = msgcodec_decode(p, size, loads);
    if (!obj) {
        CHECK(PyErr_Occurred());
        PyErr_Clear();
        free(p);
        return 0;
    }
    CHECK(!PyErr_Occurred());
    buf_t out;
    buf_init(&out);
    int rc = msgcodec_encode(&out, obj, dumps, protocol);
    if (rc < 0) {
        /* Only a pickle that pickle refuses may fail; what C decoded re-encodes. */
        CHECK(size > 0 && p[0] == 'p');
        PyErr_Clear();
    } else if (size > 0 && p[0] != 'p' && buf_unread(&out) > 0 && buf_head(&out)[0] != 'p') {
        CHECK(buf_unread(&out) == size && memcmp(buf_head(&out), p, size) == 0);
    }
    if (rc == 0) {
        /* Whatever was encoded decodes again (a pickle of bytes to bytes). */
        PyObject *again = msgcodec_decode(buf_head(&out), buf_unread(&out), loads);
        if (!again)
            __builtin_trap();
        Py_DECREF(again);
    }
    buf_free(&out);
    Py_DECREF(obj);
    free(p);
    return 0;
}
