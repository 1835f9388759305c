/* giles' sequences, for bettong send without --file: the counter values
 * start-from + 1, + 2, ... as decimal text (giles' IntegerDataSource) or, with
 * --u64, as giles' BinaryIntegerDataSource makes them: a 4-byte big-endian
 * length (8 + the partition's length), the value as 8 bytes big-endian, then the
 * --partition string. Like giles, the send mode may frame that again. */
#ifndef BETTONG_TOOLS_GEN_H
#define BETTONG_TOOLS_GEN_H

#include <stddef.h>
#include <stdint.h>

#include "tools/records.h"

typedef enum { GEN_DECIMAL, GEN_U64 } gen_kind;

typedef struct {
    gen_kind kind;
    uint64_t counter;      /* the last value made: the next one is counter + 1 */
    const char *partition; /* GEN_U64: appended to every record ("" for none) */
    size_t plen;
    int frame; /* put a 4-byte big-endian length before each record, as giles does in
                  its text and --variable-size modes */
    records_t window; /* the records of the last gen_fill */
    size_t cap;       /* window.data's size */
    size_t max_n;     /* window.off's size minus one */
} gen_t;

/* Returns 0 or -1 (out of memory, or a partition too long for its length). */
int gen_init(gen_t *g, gen_kind kind, uint64_t start_from, const char *partition, int frame);
void gen_free(gen_t *g);
/* The size on the wire of the next record. */
size_t gen_next_size(const gen_t *g);
/* Replace g->window with the next records: at most max_items and, past the
 * first, at most max_bytes bytes in all (and no more than the window holds). */
void gen_fill(gen_t *g, uint64_t max_items, size_t max_bytes);

#endif
