/* Who may talk to a service that runs its clients' code (the pool, the store):
 * a shared secret, and the rule that only loopback may listen without one. */
#ifndef BETTONG_GUARD_H
#define BETTONG_GUARD_H

#include <stddef.h>
#include <sys/socket.h>

#include "net/tls.h"

/* Where a service's or client's secret may come from. */
typedef struct {
    const char *flag;  /* the command-line spelling, "--secret" (for messages) */
    const char *value; /* its value on the command line, or NULL */
    const char *file;  /* the value of the -file form ("--secret-file"), or NULL */
    const char *env;   /* the environment variable, "BETTONG_SECRET" */
} guard_secret_src_t;

/* The secret, into out[cap] with its length in *len (0: none): the first line
 * of src->file, which must be a regular file that only its owner may read or
 * write (mode 0600 or 0400: the secret file of ssh keys); else src->value, which
 * works but logs a warning (every user of the machine can read a command line
 * with ps); else the environment variable. Returns 0, or -1 with a message in
 * err (both forms given, an unreadable or too open file, an empty file, a
 * secret that does not fit). */
int guard_secret_get(const guard_secret_src_t *src, char *out, size_t cap, size_t *len,
                     char *err, size_t errlen);

/* Resolve a --listen address ("H:P", or a bare PORT for 127.0.0.1:PORT). A
 * non-loopback address without a secret is refused: anyone who can reach it
 * could run code. Returns 0, or -1 with a message in err. */
int guard_resolve_listen(const char *text, int have_secret, struct sockaddr_storage *sa,
                         char *err, size_t errlen);

/* For start-up (the pool, the store, `bettong worker --join`): guard_secret_get with
 * --secret, --secret-file and $BETTONG_SECRET, and guard_resolve_listen, each
 * printing its error as "PROG: ..." on stderr. Return 0 or -1. */
int guard_service_secret(const char *prog, const char *value, const char *file, char *out,
                         size_t cap, size_t *len);
int guard_service_listen(const char *prog, const char *text, int have_secret,
                         struct sockaddr_storage *sa);

/* --tls-cert FILE and --tls-key FILE of a service's command line. */
typedef struct {
    const char *cert, *key;
} guard_tls_args_t;

#define GUARD_TLS_USAGE \
"  --tls-cert FILE, --tls-key FILE\n" \
"                        TLS 1.3 on the TCP port (PEM certificate chain and\n" \
"                        key); clients connect to tls:HOST:PORT. For links that\n" \
"                        leave the machine (docs/security.md): the secret's\n" \
"                        proofs are then bound to the TLS session\n"

/* One of the flags at argv[*i] (its value taken, *i moved on): 1; not one of
 * them: 0; a flag without its value: -1 after printing "PROG: ...". */
int guard_tls_flag(guard_tls_args_t *t, int argc, char **argv, int *i, const char *prog);
/* The server context the flags ask for (*ctx NULL without them). Returns 0,
 * or -1 after printing why (only one of the two given, an unreadable file, a
 * key that does not match). */
int guard_service_tls(const char *prog, const guard_tls_args_t *t, tls_ctx_t **ctx);

#endif
