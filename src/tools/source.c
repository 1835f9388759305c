#include "tools/source.h"

#include <string.h>

void source_from_records(source_t *s, const records_t *file, uint64_t total)
{
    memset(s, 0, sizeof *s);
    s->file = file;
    s->left = file->n ? total : 0;
}

void source_from_gen(source_t *s, gen_t *gen)
{
    memset(s, 0, sizeof *s);
    s->gen = gen;
    s->left = UINT64_MAX;
}

static size_t next_from_file(source_t *s, uint64_t max_items, size_t max_bytes, span_t *out)
{
    const records_t *r = s->file;
    uint64_t budget = max_items < s->left ? max_items : s->left;
    size_t hi = budget < r->n - s->pos ? s->pos + (size_t)budget : r->n;
    size_t end = records_last_within(r, s->pos, hi, max_bytes);
    *out = (span_t){r, s->pos, end};
    if (s->left != UINT64_MAX)
        s->left -= end - s->pos;
    /* The end of the file's records: around again (--repeat). */
    s->pos = end == r->n ? 0 : end;
    return end - out->from;
}

size_t source_next(source_t *s, uint64_t max_items, size_t max_bytes, span_t *out)
{
    if (max_items == 0 || s->left == 0)
        return 0;
    if (s->file)
        return next_from_file(s, max_items, max_bytes, out);
    gen_fill(s->gen, max_items, max_bytes);
    *out = (span_t){&s->gen->window, 0, s->gen->window.n};
    return s->gen->window.n;
}
