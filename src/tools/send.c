/* bettong send: push records from a file to a TCP address, like Wallaroo's giles
 * sender. The whole input is framed into memory once, so the hot loop is nothing
 * but large send() calls over a precomputed buffer (plus a clock read when paced). */
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
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "net/addr.h"
#include "net/frame.h"
#include "stream/eoproto.h"
#include "tools/cli.h"
#include "tools/rsend.h"
#include "tools/send.h"
#include "util/buf.h"
#include "util/hist.h"

#define PROG SEND_PROG
#define READ_CHUNK ((size_t)1 << 20)
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

enum {
    OPT_TO,
    OPT_FILE,
    OPT_FRAMED,
    OPT_REPEAT,
    OPT_COUNT,
    OPT_RATE,
    OPT_CTIMEOUT,
    OPT_RESUMABLE,
    OPT_STREAM,
    OPT_ACK_TIMEOUT,
    OPT_HELP
};

static const cli_option_t send_options[] = {
    {OPT_TO, CLI_VALUE, {"--to", "--host", "-h"}},
    {OPT_FILE, CLI_VALUE, {"--file", "-f"}},
    {OPT_FRAMED, CLI_FLAG, {"--framed", "--binary", "-y"}},
    {OPT_REPEAT, CLI_OPTIONAL_COUNT, {"--repeat"}},
    {OPT_COUNT, CLI_VALUE, {"--count", "--messages", "-m"}},
    {OPT_RATE, CLI_VALUE, {"--rate"}},
    {OPT_CTIMEOUT, CLI_VALUE, {"--connect-timeout"}},
    {OPT_RESUMABLE, CLI_FLAG, {"--resumable"}},
    {OPT_STREAM, CLI_VALUE, {"--stream"}},
    {OPT_ACK_TIMEOUT, CLI_VALUE, {"--ack-timeout"}},
    {OPT_HELP, CLI_FLAG, {"--help"}},
};

static void usage(FILE *f)
{
    fprintf(f,
            "usage: bettong send --to HOST:PORT [options] [--file] FILE\n"
            "\n"
            "Send the records of FILE to a TCP address, each framed with a 4-byte\n"
            "big-endian length.\n"
            "\n"
            "  --to, --host, -h H:P      destination (a bare PORT means 127.0.0.1:PORT)\n"
            "  --file, -f FILE           input file; '-' reads stdin\n"
            "  --framed, --binary, -y    FILE is already length-framed: send records as they are\n"
            "                            (default: one record per line, newline removed)\n"
            "  --repeat [N]              send the file's records N times (default 1);\n"
            "                            0 or no number: forever (or until --count)\n"
            "  --count, --messages, -m N stop after N records in total (0: no limit)\n"
            "  --rate R                  records per second (0: as fast as possible)\n"
            "  --connect-timeout S       keep retrying the connection for S seconds (default 10)\n"
            "  --resumable               speak the resumable source protocol (docs/resilience.md):\n"
            "                            resend from where the engine says after a reconnect,\n"
            "                            reconnecting with backoff; exit 2 if the engine refuses\n"
            "  --stream NAME             the stream's name with --resumable (default: FILE's\n"
            "                            basename, or 'stdin')\n"
            "  --ack-timeout S           with --resumable, wait up to S seconds at the end for\n"
            "                            every record to be acknowledged (default 30; 0: don't\n"
            "                            wait); exit 1 if they are not\n"
            "  --help                    this text\n"
            "\n"
            "Prints '" PROG ": sent N records (B bytes) in T s, R records/s' at the end\n"
            "('too short to measure a rate' under 1 ms; with --resumable, every record put\n"
            "on the wire, resends included), and with --resumable '" PROG ": acknowledged\n"
            "N records'.\n");
}

static int bad_usage(const char *msg)
{
    fprintf(stderr, PROG ": %s\n\n", msg);
    usage(stderr);
    return 2;
}

/* Apply one parsed option. Returns 0, or -1 with a message in err. */
static int apply_option(send_opts_t *o, int id, const char *v, char *err, size_t errlen)
{
    switch (id) {
    case OPT_TO:
        o->have_to = 1;
        return cli_parse_hostport(v, &o->to, err, errlen);
    case OPT_FILE:
        if (o->file) {
            snprintf(err, errlen, "more than one input file given");
            return -1;
        }
        o->file = v;
        return 0;
    case OPT_FRAMED:
        o->framed = 1;
        return 0;
    case OPT_REPEAT:
        o->repeat = 0;
        if (v && cli_parse_u64(v, &o->repeat) < 0) {
            snprintf(err, errlen, "bad --repeat '%s' (expected a count)", v);
            return -1;
        }
        return 0;
    case OPT_COUNT:
        if (cli_parse_u64(v, &o->count) == 0)
            return 0;
        snprintf(err, errlen, "bad --count '%s' (expected a count)", v);
        return -1;
    case OPT_RATE:
        if (cli_parse_nonneg(v, &o->rate) == 0)
            return 0;
        snprintf(err, errlen, "bad --rate '%s' (expected records per second)", v);
        return -1;
    case OPT_CTIMEOUT:
        if (cli_parse_nonneg(v, &o->connect_timeout) == 0 && o->connect_timeout < 1e7)
            return 0;
        snprintf(err, errlen, "bad --connect-timeout '%s' (expected seconds)", v);
        return -1;
    case OPT_RESUMABLE:
        o->resumable = 1;
        return 0;
    case OPT_STREAM:
        o->have_stream = 1;
        o->stream = v;
        if (strlen(v) >= 1 && strlen(v) <= RS_NAME_MAX)
            return 0;
        snprintf(err, errlen, "bad --stream '%s' (1 to %d bytes)", v, RS_NAME_MAX);
        return -1;
    case OPT_ACK_TIMEOUT:
        o->have_ack_timeout = 1;
        if (cli_parse_nonneg(v, &o->ack_timeout) == 0 && o->ack_timeout < 1e7)
            return 0;
        snprintf(err, errlen, "bad --ack-timeout '%s' (expected seconds)", v);
        return -1;
    }
    snprintf(err, errlen, "internal error: option %d", id);
    return -1;
}

/* Returns -1 to go on, or the exit code (0 after --help, 2 on bad usage). */
static int parse_args(int argc, char **argv, send_opts_t *o)
{
    memset(o, 0, sizeof *o);
    o->repeat = 1;
    o->connect_timeout = 10;
    o->ack_timeout = 30;
    cli_t c;
    cli_init(&c, argc, argv);
    char err[512];
    int id = -1;
    const char *v;
    cli_status st;
    while ((st = cli_next(&c, send_options, sizeof send_options / sizeof send_options[0], &id,
                          &v, err, sizeof err)) != CLI_END) {
        if (st == CLI_ERROR)
            return bad_usage(err);
        if (st == CLI_OPTION && id == OPT_HELP) {
            usage(stdout);
            return 0;
        }
        if (st == CLI_POSITIONAL)
            id = OPT_FILE;
        if (apply_option(o, id, v, err, sizeof err) < 0)
            return bad_usage(err);
    }
    if (!o->have_to)
        return bad_usage("missing --to HOST:PORT");
    if (!o->file)
        return bad_usage("missing input file (--file FILE, or '-' for stdin)");
    if ((o->have_stream || o->have_ack_timeout) && !o->resumable)
        return bad_usage("--stream and --ack-timeout need --resumable");
    return -1;
}

static int read_all_fd(int fd, buf_t *out, char *err, size_t errlen)
{
    for (;;) {
        if (buf_reserve(out, READ_CHUNK) < 0) {
            snprintf(err, errlen, "out of memory reading input");
            return -1;
        }
        ssize_t n = read(fd, out->data + out->len, out->cap - out->len);
        if (n == 0)
            return 0;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            snprintf(err, errlen, "read: %s", strerror(errno));
            return -1;
        }
        out->len += (size_t)n;
    }
}

static int load_input(const char *path, buf_t *out, char *err, size_t errlen)
{
    if (strcmp(path, "-") == 0)
        return read_all_fd(STDIN_FILENO, out, err, errlen);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "cannot open '%s': %s", path, strerror(errno));
        return -1;
    }
    /* Sizing the buffer up front avoids repeated doubling for big files. */
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0 &&
        buf_reserve(out, (size_t)st.st_size + 1) < 0) {
        snprintf(err, errlen, "out of memory loading '%s'", path);
        close(fd);
        return -1;
    }
    char rerr[256];
    int rc = read_all_fd(fd, out, rerr, sizeof rerr);
    if (rc < 0)
        snprintf(err, errlen, "cannot read '%s': %s", path, rerr);
    close(fd);
    return rc;
}

static void records_free(records_t *r)
{
    free(r->data);
    free(r->off);
    memset(r, 0, sizeof *r);
}

static int records_alloc(records_t *r, size_t len, size_t n)
{
    r->data = malloc(len ? len : 1);
    r->off = calloc(n + 1, sizeof *r->off);
    r->len = len;
    r->n = n;
    if (r->data && r->off)
        return 0;
    records_free(r);
    return -1;
}

static size_t count_byte(const uint8_t *p, size_t n, uint8_t byte)
{
    size_t count = 0;
    const uint8_t *end = p + n;
    while (p < end && (p = memchr(p, byte, (size_t)(end - p))) != NULL) {
        count++;
        p++;
    }
    return count;
}

/* One record per line, the newline dropped; a last line without one still counts. */
static int records_from_lines(const buf_t *raw, records_t *r, char *err, size_t errlen)
{
    const uint8_t *p = buf_head(raw);
    size_t len = buf_unread(raw);
    size_t newlines = count_byte(p, len, '\n');
    size_t n = newlines + (len > 0 && p[len - 1] != '\n');
    if (n > (SIZE_MAX - len) / 4 || records_alloc(r, len - newlines + 4 * n, n) < 0) {
        snprintf(err, errlen, "out of memory framing %zu lines", n);
        return -1;
    }
    size_t pos = 0, out = 0;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *nl = memchr(p + pos, '\n', len - pos);
        size_t line_len = nl ? (size_t)(nl - (p + pos)) : len - pos;
        if (line_len > UINT32_MAX) {
            snprintf(err, errlen, "line %zu is too long for a 4-byte length (%zu bytes)", i + 1,
                     line_len);
            return -1;
        }
        r->off[i] = out;
        frame_put_u32be(r->data + out, (uint32_t)line_len);
        memcpy(r->data + out + 4, p + pos, line_len);
        out += 4 + line_len;
        pos += line_len + 1;
    }
    r->off[n] = out;
    return 0;
}

static void u32be_spec(frame_spec_t *spec, uint64_t max_payload)
{
    memset(spec, 0, sizeof *spec);
    /* ">I" is always C-parseable; the return value cannot be -1 here. */
    (void)frame_spec_from_struct(spec, 4, ">I");
    spec->max_payload = max_payload;
}

/* Walk already-framed input. With r == NULL only count (into *n); else fill r->off. */
static int scan_frames(const uint8_t *p, size_t len, records_t *r, size_t *n, char *err,
                       size_t errlen)
{
    frame_spec_t spec;
    u32be_spec(&spec, UINT32_MAX);
    size_t pos = 0, i = 0;
    while (pos < len) {
        size_t poff, plen, flen = 0;
        uint64_t declared = 0;
        frame_status st = frame_next(&spec, p + pos, len - pos, &poff, &plen, &flen, &declared);
        if (st != FRAME_OK) {
            snprintf(err, errlen,
                     "truncated record %zu at byte %zu: %zu bytes left, the record needs %s%" PRIu64,
                     i + 1, pos, len - pos, flen ? "" : "at least ", flen ? (uint64_t)flen : 4);
            return -1;
        }
        if (r)
            r->off[i] = pos;
        pos += flen;
        i++;
    }
    if (r)
        r->off[i] = pos;
    *n = i;
    return 0;
}

static int records_from_frames(buf_t *raw, records_t *r, char *err, size_t errlen)
{
    size_t n;
    if (scan_frames(buf_head(raw), buf_unread(raw), NULL, &n, err, errlen) < 0)
        return -1;
    r->off = calloc(n + 1, sizeof *r->off);
    if (!r->off) {
        snprintf(err, errlen, "out of memory indexing %zu records", n);
        return -1;
    }
    /* The input is sent as is, so keep its buffer instead of copying it. */
    buf_compact(raw);
    r->data = raw->data;
    r->len = raw->len;
    r->n = n;
    buf_init(raw);
    return scan_frames(r->data, r->len, r, &n, err, errlen);
}

/* Repeat a small input in memory until it is at least `min_len` bytes, so that a
 * one-line file still goes out in big writes. */
static int records_replicate(records_t *r, size_t min_len)
{
    if (r->n == 0 || r->len >= min_len)
        return 0;
    size_t k = (min_len + r->len - 1) / r->len;
    records_t big;
    if (records_alloc(&big, r->len * k, r->n * k) < 0)
        return -1;
    for (size_t j = 0; j < k; j++) {
        memcpy(big.data + j * r->len, r->data, r->len);
        for (size_t i = 0; i < r->n; i++)
            big.off[j * r->n + i] = j * r->len + r->off[i];
    }
    big.off[big.n] = big.len;
    records_free(r);
    *r = big;
    return 0;
}

static uint64_t total_records(const send_opts_t *o, size_t file_records)
{
    if (file_records == 0)
        return 0;
    uint64_t total = UINT64_MAX; /* forever, in practice */
    if (o->repeat > 0 && o->repeat <= UINT64_MAX / file_records)
        total = o->repeat * (uint64_t)file_records;
    if (o->count > 0 && o->count < total)
        total = o->count;
    return total;
}

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

/* The largest j in (pos, hi] with off[j] - off[pos] <= limit, but at least pos + 1. */
size_t send_last_record_within(const records_t *r, size_t pos, size_t hi, size_t limit)
{
    size_t lo = pos + 1;
    if (r->off[hi] - r->off[pos] <= limit)
        return hi;
    while (lo < hi) {
        size_t mid = lo + (hi - lo + 1) / 2;
        if (r->off[mid] - r->off[pos] <= limit)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

/* How many of the records [pos, end) lie entirely within the first `written` bytes. */
static size_t records_completed(const records_t *r, size_t pos, size_t end, size_t written)
{
    if (r->off[pos + 1] - r->off[pos] > written)
        return 0;
    return send_last_record_within(r, pos, end, written) - pos;
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

static int send_loop(int fd, const records_t *r, uint64_t total, double rate, send_stats_t *s,
                     char *err, size_t errlen)
{
    uint64_t start = now_ns();
    size_t pos = 0;
    int rc = 0;
    while (s->records < total && !stop_requested) {
        uint64_t budget = total - s->records;
        if (rate > 0) {
            uint64_t allowed = send_paced_allowance(start, rate, s->records);
            if (allowed == 0)
                continue;
            budget = allowed < budget ? allowed : budget;
        }
        size_t hi = budget < r->n - pos ? pos + (size_t)budget : r->n;
        size_t end = send_last_record_within(r, pos, hi, SEND_CHUNK);
        size_t nbytes = r->off[end] - r->off[pos], written;
        if (send_write_all(fd, r->data + r->off[pos], nbytes, &written) < 0) {
            int e = errno;
            /* Count the records that made it whole before the failure. */
            s->records += records_completed(r, pos, end, written);
            s->bytes += written;
            snprintf(err, errlen, "connection lost while sending: %s", strerror(e));
            rc = -1;
            break;
        }
        s->records += end - pos;
        s->bytes += nbytes;
        pos = end == r->n ? 0 : end;
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

/* Load and frame the input, sized up for big writes. */
static int prepare_records(const send_opts_t *o, records_t *r, size_t *file_records, char *err,
                           size_t errlen)
{
    buf_t raw;
    buf_init(&raw);
    int rc = load_input(o->file, &raw, err, errlen);
    if (rc == 0)
        rc = o->framed ? records_from_frames(&raw, r, err, errlen)
                       : records_from_lines(&raw, r, err, errlen);
    buf_free(&raw);
    *file_records = r->n;
    if (rc == 0 && records_replicate(r, SEND_CHUNK) < 0) {
        snprintf(err, errlen, "out of memory");
        rc = -1;
    }
    return rc;
}

int cmd_send(int argc, char **argv)
{
    send_opts_t o;
    int rc = parse_args(argc, argv, &o);
    if (rc >= 0)
        return rc;
    install_signals();

    char err[512];
    records_t recs = {0};
    size_t file_records = 0;
    struct sockaddr_storage addr;
    if (prepare_records(&o, &recs, &file_records, err, sizeof err) < 0 ||
        hostport_resolve(&o.to, &addr, err, sizeof err) < 0) {
        fprintf(stderr, PROG ": %s\n", err);
        records_free(&recs);
        return 1;
    }
    if (o.resumable) {
        rc = rsend_run(&o, &recs, total_records(&o, file_records), &addr);
        records_free(&recs);
        return rc;
    }
    int fd = connect_with_retry(&o, &addr, err, sizeof err);
    if (fd < 0) {
        fprintf(stderr, PROG ": %s\n", err);
        records_free(&recs);
        return 1;
    }
    send_stats_t s = {0};
    rc = send_loop(fd, &recs, total_records(&o, file_records), o.rate, &s, err, sizeof err);
    send_finish_connection(fd);
    records_free(&recs);
    if (rc < 0)
        fprintf(stderr, PROG ": error: %s\n", err);
    char rate[64];
    fprintf(stderr, PROG ": sent %" PRIu64 " records (%" PRIu64 " bytes) in %.3f s, %s\n",
            s.records, s.bytes, (double)s.ns / NS_PER_S,
            cli_rate_text(rate, sizeof rate, s.records, s.ns));
    return rc < 0 ? 1 : 0;
}
