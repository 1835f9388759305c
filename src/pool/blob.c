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
    b->release = NULL;
    b->fd = NULL;
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
    b->release = NULL;
    b->fd = NULL;
    b->len = 0;
    return b;
}

blob_t *blob_external(void *owned, void (*release)(void *owned), void *fd)
{
    blob_t *b = malloc(sizeof *b);
    if (!b) {
        release(owned);
        return NULL;
    }
    b->refs = 1;
    b->owned = owned;
    b->release = release;
    b->fd = fd;
    b->len = 0;
    return b;
}

void blob_ref(blob_t *b) { b->refs++; }

void blob_unref(blob_t *b)
{
    if (!b || --b->refs > 0)
        return;
    if (b->release)
        b->release(b->owned);
    else
        free(b->owned);
    free(b);
}

void blob_unref_cb(void *b) { blob_unref(b); }
