/* bettong receive: accept TCP connections and write what arrives to a file, like
 * Wallaroo's data receiver (utils/data_receiver, whose flags it takes too). One
 * thread, one poll loop. Each connection keeps the bytes of its unfinished
 * record, and only whole records go to the output, so concurrent senders
 * interleave record by record and the file stays parseable. */
#include "tools/tools.h"

#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "net/addr.h"
#include "net/frame.h"
#include "tools/cli.h"
#include "tools/eosink.h"
#include "util/buf.h"
#include "util/hist.h"
#include "util/log.h"

#define PROG "bettong receive"
#define READ_CHUNK ((size_t)256 * 1024)
/* Bound the reads per connection per wakeup so one busy sender cannot starve
 * the others (or the flush timer). */
#define READS_PER_WAKEUP 16
#define MAX_RECORD ((uint64_t)64 * 1024 * 1024)
#define KEEP_BUFFER ((size_t)4 * 1024 * 1024)
#define OUT_BUFFER ((size_t)1 << 20)
#define FLUSH_NS (100 * 1000000ULL)
#define ACCEPT_PAUSE_NS (100 * 1000000ULL)
#define NS_PER_S 1e9

/* What goes to the output. */
typedef enum {
    OUT_RAW,      /* every byte as it came (lines, or frames with their headers) */
    OUT_PAYLOADS, /* data_receiver --framed: each frame's payload and a '\n' */
    OUT_NONE,     /* --no-write: count, write nothing */
} out_mode;

typedef struct {
    hostport_t listen;
    const char *out_path; /* NULL or "-": stdout */
    int framed;
    int no_write;
    out_mode mode;
    int verbose;
    uint64_t expect;
    int has_expect;
    double timeout;
    int has_timeout;
    int exactly_once;
    unsigned pony_seen; /* the Pony runtime flags given, for the note */
} recv_opts_t;

typedef struct {
    int fd;
    buf_t in;       /* received, not yet written: at most one unfinished record */
    size_t scanned; /* leading bytes of `in` already known to hold no newline */
    char peer[64];
    eoconn_t *eo; /* --exactly-once: the protocol's state of this connection */
} conn_t;

typedef enum { CONN_KEEP, CONN_EOF, CONN_BAD } conn_state;

typedef struct {
    recv_opts_t o;
    frame_spec_t spec;
    FILE *out;
    eosink_t *eo; /* --exactly-once: owns the output file instead of `out` */
    int listen_fd;
    conn_t *conns;
    size_t nconns, cap;
    struct pollfd *pfds;
    uint64_t records, bytes;
    uint64_t first_ns, last_ns, last_flush_ns;
    uint64_t accept_paused_until;
    int dirty;  /* written since the last flush */
    int failed; /* the output is broken: stop and exit 1 */
} receiver_t;

static volatile sig_atomic_t stop_requested;

static void on_stop_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

enum {
    OPT_LISTEN,
    OPT_OUT,
    OPT_FRAMED,
    OPT_EXPECT,
    OPT_TIMEOUT,
    OPT_VERBOSE,
    OPT_EXACTLY_ONCE,
    OPT_NO_WRITE,
    OPT_HELP
};

static const cli_option_t recv_options[] = {
    {OPT_LISTEN, CLI_VALUE, {"--listen", "-l"}},
    {OPT_OUT, CLI_VALUE, {"--out", "-o"}},
    {OPT_FRAMED, CLI_FLAG, {"--framed", "--binary", "-y", "-f"}},
    {OPT_EXPECT, CLI_VALUE, {"--expect"}},
    {OPT_TIMEOUT, CLI_VALUE, {"--timeout"}},
    {OPT_VERBOSE, CLI_FLAG, {"--verbose", "-v"}},
    {OPT_EXACTLY_ONCE, CLI_FLAG, {"--exactly-once"}},
    {OPT_NO_WRITE, CLI_FLAG, {"--no-write", "-n"}},
    {OPT_HELP, CLI_FLAG, {"--help", "-h"}},
};

static void usage(FILE *f)
{
    fprintf(f,
            "usage: bettong receive [--listen HOST:PORT] [options]\n"
            "\n"
            "Accept TCP connections and write every received byte to a file.\n"
            "\n"
            "  --listen, -l H:P        address to listen on (default 127.0.0.1:0; port 0 picks\n"
            "                          a free one; a bare PORT means 127.0.0.1:PORT)\n"
            "  --out, -o FILE          output file, truncated first (default: stdout)\n"
            "  --framed, --binary, -y, -f\n"
            "                          records are 4-byte big-endian length frames\n"
            "                          (default: '\\n'-terminated lines). They are written as\n"
            "                          they came to --out FILE (or --out - for stdout),\n"
            "                          ready for 'bettong send --framed'; without --out, as\n"
            "                          Wallaroo's data_receiver --framed prints them: each\n"
            "                          payload followed by '\\n'\n"
            "  --no-write, -n          write nothing, only count (data_receiver's --no-write)\n"
            "  --expect N              exit 0 once N records have arrived\n"
            "  --timeout S             give up after S seconds: exit 1 if --expect is not met\n"
            "                          (without --expect: just stop, exit 0)\n"
            "  --verbose, -v           log connections as they open and close\n"
            "  --exactly-once          speak the exactly-once sink protocol (docs/resilience.md):\n"
            "                          records reach FILE only when the engine's checkpoint\n"
            "                          commits them; FILE.eostate and FILE.eospool.* next to\n"
            "                          FILE let a restarted receiver go on without losing or\n"
            "                          repeating output (FILE is kept, not truncated; remove\n"
            "                          all three to start afresh). Needs --out FILE; --expect\n"
            "                          counts committed records\n"
            "  --help, -h              this text\n"
            "  --ponythreads N, --ponynoblock, --ponypinasio, ... (the Pony runtime's flags,\n"
            "                          in data_receiver command lines) ignored, with a note\n"
            "\n"
            "Prints '" PROG ": listening on HOST:PORT' once listening and\n"
            "'" PROG ": N records (B bytes) in T s, R records/s' at exit: B counts the\n"
            "bytes received, T runs from the first byte to the last, and a T under 1 ms\n"
            "prints 'too short to measure a rate' instead of R.\n");
}

static int bad_usage(const char *msg)
{
    fprintf(stderr, PROG ": %s\n\n", msg);
    usage(stderr);
    return 2;
}

static int apply_option(recv_opts_t *o, int id, const char *v, char *err, size_t errlen)
{
    switch (id) {
    case OPT_LISTEN:
        return cli_parse_hostport(v, &o->listen, err, errlen);
    case OPT_OUT:
        o->out_path = v;
        return 0;
    case OPT_FRAMED:
        o->framed = 1;
        return 0;
    case OPT_VERBOSE:
        o->verbose = 1;
        return 0;
    case OPT_EXACTLY_ONCE:
        o->exactly_once = 1;
        return 0;
    case OPT_NO_WRITE:
        o->no_write = 1;
        return 0;
    case OPT_EXPECT:
        o->has_expect = 1;
        if (cli_parse_u64(v, &o->expect) == 0)
            return 0;
        snprintf(err, errlen, "bad --expect '%s' (expected a count)", v);
        return -1;
    case OPT_TIMEOUT:
        o->has_timeout = 1;
        if (cli_parse_nonneg(v, &o->timeout) == 0 && o->timeout < 1e9)
            return 0;
        snprintf(err, errlen, "bad --timeout '%s' (expected seconds)", v);
        return -1;
    }
    snprintf(err, errlen, "internal error: option %d", id);
    return -1;
}

/* data_receiver writes only to stdout, so a command line without --out is one
 * of its own: there --framed prints payloads, as data_receiver does. --out is
 * bettong's, and keeps the frames whole for replaying. */
static int check_output(recv_opts_t *o)
{
    /* The state that makes output exactly-once lives next to the file. */
    if (o->exactly_once && (!o->out_path || strcmp(o->out_path, "-") == 0))
        return bad_usage("--exactly-once needs --out FILE (its state is kept next to FILE)");
    if (o->no_write && (o->out_path || o->exactly_once))
        return bad_usage("--no-write writes nothing: it does not go with --out or "
                         "--exactly-once");
    if (o->no_write)
        o->mode = OUT_NONE;
    else if (o->framed && !o->out_path && !o->exactly_once)
        o->mode = OUT_PAYLOADS;
    else
        o->mode = OUT_RAW;
    return -1;
}

/* Returns -1 to go on, or the exit code (0 after --help, 2 on bad usage). */
static int parse_args(int argc, char **argv, recv_opts_t *o)
{
    memset(o, 0, sizeof *o);
    strcpy(o->listen.host, "127.0.0.1");
    cli_t c;
    cli_init(&c, argc, argv);
    cli_accept_pony_flags(&c);
    char err[512];
    int id = -1;
    const char *v;
    cli_status st;
    while ((st = cli_next(&c, recv_options, sizeof recv_options / sizeof recv_options[0], &id,
                          &v, err, sizeof err)) != CLI_END) {
        if (st == CLI_ERROR)
            return bad_usage(err);
        if (st == CLI_POSITIONAL) {
            snprintf(err, sizeof err, "unexpected argument '%s'", v);
            return bad_usage(err);
        }
        if (id == OPT_HELP) {
            usage(stdout);
            return 0;
        }
        if (apply_option(o, id, v, err, sizeof err) < 0)
            return bad_usage(err);
    }
    o->pony_seen = c.pony_seen;
    return check_output(o);
}

static int open_listener(const hostport_t *hp, char *text, size_t textlen, char *err,
                         size_t errlen)
{
    struct sockaddr_storage addr;
    if (hostport_resolve(hp, &addr, err, errlen) < 0)
        return -1;
    socklen_t alen = addr.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                : sizeof(struct sockaddr_in);
    int fd = socket(addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    /* Restarting on the same port must not wait out TIME_WAIT. */
    int one = 1;
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&addr, alen) < 0 || listen(fd, 512) < 0) {
        snprintf(err, errlen, "cannot listen on %s:%d: %s", hp->host, hp->port, strerror(errno));
        close(fd);
        return -1;
    }
    alen = sizeof addr;
    if (getsockname(fd, (struct sockaddr *)&addr, &alen) < 0) {
        snprintf(err, errlen, "getsockname: %s", strerror(errno));
        close(fd);
        return -1;
    }
    sockaddr_text((struct sockaddr *)&addr, text, textlen);
    return fd;
}

static int output_failed(receiver_t *rx)
{
    fprintf(stderr, PROG ": cannot write to %s: %s\n",
            rx->o.out_path ? rx->o.out_path : "stdout", strerror(errno));
    rx->failed = 1;
    return -1;
}

/* Write p[0..n) as it is. Returns 0, or -1 once the output is broken (reported once). */
static int output(receiver_t *rx, const uint8_t *p, size_t n)
{
    if (rx->failed)
        return -1;
    if (n == 0 || rx->o.mode == OUT_NONE)
        return 0;
    if (fwrite(p, 1, n, rx->out) != n)
        return output_failed(rx);
    rx->dirty = 1;
    return 0;
}

/* data_receiver --framed: the payload of each whole frame in p[0..n), then '\n'. */
static int output_payloads(receiver_t *rx, const uint8_t *p, size_t n)
{
    if (rx->failed)
        return -1;
    for (size_t pos = 0; pos + 4 <= n;) {
        size_t plen = (size_t)p[pos] << 24 | (size_t)p[pos + 1] << 16 |
                      (size_t)p[pos + 2] << 8 | p[pos + 3];
        if (fwrite(p + pos + 4, 1, plen, rx->out) != plen || fputc('\n', rx->out) == EOF)
            return output_failed(rx);
        pos += 4 + plen;
    }
    if (n > 0)
        rx->dirty = 1;
    return 0;
}

static void flush_output(receiver_t *rx, uint64_t now)
{
    rx->last_flush_ns = now;
    if (!rx->dirty || rx->failed || !rx->out)
        return;
    rx->dirty = 0;
    if (fflush(rx->out) != 0) {
        fprintf(stderr, PROG ": cannot write to %s: %s\n",
                rx->o.out_path ? rx->o.out_path : "stdout", strerror(errno));
        rx->failed = 1;
    }
}

/* Complete lines at the head of c->in: sets *len (bytes) and *count. A line
 * longer than MAX_RECORD is refused rather than buffered without end. */
static conn_state complete_lines(conn_t *c, size_t *len, uint64_t *count)
{
    const uint8_t *head = buf_head(&c->in);
    size_t avail = buf_unread(&c->in);
    const uint8_t *p = head + c->scanned, *end = head + avail, *last = NULL;
    *count = 0;
    while (p < end && (p = memchr(p, '\n', (size_t)(end - p))) != NULL) {
        last = p++;
        (*count)++;
    }
    *len = last ? (size_t)(last - head) + 1 : 0;
    c->scanned = avail - *len;
    if (c->scanned > MAX_RECORD) {
        log_warn("connection from %s: line longer than %" PRIu64 " bytes; closing it", c->peer,
                 MAX_RECORD);
        return CONN_BAD;
    }
    return CONN_KEEP;
}

/* Complete frames at the head of c->in, as complete_lines. */
static conn_state complete_frames(const frame_spec_t *spec, conn_t *c, size_t *len,
                                  uint64_t *count)
{
    const uint8_t *head = buf_head(&c->in);
    size_t avail = buf_unread(&c->in);
    *len = 0;
    *count = 0;
    for (;;) {
        size_t poff, plen, flen;
        uint64_t declared = 0;
        frame_status st = frame_next(spec, head + *len, avail - *len, &poff, &plen, &flen,
                                     &declared);
        if (st == FRAME_NEED_MORE)
            return CONN_KEEP;
        if (st != FRAME_OK) {
            log_warn("connection from %s: frame of %" PRIu64 " bytes exceeds the %" PRIu64
                     "-byte limit; closing it",
                     c->peer, declared, MAX_RECORD);
            return CONN_BAD;
        }
        *len += flen;
        (*count)++;
    }
}

/* --exactly-once: the engine's frames; output happens on commits only. */
static conn_state drain_eo(receiver_t *rx, conn_t *c)
{
    int rc = eosink_input(rx->eo, c->eo, &c->in, &rx->records, &rx->bytes);
    if (eosink_failed(rx->eo))
        rx->failed = 1;
    if (buf_unread(&c->in) == 0)
        buf_shrink(&c->in, KEEP_BUFFER);
    return rc < 0 ? CONN_BAD : CONN_KEEP;
}

/* Move the whole records at the head of c->in to the output. */
static conn_state drain_records(receiver_t *rx, conn_t *c)
{
    size_t len;
    uint64_t count;
    conn_state st = rx->o.framed ? complete_frames(&rx->spec, c, &len, &count)
                                 : complete_lines(c, &len, &count);
    /* Records count once they are in the output, so the summary matches the file. */
    int rc = rx->o.mode == OUT_PAYLOADS ? output_payloads(rx, buf_head(&c->in), len)
                                        : output(rx, buf_head(&c->in), len);
    if (rc == 0) {
        rx->records += count;
        rx->bytes += len;
    }
    buf_consume(&c->in, len);
    /* One huge record should not pin its buffer for the connection's life. */
    if (buf_unread(&c->in) == 0)
        buf_shrink(&c->in, KEEP_BUFFER);
    return st;
}

static int expect_met(const receiver_t *rx)
{
    return rx->o.has_expect && rx->records >= rx->o.expect;
}

/* Read what the connection has; stop at EOF, on an error, or on bad input. */
static conn_state conn_service(receiver_t *rx, conn_t *c)
{
    for (int i = 0; i < READS_PER_WAKEUP && !expect_met(rx) && !rx->failed; i++) {
        if (buf_reserve(&c->in, READ_CHUNK) < 0) {
            log_warn("connection from %s: out of memory; closing it", c->peer);
            return CONN_BAD;
        }
        size_t room = c->in.cap - c->in.len;
        ssize_t n = read(c->fd, c->in.data + c->in.len, room);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return CONN_KEEP;
        if (n < 0) {
            log_warn("connection from %s: %s", c->peer, strerror(errno));
            return CONN_EOF;
        }
        if (n == 0)
            return CONN_EOF;
        uint64_t now = now_ns();
        if (rx->first_ns == 0)
            rx->first_ns = now;
        rx->last_ns = now;
        c->in.len += (size_t)n;
        if ((rx->eo ? drain_eo(rx, c) : drain_records(rx, c)) == CONN_BAD)
            return CONN_BAD;
        /* A short read means the socket is empty: skip the EAGAIN round trip. */
        if ((size_t)n < room)
            return CONN_KEEP;
    }
    return CONN_KEEP;
}

static int conns_add(receiver_t *rx, int fd, const struct sockaddr_storage *sa)
{
    if (rx->nconns == rx->cap) {
        size_t cap = rx->cap ? rx->cap * 2 : 16;
        conn_t *conns = realloc(rx->conns, cap * sizeof *conns);
        if (!conns)
            return -1;
        rx->conns = conns;
        /* One pollfd per connection plus the listener. */
        struct pollfd *pfds = realloc(rx->pfds, (cap + 1) * sizeof *pfds);
        if (!pfds)
            return -1;
        rx->pfds = pfds;
        rx->cap = cap;
    }
    conn_t *c = &rx->conns[rx->nconns++];
    memset(c, 0, sizeof *c);
    c->fd = fd;
    buf_init(&c->in);
    sockaddr_text((const struct sockaddr *)sa, c->peer, sizeof c->peer);
    return 0;
}

/* Close connection i. Its unfinished record is written when it ended normally
 * (every received byte goes out), dropped when it was refused. */
static void conns_close(receiver_t *rx, size_t i, conn_state why)
{
    conn_t *c = &rx->conns[i];
    size_t tail = buf_unread(&c->in);
    if (c->eo) {
        /* An unfinished frame of the protocol is nothing to write. */
        eosink_conn_closed(rx->eo, c->eo);
        c->eo = NULL;
        tail = 0;
    }
    if (why != CONN_BAD && tail > 0 && rx->o.mode == OUT_PAYLOADS) {
        /* data_receiver prints whole payloads only. */
        log_warn("connection from %s ended inside a frame (%zu bytes of it dropped)", c->peer,
                 tail);
    } else if (why != CONN_BAD && tail > 0) {
        if (rx->o.framed)
            log_warn("connection from %s ended inside a frame (%zu bytes of it %s)", c->peer,
                     tail, rx->o.mode == OUT_NONE ? "counted" : "written");
        if (output(rx, buf_head(&c->in), tail) == 0)
            rx->bytes += tail;
    }
    if (why == CONN_BAD && tail > 0)
        log_warn("connection from %s: %zu unwritten bytes dropped", c->peer, tail);
    log_info("connection from %s closed", c->peer);
    buf_free(&c->in);
    if (close(c->fd) < 0)
        log_warn("close: %s", strerror(errno));
    rx->conns[i] = rx->conns[--rx->nconns];
}

static void accept_all(receiver_t *rx)
{
    for (;;) {
        struct sockaddr_storage sa;
        socklen_t sl = sizeof sa;
        int fd = accept4(rx->listen_fd, (struct sockaddr *)&sa, &sl,
                         SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            /* Out of descriptors or memory: the listener would stay readable and
             * spin the loop, so stop watching it for a moment. */
            log_warn("accept: %s; pausing new connections", strerror(errno));
            rx->accept_paused_until = now_ns() + ACCEPT_PAUSE_NS;
            return;
        }
        if (conns_add(rx, fd, &sa) < 0) {
            log_warn("out of memory; refusing a connection");
            close(fd);
            continue;
        }
        conn_t *c = &rx->conns[rx->nconns - 1];
        log_info("connection from %s", c->peer);
        if (rx->eo && !(c->eo = eosink_accept(rx->eo, fd, c->peer)))
            conns_close(rx, rx->nconns - 1, CONN_BAD);
    }
}

/* Milliseconds until the earliest of: flush due, deadline, accept pause end. */
static int poll_timeout_ms(const receiver_t *rx, uint64_t now, uint64_t deadline)
{
    uint64_t wake = UINT64_MAX;
    if (rx->dirty)
        wake = rx->last_flush_ns + FLUSH_NS;
    if (deadline && deadline < wake)
        wake = deadline;
    if (rx->accept_paused_until && rx->accept_paused_until < wake)
        wake = rx->accept_paused_until;
    if (wake == UINT64_MAX)
        return -1;
    if (wake <= now)
        return 0;
    /* Round up so we do not wake just before the moment and spin. */
    uint64_t ms = (wake - now + 999999) / 1000000;
    return ms > 1000000 ? 1000000 : (int)ms;
}

static size_t fill_pollfds(receiver_t *rx, uint64_t now)
{
    size_t n = 0;
    for (size_t i = 0; i < rx->nconns; i++)
        rx->pfds[n++] = (struct pollfd){.fd = rx->conns[i].fd, .events = POLLIN};
    if (rx->accept_paused_until && now >= rx->accept_paused_until)
        rx->accept_paused_until = 0;
    rx->pfds[n] = (struct pollfd){.fd = rx->accept_paused_until ? -1 : rx->listen_fd,
                                  .events = POLLIN};
    return n + 1;
}

static void service_ready(receiver_t *rx, size_t npfds)
{
    /* Backwards: closing swaps the last connection into the hole, and the last
     * one has been handled already. */
    for (size_t i = rx->nconns; i-- > 0;) {
        if (expect_met(rx) || rx->failed)
            return;
        if (!(rx->pfds[i].revents & (POLLIN | POLLHUP | POLLERR)))
            continue;
        conn_state st = conn_service(rx, &rx->conns[i]);
        if (st != CONN_KEEP)
            conns_close(rx, i, st);
    }
    if (rx->pfds[npfds - 1].revents & POLLIN)
        accept_all(rx);
}

/* Returns 1 when the deadline passed, 0 on any other way out, -1 on a poll failure. */
static int event_loop(receiver_t *rx, const sigset_t *wait_mask)
{
    uint64_t deadline = 0;
    if (rx->o.has_timeout)
        deadline = now_ns() + (uint64_t)(rx->o.timeout * NS_PER_S);
    while (!stop_requested && !expect_met(rx) && !rx->failed) {
        uint64_t now = now_ns();
        if (deadline && now >= deadline)
            return 1;
        if (rx->dirty && now - rx->last_flush_ns >= FLUSH_NS)
            flush_output(rx, now);
        size_t npfds = fill_pollfds(rx, now);
        int ms = poll_timeout_ms(rx, now, deadline);
        struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
        /* ppoll unblocks SIGINT/SIGTERM only while waiting, so a signal cannot
         * slip in between the stop check above and the wait. */
        int n = ppoll(rx->pfds, npfds, ms < 0 ? NULL : &ts, wait_mask);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            fprintf(stderr, PROG ": poll: %s\n", strerror(errno));
            return -1;
        }
        if (n > 0)
            service_ready(rx, npfds);
    }
    return 0;
}

static int install_signals(sigset_t *wait_mask)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigset_t block;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    signal(SIGPIPE, SIG_IGN);
    if (sigaction(SIGINT, &sa, NULL) < 0 || sigaction(SIGTERM, &sa, NULL) < 0 ||
        sigprocmask(SIG_BLOCK, &block, wait_mask) < 0)
        return -1;
    sigdelset(wait_mask, SIGINT);
    sigdelset(wait_mask, SIGTERM);
    return 0;
}

static int open_output(receiver_t *rx)
{
    const char *path = rx->o.out_path;
    if (rx->o.exactly_once) {
        char err[1024];
        rx->eo = eosink_open(path, rx->o.framed, MAX_RECORD, err, sizeof err);
        if (!rx->eo)
            fprintf(stderr, PROG ": %s\n", err);
        return rx->eo ? 0 : -1;
    }
    if (rx->o.mode == OUT_NONE)
        return 0;
    if (!path || strcmp(path, "-") == 0) {
        rx->out = stdout;
    } else if (!(rx->out = fopen(path, "wb"))) {
        fprintf(stderr, PROG ": cannot open '%s': %s\n", path, strerror(errno));
        return -1;
    }
    /* Large buffer: writes are many small records; flushing is on a timer. */
    if (setvbuf(rx->out, NULL, _IOFBF, OUT_BUFFER) != 0)
        fprintf(stderr, PROG ": warning: cannot set the output buffer size\n");
    return 0;
}

/* Write the unfinished records of open connections, close everything, flush. */
static void shut_down(receiver_t *rx)
{
    while (rx->nconns > 0)
        conns_close(rx, rx->nconns - 1, CONN_EOF);
    if (rx->listen_fd >= 0)
        close(rx->listen_fd);
    rx->dirty = 1;
    flush_output(rx, now_ns());
    if (rx->out && rx->out != stdout && fclose(rx->out) != 0 && !rx->failed) {
        fprintf(stderr, PROG ": cannot write to %s: %s\n", rx->o.out_path, strerror(errno));
        rx->failed = 1;
    }
    rx->out = NULL;
    eosink_close(rx->eo);
    rx->eo = NULL;
    free(rx->conns);
    free(rx->pfds);
}

/* The time runs from the first read that brought bytes to the last one, on the
 * monotonic clock in nanoseconds. */
static void print_summary(const receiver_t *rx)
{
    uint64_t ns = rx->first_ns ? rx->last_ns - rx->first_ns : 0;
    char rate[64];
    fprintf(stderr, PROG ": %" PRIu64 " records (%" PRIu64 " bytes) in %.3f s, %s\n",
            rx->records, rx->bytes, (double)ns / NS_PER_S,
            cli_rate_text(rate, sizeof rate, rx->records, ns));
}

static int receiver_init(receiver_t *rx, char *err, size_t errlen)
{
    memset(&rx->spec, 0, sizeof rx->spec);
    (void)frame_spec_from_struct(&rx->spec, 4, ">I");
    rx->spec.max_payload = MAX_RECORD;
    rx->listen_fd = -1;
    /* The listener's pollfd exists even with no connections. */
    rx->pfds = malloc(sizeof *rx->pfds);
    if (!rx->pfds) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

int cmd_receive(int argc, char **argv)
{
    receiver_t rx;
    memset(&rx, 0, sizeof rx);
    int rc = parse_args(argc, argv, &rx.o);
    if (rc >= 0)
        return rc;
    log_set_role("receive");
    log_set_level(rx.o.verbose ? LOG_INFO : LOG_WARN);
    char err[512], where[128];
    sigset_t wait_mask;
    if (install_signals(&wait_mask) < 0) {
        fprintf(stderr, PROG ": cannot install signal handlers: %s\n", strerror(errno));
        return 1;
    }
    if (receiver_init(&rx, err, sizeof err) < 0 ||
        (rx.listen_fd = open_listener(&rx.o.listen, where, sizeof where, err, sizeof err)) < 0) {
        fprintf(stderr, PROG ": %s\n", err);
        free(rx.pfds);
        return 1;
    }
    if (open_output(&rx) < 0) {
        close(rx.listen_fd);
        free(rx.pfds);
        return 1;
    }
    /* The listening line comes first: scripts read the port from it. */
    fprintf(stderr, PROG ": listening on %s\n", where);
    cli_pony_note(rx.o.pony_seen, PROG);
    fflush(stderr);
    rx.last_flush_ns = now_ns();
    int loop = event_loop(&rx, &wait_mask);
    shut_down(&rx);
    int timed_out = loop == 1 && rx.o.has_expect && !expect_met(&rx);
    if (timed_out)
        fprintf(stderr, PROG ": timed out after %g s with %" PRIu64 " of %" PRIu64 " records\n",
                rx.o.timeout, rx.records, rx.o.expect);
    print_summary(&rx);
    return rx.failed || loop < 0 || timed_out ? 1 : 0;
}
