/* Running tasks in a worker's embedded Python (the main thread, GIL held).
 *
 * Per task, in C: args, kwargs = pickle.loads(payload) (read in place through a
 * memoryview); result = fn(*args, **kwargs); payload = pickle.dumps(result,
 * protocol=5), or cloudpickle.dumps when plain pickle cannot (a class defined in
 * the caller's __main__, a lambda). A result that is a bytes object of 64 KiB or
 * more is not copied into a pickle: the payload is its pickle's opcodes around
 * the bytes object itself (see wrun_out_t), the same bytes on the wire. No Python-level wrapper runs per task; the
 * pickle callables are looked up once.
 *
 * Outcomes (proto.h call_status):
 * - CALL_OK: the pickled result;
 * - CALL_RAISED: pickled (exception, type name, message, traceback text); the
 *   exception is None if it cannot be pickled. The type name is
 *   "module.QualName" ("QualName" for builtins);
 * - CALL_ERROR: utf-8 text: the function or the arguments would not unpickle
 *   (with the traceback), the result would not pickle (naming its type). */
#ifndef BETTONG_WRUN_H
#define BETTONG_WRUN_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint8_t status;
    uint64_t started_us, finished_us;
    PyObject *bytes;  /* the payload as a bytes object (owned), or NULL */
    char *text;       /* or malloc'd text */
    /* A large result that is a bytes object is not pickled (a copy of it): bytes
     * is the result itself, and the payload is head + bytes + tail, the opcodes
     * pickle.dumps(result, 5) would put around it. Both lengths 0 otherwise. */
    uint8_t head[8], tail[2];
    size_t head_len, tail_len;
    /* A result pickled with out-of-band buffers (see wrun_use_oob): a list of
     * the PickleBuffers (owned) the pickle in bytes refers to, in order; NULL
     * when there are none. */
    PyObject *oob;
} wrun_out_t;

/* Large contiguous buffers of results (a numpy array's data, a PickleBuffer)
 * are taken out of the pickle (protocol 5's buffer_callback) into
 * wrun_out_t.oob, for a connection that sends them as an out-of-band file
 * (pool/shm.h). Off by default. */
void wrun_use_oob(int on);
/* The result of out pickled again without out-of-band buffers (out->oob
 * cleared): when they cannot go as an out-of-band file. Returns 0, or -1
 * (out->bytes left as it was). */
int wrun_inband(wrun_out_t *out);

/* Import pickle, cloudpickle (optional, with a warning), traceback; add the
 * caller's sys.path (BETTONG_WORKER_PATH). With the GIL. Returns 0 or -1. */
int wrun_init(char *err, size_t errlen);
/* FUNCDEF: unpickle and keep the function under gid (an unpickling error is
 * kept instead, and reported by every task of it). */
void wrun_funcdef(uint64_t gid, const uint8_t *p, size_t n);
void wrun_funcdrop(uint64_t gid);
/* A task between its two steps. */
typedef struct {
    PyObject *fn, *args, *kwargs; /* owned */
} wrun_call_t;

/* Step 1: find the function and unpickle the arguments: the n bytes at p, or,
 * when fd >= 0, bytes [0, n) of that memfd (read with pread, pool/preader.h;
 * fd stays the caller's). Returns 0, or -1 with out filled in (CALL_ERROR).
 * Either way the payload is not needed any more, so a large one can be freed
 * before the call runs. */
int wrun_prepare(uint64_t gid, const uint8_t *p, size_t n, int fd, wrun_call_t *call,
                 wrun_out_t *out);
/* Step 2: run the call and pickle its outcome into out (bytes or text set). */
void wrun_run(wrun_call_t *call, wrun_out_t *out);
/* Put the payload of out in (*data, *len) (between out->head and out->tail). */
void wrun_payload(const wrun_out_t *out, const void **data, size_t *len);
void wrun_out_clear(wrun_out_t *out);

#endif
