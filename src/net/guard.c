#include "net/guard.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "net/addr.h"
#include "util/args.h"
#include "util/log.h"

static int copy_secret(const char *secret, size_t n, char *out, size_t cap, size_t *len,
                       const char *from, char *err, size_t errlen)
{
    if (n >= cap) {
        snprintf(err, errlen, "the secret in %s is too long (at most %zu bytes)", from, cap - 1);
        return -1;
    }
    memcpy(out, secret, n);
    out[n] = '\0';
    *len = n;
    return 0;
}

/* The first line of a file only its owner can read; a secret kept anywhere
 * more open than that is as good as published, so it is refused. */
static int read_secret_file(const char *path, char *out, size_t cap, size_t *len, char *err,
                            size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        snprintf(err, errlen, "cannot read the secret file %s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    if (!S_ISREG(st.st_mode) || (st.st_mode & 077) != 0) {
        snprintf(err, errlen, "the secret file %s must be a regular file only its owner can "
                 "read (mode 0600 or 0400; it is %04o): chmod 600 %s", path,
                 (unsigned)(st.st_mode & 07777), path);
        close(fd);
        return -1;
    }
    char line[4096];
    ssize_t n = read(fd, line, sizeof line - 1);
    int e = errno;
    close(fd);
    if (n < 0) {
        snprintf(err, errlen, "cannot read the secret file %s: %s", path, strerror(e));
        return -1;
    }
    line[n] = '\0';
    size_t k = strcspn(line, "\r\n");
    if (k == 0) {
        snprintf(err, errlen, "the secret file %s is empty", path);
        return -1;
    }
    int rc = copy_secret(line, k, out, cap, len, path, err, errlen);
    explicit_bzero(line, sizeof line);
    return rc;
}

int guard_secret_get(const guard_secret_src_t *src, char *out, size_t cap, size_t *len,
                     char *err, size_t errlen)
{
    *len = 0;
    out[0] = '\0';
    if (src->file && src->value) {
        snprintf(err, errlen, "give %s or %s-file, not both", src->flag, src->flag);
        return -1;
    }
    if (src->file)
        return read_secret_file(src->file, out, cap, len, err, errlen);
    if (src->value) {
        log_warn("%s on the command line can be read by every user of this machine (ps): "
                 "use %s-file PATH (mode 0600) or the environment variable %s instead",
                 src->flag, src->flag, src->env);
        return copy_secret(src->value, strlen(src->value), out, cap, len, src->flag, err,
                           errlen);
    }
    const char *v = getenv(src->env);
    if (!v || !*v)
        return 0;
    return copy_secret(v, strlen(v), out, cap, len, src->env, err, errlen);
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

int guard_service_secret(const char *prog, const char *value, const char *file, char *out,
                         size_t cap, size_t *len)
{
    char err[600];
    guard_secret_src_t src = {.flag = "--secret", .value = value, .file = file,
                              .env = "BETTONG_SECRET"};
    if (guard_secret_get(&src, out, cap, len, err, sizeof err) < 0) {
        fprintf(stderr, "%s: %s\n", prog, err);
        return -1;
    }
    return 0;
}

int guard_service_listen(const char *prog, const char *text, int have_secret,
                         struct sockaddr_storage *sa)
{
    char err[600];
    if (guard_resolve_listen(text, have_secret, sa, err, sizeof err) < 0) {
        fprintf(stderr, "%s: %s\n", prog, err);
        return -1;
    }
    return 0;
}

int guard_tls_flag(guard_tls_args_t *t, int argc, char **argv, int *i, const char *prog)
{
    int missing = 0;
    const char *v;
    if ((v = args_flag_value(argc, argv, i, "--tls-cert", &missing)))
        t->cert = v;
    else if (!missing && (v = args_flag_value(argc, argv, i, "--tls-key", &missing)))
        t->key = v;
    if (v)
        return 1;
    if (!missing)
        return 0;
    fprintf(stderr, "%s: option '%s' needs a value\n", prog, argv[*i]);
    return -1;
}

int guard_service_tls(const char *prog, const guard_tls_args_t *t, tls_ctx_t **ctx)
{
    *ctx = NULL;
    if (!t->cert && !t->key)
        return 0;
    if (!t->cert || !t->key) {
        fprintf(stderr, "%s: TLS needs both --tls-cert FILE and --tls-key FILE\n", prog);
        return -1;
    }
    char err[512];
    if (!(*ctx = tls_ctx_server(t->cert, t->key, err, sizeof err))) {
        fprintf(stderr, "%s: %s\n", prog, err);
        return -1;
    }
    return 0;
}
