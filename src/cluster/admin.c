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
#include "net/bconn.h"
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

/* Connect and run the handshake as the admin; returns 0 with c open, or -1
 * after printing why. "tls:" before the address (or --tls) speaks TLS. */
static int open_admin(bconn_t *c, const char *addr, const char *control,
                      const cl_secret_t *secret, double deadline, buf_t *in)
{
    int what = 0;
    char why[400];
    if (bconn_open(c, addr, 0, deadline, &what, why, sizeof why) < 0) {
        if (what == SOCK_CA_ADDRESS)
            fprintf(stderr, "bettong cluster: bad address '%s' (want HOST:PORT)\n", control);
        else
            fprintf(stderr, "bettong cluster: cannot connect to %s: %s\n", control, why);
        return -1;
    }
    buf_t id;
    buf_init(&id);
    cl_put_identity(&id, CL_CH_ADMIN, CL_NO_INDEX, "bettong cluster");
    const uint8_t *answer = NULL;
    size_t len = 0;
    sock_io_t io;
    bconn_io(c, &io);
    int rc = sock_handshake_io(&io, in, CL_SERVICE, buf_head(&id), buf_unread(&id),
                               secret->secret, secret->len, CL_MAX_ADMIN, deadline, &answer,
                               &len);
    buf_free(&id);
    if (rc == 0 && len == 1 && answer[0] == CL_WELCOME) {
        buf_consume(in, 4 + len);
        return 0;
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
                : errno == EPROTO ? "broken TLS stream" : strerror(errno));
    else
        fprintf(stderr, "bettong cluster: %s does not speak the cluster handshake\n", control);
    close(c->fd);
    bconn_free(c);
    return -1;
}

/* Send the question, print the answer; returns the answer's code. */
static int ask(const char *control, int tls, const cl_secret_t *secret, uint8_t what,
               const char *worker, double timeout)
{
    char addr[600];
    snprintf(addr, sizeof addr, "%s%s", tls && !bconn_tls_address(control) ? "tls:" : "",
             control);
    bconn_t c;
    double deadline = sock_now() + timeout;
    buf_t in, out;
    buf_init(&in);
    buf_init(&out);
    int code = 2;
    if (open_admin(&c, addr, control, secret, deadline, &in) < 0)
        goto done;
    wire_wr_t w;
    wire_begin(&w, &out, what, CL_MAX_ADMIN);
    if (worker)
        wire_put_str16(&w, worker, strlen(worker));
    wire_end(&w);
    const uint8_t *body = NULL;
    size_t len = 0;
    if (bconn_write_all(&c, buf_head(&out), buf_unread(&out), deadline) < 0 ||
        bconn_read_frame(&c, &in, 1u << 20, deadline, &body, &len) < 0 || len < 2 ||
        body[0] != CL_REPLY) {
        fprintf(stderr, "bettong cluster: no answer from %s (%s)\n", control,
                errno == ETIMEDOUT ? "timed out" : "connection closed");
    } else {
        code = body[1];
        /* A status is printed to stdout whatever it says; a refused shrink is an error. */
        fwrite(body + 2, 1, len - 2, code == 0 || what == CL_ASK_STATUS ? stdout : stderr);
    }
    close(c.fd);
    bconn_free(&c);
done:
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
    int code = 2;
    if (strcmp(sub, "status") == 0) {
        code = ask(control, tls, &secret, CL_ASK_STATUS, NULL, timeout);
    } else if (strcmp(sub, "shrink") == 0) {
        if (worker)
            code = ask(control, tls, &secret, CL_ASK_SHRINK, worker, timeout);
        else
            fprintf(stderr, "bettong cluster shrink: --worker NAME is required\n");
    } else {
        fprintf(stderr, "bettong cluster: unknown command '%s'\n\n", sub);
        usage(stderr);
    }
    return code;
}
