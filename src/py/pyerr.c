#include "py/pyerr.h"

#include <stdlib.h>
#include <string.h>

#include "py/bridge.h"
#include "util/hash.h"
#include "util/hist.h"
#include "util/log.h"

#define PYERR_KINDS 256
#define SUMMARY_INTERVAL_NS 5000000000ULL

typedef struct {
    uint64_t key; /* 0 = empty */
    char *label;  /* "where: Type at file:line" */
    uint64_t count;
    uint64_t reported; /* count at the last summary */
} pyerr_kind;

static pyerr_kind kinds[PYERR_KINDS];
static uint64_t total;
static uint64_t overflow; /* errors of kinds beyond the table */
static uint64_t last_summary_ns;

/* Where the exception was raised: the innermost traceback entry. Returns 0
 * when there is none (raised in C: by Bettong, or a builtin it called). */
static int innermost_location(PyObject *tb, char *out, size_t outlen)
{
    int found = 0;
    Py_XINCREF(tb);
    while (tb && tb != Py_None) {
        PyObject *next = PyObject_GetAttrString(tb, "tb_next");
        if (!next) {
            PyErr_Clear();
            break;
        }
        if (next == Py_None) {
            Py_DECREF(next);
            break;
        }
        Py_DECREF(tb);
        tb = next;
    }
    if (tb && tb != Py_None) {
        PyObject *lineno = PyObject_GetAttrString(tb, "tb_lineno");
        PyObject *frame = PyObject_GetAttrString(tb, "tb_frame");
        PyCodeObject *code = frame ? PyFrame_GetCode((PyFrameObject *)frame) : NULL;
        const char *file = code ? PyUnicode_AsUTF8(code->co_filename) : NULL;
        if (file && lineno) {
            snprintf(out, outlen, "%s:%ld", file, PyLong_AsLong(lineno));
            found = 1;
        }
        PyErr_Clear();
        Py_XDECREF((PyObject *)code);
        Py_XDECREF(frame);
        Py_XDECREF(lineno);
    }
    Py_XDECREF(tb);
    return found;
}

/* An exception with no Python frame: its own text is what says where it
 * comes from (Bettong's messages name the user's function and file). */
static void exception_text(PyObject *value, char *out, size_t outlen)
{
    PyObject *s = value ? PyObject_Str(value) : NULL;
    const char *u = s ? PyUnicode_AsUTF8(s) : NULL;
    snprintf(out, outlen, "%s", u && *u ? u : "(no message)");
    PyErr_Clear();
    Py_XDECREF(s);
}

/* The kind of an error labelled by its text: where, the type, and the text
 * with its numbers and addresses (0x...) left out, so that messages naming a
 * slot or an object's address stay one kind (a stream of them cannot flood
 * the log). */
static uint64_t kind_of_text(const char *where, const char *tname, const char *text)
{
    char shape[1536];
    int n = snprintf(shape, sizeof shape, "%s: %s: ", where, tname);
    size_t len = n < 0 ? 0 : (size_t)n < sizeof shape ? (size_t)n : sizeof shape - 1;
    for (const char *p = text; *p && len < sizeof shape - 1;) {
        if (*p >= '0' && *p <= '9') {
            if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X'))
                p += 2;
            while ((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f') ||
                   (*p >= 'A' && *p <= 'F'))
                p++;
            shape[len++] = '#';
        } else {
            shape[len++] = *p++;
        }
    }
    return hash_bytes(shape, len, 0x5eed) | 1;
}

static pyerr_kind *find_kind(uint64_t key)
{
    unsigned i = (unsigned)(key % PYERR_KINDS);
    for (unsigned probe = 0; probe < PYERR_KINDS; probe++, i = (i + 1) % PYERR_KINDS) {
        if (kinds[i].key == key || kinds[i].key == 0)
            return &kinds[i];
    }
    return NULL;
}

void pyerr_report(const char *where)
{
    total++;
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    char loc[512];
    const char *tname = type ? ((PyTypeObject *)type)->tp_name : "?";
    char label[1024];
    uint64_t key;
    if (innermost_location(tb, loc, sizeof loc)) {
        snprintf(label, sizeof label, "%s: %s at %s", where, tname, loc);
        key = hash_bytes(label, strlen(label), 0x5eed) | 1;
    } else {
        exception_text(value, loc, sizeof loc);
        snprintf(label, sizeof label, "%s: %s: %s", where, tname, loc);
        key = kind_of_text(where, tname, loc);
    }
    pyerr_kind *k = find_kind(key);
    if (!k) {
        overflow++;
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(tb);
        return;
    }
    k->count++;
    if (k->key != 0) {
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(tb);
        pyerr_summary(0);
        return;
    }
    k->key = key;
    k->label = strdup(label);
    k->reported = 1;
    PyErr_Restore(type, value, tb);
    char *text = py_take_traceback();
    log_error("user code raised in %s (first of its kind; repeats are counted):\n%s", where,
              text);
    free(text);
}

void pyerr_summary(int force)
{
    uint64_t now = now_ns();
    if (!force && now - last_summary_ns < SUMMARY_INTERVAL_NS)
        return;
    last_summary_ns = now;
    for (unsigned i = 0; i < PYERR_KINDS; i++) {
        pyerr_kind *k = &kinds[i];
        if (k->key && k->count > k->reported) {
            log_warn("%s: %llu more time(s), %llu in all", k->label ? k->label : "?",
                     (unsigned long long)(k->count - k->reported),
                     (unsigned long long)k->count);
            k->reported = k->count;
        }
    }
    if (overflow)
        log_warn("%llu errors of further kinds were not itemised",
                 (unsigned long long)overflow);
}

uint64_t pyerr_total(void) { return total; }

void pyerr_reset(void)
{
    for (unsigned i = 0; i < PYERR_KINDS; i++)
        free(kinds[i].label);
    memset(kinds, 0, sizeof kinds);
    total = overflow = 0;
    last_summary_ns = 0;
}
