/* Comparing secrets without leaking, through timing, how much of them matched. */
#ifndef BETTONG_CTCMP_H
#define BETTONG_CTCMP_H

#include <stddef.h>

/* 1 if given[0..n) equals the configured secret[0..secret_len). Takes time
 * that depends only on secret_len (no early exit on a mismatch). */
int ct_equal(const void *secret, size_t secret_len, const void *given, size_t n);

#endif
