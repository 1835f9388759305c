#include "cluster/admin.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netdb.h>
#include <unistd.h>

#include "cluster/cproto.h"
#include "net/addr.h"
#include "net/guard.h"
#include "net/sock.h"
#include "net/bconn.h"
#include "stream/external.h"
#include "util/args.h"

static void usage(FILE *f)
{
    fprintf(f,
"usage: bettong cluster status --control H:P [options]\n"
"       bettong cluster shrink --control H:P --worker NAME [options]\n"
"       bettong cluster shutdown --external H:P | --control H:P | H:P [options]\n"
"\n"
"  status      print the workers of the cluster whose coordinator (the\n"
"              initializer) listens on H:P: their state, slots, keys and message\n"
"              counts; exit 1 (PROBLEM lines) if a worker is lost or silent,\n"
"              slots have no worker, or the cluster has not formed\n"
"  shrink      move the slots (and their state) of worker NAME to the others and\n"
"              let it exit; returns once it has left\n""  shutdown    stop the whole cluster cleanly: every worker flushes its sinks\n"
"              and exits. Through a worker's external channel (--external, or\n"
"              the address alone, as Wallaroo's cluster_shutdown takes it; it\n"
"              sends Wallaroo's clean shutdown message) or the coordinator's\n"
"              control address; returns once the worker took it\n"
"\n"
"  --control, -c H:P       the coordinator's control address\n"
"  --external H:P          a worker's external channel (shutdown; beyond\n"
"                          loopback it proves the cluster secret first)\n"
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

/* Whether c's peer is on loopback (there the external channel takes
 * Wallaroo's frames as they come; elsewhere the secret is proven first). */
static int peer_is_loopback(int fd)
{
    struct sockaddr_storage sa;
    socklen_t len = sizeof sa;
    return getpeername(fd, (struct sockaddr *)&sa, &len) == 0 &&
           sockaddr_is_loopback((struct sockaddr *)&sa);
}

/* Prove the cluster secret to an external channel beyond loopback. Returns 0,
 * or -1 after printing why. */
static int external_handshake(bconn_t *c, const char *addr, const cl_secret_t *secret,
                              double deadline, buf_t *in)
{
    static const char id[] = "bettong cluster shutdown";
    const uint8_t *answer = NULL;
    size_t len = 0;
    char why[300];
    int rc = bconn_handshake(c, in, EXT_SERVICE, id, sizeof id - 1, secret->secret,
                             secret->len, AUTH_MAX_FRAME, deadline, EXT_REFUSED, &answer, &len);
    if (rc == 0 && len == 1 && answer[0] == EXT_WELCOME) {
        buf_consume(in, 4 + len);
        return 0;
    }
    if (rc == 0 && len >= 3 && answer[0] == EXT_REFUSED) {
        size_t n = (size_t)answer[1] << 8 | answer[2];
        snprintf(why, sizeof why, "%.*s", (int)(n <= len - 3 ? n : len - 3),
                 (const char *)answer + 3);
        fprintf(stderr, "bettong cluster: %s refused the connection: %s\n", addr, why);
    } else if (rc == SOCK_HS_EPROOF) {
        fprintf(stderr, "bettong cluster: %s cannot prove the cluster secret: not this "
                "cluster's worker, or the secret given here is wrong; nothing was sent\n", addr);
    } else {
        fprintf(stderr, "bettong cluster: %s does not answer the handshake of an external "
                "channel (%s)\n", addr, errno == ETIMEDOUT ? "timed out" : "closed");
    }
    return -1;
}

/* Send Wallaroo's clean shutdown (0.6 frame) to a worker's external channel
 * and wait until the worker closes the connection (it took the message). */
static int shutdown_external(const char *addr, const cl_secret_t *secret, double timeout)
{
    static const uint8_t clean_shutdown[] = {0, 0, 0, 2, 0, EXT06_CLEAN_SHUTDOWN};
    bconn_t c;
    double deadline = sock_now() + timeout;
    int what = 0;
    char why[400];
    if (bconn_open(&c, addr, 0, deadline, &what, why, sizeof why) < 0) {
        if (what == SOCK_CA_ADDRESS)
            fprintf(stderr, "bettong cluster: bad address '%s' (want HOST:PORT)\n", addr);
        else
            fprintf(stderr, "bettong cluster: cannot connect to %s: %s\n", addr, why);
        return 2;
    }
    buf_t in;
    buf_init(&in);
    int code = 2;
    if (!peer_is_loopback(c.fd) && external_handshake(&c, addr, secret, deadline, &in) < 0)
        goto done;
    if (bconn_write_all(&c, clean_shutdown, sizeof clean_shutdown, deadline) < 0) {
        fprintf(stderr, "bettong cluster: cannot send to %s: %s\n", addr, strerror(errno));
        goto done;
    }
    const uint8_t *body;
    size_t len;
    /* The worker answers nothing: it closes the connection once it took the message. */
    if (bconn_read_frame(&c, &in, EXT_MAX_FRAME, deadline, &body, &len) < 0 &&
        errno == ETIMEDOUT) {
        fprintf(stderr, "bettong cluster: %s did not confirm the shutdown within %.0f s\n",
                addr, timeout);
        goto done;
    }
    printf("clean shutdown sent to %s: the cluster is stopping\n", addr);
    code = 0;
done:
    close(c.fd);
    bconn_free(&c);
    buf_free(&in);
    return code;
}

int cmd_cluster(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *sub = argv[1];
    const char *control = NULL, *worker = NULL, *external = NULL, *v;
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
        else if ((v = args_flag_value(argc, argv, &i, "--external", &missing)) ||
                 (v = args_flag_value(argc, argv, &i, "-e", &missing)))
            external = v;
        else if (i == 2 && strcmp(sub, "shutdown") == 0 && argv[i][0] != '-')
            external = argv[i]; /* Wallaroo's cluster_shutdown HOST:PORT */
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
    if (timeout <= 0)
        timeout = 60;
    if (strcmp(sub, "shutdown") == 0) {
        if (external && !control && tls) {
            fprintf(stderr, "bettong cluster shutdown: an external channel does not speak TLS "
                            "(--tls is for --control)\n");
            return 2;
        }
        if (external && !control)
            return shutdown_external(external, &secret, timeout);
        if (control && !external)
            return ask(control, tls, &secret, CL_ASK_STOP, NULL, timeout);
        fprintf(stderr, "bettong cluster shutdown: give one of --external H:P (a worker's "
                        "external channel) and --control H:P (the coordinator)\n");
        return 2;
    }
    if (external) {
        fprintf(stderr, "bettong cluster %s: --external is for shutdown only\n", sub);
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
