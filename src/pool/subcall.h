/* The way back into the pool for a function running on it: sub-call tokens.
 *
 * A nested executor (a FunctionExecutor created inside a call) submits to the
 * pool its call runs on without the pool's secret. Its connection claims the
 * role ROLE_SUBCALL and names the task it is a sub-call client of; its
 * handshake key is that task's token instead of the secret:
 *
 *     worker key = HMAC-SHA256(secret, "bettong pool sub-call key 1")
 *     token      = HMAC-SHA256(worker key, u64 big-endian task id)
 *
 * A worker process derives the worker key once, right after its own handshake,
 * and forgets the secret; the function it runs can ask for the token of its
 * own task only (bettong's worker module). The pool takes a ROLE_SUBCALL peer
 * only while the task is running; the peer is then an ordinary client (it
 * submits, waits and cancels its own calls) and nothing else: it cannot join
 * as a worker, and the token is not a key for any other service. */
#ifndef BETTONG_SUBCALL_H
#define BETTONG_SUBCALL_H

#include <stddef.h>
#include <stdint.h>

#define SUBCALL_KEY_LEN 32

/* The worker key of a secret (len 0: no secret). Returns 0 or -1. */
int subcall_worker_key(const void *secret, size_t len, uint8_t key[SUBCALL_KEY_LEN]);
/* The token of a task under a worker key. Returns 0 or -1. */
int subcall_token(const uint8_t wkey[SUBCALL_KEY_LEN], uint64_t task_id,
                  uint8_t token[SUBCALL_KEY_LEN]);
/* The token of a task straight from the secret (the pool's side). */
int subcall_token_of_secret(const void *secret, size_t len, uint64_t task_id,
                            uint8_t token[SUBCALL_KEY_LEN]);

#endif
