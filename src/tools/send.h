/* What bettong send's plain mode (send.c) shares with its resumable mode
 * (rsend.c): the options, the input framed in memory, and the connect, write and
 * pacing helpers, so both modes send the same bytes the same way. */
#ifndef BETTONG_TOOLS_SEND_H
#define BETTONG_TOOLS_SEND_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "net/addr.h"

#define SEND_PROG "bettong send"
/* Big enough that the per-syscall cost vanishes for records of a few bytes. */
#define SEND_CHUNK ((size_t)64 * 1024)
#define SEND_NS_PER_S 1e9
/* A connect attempt may wait this long even when the deadline is closer, so
 * that --connect-timeout 0 still means one real attempt. */
#define SEND_MIN_ATTEMPT_MS 100

typedef struct {
    hostport_t to;
    int have_to;
    const char *file;
    int framed;
    uint64_t repeat; /* 0 = forever */
    uint64_t count;  /* 0 = no limit */
    double rate;     /* 0 = as fast as possible */
    double connect_timeout;
    /* --resumable: the resumable source protocol of docs/resilience.md */
    int resumable;
    const char *stream; /* NULL: the input file's basename, or "stdin" */
    double ack_timeout; /* seconds to wait for the last acknowledgement; 0: none */
    int have_stream, have_ack_timeout;
} send_opts_t;

/* Records framed back to back: record i is data[off[i] .. off[i+1]). */
typedef struct {
    uint8_t *data;
    size_t len;
    size_t *off;
    size_t n;
} records_t;

typedef struct {
    uint64_t records;
    uint64_t bytes;
    uint64_t ns;
} send_stats_t;

/* SIGINT or SIGTERM arrived. */
int send_stop_requested(void);
void send_sleep_until_ns(uint64_t t);
/* Connect once, waiting at most wait_ms. Returns a blocking fd or -1 with errno set. */
int send_try_connect(const struct sockaddr_storage *addr, int wait_ms);
/* Write everything unless the connection fails; *written says how far it got. */
int send_write_all(int fd, const uint8_t *p, size_t n, size_t *written);
/* The largest j in (pos, hi] with off[j] - off[pos] <= limit, but at least pos + 1. */
size_t send_last_record_within(const records_t *r, size_t pos, size_t hi, size_t limit);
/* How many records may go now to stay on schedule at `rate` per second since
 * `start`; 0 after sleeping until the next one is due. */
uint64_t send_paced_allowance(uint64_t start, double rate, uint64_t sent);
/* Half-close, discard what the peer sent, close. */
void send_finish_connection(int fd);

#endif
