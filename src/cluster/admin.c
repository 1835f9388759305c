#include "cluster/admin.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "cluster/cproto.h"
#include "net/addr.h"
#include "net/guard.h"
#include "util/args.h"

static void usage(FILE *f)
{
    fprintf(f,
"usage: bettong cluster status --control H:P [options]\n"
"       bettong cluster shrink --control H:P --worker NAME [options]\n"
"\n"
"  status      print the workers of the cluster whose coordinator (the\n"
"              initializer) listens on H:P: their state, slots, keys and message\n"
"              counts; exit 1 if a worker is lost\n"
"  shrink      move the slots (and their state) of worker NAME to the others and\n"
"              let it exit; returns once it has left\n"
"\n"
"  --control, -c H:P       the coordinator's control address\n"
"  --worker NAME           the worker to remove (shrink)\n"
"  --cluster-secret S      the cluster's secret (or BETTONG_CLUSTER_SECRET; warns:\n"
"                          ps shows a command line to every user)\n"
"  --cluster-secret-file F read the secret from file F (`bettong run --workers`\n"
"                          logs where it wrote the secret it made)\n"
"  --timeout SECONDS       give up waiting for the answer (default 60)\n");
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int read_all(int fd, uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t r = read(fd, p, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

static int connect_to(const char *control, double timeout, char *err, size_t errlen)
{
    struct sockaddr_storage sa;
    if (hostport_lookup(control, &sa, err, errlen) < 0)
        return -1;
    int fd = socket(sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct timeval tv = {.tv_sec = (time_t)timeout,
                         .tv_usec = (suseconds_t)((timeout - (double)(time_t)timeout) * 1e6)};
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) < 0 ||
        connect(fd, (struct sockaddr *)&sa,
                sa.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                         : sizeof(struct sockaddr_in)) < 0) {
        snprintf(err, errlen, "cannot connect to %s: %s", control, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

/* Send the question, print the answer; returns the answer's code. */
static int ask(const char *control, const cl_secret_t *secret, uint8_t what, const char *worker,
               double timeout)
{
    char err[512];
    int fd = connect_to(control, timeout, err, sizeof err);
    if (fd < 0) {
        fprintf(stderr, "bettong cluster: %s\n", err);
        return 2;
    }
    buf_t b;
    buf_init(&b);
    cl_put_hello(&b, secret, CL_CH_ADMIN, CL_NO_INDEX, "bettong cluster");
    wire_wr_t w;
    wire_begin(&w, &b, what, CL_MAX_HELLO);
    if (worker)
        wire_put_str16(&w, worker, strlen(worker));
    wire_end(&w);
    uint8_t hdr[4];
    int rc = write_all(fd, buf_head(&b), buf_unread(&b));
    buf_free(&b);
    uint32_t len = 0;
    if (rc == 0 && read_all(fd, hdr, 4) == 0) {
        len = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 | (uint32_t)hdr[2] << 8 | hdr[3];
        rc = len >= 2 && len <= (1u << 20) ? 0 : -1;
    } else {
        rc = -1;
    }
    uint8_t *body = rc == 0 ? malloc(len) : NULL;
    if (!body || read_all(fd, body, len) < 0 || body[0] != CL_REPLY) {
        fprintf(stderr, "bettong cluster: no answer from %s (%s)\n", control,
                errno == EAGAIN ? "timed out"
                                : "connection closed: wrong secret, or not a cluster coordinator");
        free(body);
        close(fd);
        return 2;
    }
    close(fd);
    int code = body[1];
    /* A status is printed to stdout whatever it says; a refused shrink is an error. */
    fwrite(body + 2, 1, len - 2, code == 0 || what == CL_ASK_STATUS ? stdout : stderr);
    free(body);
    return code;
}

int cmd_cluster(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *sub = argv[1];
    const char *control = NULL, *worker = NULL, *v;
    guard_secret_src_t src = {.flag = "--cluster-secret", .env = "BETTONG_CLUSTER_SECRET"};
    double timeout = 60;
    for (int i = 2; i < argc; i++) {
        int missing = 0;
        if ((v = args_flag_value(argc, argv, &i, "--control", &missing)) ||
            (v = args_flag_value(argc, argv, &i, "-c", &missing)))
            control = v;
        else if ((v = args_flag_value(argc, argv, &i, "--worker", &missing)))
            worker = v;
        else if ((v = args_flag_value(argc, argv, &i, "--cluster-secret", &missing)))
            src.value = v;
        else if ((v = args_flag_value(argc, argv, &i, "--cluster-secret-file", &missing)))
            src.file = v;
        else if ((v = args_flag_value(argc, argv, &i, "--timeout", &missing)))
            timeout = atof(v);
        else {
            fprintf(stderr, "bettong cluster: unknown argument '%s'\n\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    cl_secret_t secret;
    char err[600];
    if (guard_secret_get(&src, secret.secret, sizeof secret.secret, &secret.len, err,
                         sizeof err) < 0) {
        fprintf(stderr, "bettong cluster: %s\n", err);
        return 2;
    }
    if (!control) {
        fprintf(stderr, "bettong cluster: --control H:P is required\n");
        return 2;
    }
    if (timeout <= 0)
        timeout = 60;
    if (strcmp(sub, "status") == 0)
        return ask(control, &secret, CL_ASK_STATUS, NULL, timeout);
    if (strcmp(sub, "shrink") == 0) {
        if (!worker) {
            fprintf(stderr, "bettong cluster shrink: --worker NAME is required\n");
            return 2;
        }
        return ask(control, &secret, CL_ASK_SHRINK, worker, timeout);
    }
    fprintf(stderr, "bettong cluster: unknown command '%s'\n\n", sub);
    usage(stderr);
    return 2;
}
