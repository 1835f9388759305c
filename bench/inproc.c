/* inproc: the in-process limit of the word count application.
 *
 * One embedded CPython interpreter, the GIL held throughout, no I/O in the timed
 * loop. For every corpus line it does the per-message work the engine does for
 * examples/word_count/word_count.py:
 *
 *   payload bytes -> PyBytes -> decoder fn -> split fn (computation_multi)
 *   -> for each word: partition fn -> per-key state dict (WordTotals() on first
 *      use) -> count_word(word, state) -> tuple[0] -> encoder fn -> UTF-8 bytes
 *      copied into an output buffer.
 *
 * The functions are the plain ones the decorators keep in `_bettong_fn`, called
 * with PyObject_Vectorcall. It loops over the corpus until at least --words words
 * went through (or, with --seconds, until that much time passed), after an
 * untimed warm-up (--warmup-words, default a tenth of --words or 200000), and
 * prints words/s as one key=value line.
 *
 *   inproc --corpus FILE (--words N | --seconds S) [--warmup-words N]
 *          [--app-dir DIR] [--module NAME] [--pylib DIR]
 *   inproc --print-python     prints the interpreter it was built against
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifndef BENCH_REPO
#define BENCH_REPO "."
#endif
#ifndef BENCH_PYTHON
#define BENCH_PYTHON "python3"
#endif

#define OUTBUF_SIZE (1u << 20)

typedef struct {
    const char *data;
    size_t len;
} line_t;

typedef struct {
    PyObject *decode, *split, *partition, *count, *encode, *state_class;
    PyObject *states; /* partition key -> state object */
    char *outbuf;
    size_t outlen;
    uint64_t words, lines, outputs, out_bytes;
} app_t;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void die_py(const char *what)
{
    fprintf(stderr, "inproc: %s failed\n", what);
    if (PyErr_Occurred())
        PyErr_Print();
    exit(1);
}

static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "inproc: cannot open %s: %s\n", path, strerror(errno));
        exit(1);
    }
    size_t cap = 1 << 20, n = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (!buf) {
            fprintf(stderr, "inproc: out of memory\n");
            exit(1);
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0)
            break;
        if (n == cap) {
            cap *= 2;
            buf = realloc(buf, cap);
        }
    }
    fclose(f);
    *len = n;
    return buf;
}

/* Lines without their '\n' (and a trailing '\r'); empty lines are skipped. */
static line_t *split_lines(const char *buf, size_t len, size_t *nlines)
{
    size_t cap = 1024, n = 0;
    line_t *lines = malloc(cap * sizeof *lines);
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i == len || buf[i] == '\n') {
            size_t l = i - start;
            if (l > 0 && buf[start + l - 1] == '\r')
                l--;
            if (l > 0) {
                if (n == cap) {
                    cap *= 2;
                    lines = realloc(lines, cap * sizeof *lines);
                }
                if (!lines) {
                    fprintf(stderr, "inproc: out of memory\n");
                    exit(1);
                }
                lines[n].data = buf + start;
                lines[n].len = l;
                n++;
            }
            start = i + 1;
        }
    }
    *nlines = n;
    return lines;
}

static PyObject *plain_fn(PyObject *module, const char *name)
{
    PyObject *obj = PyObject_GetAttrString(module, name);
    if (!obj)
        die_py(name);
    PyObject *fn = PyObject_GetAttrString(obj, "_bettong_fn");
    Py_DECREF(obj);
    if (!fn)
        die_py("_bettong_fn lookup");
    if (!PyCallable_Check(fn)) {
        fprintf(stderr, "inproc: %s._bettong_fn is not callable\n", name);
        exit(1);
    }
    return fn;
}

static void emit(app_t *a, const char *s, Py_ssize_t n)
{
    if (a->outlen + (size_t)n > OUTBUF_SIZE)
        a->outlen = 0; /* "flushed" */
    if ((size_t)n > OUTBUF_SIZE)
        n = OUTBUF_SIZE;
    memcpy(a->outbuf + a->outlen, s, (size_t)n);
    a->outlen += (size_t)n;
    a->out_bytes += (uint64_t)n;
    a->outputs++;
}

/* One word through partition -> state -> count_word -> encoder. */
static void one_word(app_t *a, PyObject *word)
{
    PyObject *key = PyObject_Vectorcall(a->partition, &word, 1, NULL);
    if (!key)
        die_py("partition");
    PyObject *state = PyDict_GetItemWithError(a->states, key); /* borrowed */
    if (!state) {
        if (PyErr_Occurred())
            die_py("state lookup");
        state = PyObject_CallNoArgs(a->state_class);
        if (!state)
            die_py("WordTotals()");
        if (PyDict_SetItem(a->states, key, state) < 0)
            die_py("state insert");
        Py_DECREF(state); /* the dict keeps it */
    }
    Py_DECREF(key);

    PyObject *args[2] = {word, state};
    PyObject *res = PyObject_Vectorcall(a->count, args, 2, NULL);
    if (!res)
        die_py("count_word");
    if (!PyTuple_Check(res) || PyTuple_GET_SIZE(res) != 2) {
        fprintf(stderr, "inproc: count_word did not return a 2-tuple\n");
        exit(1);
    }
    PyObject *out = PyTuple_GET_ITEM(res, 0);
    if (out != Py_None) {
        PyObject *enc = PyObject_Vectorcall(a->encode, &out, 1, NULL);
        if (!enc)
            die_py("encoder");
        if (PyUnicode_Check(enc)) {
            Py_ssize_t n;
            const char *s = PyUnicode_AsUTF8AndSize(enc, &n);
            if (!s)
                die_py("UTF-8 encoding");
            emit(a, s, n);
        } else if (PyBytes_Check(enc)) {
            emit(a, PyBytes_AS_STRING(enc), PyBytes_GET_SIZE(enc));
        } else {
            fprintf(stderr, "inproc: encoder returned neither str nor bytes\n");
            exit(1);
        }
        Py_DECREF(enc);
    }
    Py_DECREF(res);
    a->words++;
}

static void one_line(app_t *a, const line_t *l)
{
    PyObject *payload = PyBytes_FromStringAndSize(l->data, (Py_ssize_t)l->len);
    if (!payload)
        die_py("PyBytes_FromStringAndSize");
    PyObject *data = PyObject_Vectorcall(a->decode, &payload, 1, NULL);
    Py_DECREF(payload);
    if (!data)
        die_py("decoder");
    a->lines++;
    if (data == Py_None) {
        Py_DECREF(data);
        return;
    }
    PyObject *words = PyObject_Vectorcall(a->split, &data, 1, NULL);
    Py_DECREF(data);
    if (!words)
        die_py("split");
    if (words == Py_None) {
        Py_DECREF(words);
        return;
    }
    if (PyList_CheckExact(words)) {
        Py_ssize_t n = PyList_GET_SIZE(words);
        for (Py_ssize_t i = 0; i < n; i++)
            one_word(a, PyList_GET_ITEM(words, i));
    } else {
        PyObject *seq = PySequence_Fast(words, "split must return a list");
        if (!seq)
            die_py("split result");
        Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
        for (Py_ssize_t i = 0; i < n; i++)
            one_word(a, PySequence_Fast_GET_ITEM(seq, i));
        Py_DECREF(seq);
    }
    Py_DECREF(words);
}

/* Until `target` words went through, or (if deadline > 0) the clock passed it;
 * the clock is read once every 64 lines. */
static void run_until(app_t *a, const line_t *lines, size_t nlines, uint64_t target,
                      double deadline)
{
    size_t i = 0;
    uint64_t n = 0;
    while (a->words < target) {
        one_line(a, &lines[i]);
        if (++i == nlines)
            i = 0;
        if (deadline > 0 && (++n & 63) == 0 && now_s() >= deadline)
            break;
    }
}

static void usage(void)
{
    fprintf(stderr,
            "usage: inproc --corpus FILE (--words N | --seconds S) [--warmup-words N]\n"
            "              [--app-dir DIR] [--module NAME] [--pylib DIR]\n");
    exit(2);
}

static void path_insert(PyObject *path, const char *dir)
{
    PyObject *s = PyUnicode_DecodeFSDefault(dir);
    if (!s || PyList_Insert(path, 0, s) < 0)
        die_py("sys.path insert");
    Py_DECREF(s);
}

int main(int argc, char **argv)
{
    const char *corpus = NULL, *module_name = "word_count";
    const char *app_dir = BENCH_REPO "/examples/word_count";
    const char *pylib = BENCH_REPO "/python";
    long long words = -1, warmup = -1;
    double seconds = 0;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        if (!strcmp(o, "--print-python")) { /* the interpreter this was built for */
            printf("%s\n", BENCH_PYTHON);
            return 0;
        }
        if (i + 1 >= argc)
            usage();
        const char *v = argv[++i];
        if (!strcmp(o, "--corpus"))
            corpus = v;
        else if (!strcmp(o, "--words"))
            words = atoll(v);
        else if (!strcmp(o, "--seconds"))
            seconds = atof(v);
        else if (!strcmp(o, "--warmup-words"))
            warmup = atoll(v);
        else if (!strcmp(o, "--app-dir"))
            app_dir = v;
        else if (!strcmp(o, "--module"))
            module_name = v;
        else if (!strcmp(o, "--pylib"))
            pylib = v;
        else
            usage();
    }
    if (!corpus || (words <= 0 && seconds <= 0))
        usage();
    if (words <= 0)
        words = INT64_MAX / 2;
    if (warmup < 0)
        warmup = seconds > 0 ? 200000 : words / 10;

    size_t clen, nlines;
    char *cbuf = read_file(corpus, &clen);
    line_t *lines = split_lines(cbuf, clen, &nlines);
    if (nlines == 0) {
        fprintf(stderr, "inproc: %s has no lines\n", corpus);
        return 1;
    }

    PyConfig config;
    PyConfig_InitPythonConfig(&config);
    config.parse_argv = 0;
    config.install_signal_handlers = 1;
    PyStatus st = PyConfig_SetBytesString(&config, &config.program_name, BENCH_PYTHON);
    if (PyStatus_Exception(st))
        Py_ExitStatusException(st);
    st = Py_InitializeFromConfig(&config);
    PyConfig_Clear(&config);
    if (PyStatus_Exception(st))
        Py_ExitStatusException(st);

    PyObject *path = PySys_GetObject("path"); /* borrowed */
    if (!path || !PyList_Check(path))
        die_py("sys.path");
    path_insert(path, pylib);
    path_insert(path, app_dir);

    PyObject *mod = PyImport_ImportModule(module_name);
    if (!mod)
        die_py("import of the application module");

    app_t a;
    memset(&a, 0, sizeof a);
    a.decode = plain_fn(mod, "decoder");
    a.split = plain_fn(mod, "split");
    a.partition = plain_fn(mod, "partition");
    a.count = plain_fn(mod, "count_word");
    a.encode = plain_fn(mod, "encoder");
    a.state_class = PyObject_GetAttrString(mod, "WordTotals");
    if (!a.state_class)
        die_py("WordTotals lookup");
    a.states = PyDict_New();
    a.outbuf = malloc(OUTBUF_SIZE);
    if (!a.states || !a.outbuf)
        die_py("allocation");

    /* Warm-up: fills the states and caches; not timed. */
    run_until(&a, lines, nlines, (uint64_t)warmup, 0);

    uint64_t w0 = a.words, l0 = a.lines, o0 = a.outputs, b0 = a.out_bytes;
    double c0 = cpu_s();
    double t0 = now_s();
    run_until(&a, lines, nlines, a.words + (uint64_t)words, seconds > 0 ? t0 + seconds : 0);
    double dt = now_s() - t0;
    double dc = cpu_s() - c0;

    uint64_t w = a.words - w0;
    printf("inproc: words=%llu lines=%llu outputs=%llu bytes=%llu seconds=%.3f "
           "cpu_seconds=%.3f words_per_s=%.0f\n",
           (unsigned long long)w, (unsigned long long)(a.lines - l0),
           (unsigned long long)(a.outputs - o0), (unsigned long long)(a.out_bytes - b0), dt, dc,
           dt > 0 ? (double)w / dt : 0.0);
    fflush(stdout);

    Py_DECREF(a.states);
    Py_DECREF(a.state_class);
    Py_DECREF(a.decode);
    Py_DECREF(a.split);
    Py_DECREF(a.partition);
    Py_DECREF(a.count);
    Py_DECREF(a.encode);
    Py_DECREF(mod);
    free(a.outbuf);
    free(lines);
    free(cbuf);
    if (Py_FinalizeEx() < 0)
        return 1;
    return 0;
}
