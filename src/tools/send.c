/* bettong send: push records to a TCP address, like Wallaroo's giles sender.
 * The whole input is framed into memory once (records.c), so the hot loop is
 * nothing but large send() calls over a precomputed buffer (plus a clock read
 * when paced); giles' counter sequences are made a window at a time (gen.c). */
#include "tools/tools.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "net/addr.h"
#include "tools/batch.h"
#include "tools/cli.h"
#include "tools/gen.h"
#include "tools/records.h"
#include "tools/rsend.h"
#include "tools/send.h"
#include "tools/send_args.h"
#include "tools/sentlog.h"
#include "tools/source.h"
#include "util/hist.h"

#define PROG SEND_PROG
#define RETRY_NS (50 * 1000000ULL)
#define MIN_ATTEMPT_MS SEND_MIN_ATTEMPT_MS
#define NS_PER_S SEND_NS_PER_S

static volatile sig_atomic_t stop_requested;

static void on_stop_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

int send_stop_requested(void) { return stop_requested; }

void send_sleep_until_ns(uint64_t t)
{
    struct timespec ts = {(time_t)(t / 1000000000ULL), (long)(t % 1000000000ULL)};
    /* EINTR just means a signal; the caller re-checks the stop flag and the clock. */
    (void)clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
}

/* Wait for a non-blocking connect to finish: 0 or the errno it failed with.
 * A bounded wait keeps a silently dropped SYN from outliving the deadline. */
static int wait_connected(int fd, int wait_ms)
{
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    int n = poll(&p, 1, wait_ms);
    if (n < 0)
        return errno;
    if (n == 0)
        return ETIMEDOUT;
    int soerr = 0;
    socklen_t sl = sizeof soerr;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
        return errno;
    return soerr;
}

/* Connect once, waiting at most wait_ms. Returns the fd or -1 with errno set. */
int send_try_connect(const struct sockaddr_storage *addr, int wait_ms)
{
    socklen_t alen = addr->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                 : sizeof(struct sockaddr_in);
    int fd = socket(addr->ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -1;
    int rc = connect(fd, (const struct sockaddr *)addr, alen);
    if (rc < 0 && errno == EINPROGRESS) {
        int e = wait_connected(fd, wait_ms);
        rc = e ? -1 : 0;
        errno = e;
    }
    /* Back to blocking: the send loop relies on send() waiting for buffer space. */
    if (rc == 0) {
        int flags = fcntl(fd, F_GETFL);
        if (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) < 0)
            rc = -1;
    }
    if (rc < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    /* Paced sends are small; Nagle would bunch them up and skew the rate. */
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

/* The receiver may not be up yet (tests and demos start both at once): retry. */
static int connect_with_retry(const send_opts_t *o, const struct sockaddr_storage *addr, char *err,
                              size_t errlen)
{
    uint64_t start = now_ns();
    uint64_t deadline = start + (uint64_t)(o->connect_timeout * NS_PER_S);
    for (;;) {
        uint64_t now = now_ns();
        int wait_ms = now < deadline ? (int)((deadline - now) / 1000000ULL) : 0;
        int fd = send_try_connect(addr, wait_ms < MIN_ATTEMPT_MS ? MIN_ATTEMPT_MS : wait_ms);
        if (fd >= 0)
            return fd;
        int e = errno;
        now = now_ns();
        if (stop_requested || now >= deadline) {
            snprintf(err, errlen, "cannot connect to %s:%d%s: %s", o->to.host, o->to.port,
                     stop_requested ? " (interrupted)" : "", strerror(e));
            if (!stop_requested)
                snprintf(err + strlen(err), errlen - strlen(err), " (gave up after %.1f s)",
                         (double)(now - start) / NS_PER_S);
            return -1;
        }
        send_sleep_until_ns(now + RETRY_NS < deadline ? now + RETRY_NS : deadline);
    }
}

/* Write everything unless the connection fails; *written says how far it got. */
int send_write_all(int fd, const uint8_t *p, size_t n, size_t *written)
{
    *written = 0;
    while (*written < n) {
        ssize_t w = send(fd, p + *written, n - *written, MSG_NOSIGNAL);
        if (w < 0) {
            /* Finish the chunk even when stopping: a half-sent frame would
             * desynchronise the receiver. */
            if (errno == EINTR)
                continue;
            return -1;
        }
        *written += (size_t)w;
    }
    return 0;
}

/* How many of the records [pos, end) lie entirely within the first `written` bytes. */
static size_t records_completed(const records_t *r, size_t pos, size_t end, size_t written)
{
    if (r->off[pos + 1] - r->off[pos] > written)
        return 0;
    return records_last_within(r, pos, end, written) - pos;
}

/* How many records may go now to stay on schedule (record k is due at k/rate s);
 * 0 means sleep first. The first record is due at once. */
uint64_t send_paced_allowance(uint64_t start, double rate, uint64_t sent)
{
    double due = (double)(now_ns() - start) * rate / NS_PER_S + 1.0;
    if (due >= 18e18)
        return UINT64_MAX;
    uint64_t allowed = (uint64_t)due;
    if (allowed > sent)
        return allowed - sent;
    send_sleep_until_ns(start + (uint64_t)((double)sent * NS_PER_S / rate));
    return 0;
}

int send_span(int fd, const span_t *sp, send_stats_t *s, char *err, size_t errlen)
{
    size_t nbytes = span_bytes(sp), written;
    if (send_write_all(fd, span_data(sp), nbytes, &written) < 0) {
        int e = errno;
        /* Count the records that made it whole before the failure. */
        s->records += records_completed(sp->r, sp->from, sp->to, written);
        s->bytes += written;
        snprintf(err, errlen, "connection lost while sending: %s", strerror(e));
        return -1;
    }
    s->records += sp->to - sp->from;
    s->bytes += nbytes;
    return 0;
}

/* As fast as the receiver reads, or at `rate` records per second. */
static int send_loop(int fd, source_t *src, uint64_t limit, double rate, sentlog_t *log,
                     send_stats_t *s, char *err, size_t errlen)
{
    uint64_t start = now_ns();
    int rc = 0;
    span_t sp;
    while (s->records < limit && !stop_requested) {
        uint64_t budget = limit - s->records;
        if (rate > 0) {
            uint64_t allowed = send_paced_allowance(start, rate, s->records);
            if (allowed == 0)
                continue;
            budget = allowed < budget ? allowed : budget;
        }
        if (source_next(src, budget, SEND_CHUNK, &sp) == 0)
            break;
        if (log->f)
            (void)sentlog_span(log, &sp, sentlog_now()); /* failures: at its close */
        if ((rc = send_span(fd, &sp, s, err, errlen)) < 0)
            break;
    }
    s->ns = now_ns() - start;
    return rc;
}

/* Half-close so the receiver sees EOF after the last byte, then discard anything
 * it sent us: closing with unread input would reset the connection instead. */
void send_finish_connection(int fd)
{
    if (shutdown(fd, SHUT_WR) < 0 && errno != ENOTCONN)
        fprintf(stderr, PROG ": warning: shutdown: %s\n", strerror(errno));
    uint8_t scratch[4096];
    while (recv(fd, scratch, sizeof scratch, MSG_DONTWAIT) > 0)
        ;
    if (close(fd) < 0)
        fprintf(stderr, PROG ": warning: close: %s\n", strerror(errno));
}

static void install_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    /* No SA_RESTART: sleeps and connects must notice the signal. SA_RESETHAND: a
     * second Ctrl-C kills a sender stuck on a receiver that stopped reading. */
    sa.sa_flags = SA_RESETHAND;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

static rec_format input_format(const send_opts_t *o)
{
    if (!o->binary)
        return REC_LINES;
    if (o->msg_size)
        return REC_FIXED;
    return o->variable_size ? REC_VARIABLE : REC_FRAMED;
}

/* giles frames what its data source gives, except with --binary --msg-size;
 * sent.txt logs what the source gave. */
static int adds_header(const send_opts_t *o) { return !(o->binary && o->msg_size); }

/* Records the files give in all: --repeat times their records. */
static uint64_t file_total(const send_opts_t *o, size_t file_records)
{
    if (file_records == 0)
        return 0;
    if (o->repeat > 0 && o->repeat <= UINT64_MAX / file_records)
        return o->repeat * (uint64_t)file_records;
    return UINT64_MAX; /* forever, in practice */
}

static void print_summary(const send_stats_t *s)
{
    char rate[64];
    fprintf(stderr, PROG ": sent %" PRIu64 " records (%" PRIu64 " bytes) in %.3f s, %s\n",
            s->records, s->bytes, (double)s->ns / NS_PER_S,
            cli_rate_text(rate, sizeof rate, s->records, s->ns));
}

/* Connect, send everything src gives (in giles' batches, paced, or as fast as
 * possible), close, and print the summary. Returns the exit code. */
static int run_source(const send_opts_t *o, const struct sockaddr_storage *addr, source_t *src)
{
    char err[512];
    sentlog_t log;
    if (sentlog_open(&log, o->sent_log, adds_header(o) ? 4 : 0, err, sizeof err) < 0) {
        fprintf(stderr, PROG ": %s\n", err);
        return 1;
    }
    int fd = connect_with_retry(o, addr, err, sizeof err);
    if (fd < 0) {
        fprintf(stderr, PROG ": %s\n", err);
        (void)sentlog_close(&log);
        return 1;
    }
    send_stats_t s = {0};
    batch_opts_t b = {o->batch_size, o->interval, o->vary_by};
    int rc = send_batched(o) ? batch_send(fd, src, &b, o->limit, &log, &s, err, sizeof err)
                             : send_loop(fd, src, o->limit, o->rate, &log, &s, err, sizeof err);
    send_finish_connection(fd);
    if (rc < 0)
        fprintf(stderr, PROG ": error: %s\n", err);
    if (sentlog_close(&log) < 0) {
        fprintf(stderr, PROG ": error: cannot write --sent-log '%s'\n", o->sent_log);
        rc = -1;
    }
    print_summary(&s);
    return rc < 0 ? 1 : 0;
}

/* Load and frame the files, sized up for big writes. */
static int prepare_records(const send_opts_t *o, records_t *r, size_t *file_records, char *err,
                           size_t errlen)
{
    char note[512];
    int rc = records_load((const char *const *)o->paths, o->npaths, input_format(o),
                          (size_t)o->msg_size, r, note, sizeof note, err, errlen);
    if (rc == 0 && note[0])
        fprintf(stderr, PROG ": note: %s\n", note);
    *file_records = r->n;
    if (rc == 0 && records_replicate(r, SEND_CHUNK) < 0) {
        snprintf(err, errlen, "out of memory");
        rc = -1;
    }
    return rc;
}

static int send_files(const send_opts_t *o)
{
    char err[512];
    records_t recs = {0};
    size_t file_records = 0;
    struct sockaddr_storage addr;
    if (prepare_records(o, &recs, &file_records, err, sizeof err) < 0 ||
        hostport_resolve(&o->to, &addr, err, sizeof err) < 0) {
        fprintf(stderr, PROG ": %s\n", err);
        records_free(&recs);
        return 1;
    }
    uint64_t total = file_total(o, file_records);
    int rc;
    if (o->resumable) {
        rc = rsend_run(o, &recs, total < o->limit ? total : o->limit, &addr);
    } else {
        source_t src;
        source_from_records(&src, &recs, total);
        rc = run_source(o, &addr, &src);
    }
    records_free(&recs);
    return rc;
}

/* giles' counter sequences (no --file). */
static int send_sequence(const send_opts_t *o)
{
    char err[512];
    struct sockaddr_storage addr;
    if (hostport_resolve(&o->to, &addr, err, sizeof err) < 0) {
        fprintf(stderr, PROG ": %s\n", err);
        return 1;
    }
    gen_t gen;
    if (gen_init(&gen, o->u64 ? GEN_U64 : GEN_DECIMAL, o->start_from, o->partition,
                 adds_header(o)) < 0) {
        fprintf(stderr, PROG ": out of memory\n");
        return 1;
    }
    source_t src;
    source_from_gen(&src, &gen);
    int rc = run_source(o, &addr, &src);
    gen_free(&gen);
    return rc;
}

int cmd_send(int argc, char **argv)
{
    send_opts_t o;
    int rc = send_parse_args(argc, argv, &o);
    if (rc < 0) {
        install_signals();
        rc = o.file ? send_files(&o) : send_sequence(&o);
    }
    send_opts_free(&o);
    return rc;
}
