#include "util/promparse.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PROM_MAX_TYPES 20000

struct prom_type_entry {
    const char *name;
    prom_type_t type;
};

/* One line being parsed: p walks over [p, end) of the arena, which may be
 * written (NULs, unescaped values) behind p. */
typedef struct {
    char *p, *end;
    unsigned lineno;
    char *err;
    size_t errlen;
} cursor_t;

void prom_doc_init(prom_doc_t *d) { memset(d, 0, sizeof *d); }

void prom_doc_free(prom_doc_t *d)
{
    for (size_t i = 0; i < d->n; i++)
        free(d->samples[i].labels);
    free(d->samples);
    free(d->types);
    free(d->arena);
    prom_doc_init(d);
}

static int fail(cursor_t *c, const char *fmt, ...)
{
    int n = snprintf(c->err, c->errlen, "line %u: ", c->lineno);
    if (n >= 0 && (size_t)n < c->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->err + n, c->errlen - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static int is_name_start(char ch, int colon_ok)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_' ||
           (colon_ok && ch == ':');
}

static int is_name_char(char ch, int colon_ok)
{
    return is_name_start(ch, colon_ok) || (ch >= '0' && ch <= '9');
}

static void skip_blanks(cursor_t *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t'))
        c->p++;
}

/* A metric (colon_ok) or label name at p; returns its start, the length in
 * *len, or NULL. Not terminated here: the caller reads the next byte first. */
static char *scan_name(cursor_t *c, int colon_ok, size_t *len)
{
    char *start = c->p;
    if (c->p >= c->end || !is_name_start(*c->p, colon_ok))
        return NULL;
    while (c->p < c->end && is_name_char(*c->p, colon_ok))
        c->p++;
    *len = (size_t)(c->p - start);
    return *len <= PROM_MAX_NAME ? start : NULL;
}

/* A quoted label value at p, unescaped in place and NUL-terminated (the
 * closing quote's byte or an earlier one holds the NUL). */
static char *scan_value(cursor_t *c)
{
    if (c->p >= c->end || *c->p != '"')
        return NULL;
    char *out = ++c->p, *start = out;
    while (c->p < c->end && *c->p != '"') {
        char ch = *c->p++;
        if (ch == '\\') {
            if (c->p >= c->end)
                return NULL;
            char e = *c->p++;
            if (e == 'n')
                ch = '\n';
            else if (e == '\\' || e == '"')
                ch = e;
            else
                return NULL;
        }
        *out++ = ch;
    }
    if (c->p >= c->end)
        return NULL;
    c->p++; /* the closing quote */
    *out = '\0';
    return start;
}

static int add_label(prom_sample_t *s, const char *name, const char *value)
{
    for (size_t i = 0; i < s->nlabels; i++)
        if (strcmp(s->labels[i].name, name) == 0)
            return 1;
    if (s->nlabels == PROM_MAX_LABELS)
        return 2;
    if (!s->labels && !(s->labels = malloc(PROM_MAX_LABELS * sizeof *s->labels)))
        return 3;
    s->labels[s->nlabels++] = (prom_label_t){name, value};
    return 0;
}

/* {name="value",...} at p (just after the '{'). */
static int parse_labels(cursor_t *c, prom_sample_t *s)
{
    for (;;) {
        skip_blanks(c);
        if (c->p < c->end && *c->p == '}') {
            c->p++;
            return 0;
        }
        size_t nlen;
        char *name = scan_name(c, 0, &nlen);
        if (!name)
            return fail(c, "a label name expected");
        skip_blanks(c);
        if (c->p >= c->end || *c->p != '=')
            return fail(c, "'=' expected after label %.*s", (int)nlen, name);
        c->p++;
        skip_blanks(c);
        char *value = scan_value(c);
        if (!value)
            return fail(c, "label %.*s: a quoted value (escapes \\\\ \\\" \\n) expected",
                        (int)nlen, name);
        name[nlen] = '\0'; /* was '=' or a blank, both read */
        int rc = add_label(s, name, value);
        if (rc == 1)
            return fail(c, "label %s given twice", name);
        if (rc == 2)
            return fail(c, "more than %d labels", PROM_MAX_LABELS);
        if (rc == 3)
            return fail(c, "out of memory");
        skip_blanks(c);
        if (c->p < c->end && *c->p == ',')
            c->p++;
        else if (c->p >= c->end || *c->p != '}')
            return fail(c, "',' or '}' expected after a label");
    }
}

/* The next blank-separated token at p, NUL-terminated in place (its end is
 * a blank already read, or the line's end, where the line's '\n' was). */
static char *scan_token(cursor_t *c)
{
    skip_blanks(c);
    char *start = c->p;
    while (c->p < c->end && *c->p != ' ' && *c->p != '\t')
        c->p++;
    if (c->p == start)
        return NULL;
    if (c->p < c->end)
        *c->p++ = '\0';
    else
        *c->p = '\0';
    return start;
}

static int parse_number(const char *t, double *v)
{
    if (strcmp(t, "+Inf") == 0 || strcmp(t, "Inf") == 0) {
        *v = INFINITY;
        return 0;
    }
    if (strcmp(t, "-Inf") == 0) {
        *v = -INFINITY;
        return 0;
    }
    if (strcmp(t, "NaN") == 0) {
        *v = NAN;
        return 0;
    }
    /* Digits, sign, point and exponent only (strtod would take hex, "inf"...). */
    for (const char *q = t; *q; q++)
        if (!strchr("0123456789+-.eE", *q))
            return -1;
    char *endp;
    *v = strtod(t, &endp);
    return endp != t && *endp == '\0' ? 0 : -1;
}

static int parse_timestamp(const char *t)
{
    if (*t == '-')
        t++;
    if (!*t)
        return -1;
    for (; *t; t++)
        if (*t < '0' || *t > '9')
            return -1;
    return 0;
}

static prom_type_t type_of_word(const char *w)
{
    if (strcmp(w, "counter") == 0)
        return PROM_COUNTER;
    if (strcmp(w, "gauge") == 0)
        return PROM_GAUGE;
    if (strcmp(w, "histogram") == 0)
        return PROM_HISTOGRAM;
    if (strcmp(w, "summary") == 0)
        return PROM_SUMMARY;
    if (strcmp(w, "untyped") == 0)
        return PROM_UNTYPED;
    return (prom_type_t)-1;
}

/* "# TYPE name kind": remembered for the samples after it. Other comments
 * (# HELP, anything) are skipped. */
static int parse_comment(prom_doc_t *d, cursor_t *c)
{
    c->p++; /* '#' */
    char *word = scan_token(c);
    if (!word || strcmp(word, "TYPE") != 0)
        return 0;
    char *name = scan_token(c), *kind = scan_token(c);
    size_t nlen;
    cursor_t probe = *c;
    probe.p = name;
    probe.end = name ? name + strlen(name) : NULL;
    if (!name || !kind || !scan_name(&probe, 1, &nlen) || probe.p != probe.end)
        return fail(c, "# TYPE wants a metric name and a type");
    prom_type_t t = type_of_word(kind);
    if ((int)t < 0)
        return fail(c, "# TYPE %s: unknown type '%.40s'", name, kind);
    if (scan_token(c))
        return fail(c, "# TYPE %s: text after the type", name);
    if (d->ntypes == PROM_MAX_TYPES)
        return fail(c, "more than %d # TYPE lines", PROM_MAX_TYPES);
    if (d->ntypes == d->typecap) {
        size_t cap = d->typecap ? d->typecap * 2 : 32;
        void *n = realloc(d->types, cap * sizeof *d->types);
        if (!n)
            return fail(c, "out of memory");
        d->types = n;
        d->typecap = cap;
    }
    d->types[d->ntypes++] = (struct prom_type_entry){name, t};
    return 0;
}

static const struct prom_type_entry *find_type(const prom_doc_t *d, const char *name, size_t len)
{
    /* Samples follow their # TYPE line: look from the last one back. */
    for (size_t i = d->ntypes; i-- > 0;)
        if (strncmp(d->types[i].name, name, len) == 0 && d->types[i].name[len] == '\0')
            return &d->types[i];
    return NULL;
}

static int ends_with(const char *s, size_t len, const char *suffix, size_t *base)
{
    size_t n = strlen(suffix);
    if (len <= n || memcmp(s + len - n, suffix, n) != 0)
        return 0;
    *base = len - n;
    return 1;
}

/* The family of sample `name`: its own # TYPE, or a histogram's/summary's
 * whose _bucket, _sum or _count it is. */
static void resolve_family(const prom_doc_t *d, prom_sample_t *s)
{
    size_t len = strlen(s->name), base;
    const struct prom_type_entry *t = find_type(d, s->name, len);
    if (!t) {
        static const char *suffixes[] = {"_bucket", "_sum", "_count"};
        for (size_t i = 0; i < 3 && !t; i++)
            if (ends_with(s->name, len, suffixes[i], &base)) {
                t = find_type(d, s->name, base);
                if (t && t->type != PROM_HISTOGRAM && t->type != PROM_SUMMARY)
                    t = NULL;
                if (t && i == 0 && t->type != PROM_HISTOGRAM)
                    t = NULL;
            }
    }
    s->family = t ? t->name : s->name;
    s->type = t ? t->type : PROM_UNTYPED;
}

static prom_sample_t *new_sample(prom_doc_t *d, cursor_t *c)
{
    if (d->n == PROM_MAX_SAMPLES) {
        fail(c, "more than %d samples", PROM_MAX_SAMPLES);
        return NULL;
    }
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 64;
        void *n = realloc(d->samples, cap * sizeof *d->samples);
        if (!n) {
            fail(c, "out of memory");
            return NULL;
        }
        d->samples = n;
        d->cap = cap;
    }
    prom_sample_t *s = &d->samples[d->n++];
    memset(s, 0, sizeof *s);
    return s;
}

static int parse_sample(prom_doc_t *d, cursor_t *c)
{
    size_t nlen;
    char *name = scan_name(c, 1, &nlen);
    if (!name)
        return fail(c, "not a sample line (a metric name expected)");
    prom_sample_t *s = new_sample(d, c);
    if (!s)
        return -1;
    char after = c->p < c->end ? *c->p : '\n';
    if (after == '{') {
        c->p++;
        name[nlen] = '\0';
        if (parse_labels(c, s) < 0)
            return -1;
    } else if (after != ' ' && after != '\t') {
        return fail(c, "a blank or '{' expected after the metric name");
    } else {
        name[nlen] = '\0';
        c->p++;
    }
    s->name = name;
    char *value = scan_token(c);
    if (!value)
        return fail(c, "%s: no value", name);
    if (parse_number(value, &s->value) < 0)
        return fail(c, "%s: '%.40s' is not a number", name, value);
    char *ts = scan_token(c);
    if (ts && parse_timestamp(ts) < 0)
        return fail(c, "%s: '%.40s' is not a timestamp", name, ts);
    if (scan_token(c))
        return fail(c, "%s: text after the value and timestamp", name);
    resolve_family(d, s);
    return 0;
}

static int parse_line(prom_doc_t *d, cursor_t *c)
{
    if (c->end > c->p && c->end[-1] == '\r')
        c->end--;
    skip_blanks(c);
    if (c->p == c->end)
        return 0;
    if (*c->p == '#')
        return parse_comment(d, c);
    return parse_sample(d, c);
}

int prom_parse(prom_doc_t *d, const char *text, size_t len, char *err, size_t errlen)
{
    cursor_t c = {.err = err, .errlen = errlen, .lineno = 0};
    if (len && memchr(text, '\0', len)) {
        snprintf(err, errlen, "a NUL byte in the text");
        return -1;
    }
    if (!(d->arena = malloc(len + 1))) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (len)
        memcpy(d->arena, text, len);
    d->arena[len] = '\0';
    char *p = d->arena, *end = d->arena + len;
    while (p < end) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        char *line_end = nl ? nl : end;
        c.p = p;
        c.end = line_end;
        c.lineno++;
        if (parse_line(d, &c) < 0) {
            prom_doc_free(d);
            return -1;
        }
        p = line_end + 1;
    }
    return 0;
}

const char *prom_label(const prom_sample_t *s, const char *name)
{
    for (size_t i = 0; i < s->nlabels; i++)
        if (strcmp(s->labels[i].name, name) == 0)
            return s->labels[i].value;
    return NULL;
}

const char *prom_type_name(prom_type_t t)
{
    switch (t) {
    case PROM_COUNTER: return "counter";
    case PROM_GAUGE: return "gauge";
    case PROM_HISTOGRAM: return "histogram";
    case PROM_SUMMARY: return "summary";
    default: return "untyped";
    }
}
