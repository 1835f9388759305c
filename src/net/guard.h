/* Who may talk to a service that runs its clients' code (the pool, the store):
 * a shared secret, and the rule that only loopback may listen without one. */
#ifndef BETTONG_GUARD_H
#define BETTONG_GUARD_H

#include <stddef.h>
#include <sys/socket.h>

/* The secret from `given` (--secret) or else $BETTONG_SECRET, copied into
 * out[cap] with its length in *len (0: none). Returns 0, or -1 with a message in
 * err if it does not fit. */
int guard_secret_load(const char *given, char *out, size_t cap, size_t *len, char *err,
                      size_t errlen);
/* The same with the environment variable `env` instead of BETTONG_SECRET. */
int guard_secret_load_env(const char *given, const char *env, char *out, size_t cap,
                          size_t *len, char *err, size_t errlen);

/* Resolve a --listen address ("H:P", or a bare PORT for 127.0.0.1:PORT). A
 * non-loopback address without a secret is refused: anyone who can reach it
 * could run code. Returns 0, or -1 with a message in err. */
int guard_resolve_listen(const char *text, int have_secret, struct sockaddr_storage *sa,
                         char *err, size_t errlen);

#endif
