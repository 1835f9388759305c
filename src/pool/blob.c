#include "pool/blob.h"

#include <stdlib.h>
#include <string.h>

blob_t *blob_copy(const void *p, size_t n)
{
    blob_t *b = malloc(sizeof *b + n);
    if (!b)
        return NULL;
    b->refs = 1;
    b->owned = NULL;
    b->len = n;
    if (n)
        memcpy(b->data, p, n);
    return b;
}

blob_t *blob_wrap(void *block)
{
    blob_t *b = malloc(sizeof *b);
    if (!b) {
        free(block);
        return NULL;
    }
    b->refs = 1;
    b->owned = block;
    b->len = 0;
    return b;
}

void blob_ref(blob_t *b) { b->refs++; }

void blob_unref(blob_t *b)
{
    if (!b || --b->refs > 0)
        return;
    free(b->owned);
    free(b);
}

void blob_unref_cb(void *b) { blob_unref(b); }
