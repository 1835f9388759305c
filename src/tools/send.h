/* What bettong send's parts share: the options (parsed by send_args), and the
 * connect, write and pacing helpers of send.c that the plain loop, giles'
 * batches (batch.c) and the resumable mode (rsend.c) all use, so every mode
 * sends the same bytes the same way. */
#ifndef BETTONG_TOOLS_SEND_H
#define BETTONG_TOOLS_SEND_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "net/addr.h"
#include "tools/records.h"
#include "tools/source.h"

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
    const char *file;   /* the input as given: NULL for giles' sequences */
    char **paths;       /* the files to read in order: giles' --file takes "F1,F2,..." */
    size_t npaths;
    int binary;         /* --framed / --binary / -y */
    uint64_t msg_size;  /* giles' --msg-size (0: not given) */
    int variable_size;  /* giles' --variable-size */
    uint64_t repeat;    /* 0 = forever */
    int have_repeat;
    uint64_t limit;     /* most records to send (UINT64_MAX: no limit) */
    int have_limit;     /* --count or --messages was given */
    double rate;        /* 0 = as fast as possible */
    /* giles' pacing: batches of batch_size (+ up to vary_by - 1) every interval */
    uint64_t batch_size, interval, vary_by;
    int have_batch_size, have_interval, have_vary_by;
    /* giles' sequences (no --file) */
    int u64;
    uint64_t start_from;
    int have_start_from;
    const char *partition;
    int no_write;         /* giles' --no-write */
    const char *sent_log; /* --sent-log FILE: giles' sent.txt */
    double connect_timeout;
    /* --resumable: the resumable source protocol of docs/resilience.md */
    int resumable;
    const char *stream; /* NULL: the input file's basename, or "stdin" */
    double ack_timeout; /* seconds to wait for the last acknowledgement; 0: none */
    int have_stream, have_ack_timeout;
} send_opts_t;

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
/* Write the span's records and count them in s (on a failure, those that went
 * whole). Returns 0, or -1 with a message in err. */
int send_span(int fd, const span_t *sp, send_stats_t *s, char *err, size_t errlen);
/* How many records may go now to stay on schedule at `rate` per second since
 * `start`; 0 after sleeping until the next one is due. */
uint64_t send_paced_allowance(uint64_t start, double rate, uint64_t sent);
/* Half-close, discard what the peer sent, close. */
void send_finish_connection(int fd);

#endif
