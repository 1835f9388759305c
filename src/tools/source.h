/* Where bettong send's records come from, one span of whole records at a time:
 * a file's records in memory, gone through `repeat` times (or forever), or one
 * of giles' endless sequences. The send loops (plain, paced, giles' batches)
 * only ask for "the next records, at most so many, about so many bytes". */
#ifndef BETTONG_TOOLS_SOURCE_H
#define BETTONG_TOOLS_SOURCE_H

#include <stddef.h>
#include <stdint.h>

#include "tools/gen.h"
#include "tools/records.h"

typedef struct {
    const records_t *r;
    size_t from, to; /* records [from, to) of r */
} span_t;

typedef struct {
    const records_t *file; /* NULL: the sequence `gen` */
    size_t pos;            /* the file's next record */
    uint64_t left;         /* records the file still gives (UINT64_MAX: forever) */
    gen_t *gen;
} source_t;

/* The file's records, `total` of them in all (its records again and again). */
void source_from_records(source_t *s, const records_t *file, uint64_t total);
void source_from_gen(source_t *s, gen_t *gen);
/* The next records: at most max_items (>= 1) and, past the first, at most
 * max_bytes bytes. Returns how many (0: the source is done). The span stays
 * valid until the next call. */
size_t source_next(source_t *s, uint64_t max_items, size_t max_bytes, span_t *out);

static inline const uint8_t *span_data(const span_t *sp) { return sp->r->data + sp->r->off[sp->from]; }
static inline size_t span_bytes(const span_t *sp) { return sp->r->off[sp->to] - sp->r->off[sp->from]; }

#endif
