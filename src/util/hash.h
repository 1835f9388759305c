/* A 64-bit hash of bytes that is the same in every process and on every run
 * (routing decisions must agree across workers, unlike Python's hash()). */
#ifndef BETTONG_HASH_H
#define BETTONG_HASH_H

#include <stddef.h>
#include <stdint.h>

uint64_t hash_bytes(const void *p, size_t n, uint64_t seed);
/* Mix a 64-bit value into a well-spread 64-bit value. */
uint64_t hash_u64(uint64_t x);
/* Combine an accumulated hash with another (order-sensitive). */
uint64_t hash_combine(uint64_t acc, uint64_t h);

#endif
