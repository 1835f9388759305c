/* A parser of the Prometheus text exposition format 0.0.4 (what /metrics
 * serves), for clients of the endpoint (`bettong top`). It is strict about
 * what it keeps and says where it stopped: a sample line that is not
 * `name{label="value",...} value [timestamp]` fails the whole document with
 * the line's number, so garbage from a wrong address is reported, not shown.
 * Comment lines other than # TYPE are skipped. The document owns every
 * string it points to; sizes are bounded (PROM_MAX_*). */
#ifndef BETTONG_PROMPARSE_H
#define BETTONG_PROMPARSE_H

#include <stddef.h>

#define PROM_MAX_SAMPLES 200000
#define PROM_MAX_LABELS 32
#define PROM_MAX_NAME 256

typedef enum { PROM_UNTYPED, PROM_COUNTER, PROM_GAUGE, PROM_HISTOGRAM, PROM_SUMMARY } prom_type_t;

typedef struct {
    const char *name;
    const char *value; /* unescaped */
} prom_label_t;

typedef struct {
    const char *name; /* as written: a histogram's foo_bucket, foo_sum, foo_count */
    const char *family; /* the family it belongs to (foo for foo_bucket of histogram foo) */
    prom_type_t type;   /* its family's # TYPE (PROM_UNTYPED if none) */
    prom_label_t *labels;
    size_t nlabels;
    double value;
} prom_sample_t;

typedef struct {
    prom_sample_t *samples;
    size_t n, cap;
    char *arena; /* the strings: a copy of the input, cut and unescaped in place */
    struct prom_type_entry *types;
    size_t ntypes, typecap;
} prom_doc_t;

void prom_doc_init(prom_doc_t *d);
void prom_doc_free(prom_doc_t *d);

/* Parse text[len] into d (initialised, empty). Returns 0, or -1 with
 * "line N: what is wrong" (or "out of memory", "more than N samples") in err
 * and d empty. */
int prom_parse(prom_doc_t *d, const char *text, size_t len, char *err, size_t errlen);

/* The value of label `name` of s, or NULL. */
const char *prom_label(const prom_sample_t *s, const char *name);

const char *prom_type_name(prom_type_t t);

#endif
