/* bettong send --resumable. The input is framed into memory once (send.c), so
 * "keeping what is not acknowledged" is index bookkeeping: records are numbered
 * over the repeated input, the engine's 'R' says where to (re)start, its 'A'
 * how far it is safe, and nothing grows with the number of records sent. */
#include "tools/rsend.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "net/frame.h"
#include "net/wire.h"
#include "tools/cli.h"
#include "stream/eoproto.h"
#include "util/buf.h"
#include "util/hist.h"

#define PROG SEND_PROG
#define BACKOFF_FIRST_NS (50 * 1000000ULL)
#define BACKOFF_MAX_NS (250 * 1000000ULL)
/* How long the end waits for the engine to close its side. */
#define FINISH_WAIT_MS 1000
/* Wake up this often while waiting for acknowledgements, to notice signals. */
#define ACK_POLL_MS 200

typedef enum {
    RS_OK,      /* go on */
    RS_DROPPED, /* the connection ended: reconnect */
    RS_REFUSED, /* 'E' from the engine: exit 2 */
    RS_FATAL,   /* give up: exit 1 (message printed) */
} rs_status;

typedef struct {
    const send_opts_t *o;
    const records_t *r;
    const struct sockaddr_storage *addr;
    uint64_t total;
    const char *stream;
    int fd;
    buf_t in;        /* the engine's answers, not yet parsed */
    int have_resume; /* an 'R' arrived on this connection */
    uint64_t resume; /* its position */
    uint64_t next;   /* the next record to send */
    uint64_t acked;  /* records the engine acknowledged */
    uint64_t high;   /* one past the highest record ever sent (resends count below it) */
    uint64_t resent;
    send_stats_t s;
    char why[256]; /* why the last connection attempt failed */
} rs_client_t;

/* The name the hello carries: --stream, else the input's basename. */
static const char *stream_name(const send_opts_t *o)
{
    if (o->stream)
        return o->stream;
    if (strcmp(o->file, "-") == 0)
        return "stdin";
    const char *slash = strrchr(o->file, '/');
    const char *base = slash ? slash + 1 : o->file;
    return *base ? base : "stdin";
}

/* One answer frame (type and fields, the length already taken off). */
static rs_status handle_answer(rs_client_t *c, const uint8_t *body, size_t len)
{
    wire_rd_t rd;
    wire_rd_init(&rd, body, len);
    uint8_t type = wire_u8(&rd);
    if (type == RS_ERROR) {
        size_t n;
        const uint8_t *text = wire_rest(&rd, &n);
        fprintf(stderr, PROG ": the engine refused the stream '%s': %.*s\n", c->stream, (int)n,
                (const char *)text);
        return RS_REFUSED;
    }
    uint64_t pos = wire_u64(&rd);
    if ((type != RS_RESUME && type != RS_ACK) || rd.err || rd.p != rd.end) {
        fprintf(stderr, PROG ": malformed answer from the engine (type 0x%02x, %zu bytes)\n",
                type, len);
        return RS_FATAL;
    }
    if (pos > c->total) {
        /* The engine cannot hold records we never had: a stream name in use by
         * another input, most likely. Going on would skip or invent records. */
        fprintf(stderr,
                PROG ": the engine says it holds %" PRIu64 " records of stream '%s', but the"
                     " input has only %" PRIu64 " (another input under the same name?)\n",
                pos, c->stream, c->total);
        return RS_FATAL;
    }
    if (type == RS_RESUME) {
        c->have_resume = 1;
        c->resume = pos;
    } else if (pos > c->acked) {
        c->acked = pos;
    }
    return RS_OK;
}

/* Parse the whole frames in c->in. */
static rs_status parse_answers(rs_client_t *c)
{
    for (;;) {
        size_t avail = buf_unread(&c->in);
        if (avail < 4)
            return RS_OK;
        uint32_t n = eo_get_u32be(buf_head(&c->in));
        if (n == 0 || n > RS_MAX_FRAME) {
            fprintf(stderr, PROG ": bad answer frame from the engine (length %" PRIu32 ")\n", n);
            return RS_FATAL;
        }
        if (avail < 4 + (size_t)n)
            return RS_OK;
        rs_status st = handle_answer(c, buf_head(&c->in) + 4, n);
        buf_consume(&c->in, 4 + (size_t)n);
        if (st != RS_OK)
            return st;
    }
}

/* Read what the engine sent, waiting up to wait_ms (0: not at all) for the
 * first byte. Everything received is parsed before an end is reported, so a
 * refusal followed by the close reads as the refusal. */
static rs_status read_answers(rs_client_t *c, int wait_ms)
{
    if (wait_ms > 0) {
        struct pollfd p = {.fd = c->fd, .events = POLLIN};
        if (poll(&p, 1, wait_ms) < 0 && errno != EINTR) {
            fprintf(stderr, PROG ": poll: %s\n", strerror(errno));
            return RS_FATAL;
        }
    }
    int ended = 0;
    for (;;) {
        if (buf_reserve(&c->in, 4096) < 0) {
            fprintf(stderr, PROG ": out of memory\n");
            return RS_FATAL;
        }
        ssize_t n = recv(c->fd, c->in.data + c->in.len, c->in.cap - c->in.len, MSG_DONTWAIT);
        if (n > 0) {
            c->in.len += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (n < 0)
            snprintf(c->why, sizeof c->why, "%s", strerror(errno));
        else
            snprintf(c->why, sizeof c->why, "the engine closed the connection");
        ended = 1;
        break;
    }
    rs_status st = parse_answers(c);
    if (st == RS_OK && ended)
        st = RS_DROPPED;
    return st;
}

static void drop_connection(rs_client_t *c)
{
    if (c->fd >= 0 && close(c->fd) < 0)
        fprintf(stderr, PROG ": warning: close: %s\n", strerror(errno));
    c->fd = -1;
    buf_clear(&c->in);
    c->have_resume = 0;
}

/* Send the hello and wait until `deadline` for the 'R'. */
static rs_status handshake(rs_client_t *c, uint64_t deadline)
{
    uint8_t hello[4 + RS_MAGIC_LEN + 2 + RS_NAME_MAX];
    size_t name_len = strlen(c->stream);
    size_t payload = RS_MAGIC_LEN + 2 + name_len;
    frame_put_u32be(hello, (uint32_t)payload);
    memcpy(hello + 4, RS_MAGIC, RS_MAGIC_LEN);
    hello[4 + RS_MAGIC_LEN] = (uint8_t)(name_len >> 8);
    hello[4 + RS_MAGIC_LEN + 1] = (uint8_t)name_len;
    memcpy(hello + 4 + RS_MAGIC_LEN + 2, c->stream, name_len);
    size_t written;
    if (send_write_all(c->fd, hello, 4 + payload, &written) < 0) {
        snprintf(c->why, sizeof c->why, "sending the hello: %s", strerror(errno));
        return RS_DROPPED;
    }
    while (!c->have_resume) {
        uint64_t now = now_ns();
        if (send_stop_requested())
            return RS_DROPPED;
        if (now >= deadline) {
            snprintf(c->why, sizeof c->why,
                     "no answer to the hello (is the engine running with --run-with-resilience?)");
            return RS_DROPPED;
        }
        uint64_t ms = (deadline - now + 999999) / 1000000;
        rs_status st = read_answers(c, ms > ACK_POLL_MS ? ACK_POLL_MS : (int)ms);
        if (st != RS_OK)
            return st;
    }
    if (c->resume < c->acked)
        fprintf(stderr,
                PROG ": warning: the engine resumes stream '%s' at %" PRIu64
                     ", below the %" PRIu64 " records it acknowledged\n",
                c->stream, c->resume, c->acked);
    c->next = c->resume;
    return RS_OK;
}

/* Connect and shake hands, retrying with exponential backoff for
 * --connect-timeout seconds of failures. */
static rs_status connect_session(rs_client_t *c)
{
    uint64_t start = now_ns();
    uint64_t deadline = start + (uint64_t)(c->o->connect_timeout * SEND_NS_PER_S);
    uint64_t backoff = BACKOFF_FIRST_NS;
    for (;;) {
        uint64_t now = now_ns();
        int wait_ms = now < deadline ? (int)((deadline - now) / 1000000ULL) : 0;
        if (wait_ms < SEND_MIN_ATTEMPT_MS)
            wait_ms = SEND_MIN_ATTEMPT_MS;
        c->fd = send_try_connect(c->addr, wait_ms);
        if (c->fd < 0) {
            snprintf(c->why, sizeof c->why, "%s", strerror(errno));
        } else {
            uint64_t answer_by = now_ns() + (uint64_t)wait_ms * 1000000ULL;
            rs_status st = handshake(c, answer_by > deadline ? answer_by : deadline);
            if (st == RS_OK || st == RS_REFUSED || st == RS_FATAL)
                return st;
            drop_connection(c);
        }
        now = now_ns();
        if (send_stop_requested()) {
            fprintf(stderr, PROG ": interrupted while connecting to %s:%d\n", c->o->to.host,
                    c->o->to.port);
            return RS_FATAL;
        }
        if (now >= deadline) {
            fprintf(stderr, PROG ": cannot connect to %s:%d: %s (gave up after %.1f s)\n",
                    c->o->to.host, c->o->to.port, c->why, (double)(now - start) / SEND_NS_PER_S);
            return RS_FATAL;
        }
        send_sleep_until_ns(now + backoff < deadline ? now + backoff : deadline);
        backoff = backoff * 2 > BACKOFF_MAX_NS ? BACKOFF_MAX_NS : backoff * 2;
    }
}

/* Send the next chunk of records (at most `budget`). */
static rs_status send_chunk(rs_client_t *c, uint64_t budget)
{
    const records_t *r = c->r;
    size_t pos = (size_t)(c->next % r->n);
    uint64_t left = c->total - c->next;
    if (budget > left)
        budget = left;
    size_t hi = budget < r->n - pos ? pos + (size_t)budget : r->n;
    size_t end = records_last_within(r, pos, hi, SEND_CHUNK);
    size_t nbytes = r->off[end] - r->off[pos], written;
    if (send_write_all(c->fd, r->data + r->off[pos], nbytes, &written) < 0) {
        /* No need to count what got through: the next 'R' says what arrived. */
        snprintf(c->why, sizeof c->why, "%s", strerror(errno));
        return RS_DROPPED;
    }
    uint64_t k = end - pos;
    if (c->next < c->high)
        c->resent += c->high - c->next < k ? c->high - c->next : k;
    c->next += k;
    if (c->next > c->high)
        c->high = c->next;
    c->s.records += k;
    c->s.bytes += nbytes;
    return RS_OK;
}

/* One step of the session: send what is due, or wait for acknowledgements.
 * *ack_deadline is 0 until the end of the input is reached. Returns RS_OK to go
 * on, with *done set once finished (*timed_out when the acknowledgements did
 * not come in time). */
static rs_status step(rs_client_t *c, uint64_t start, uint64_t *ack_deadline, int *done,
                      int *timed_out)
{
    rs_status st = read_answers(c, 0);
    if (st != RS_OK)
        return st;
    if (c->next < c->total) {
        *ack_deadline = 0;
        uint64_t budget = c->total - c->next;
        if (c->o->rate > 0) {
            uint64_t allowed = send_paced_allowance(start, c->o->rate, c->s.records);
            if (allowed == 0)
                return RS_OK;
            budget = allowed < budget ? allowed : budget;
        }
        return send_chunk(c, budget);
    }
    uint64_t now = now_ns();
    if (c->acked >= c->total || c->o->ack_timeout == 0) {
        *done = 1;
        return RS_OK;
    }
    if (*ack_deadline == 0)
        *ack_deadline = now + (uint64_t)(c->o->ack_timeout * SEND_NS_PER_S);
    if (now >= *ack_deadline) {
        *done = *timed_out = 1;
        return RS_OK;
    }
    uint64_t ms = (*ack_deadline - now + 999999) / 1000000;
    return read_answers(c, ms > ACK_POLL_MS ? ACK_POLL_MS : (int)ms);
}

/* The engine sends acknowledgements: closing with some unread would reset
 * the connection, and the engine could lose records still in its socket
 * (with --ack-timeout 0). So: shut our side, read until the engine closes
 * its own (or FINISH_WAIT_MS pass), then close. */
static void finish_connection(int fd)
{
    if (shutdown(fd, SHUT_WR) < 0 && errno != ENOTCONN)
        fprintf(stderr, PROG ": warning: shutdown: %s\n", strerror(errno));
    uint64_t deadline = now_ns() + FINISH_WAIT_MS * 1000000ULL;
    uint8_t scratch[4096];
    for (;;) {
        uint64_t now = now_ns();
        if (now >= deadline)
            break;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int n = poll(&p, 1, (int)((deadline - now) / 1000000ULL) + 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0 || recv(fd, scratch, sizeof scratch, 0) <= 0)
            break;
    }
    if (close(fd) < 0)
        fprintf(stderr, PROG ": warning: close: %s\n", strerror(errno));
}

static void print_summary(const rs_client_t *c)
{
    char rate[64];
    fprintf(stderr, PROG ": sent %" PRIu64 " records (%" PRIu64 " bytes) in %.3f s, %s\n",
            c->s.records, c->s.bytes, (double)c->s.ns / SEND_NS_PER_S,
            cli_rate_text(rate, sizeof rate, c->s.records, c->s.ns));
    fprintf(stderr, PROG ": acknowledged %" PRIu64 " records", c->acked);
    if (c->resent > 0)
        fprintf(stderr, " (%" PRIu64 " resent after reconnects)", c->resent);
    fprintf(stderr, "\n");
}

int rsend_run(const send_opts_t *o, const records_t *r, uint64_t total,
              const struct sockaddr_storage *addr)
{
    rs_client_t c;
    memset(&c, 0, sizeof c);
    c.o = o;
    c.r = r;
    c.addr = addr;
    c.total = total;
    c.stream = stream_name(o);
    c.fd = -1;
    buf_init(&c.in);
    uint64_t start = now_ns(), ack_deadline = 0;
    int done = 0, timed_out = 0;
    rs_status st = connect_session(&c);
    while (st == RS_OK && !done && !send_stop_requested()) {
        st = step(&c, start, &ack_deadline, &done, &timed_out);
        if (st == RS_DROPPED) {
            fprintf(stderr, PROG ": connection lost (%s) after %" PRIu64 " records; reconnecting\n",
                    c.why, c.next);
            drop_connection(&c);
            st = connect_session(&c);
        }
    }
    c.s.ns = now_ns() - start;
    if (c.fd >= 0)
        finish_connection(c.fd);
    buf_free(&c.in);
    if (timed_out)
        fprintf(stderr, PROG ": timed out after %g s waiting for acknowledgements (%" PRIu64
                        " of %" PRIu64 " records acknowledged)\n",
                o->ack_timeout, c.acked, c.total);
    print_summary(&c);
    if (st == RS_REFUSED)
        return 2;
    return st != RS_OK || timed_out ? 1 : 0;
}
