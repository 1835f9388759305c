/* Reference-counted byte blocks. A call's pickled arguments live in a blob from
 * the moment the pool reads them until the call is finished (a retry sends them
 * again); a write in progress holds a reference too, so a payload goes from the
 * client's frame to the worker's socket without another copy.
 *
 * A blob either carries its bytes inline (a copy of a small payload) or owns a
 * block taken from a connection's read buffer (a large frame: the payloads of
 * its calls point into it, and it is freed when the last of them is done).
 * Single-threaded: the pool's loop is the only user. */
#ifndef BETTONG_BLOB_H
#define BETTONG_BLOB_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    size_t refs;
    void *owned;  /* a taken block to free(), or NULL when the bytes are inline */
    void (*release)(void *owned); /* blob_external: frees `owned` instead of free() */
    void *fd;     /* blob_external: a descriptor the bytes can travel as (pool/shm.h) */
    size_t len;   /* inline bytes */
    uint8_t data[];
} blob_t;

/* A blob holding a copy of p[0..n) (refs 1), or NULL if memory ran out. */
blob_t *blob_copy(const void *p, size_t n);
/* A blob owning `block` (malloc'd; refs 1). On failure the block is freed and
 * NULL returned. */
blob_t *blob_wrap(void *block);
/* A blob whose bytes live elsewhere (a mapped memfd), let go of by
 * release(owned) with the last reference; fd as in blob_t. NULL if memory ran
 * out (then release(owned) has run). */
blob_t *blob_external(void *owned, void (*release)(void *owned), void *fd);
void blob_ref(blob_t *b);
void blob_unref(blob_t *b);
/* For release callbacks that take a void pointer (writer segments). */
void blob_unref_cb(void *b);

/* A span of bytes kept alive by a blob. */
typedef struct {
    blob_t *blob;
    const uint8_t *p;
    size_t n;
} span_t;

#endif
