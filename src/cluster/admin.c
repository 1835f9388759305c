#include "cluster/admin.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netdb.h>
#include <unistd.h>

#include "cluster/cproto.h"
#include "net/guard.h"
#include "net/sock.h"
#include "net/tlssock.h"
#include "util/args.h"

static void usage(FILE *f)
{
    fprintf(f,
"usage: bettong cluster status --control H:P [options]\n"
"       bettong cluster shrink --control H:P --worker NAME [options]\n"
"\n"
"  status      print the workers of the cluster whose coordinator (the\n"
"              initializer) listens on H:P: their state, slots, keys and message\n"
"              counts; exit 1 (PROBLEM lines) if a worker is lost or silent,\n"
"              slots have no worker, or the cluster has not formed\n"
"  shrink      move the slots (and their state) of worker NAME to the others and\n"
"              let it exit; returns once it has left\n"
"\n"
"  --control, -c H:P       the coordinator's control address\n"
"  --worker NAME           the worker to remove (shrink)\n"
"  --cluster-secret S      the cluster's secret (or BETTONG_CLUSTER_SECRET; warns:\n"
"                          ps shows a command line to every user)\n"
"  --cluster-secret-file F read the secret from file F (`bettong run --workers`\n"
"                          logs where it wrote the secret it made)\n"
"  --timeout SECONDS       give up waiting for the answer (default 60)\n"
"  --tls                   speak TLS to a cluster run with --tls-cert/--tls-key\n"
"                          (its certificate is not verified: the handshake's\n"
"                          proofs of the secret are bound to the TLS session)\n");
}

/* A connection to the coordinator, plain or over TLS. */
typedef struct {
    int fd;
    tls_ctx_t *ctx; /* NULL: plain */
    tlssock_t ts;
    sock_io_t io;
} admin_conn_t;

static int plain_write(void *io, const void *p, size_t n, double deadline)
{
    return sock_write_all(((admin_conn_t *)io)->fd, p, n, deadline);
}

static int plain_read(void *io, buf_t *in, uint32_t max, double deadline, const uint8_t **body,
                      size_t *len)
{
    return sock_read_frame(((admin_conn_t *)io)->fd, in, max, deadline, body, len);
}

/* The transport over the connected fd: TLS (its handshake first) or plain. */
static int admin_transport(admin_conn_t *a, const char *control, double deadline)
{
    if (!a->ctx) {
        a->io = (sock_io_t){plain_write, plain_read, a, NULL, 0};
        return 0;
    }
    char why[400];
    if (tlssock_start(&a->ts, a->fd, a->ctx, deadline, why, sizeof why) < 0) {
        fprintf(stderr, "bettong cluster: %s: %s\n", control, why);
        return -1;
    }
    tlssock_io(&a->ts, &a->io);
    return 0;
}

/* Connect and run the handshake as the admin; returns the fd, or -1 after
 * printing why. */
static int open_admin(admin_conn_t *a, const char *control, const cl_secret_t *secret,
                      double deadline, buf_t *in)
{
    char host[256], port[32];
    if (sock_parse_hostport(control, host, sizeof host, port, sizeof port) < 0) {
        fprintf(stderr, "bettong cluster: bad address '%s' (want HOST:PORT)\n", control);
        return -1;
    }
    int gai = 0;
    int fd = sock_connect_host(host, port, deadline, &gai);
    if (fd < 0) {
        fprintf(stderr, "bettong cluster: cannot connect to %s: %s\n", control,
                gai ? gai_strerror(gai) : strerror(errno));
        return -1;
    }
    a->fd = fd;
    if (admin_transport(a, control, deadline) < 0) {
        close(fd);
        return -1;
    }
    buf_t id;
    buf_init(&id);
    cl_put_identity(&id, CL_CH_ADMIN, CL_NO_INDEX, "bettong cluster");
    const uint8_t *answer = NULL;
    size_t len = 0;
    int rc = sock_handshake_io(&a->io, in, CL_SERVICE, buf_head(&id), buf_unread(&id), secret->secret,
                            secret->len, CL_MAX_ADMIN, deadline, &answer, &len);
    buf_free(&id);
    char why[300] = "";
    if (rc == 0 && len == 1 && answer[0] == CL_WELCOME) {
        buf_consume(in, 4 + len);
        return fd;
    }
    if (rc == 0 && cl_refused_why(answer, len, why, sizeof why))
        fprintf(stderr, "bettong cluster: %s refused the connection: %s\n", control, why);
    else if (rc == SOCK_HS_EPROOF)
        fprintf(stderr, "bettong cluster: %s cannot prove the cluster secret: not this "
                "cluster's coordinator, or the secret given here is wrong; nothing was sent\n",
                control);
    else if (rc == SOCK_HS_EIO)
        fprintf(stderr, "bettong cluster: no answer from %s (%s): wrong secret, or not a "
                "cluster coordinator\n", control,
                errno == ETIMEDOUT ? "timed out" : errno == ECONNRESET ? "connection closed"
                                                 : errno == EPROTO && a->ts.t ? tls_error(a->ts.t)
                                                                   : strerror(errno));
    else
        fprintf(stderr, "bettong cluster: %s does not speak the cluster handshake\n", control);
    close(fd);
    return -1;
}

/* Send the question, print the answer; returns the answer's code. */
static int ask(const char *control, const cl_secret_t *secret, uint8_t what, const char *worker,
               double timeout)
{
    admin_conn_t a;
    memset(&a, 0, sizeof a);
    a.ctx = secret->tls_client;
    double deadline = sock_now() + timeout;
    buf_t in, out;
    buf_init(&in);
    buf_init(&out);
    int code = 2;
    int fd = open_admin(&a, control, secret, deadline, &in);
    if (fd < 0)
        goto done;
    wire_wr_t w;
    wire_begin(&w, &out, what, CL_MAX_ADMIN);
    if (worker)
        wire_put_str16(&w, worker, strlen(worker));
    wire_end(&w);
    const uint8_t *body = NULL;
    size_t len = 0;
    if (a.io.write_all(a.io.io, buf_head(&out), buf_unread(&out), deadline) < 0 ||
        a.io.read_frame(a.io.io, &in, 1u << 20, deadline, &body, &len) < 0 || len < 2 ||
        body[0] != CL_REPLY) {
        fprintf(stderr, "bettong cluster: no answer from %s (%s)\n", control,
                errno == ETIMEDOUT ? "timed out" : "connection closed");
        goto done;
    }
    code = body[1];
    /* A status is printed to stdout whatever it says; a refused shrink is an error. */
    fwrite(body + 2, 1, len - 2, code == 0 || what == CL_ASK_STATUS ? stdout : stderr);
done:
    if (fd >= 0)
        close(fd);
    tlssock_free(&a.ts);
    buf_free(&in);
    buf_free(&out);
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
    int tls = 0;
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
        else if (strcmp(argv[i], "--tls") == 0)
            tls = 1;
        else {
            fprintf(stderr, "bettong cluster: unknown argument '%s'\n\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    cl_secret_t secret;
    memset(&secret, 0, sizeof secret);
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
    if (tls && !(secret.tls_client = tls_ctx_client(err, sizeof err))) {
        fprintf(stderr, "bettong cluster: %s\n", err);
        return 2;
    }
    int code = 2;
    if (strcmp(sub, "status") == 0) {
        code = ask(control, &secret, CL_ASK_STATUS, NULL, timeout);
    } else if (strcmp(sub, "shrink") == 0) {
        if (worker)
            code = ask(control, &secret, CL_ASK_SHRINK, worker, timeout);
        else
            fprintf(stderr, "bettong cluster shrink: --worker NAME is required\n");
    } else {
        fprintf(stderr, "bettong cluster: unknown command '%s'\n\n", sub);
        usage(stderr);
    }
    tls_ctx_free(secret.tls_client);
    return code;
}
