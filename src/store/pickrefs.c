#include "store/pickrefs.h"

#include <stdlib.h>
#include <string.h>

#define PID_TAG "bettong.obj"
#define PID_TAG_LEN 11
/* A memo index past this, or past the pickle's length (each memo entry takes
 * an opcode, so a pickler's indices stay below it), is refused: it bounds the
 * shadow memo's memory by the input's size. */
#define MEMO_MAX (1u << 24)

enum { E_OTHER = 0, E_STR, E_PID };

typedef struct {
    uint8_t kind;
    uint8_t used;     /* a memo slot that was set */
    const uint8_t *s; /* E_STR: the text; E_PID: the object id */
    size_t len;
} ent_t;

typedef struct {
    const uint8_t *start, *p, *end;
    ent_t *stack;
    size_t sp, stack_cap;
    size_t *marks;
    size_t nmarks, marks_cap;
    ent_t *memo;
    size_t memo_cap, memo_count; /* memo_count: entries set (MEMOIZE's next index) */
    pickref_t *refs;
    size_t nrefs, refs_cap;
} walk_t;

static int grow(void **arr, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap)
        return 0;
    size_t n = *cap ? *cap : 16;
    while (n < need)
        n *= 2;
    void *a = realloc(*arr, n * size);
    if (!a)
        return -1;
    *arr = a;
    *cap = n;
    return 0;
}

static int push(walk_t *w, ent_t e)
{
    if (grow((void **)&w->stack, &w->stack_cap, w->sp + 1, sizeof *w->stack) < 0)
        return -1;
    w->stack[w->sp++] = e;
    return 0;
}

static int push_other(walk_t *w) { return push(w, (ent_t){E_OTHER, 0, NULL, 0}); }

/* Pop k items above the topmost mark. */
static int pop(walk_t *w, size_t k)
{
    size_t floor = w->nmarks ? w->marks[w->nmarks - 1] : 0;
    if (w->sp < floor + k)
        return -1;
    w->sp -= k;
    return 0;
}

/* Pop everything above the topmost mark and the mark; *k: how many items. */
static int pop_mark(walk_t *w, size_t *k)
{
    if (!w->nmarks)
        return -1;
    size_t m = w->marks[--w->nmarks];
    if (m > w->sp)
        return -1;
    if (k)
        *k = w->sp - m;
    w->sp = m;
    return 0;
}

static int memo_put(walk_t *w, uint64_t idx)
{
    if (!w->sp || idx >= MEMO_MAX || idx >= (uint64_t)(w->end - w->start))
        return -1;
    if (idx >= w->memo_cap) {
        size_t old = w->memo_cap;
        if (grow((void **)&w->memo, &w->memo_cap, (size_t)idx + 1, sizeof *w->memo) < 0)
            return -1;
        memset(w->memo + old, 0, (w->memo_cap - old) * sizeof *w->memo);
    }
    if (!w->memo[idx].used)
        w->memo_count++; /* MEMOIZE's next index is the memo's size */
    w->memo[idx] = w->stack[w->sp - 1];
    w->memo[idx].used = 1;
    return 0;
}

static int memo_get(walk_t *w, uint64_t idx)
{
    if (idx >= w->memo_cap || !w->memo[idx].used)
        return -1;
    ent_t e = w->memo[idx];
    e.used = 0;
    return push(w, e);
}

static int take(walk_t *w, size_t n, const uint8_t **out)
{
    if ((size_t)(w->end - w->p) < n)
        return -1;
    *out = w->p;
    w->p += n;
    return 0;
}

static int take_uint(walk_t *w, size_t n, uint64_t *v)
{
    const uint8_t *b;
    if (take(w, n, &b) < 0)
        return -1;
    *v = 0;
    for (size_t i = n; i-- > 0;)
        *v = *v << 8 | b[i]; /* little-endian */
    return 0;
}

/* A newline-terminated argument (without the newline). */
static int take_line(walk_t *w, const uint8_t **s, size_t *len)
{
    const uint8_t *nl = memchr(w->p, '\n', (size_t)(w->end - w->p));
    if (!nl)
        return -1;
    *s = w->p;
    *len = (size_t)(nl - w->p);
    w->p = nl + 1;
    return 0;
}

static int line_uint(walk_t *w, uint64_t *v)
{
    const uint8_t *s;
    size_t n;
    if (take_line(w, &s, &n) < 0 || n == 0 || n > 18)
        return -1;
    *v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        *v = *v * 10 + (uint64_t)(s[i] - '0');
    }
    return 0;
}

/* A str pushed from a length-prefixed argument of `lenbytes` bytes. */
static int push_counted(walk_t *w, size_t lenbytes, int is_str)
{
    uint64_t n;
    const uint8_t *s;
    if (take_uint(w, lenbytes, &n) < 0 || n > (uint64_t)(w->end - w->p) ||
        take(w, (size_t)n, &s) < 0)
        return -1;
    return push(w, (ent_t){is_str ? E_STR : E_OTHER, 0, is_str ? s : NULL, (size_t)n});
}

/* The top k items (k <= 3) become one tuple: a persistent id of ours when it
 * is (PID_TAG, str, anything). */
static int make_tuple(walk_t *w, size_t k, int above_mark)
{
    ent_t it[3] = {{0}};
    size_t floor = w->nmarks ? w->marks[w->nmarks - 1] : 0;
    if (k == 3 && w->sp >= floor + 3) /* else pop below fails */
        memcpy(it, w->stack + w->sp - 3, sizeof it);
    if (above_mark) {
        if (pop_mark(w, NULL) < 0)
            return -1;
    } else if (pop(w, k) < 0) {
        return -1;
    }
    if (k == 3 && it[0].kind == E_STR && it[0].len == PID_TAG_LEN &&
        memcmp(it[0].s, PID_TAG, PID_TAG_LEN) == 0 && it[1].kind == E_STR)
        return push(w, (ent_t){E_PID, 0, it[1].s, it[1].len});
    return push_other(w);
}

static int add_ref(walk_t *w, const ent_t *e)
{
    if (grow((void **)&w->refs, &w->refs_cap, w->nrefs + 1, sizeof *w->refs) < 0)
        return -1;
    w->refs[w->nrefs++] = (pickref_t){e->s, e->len};
    return 0;
}

/* Pop k items and push one object. */
static int replace(walk_t *w, size_t k) { return pop(w, k) < 0 ? -1 : push_other(w); }

static int mark_replace(walk_t *w) { return pop_mark(w, NULL) < 0 ? -1 : push_other(w); }

/* One opcode. 1: STOP, 0: go on, -1: error. */
static int step(walk_t *w)
{
    const uint8_t *s;
    size_t n;
    uint64_t v;
    if (w->p >= w->end)
        return -1;
    uint8_t op = *w->p++;
    switch (op) {
    case '.': return 1;                                      /* STOP */
    case '(':                                                /* MARK */
        if (grow((void **)&w->marks, &w->marks_cap, w->nmarks + 1, sizeof *w->marks) < 0)
            return -1;
        w->marks[w->nmarks++] = w->sp;
        return 0;
    case '0':                                                /* POP */
        if (w->nmarks && w->marks[w->nmarks - 1] == w->sp)
            return pop_mark(w, NULL);
        return pop(w, 1);
    case '1': return pop_mark(w, NULL);                      /* POP_MARK */
    case '2': return w->sp ? push(w, w->stack[w->sp - 1]) : -1; /* DUP */
    case 'F': case 'I': case 'L': case 'S': case 'P':        /* FLOAT INT LONG STRING PERSID */
        return take_line(w, &s, &n) < 0 ? -1 : push_other(w);
    case 'V':                                                /* UNICODE */
        if (take_line(w, &s, &n) < 0)
            return -1;
        return push(w, (ent_t){E_STR, 0, s, n});
    case 'J': return take(w, 4, &s) < 0 ? -1 : push_other(w); /* BININT */
    case 'K': return take(w, 1, &s) < 0 ? -1 : push_other(w); /* BININT1 */
    case 'M': return take(w, 2, &s) < 0 ? -1 : push_other(w); /* BININT2 */
    case 'G': return take(w, 8, &s) < 0 ? -1 : push_other(w); /* BINFLOAT */
    case 'N': case 0x88: case 0x89: case ']': case ')': case '}': case 0x8f: case 0x97:
        return push_other(w);           /* NONE TRUE FALSE EMPTY_* NEXT_BUFFER */
    case 0x98: return w->sp ? 0 : -1;                        /* READONLY_BUFFER */
    case 'Q': {                                              /* BINPERSID */
        if (!w->sp)
            return -1;
        ent_t top = w->stack[w->sp - 1];
        if (top.kind == E_PID && add_ref(w, &top) < 0)
            return -1;
        return replace(w, 1);
    }
    case 'R': case 0x81: case 0x93: return replace(w, 2);   /* REDUCE NEWOBJ STACK_GLOBAL */
    case 0x92: return replace(w, 3);                         /* NEWOBJ_EX */
    case 'T': case 'B': return push_counted(w, 4, 0);        /* BINSTRING BINBYTES */
    case 'U': case 'C': case 0x8a: return push_counted(w, 1, 0); /* SHORT_BIN* LONG1 */
    case 0x8b: return push_counted(w, 4, 0);                 /* LONG4 */
    case 0x8e: case 0x96: return push_counted(w, 8, 0);      /* BINBYTES8 BYTEARRAY8 */
    case 'X': return push_counted(w, 4, 1);                  /* BINUNICODE */
    case 0x8c: return push_counted(w, 1, 1);                 /* SHORT_BINUNICODE */
    case 0x8d: return push_counted(w, 8, 1);                 /* BINUNICODE8 */
    case 'a': case 'b': return pop(w, 1);                    /* APPEND BUILD */
    case 's': return pop(w, 2);                              /* SETITEM */
    case 'e': case 'u': case 0x90: return pop_mark(w, NULL); /* APPENDS SETITEMS ADDITEMS */
    case 'c':                                                /* GLOBAL */
        if (take_line(w, &s, &n) < 0 || take_line(w, &s, &n) < 0)
            return -1;
        return push_other(w);
    case 'i':                                                /* INST */
        if (take_line(w, &s, &n) < 0 || take_line(w, &s, &n) < 0)
            return -1;
        return mark_replace(w);
    case 'd': case 'l': case 'o': case 0x91: return mark_replace(w); /* DICT LIST OBJ FROZENSET */
    case 't': {                                              /* TUPLE */
        size_t floor = w->nmarks ? w->marks[w->nmarks - 1] : SIZE_MAX;
        if (floor > w->sp)
            return -1;
        return make_tuple(w, w->sp - floor <= 3 ? w->sp - floor : 0, 1);
    }
    case 0x85: return make_tuple(w, 1, 0);                   /* TUPLE1 */
    case 0x86: return make_tuple(w, 2, 0);                   /* TUPLE2 */
    case 0x87: return make_tuple(w, 3, 0);                   /* TUPLE3 */
    case 'g': return line_uint(w, &v) < 0 ? -1 : memo_get(w, v);  /* GET */
    case 'h': return take_uint(w, 1, &v) < 0 ? -1 : memo_get(w, v); /* BINGET */
    case 'j': return take_uint(w, 4, &v) < 0 ? -1 : memo_get(w, v); /* LONG_BINGET */
    case 'p': return line_uint(w, &v) < 0 ? -1 : memo_put(w, v);  /* PUT */
    case 'q': return take_uint(w, 1, &v) < 0 ? -1 : memo_put(w, v); /* BINPUT */
    case 'r': return take_uint(w, 4, &v) < 0 ? -1 : memo_put(w, v); /* LONG_BINPUT */
    case 0x94: return memo_put(w, w->memo_count);            /* MEMOIZE */
    case 0x80: return take(w, 1, &s);                        /* PROTO */
    case 0x95: return take(w, 8, &s);                        /* FRAME */
    case 0x82: return take(w, 1, &s) < 0 ? -1 : push_other(w); /* EXT1 */
    case 0x83: return take(w, 2, &s) < 0 ? -1 : push_other(w); /* EXT2 */
    case 0x84: return take(w, 4, &s) < 0 ? -1 : push_other(w); /* EXT4 */
    default: return -1;
    }
}

int pickref_cmp(const pickref_t *a, const pickref_t *b)
{
    if (a->len != b->len)
        return a->len < b->len ? -1 : 1;
    return a->len ? memcmp(a->id, b->id, a->len) : 0;
}

static int cmp_void(const void *a, const void *b) { return pickref_cmp(a, b); }

int pickrefs_scan(const uint8_t *p, size_t n, pickref_t **out, size_t *count)
{
    *out = NULL;
    *count = 0;
    /* Without a BINPERSID byte anywhere there is no reference (the common case:
     * a state of plain values). */
    if (!n || !memchr(p, 'Q', n))
        return 0;
    walk_t w = {.start = p, .p = p, .end = p + n};
    int rc;
    while ((rc = step(&w)) == 0)
        ;
    free(w.stack);
    free(w.marks);
    free(w.memo);
    if (rc < 0) {
        free(w.refs);
        return -1;
    }
    if (w.nrefs > 1) {
        qsort(w.refs, w.nrefs, sizeof *w.refs, cmp_void);
        size_t k = 1;
        for (size_t i = 1; i < w.nrefs; i++)
            if (pickref_cmp(&w.refs[i], &w.refs[k - 1]) != 0)
                w.refs[k++] = w.refs[i];
        w.nrefs = k;
    }
    if (!w.nrefs) {
        free(w.refs);
        w.refs = NULL;
    }
    *out = w.refs;
    *count = w.nrefs;
    return 0;
}
