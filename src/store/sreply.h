/* Answers of the object store (sproto.h), written as whole frames into a
 * buffer. Used by the loop thread and the Python threads alike (no Python
 * here: the pickles are bytes made elsewhere, except the two tiny ones below
 * that are written in C). An answer too large for a frame becomes FAILED
 * INTERNAL. Every function returns 0, or -1 if memory ran out (the buffer is
 * as it was). */
#ifndef BETTONG_SREPLY_H
#define BETTONG_SREPLY_H

#include <stddef.h>
#include <stdint.h>

#include "util/buf.h"

/* Largest frame the store reads or writes. */
#define STORE_MAX_FRAME (1024ull * 1024 * 1024)

int sreply_ok(buf_t *b, uint64_t req, const void *pickle, size_t n);
/* OK carrying a pickled None. */
int sreply_none(buf_t *b, uint64_t req);
/* OK carrying a pickled list of str: `entries` holds `count` str16 entries. */
int sreply_str_list(buf_t *b, uint64_t req, const uint8_t *entries, size_t len, uint32_t count);
/* REF: the object, its class and the backend that holds it (meta.h). */
int sreply_ref(buf_t *b, uint64_t req, const char *id, size_t idlen, uint64_t class_id,
               const char *backend);
/* BACKEND_LIST: count (str16 id, str16 name, str16 address) entries. */
/* REF with the backends holding replicas: entries are count str16 ids. */
int sreply_ref_replicas(buf_t *b, uint64_t req, const char *id, size_t idlen, uint64_t class_id,
                        const char *backend, const uint8_t *entries, size_t len, uint32_t count);
int sreply_backends(buf_t *b, uint64_t req, const uint8_t *entries, size_t len, uint32_t count);
int sreply_raised(buf_t *b, uint64_t req, const void *pickle, size_t n);
int sreply_class_bytes(buf_t *b, uint64_t req, const void *pickle, size_t n);
int sreply_failed(buf_t *b, uint64_t req, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* 1 if p[0..n) is valid UTF-8. */
int utf8_valid(const uint8_t *p, size_t n);

#endif
