#include "cluster/local.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cluster/cproto.h"
#include "net/addr.h"
#include "net/guard.h"
#include "stream/engine.h"
#include "util/log.h"

static volatile sig_atomic_t signalled;

static void on_signal(int sig) { signalled = sig; }

/* A listening TCP socket on 127.0.0.1 with a port the kernel picks. */
static int control_socket(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sa;
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, 128) < 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) < 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    *port = ntohs(sa.sin_port);
    return fd;
}

/* --in addresses with port 0: the kernel picks the port here, once, and the
 * workers are given it, so that they share it (each would get a port of its
 * own otherwise) and a restarted worker comes back on it. For as long as this
 * parent runs it keeps a socket bound to each such port (not listening: it
 * takes no connections), so that nobody else gets the port meanwhile; the
 * workers bind it too (SO_REUSEPORT). Returns the port, 0 when `item` is not
 * a well-formed address with port 0 (the application's to read), or -1 with
 * err set. */
static int pick_port(const char *item, char *err, size_t errlen)
{
    hostport_t hp;
    struct sockaddr_storage sa;
    char ignored[300];
    if (hostport_parse(item, &hp, ignored, sizeof ignored) < 0 || hp.port != 0)
        return 0;
    if (hostport_resolve(&hp, &sa, err, errlen) < 0)
        return -1;
    socklen_t len = sa.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                             : sizeof(struct sockaddr_in);
    int one = 1;
    int fd = socket(sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0 ||
        bind(fd, (struct sockaddr *)&sa, len) < 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) < 0) {
        snprintf(err, errlen, "cannot pick a port for --in %s: %s", item, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    /* The descriptor stays open (close-on-exec) until this process exits. */
    return ntohs(sa.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&sa)->sin6_port
                                          : ((struct sockaddr_in *)&sa)->sin_port);
}

/* A --in value (host:port,...) with every port 0 replaced by the port picked
 * for it: a string of its own, or NULL with err set. */
static char *pick_ports(const char *value, char *err, size_t errlen)
{
    size_t cap = strlen(value) + 16 * (strlen(value) / 2 + 1), used = 0;
    char *out = malloc(cap), *copy = strdup(value);
    char *save = NULL;
    for (char *item = out && copy ? strtok_r(copy, ",", &save) : NULL; item;
         item = strtok_r(NULL, ",", &save)) {
        int port = pick_port(item, err, errlen);
        if (port < 0) {
            free(out);
            free(copy);
            return NULL;
        }
        const char *sep = used ? "," : "";
        if (port > 0)
            used += (size_t)snprintf(out + used, cap - used, "%s%.*s:%d", sep,
                                     (int)(strrchr(item, ':') - item), item, port);
        else
            used += (size_t)snprintf(out + used, cap - used, "%s%s", sep, item);
    }
    if (!out || !copy) {
        snprintf(err, errlen, "out of memory");
        free(out);
        out = NULL;
    }
    free(copy);
    return out;
}

/* Port 0 in the --in values (--in V, -i V, --in=V) of argv: picked here for
 * all workers (see pick_port); argv then holds the picked ports, and the
 * workers' argument vectors are made from it. Returns 0 or -1 (logged). */
static int share_picked_ports(int argc, char **argv)
{
    char err[600];
    for (int i = 1; i < argc; i++) {
        int inline_form = strncmp(argv[i], "--in=", 5) == 0;
        const char *value;
        if (inline_form)
            value = argv[i] + 5;
        else if ((strcmp(argv[i], "--in") == 0 || strcmp(argv[i], "-i") == 0) && i + 1 < argc)
            value = argv[++i];
        else
            continue;
        char *picked = pick_ports(value, err, sizeof err);
        if (!picked) {
            log_error("%s", err);
            return -1;
        }
        if (strcmp(picked, value) == 0) {
            free(picked);
            continue;
        }
        log_info("--in %s: the workers share %s", value, picked);
        if (inline_form) {
            size_t n = strlen(picked) + 6;
            char *flag = malloc(n);
            if (!flag) {
                free(picked);
                log_error("out of memory");
                return -1;
            }
            snprintf(flag, n, "--in=%s", picked);
            free(picked);
            picked = flag;
        }
        argv[i] = picked;
    }
    return 0;
}

/* The secret for the workers; a made-up one is also written to a private file
 * (path in *file) so that `bettong cluster --cluster-secret-file` can use it. */
static int make_secret(char *file, size_t cap)
{
    file[0] = '\0';
    if (getenv("BETTONG_CLUSTER_SECRET") && *getenv("BETTONG_CLUSTER_SECRET"))
        return 0;
    unsigned char raw[16];
    if (getrandom(raw, sizeof raw, 0) != (ssize_t)sizeof raw)
        return -1;
    char hex[2 * sizeof raw + 1];
    for (size_t i = 0; i < sizeof raw; i++)
        snprintf(hex + 2 * i, 3, "%02x", raw[i]);
    /* A name of its own: the pid alone is reused, and the file of a parent
     * that was killed is still there (O_EXCL would then refuse it). */
    uint32_t tag;
    if (getrandom(&tag, sizeof tag, 0) != (ssize_t)sizeof tag)
        return -1;
    const char *dir = getenv("XDG_RUNTIME_DIR");
    snprintf(file, cap, "%s/bettong-cluster-%ld-%08x.secret", dir && *dir ? dir : "/tmp",
             (long)getpid(), (unsigned)tag);
    int fd = open(file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0 || write(fd, hex, strlen(hex)) != (ssize_t)strlen(hex)) {
        log_warn("cannot write the cluster secret to %s (%s): `bettong cluster` will need "
                 "it some other way", file, strerror(errno));
        if (fd >= 0)
            close(fd);
        file[0] = '\0';
    } else {
        close(fd);
    }
    return setenv("BETTONG_CLUSTER_SECRET", hex, 1);
}

/* Is argv[i] a flag (with its value) that this parent replaces? */
static int own_flag(char **argv, int i, int argc, int *skip)
{
    static const char *with_value[] = {"--workers", "--name", "-n", "--worker-count", "-w",
                                       "--control", "-c", "--data", "-d", "--join", "-j",
                                       "--my-control", "--my-data", "--cluster-secret",
                                       "--cluster-secret-file", NULL};
    for (int k = 0; with_value[k]; k++)
        if (strcmp(argv[i], with_value[k]) == 0) {
            *skip = i + 1 < argc ? 2 : 1;
            return 1;
        }
    if (strcmp(argv[i], "--cluster-initializer") == 0 || strcmp(argv[i], "-t") == 0) {
        *skip = 1;
        return 1;
    }
    return 0;
}

/* --metrics-listen H:P (or --metrics, -m; also as FLAG=H:P) for worker i:
 * each worker serves its own, so a port P > 0 becomes P + i (port 0 stays 0:
 * each gets its own from the kernel). Returns the argument to pass, argv[j]
 * itself when it is not such a flag's value; *value_of says argv[j] is the
 * flag and argv[j + 1] its value. */
static const char *metrics_flag_for(char **argv, int argc, int j, unsigned i, char *out,
                                    size_t outlen, int *value_of)
{
    static const char *flags[] = {"--metrics-listen", "--metrics", "-m", NULL};
    *value_of = 0;
    for (int k = 0; flags[k]; k++) {
        size_t fl = strlen(flags[k]);
        const char *v = NULL;
        if (strcmp(argv[j], flags[k]) == 0 && j + 1 < argc) {
            *value_of = 1;
            v = argv[j + 1];
        } else if (strncmp(argv[j], flags[k], fl) == 0 && argv[j][fl] == '=') {
            v = argv[j] + fl + 1;
        }
        if (!v)
            continue;
        const char *colon = strrchr(v, ':');
        const char *digits = colon ? colon + 1 : v;
        char *end;
        long p = strtol(digits, &end, 10);
        if (*end || end == digits || p <= 0 || p + (long)i > 65535)
            return *value_of ? v : argv[j];
        int hl = (int)(digits - v);
        if (*value_of)
            snprintf(out, outlen, "%.*s%ld", hl, v, p + (long)i);
        else
            snprintf(out, outlen, "%s=%.*s%ld", flags[k], hl, v, p + (long)i);
        return out;
    }
    return argv[j];
}

static void exec_worker(int argc, char **argv, unsigned i, unsigned n, const char *base,
                        int port, int fd)
{
    char metrics_addr[300];
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() == 1)
        _exit(3);
    char **args = calloc((size_t)argc + 24, sizeof *args);
    char name[CL_NAME_MAX], control[64], count[16], fdtext[16];
    snprintf(name, sizeof name, "%s%u", base, i + 1);
    snprintf(control, sizeof control, "127.0.0.1:%d", port);
    snprintf(count, sizeof count, "%u", n);
    snprintf(fdtext, sizeof fdtext, "%d", fd);
    int k = 0;
    args[k++] = "bettong";
    args[k++] = "run";
    for (int j = 1; j < argc;) {
        int skip;
        if (own_flag(argv, j, argc, &skip)) {
            j += skip;
            continue;
        }
        /* One external channel for the cluster: the initializer's. A clean
         * shutdown there stops every worker. */
        if (i > 0 && (strcmp(argv[j], "--external") == 0 || strcmp(argv[j], "-e") == 0)) {
            j += j + 1 < argc ? 2 : 1;
            continue;
        }
        if (i > 0 && (strncmp(argv[j], "--external=", 11) == 0 ||
                      strncmp(argv[j], "-e=", 3) == 0)) {
            j++;
            continue;
        }
        int value_of;
        const char *m = metrics_flag_for(argv, argc, j, i, metrics_addr, sizeof metrics_addr,
                                         &value_of);
        if (value_of) {
            args[k++] = argv[j++];
            args[k++] = (char *)m;
            j++;
            continue;
        }
        args[k++] = m == argv[j] ? argv[j] : (char *)m;
        j++;
    }
    args[k++] = "--name";
    args[k++] = name;
    args[k++] = "--control";
    args[k++] = control;
    args[k++] = "--bettong-shared-ports";
    if (i == 0) {
        args[k++] = "--cluster-initializer";
        args[k++] = "--worker-count";
        args[k++] = count;
        args[k++] = "--bettong-control-fd";
        args[k++] = fdtext;
    } else {
        close(fd);
    }
    args[k] = NULL;
    execv("/proc/self/exe", args);
    fprintf(stderr, "bettong run: cannot start worker %u: %s\n", i + 1, strerror(errno));
    _exit(2);
}

/* The --name given (the workers are NAME1..NAMEn), or "worker". */
static const char *base_name(int argc, char **argv)
{
    for (int i = 1; i + 1 < argc; i++)
        if (strcmp(argv[i], "--name") == 0 || strcmp(argv[i], "-n") == 0)
            return argv[i + 1];
    return "worker";
}

static const char *flag_value(int argc, char **argv, const char *flag)
{
    for (int i = 1; i + 1 < argc; i++)
        if (strcmp(argv[i], flag) == 0)
            return argv[i + 1];
    return NULL;
}

/* The workers get the secret through their environment, never their argument
 * vectors (which every user of the machine can read). Returns 0 or -1. */
static int pass_secret_on(int argc, char **argv)
{
    guard_secret_src_t src = {.flag = "--cluster-secret",
                              .value = flag_value(argc, argv, "--cluster-secret"),
                              .file = flag_value(argc, argv, "--cluster-secret-file"),
                              .env = "BETTONG_CLUSTER_SECRET"};
    cl_secret_t s;
    char err[600];
    if (guard_secret_get(&src, s.secret, sizeof s.secret, &s.len, err, sizeof err) < 0) {
        log_error("%s", err);
        return -1;
    }
    if (s.len && setenv("BETTONG_CLUSTER_SECRET", s.secret, 1) < 0) {
        log_error("cannot pass the cluster secret on: %s", strerror(errno));
        return -1;
    }
    return 0;
}

static int code_of(int status)
{
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    return 3;
}

static int has_flag(int argc, char **argv, const char *flag)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], flag) == 0)
            return 1;
    return 0;
}

/* Restarts of one worker within the window: more than RESTART_MAX and the
 * cluster stops, rather than crash forever. */
#define RESTART_MAX 5
#define RESTART_WINDOW_S 60

typedef struct {
    unsigned count;
    time_t since;
} restarts_t;

static pid_t spawn_worker(int argc, char **argv, unsigned i, unsigned n, const char *base,
                          int port, int fd)
{
    pid_t pid = fork();
    if (pid == 0) {
        /* Out of the terminal's process group: Ctrl-C reaches this parent
         * alone, which passes it on once. */
        setpgid(0, 0);
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        exec_worker(argc, argv, i, n, base, port, fd);
    }
    return pid;
}

/* Start worker i again. A worker that crashed waits a pause that grows with
 * its recent crashes; one that only restarts with the cluster (it exited
 * ENGINE_EXIT_RESTART because another was lost) starts at once and is not
 * counted. Returns its pid, or -1 when it crashed too often (or fork failed). */
static pid_t restart_worker(restarts_t *r, int crashed, int argc, char **argv, unsigned i,
                            unsigned n, const char *base, int port, int fd)
{
    time_t now = time(NULL);
    if (now - r->since > RESTART_WINDOW_S) {
        r->since = now;
        r->count = 0;
    }
    if (crashed) {
        if (++r->count > RESTART_MAX)
            return -1;
        unsigned ms = 100u << (r->count - 1);
        usleep((ms > 2000 ? 2000 : ms) * 1000u);
    }
    pid_t pid = spawn_worker(argc, argv, i, n, base, port, fd);
    if (pid > 0 && crashed)
        log_info("worker %s%u restarted (pid %d, restart %u)", base, i + 1, (int)pid, r->count);
    else if (pid > 0)
        log_info("worker %s%u restarted with the cluster (pid %d)", base, i + 1, (int)pid);
    return pid;
}

int local_cluster_run(int argc, char **argv, unsigned n)
{
    log_set_role("bettong run --workers");
    int port;
    char secret_file[512];
    if (pass_secret_on(argc, argv) < 0)
        return 2;
    if (share_picked_ports(argc, argv) < 0)
        return 2;
    int fd = control_socket(&port);
    if (fd < 0 || make_secret(secret_file, sizeof secret_file) < 0) {
        log_error("cannot set up the local cluster: %s", strerror(errno));
        return 2;
    }
    const char *base = base_name(argc, argv);
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    pid_t pids[CL_MAX_WORKERS];
    int done[CL_MAX_WORKERS] = {0};
    for (unsigned i = 0; i < n; i++) {
        pids[i] = spawn_worker(argc, argv, i, n, base, port, fd);
        if (pids[i] < 0) {
            log_error("fork: %s", strerror(errno));
            for (unsigned j = 0; j < i; j++)
                kill(pids[j], SIGKILL);
            return 2;
        }
    }
    /* With resilience the parent restarts workers, the initializer too: it
     * keeps the coordinator's socket for the next one. */
    int resilient = has_flag(argc, argv, "--run-with-resilience");
    if (!resilient)
        close(fd);
    restarts_t rs[CL_MAX_WORKERS];
    memset(rs, 0, sizeof rs);
    log_info("%u workers started (%s1..%s%u); cluster control at 127.0.0.1:%d", n, base, base, n,
             port);
    if (secret_file[0])
        log_info("cluster secret (made for this run) in %s", secret_file);
    int worst = 0, forwarded = 0;
    unsigned left = n;
    while (left > 0) {
        if (signalled && forwarded != signalled) {
            /* The first signal stops the cluster together; a second one is
             * passed on too, and makes each worker exit at once. */
            forwarded = signalled;
            for (unsigned i = 0; i < n; i++)
                if (!done[i])
                    kill(pids[i], signalled);
            signalled = 0;
        }
        int status;
        pid_t pid = waitpid(-1, &status, 0);
        if (pid < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        for (unsigned i = 0; i < n; i++) {
            if (pids[i] != pid)
                continue;
            int code = code_of(status);
            if (resilient && !forwarded &&
                (code == ENGINE_EXIT_RESTART || WIFSIGNALED(status))) {
                int crashed = WIFSIGNALED(status);
                if (crashed)
                    log_error("worker %s%u (pid %d) was killed by signal %d; restarting it",
                              base, i + 1, (int)pid, WTERMSIG(status));
                pid_t again = restart_worker(&rs[i], crashed, argc, argv, i, n, base, port, fd);
                if (again > 0) {
                    pids[i] = again;
                    continue;
                }
                log_error("worker %s%u keeps failing (%u crashes within %d s); stopping the "
                          "cluster", base, i + 1, rs[i].count - 1, RESTART_WINDOW_S);
                forwarded = SIGTERM;
                for (unsigned j = 0; j < n; j++)
                    if (!done[j] && j != i)
                        kill(pids[j], SIGTERM);
                done[i] = 1;
                left--;
                worst = 3;
                continue;
            }
            done[i] = 1;
            left--;
            if (WIFSIGNALED(status) && forwarded && WTERMSIG(status) == forwarded) {
                /* Stopped by the signal we passed on before it could set up its
                 * own handling (still starting): nothing of it ran. */
                code = 1;
                log_warn("worker %s%u (pid %d) ended by signal %d while starting", base, i + 1,
                         (int)pid, forwarded);
            } else if (WIFSIGNALED(status)) {
                log_error("worker %s%u (pid %d) was killed by signal %d", base, i + 1, (int)pid,
                          WTERMSIG(status));
            }
            else if (code != 0)
                log_warn("worker %s%u (pid %d) exited with status %d", base, i + 1, (int)pid,
                         code);
            if (code > worst)
                worst = code;
            /* A worker that could not start (bad arguments, the application
             * does not load): the others would wait for it forever. */
            if (code == 2 && !forwarded) {
                log_error("worker %s%u could not start; stopping the others", base, i + 1);
                forwarded = SIGTERM;
                for (unsigned j = 0; j < n; j++)
                    if (!done[j])
                        kill(pids[j], SIGTERM);
            }
        }
    }
    if (secret_file[0])
        unlink(secret_file);
    return worst;
}
