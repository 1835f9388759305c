#include "net/guard.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/addr.h"

int guard_secret_load(const char *given, char *out, size_t cap, size_t *len, char *err,
                      size_t errlen)
{
    return guard_secret_load_env(given, "BETTONG_SECRET", out, cap, len, err, errlen);
}

int guard_secret_load_env(const char *given, const char *env, char *out, size_t cap,
                          size_t *len, char *err, size_t errlen)
{
    const char *secret = given ? given : getenv(env);
    *len = 0;
    if (!secret || !*secret)
        return 0;
    size_t n = strlen(secret);
    if (n >= cap) {
        snprintf(err, errlen, "the secret is too long (at most %zu bytes)", cap - 1);
        return -1;
    }
    memcpy(out, secret, n + 1);
    *len = n;
    return 0;
}

int guard_resolve_listen(const char *text, int have_secret, struct sockaddr_storage *sa,
                         char *err, size_t errlen)
{
    hostport_t hp;
    char tmp[300], why[300];
    const char *spec = text;
    if (*text && strspn(text, "0123456789") == strlen(text)) {
        snprintf(tmp, sizeof tmp, "127.0.0.1:%s", text);
        spec = tmp;
    }
    if (hostport_parse(spec, &hp, why, sizeof why) < 0 ||
        hostport_resolve(&hp, sa, why, sizeof why) < 0) {
        snprintf(err, errlen, "--listen: %s", why);
        return -1;
    }
    if (!sockaddr_is_loopback((struct sockaddr *)sa) && !have_secret) {
        snprintf(err, errlen,
                 "refusing to listen on %s without a secret: anyone who can reach it could "
                 "run code here. Give --secret S (or set BETTONG_SECRET), or listen on a "
                 "loopback address.", text);
        return -1;
    }
    return 0;
}
