/* latency: end-to-end latency of a word count server at a fixed offered load.
 *
 * It plays both ends: it listens for the server's sink connection (--listen) and
 * connects to the server's source (--to), then sends 4-byte big-endian framed
 * lines at --rate words/s. Every line is "zq<seq> <filler words...>": the marker
 * word zq<seq> is unique, so the word count output holds exactly one line
 * "zq<seq> => 1" for it. The latency of line seq is the time from the write() that
 * carried it to the read() that returned its marker's output line.
 *
 * Lines are paced against a monotonic clock in small bursts. When the sender
 * itself is late by more than --max-catchup-us (it was not scheduled, or write()
 * blocked), the schedule slips instead of sending the backlog in one burst, so
 * the offered load stays smooth; slips are counted and reported, together with
 * the longest write(). Samples from the first --warmup seconds are dropped; the
 * next --duration seconds are measured.
 * After the last line it waits up to --drain seconds for missing markers.
 *
 *   latency --to H:P --listen H:P --rate WORDS_PER_S [--duration S] [--warmup S]
 *           [--words-per-line W] [--drain S] [--connect-timeout S]
 *
 * The first stdout line is "latency: listening on HOST:PORT" (the sink address
 * to give the server); the last is a key=value summary with p50/p99/p999/max in
 * microseconds.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 8
#define RBUF_SIZE (1 << 20)
#define BURST_MAX 4096

static const char *const FILLER[] = {
    "the",    "quick",  "brown",  "fox",    "jumps",  "over",   "lazy",   "dog",
    "and",    "then",   "runs",   "away",   "from",   "hunter", "into",   "forest",
    "where",  "tall",   "trees",  "grow",   "near",   "river",  "banks",  "under",
    "bright", "sky",    "with",   "many",   "birds",  "singing", "songs",  "of",
    "old",    "times",  "long",   "past",   "when",   "people", "lived",  "in",
    "small",  "villages", "made", "bread",  "every",  "morning", "before", "sunrise",
    "water",  "stone",  "field",  "market", "winter", "summer", "letter", "garden",
    "window", "orange", "silver", "paper",  "light",  "kettle", "harbor", "meadow",
};
#define NFILLER (sizeof FILLER / sizeof FILLER[0])

/* shared state */
static _Atomic uint64_t *send_ns;  /* per seq; 0 = not sent yet */
static uint64_t *lat_ns;           /* per seq; 0 = not received */
static uint64_t total_lines;
static uint64_t first_measured;    /* seq of the first measured line */
static atomic_ullong received_markers;
static atomic_ullong received_lines;
static atomic_ullong received_bytes;
static atomic_int stop_receiver;
static atomic_int sink_connected;
static int listen_fd = -1;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void sleep_until_ns(uint64_t t)
{
    struct timespec ts = {.tv_sec = (time_t)(t / 1000000000ull),
                          .tv_nsec = (long)(t % 1000000000ull)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

static void die(const char *msg)
{
    fprintf(stderr, "latency: %s: %s\n", msg, strerror(errno));
    exit(1);
}

static int parse_addr(const char *s, struct sockaddr_in *sa)
{
    char host[256];
    const char *colon = strrchr(s, ':');
    if (!colon || (size_t)(colon - s) >= sizeof host)
        return -1;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = 0;
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)atoi(colon + 1));
    if (host[0] == 0 || strcmp(host, "localhost") == 0)
        strcpy(host, "127.0.0.1");
    if (inet_pton(AF_INET, host, &sa->sin_addr) != 1) {
        struct addrinfo hints = {0}, *res;
        hints.ai_family = AF_INET;
        if (getaddrinfo(host, NULL, &hints, &res) != 0)
            return -1;
        sa->sin_addr = ((struct sockaddr_in *)res->ai_addr)->sin_addr;
        freeaddrinfo(res);
    }
    return 0;
}

/* Handle one complete output line. */
static void on_line(const char *p, size_t n, uint64_t t)
{
    atomic_fetch_add_explicit(&received_lines, 1, memory_order_relaxed);
    if (n < 3 || p[0] != 'z' || p[1] != 'q' || p[2] < '0' || p[2] > '9')
        return;
    uint64_t seq = 0;
    size_t i = 2;
    while (i < n && p[i] >= '0' && p[i] <= '9')
        seq = seq * 10 + (uint64_t)(p[i++] - '0');
    if (i >= n || p[i] != ' ' || seq >= total_lines)
        return;
    uint64_t s = atomic_load_explicit(&send_ns[seq], memory_order_acquire);
    if (s == 0 || lat_ns[seq] != 0)
        return;
    lat_ns[seq] = t > s ? t - s : 1;
    atomic_fetch_add_explicit(&received_markers, 1, memory_order_relaxed);
}

typedef struct {
    int fd;
    char *buf;
    size_t len;
} conn_t;

static void *receiver(void *arg)
{
    (void)arg;
    conn_t conns[MAX_CONNS];
    int nconns = 0;
    for (;;) {
        if (atomic_load(&stop_receiver))
            break;
        struct pollfd pfd[MAX_CONNS + 1];
        pfd[0].fd = listen_fd;
        pfd[0].events = POLLIN;
        for (int i = 0; i < nconns; i++) {
            pfd[i + 1].fd = conns[i].fd;
            pfd[i + 1].events = POLLIN;
        }
        int r = poll(pfd, (nfds_t)(nconns + 1), 50);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            die("poll");
        }
        if (r == 0)
            continue;
        if (pfd[0].revents & POLLIN) {
            int fd = accept(listen_fd, NULL, NULL);
            if (fd >= 0) {
                if (nconns == MAX_CONNS) {
                    close(fd);
                } else {
                    conns[nconns].fd = fd;
                    conns[nconns].buf = malloc(RBUF_SIZE);
                    conns[nconns].len = 0;
                    if (!conns[nconns].buf)
                        die("malloc");
                    nconns++;
                    atomic_store(&sink_connected, 1);
                }
            }
        }
        for (int i = 0; i < nconns; i++) {
            if (!(pfd[i + 1].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            conn_t *c = &conns[i];
            ssize_t n = read(c->fd, c->buf + c->len, RBUF_SIZE - c->len);
            uint64_t t = now_ns();
            if (n <= 0) {
                if (n < 0 && (errno == EINTR || errno == EAGAIN))
                    continue;
                close(c->fd);
                free(c->buf);
                conns[i] = conns[--nconns];
                /* pfd no longer matches the array; poll again */
                break;
            }
            atomic_fetch_add_explicit(&received_bytes, (unsigned long long)n,
                                      memory_order_relaxed);
            c->len += (size_t)n;
            size_t start = 0;
            for (;;) {
                char *nl = memchr(c->buf + start, '\n', c->len - start);
                if (!nl)
                    break;
                size_t end = (size_t)(nl - c->buf);
                on_line(c->buf + start, end - start, t);
                start = end + 1;
            }
            if (start > 0) {
                memmove(c->buf, c->buf + start, c->len - start);
                c->len -= start;
            } else if (c->len == RBUF_SIZE) {
                c->len = 0; /* an absurdly long line: drop it */
            }
        }
    }
    for (int i = 0; i < nconns; i++) {
        close(conns[i].fd);
        free(conns[i].buf);
    }
    return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double quantile_us(const uint64_t *sorted, uint64_t n, double q)
{
    if (n == 0)
        return 0;
    uint64_t idx = (uint64_t)ceil(q * (double)n);
    if (idx > 0)
        idx--;
    if (idx >= n)
        idx = n - 1;
    return (double)sorted[idx] / 1000.0;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: latency --to H:P --listen H:P --rate WORDS_PER_S [--duration S]\n"
            "               [--warmup S] [--words-per-line W] [--drain S]\n"
            "               [--connect-timeout S] [--max-catchup-us US]\n");
    exit(2);
}

static size_t put_u32be(char *p, uint32_t v)
{
    p[0] = (char)(v >> 24);
    p[1] = (char)(v >> 16);
    p[2] = (char)(v >> 8);
    p[3] = (char)v;
    return 4;
}

static void write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            die("write to the source");
        }
        p += w;
        n -= (size_t)w;
    }
}

int main(int argc, char **argv)
{
    const char *to = NULL, *listen_addr = "127.0.0.1:0";
    double rate = 0, duration = 10, warmup = 2, drain = 5, connect_timeout = 30;
    double max_catchup_us = 1000;
    int wpl = 10;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        if (i + 1 >= argc)
            usage();
        const char *v = argv[++i];
        if (!strcmp(o, "--to"))
            to = v;
        else if (!strcmp(o, "--listen"))
            listen_addr = v;
        else if (!strcmp(o, "--rate"))
            rate = atof(v);
        else if (!strcmp(o, "--duration"))
            duration = atof(v);
        else if (!strcmp(o, "--warmup"))
            warmup = atof(v);
        else if (!strcmp(o, "--words-per-line"))
            wpl = atoi(v);
        else if (!strcmp(o, "--drain"))
            drain = atof(v);
        else if (!strcmp(o, "--max-catchup-us"))
            max_catchup_us = atof(v);
        else if (!strcmp(o, "--connect-timeout"))
            connect_timeout = atof(v);
        else
            usage();
    }
    if (!to || rate <= 0 || duration <= 0 || warmup < 0 || wpl < 1 || wpl > 1000)
        usage();

    double lines_per_s = rate / wpl;
    total_lines = (uint64_t)ceil(lines_per_s * (warmup + duration));
    first_measured = (uint64_t)ceil(lines_per_s * warmup);
    if (total_lines == 0 || first_measured >= total_lines) {
        fprintf(stderr, "latency: rate too low for the duration\n");
        return 2;
    }
    send_ns = calloc(total_lines, sizeof *send_ns);
    lat_ns = calloc(total_lines, sizeof *lat_ns);
    if (!send_ns || !lat_ns)
        die("calloc");

    /* sink side: listen */
    struct sockaddr_in la, ta;
    if (parse_addr(listen_addr, &la) < 0 || parse_addr(to, &ta) < 0) {
        fprintf(stderr, "latency: bad address\n");
        return 2;
    }
    listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(listen_fd, (struct sockaddr *)&la, sizeof la) < 0)
        die("bind");
    if (listen(listen_fd, 16) < 0)
        die("listen");
    socklen_t sl = sizeof la;
    getsockname(listen_fd, (struct sockaddr *)&la, &sl);
    char hbuf[64];
    inet_ntop(AF_INET, &la.sin_addr, hbuf, sizeof hbuf);
    printf("latency: listening on %s:%d\n", hbuf, ntohs(la.sin_port));
    fflush(stdout);

    pthread_t rt;
    if (pthread_create(&rt, NULL, receiver, NULL) != 0)
        die("pthread_create");

    /* source side: connect, retrying while the server starts */
    int fd = -1;
    uint64_t deadline = now_ns() + (uint64_t)(connect_timeout * 1e9);
    for (;;) {
        fd = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(fd, (struct sockaddr *)&ta, sizeof ta) == 0)
            break;
        close(fd);
        if (now_ns() > deadline)
            die("connect to the source");
        usleep(20000);
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    /* Give the server a moment to connect its sink (the warm-up covers the rest). */
    for (int i = 0; i < 200 && !atomic_load(&sink_connected); i++)
        usleep(5000);

    /* Pace: line seq is due at start + seq / lines_per_s. */
    char *burst = malloc((size_t)BURST_MAX * (size_t)(16 + 12 * wpl) + 64);
    if (!burst)
        die("malloc");
    uint64_t seq = 0, xs = 88172645463325252ull, max_lag = 0, max_write = 0;
    uint64_t slips = 0, slipped_ns = 0;
    const uint64_t tick_ns = 100000; /* wake at most every 100 us */
    const uint64_t catchup_ns = (uint64_t)(max_catchup_us * 1000.0);
    double ns_per_line = 1e9 / lines_per_s;
    uint64_t start = now_ns();
    const uint64_t send_start = start;
    while (seq < total_lines) {
        uint64_t now = now_ns();
        uint64_t intended = start + (uint64_t)((double)seq * ns_per_line);
        if (now > intended) {
            uint64_t lag = now - intended;
            if (lag > max_lag)
                max_lag = lag;
            if (lag > catchup_ns) { /* slip: line seq is due now */
                start += lag;
                slips++;
                slipped_ns += lag;
            }
        }
        uint64_t due = (uint64_t)((double)(now - start) / ns_per_line) + 1;
        if (due > total_lines)
            due = total_lines;
        if (due <= seq) {
            uint64_t next = start + (uint64_t)((double)seq * ns_per_line);
            if (next < now + tick_ns)
                next = now + tick_ns;
            sleep_until_ns(next);
            continue;
        }
        if (due - seq > BURST_MAX)
            due = seq + BURST_MAX;
        size_t len = 0;
        uint64_t first = seq;
        for (; seq < due; seq++) {
            char *frame = burst + len;
            len += 4;
            int n = sprintf(burst + len, "zq%llu", (unsigned long long)seq);
            len += (size_t)n;
            for (int w = 1; w < wpl; w++) {
                xs ^= xs << 13;
                xs ^= xs >> 7;
                xs ^= xs << 17;
                const char *word = FILLER[xs % NFILLER];
                size_t wl = strlen(word);
                burst[len++] = ' ';
                memcpy(burst + len, word, wl);
                len += wl;
            }
            put_u32be(frame, (uint32_t)(burst + len - frame - 4));
        }
        uint64_t t = now_ns();
        for (uint64_t s = first; s < seq; s++)
            atomic_store_explicit(&send_ns[s], t, memory_order_release);
        write_all(fd, burst, len);
        uint64_t wt = now_ns() - t;
        if (wt > max_write)
            max_write = wt;
    }
    uint64_t send_end = now_ns();
    double send_secs = (double)(send_end - send_start) / 1e9;

    /* wait for the stragglers */
    uint64_t drain_deadline = send_end + (uint64_t)(drain * 1e9);
    while (atomic_load(&received_markers) < total_lines && now_ns() < drain_deadline)
        usleep(10000);
    atomic_store(&stop_receiver, 1);
    pthread_join(rt, NULL);
    close(fd);

    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double tool_cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 +
                      (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
    uint64_t n = 0, lost = 0;
    uint64_t *samples = malloc((total_lines - first_measured) * sizeof *samples);
    if (!samples)
        die("malloc");
    double sum = 0;
    for (uint64_t s = first_measured; s < total_lines; s++) {
        if (lat_ns[s] == 0) {
            lost++;
            continue;
        }
        samples[n++] = lat_ns[s];
        sum += (double)lat_ns[s];
    }
    qsort(samples, n, sizeof *samples, cmp_u64);
    printf("latency: rate=%.0f words_per_line=%d lines=%llu measured=%llu lost=%llu "
           "received_lines=%llu tool_cpu_seconds=%.2f send_seconds=%.3f achieved_words_per_s=%.0f "
           "sender_lag_max_us=%.1f slips=%llu slipped_ms=%.1f write_max_us=%.1f p50_us=%.1f p90_us=%.1f p99_us=%.1f p999_us=%.1f "
           "max_us=%.1f mean_us=%.1f\n",
           rate, wpl, (unsigned long long)total_lines, (unsigned long long)n,
           (unsigned long long)lost, (unsigned long long)atomic_load(&received_lines),
           tool_cpu, send_secs, send_secs > 0 ? (double)total_lines * wpl / send_secs : 0.0,
           (double)max_lag / 1000.0, (unsigned long long)slips, (double)slipped_ns / 1e6,
           (double)max_write / 1000.0, quantile_us(samples, n, 0.50),
           quantile_us(samples, n, 0.90), quantile_us(samples, n, 0.99),
           quantile_us(samples, n, 0.999), n ? (double)samples[n - 1] / 1000.0 : 0.0,
           n ? sum / (double)n / 1000.0 : 0.0);
    fflush(stdout);
    free(samples);
    free(burst);
    free(send_ns);
    free(lat_ns);
    return n == 0 ? 1 : 0;
}
