#include "tools/sentlog.h"

#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <time.h>

int sentlog_open(sentlog_t *l, const char *path, size_t header, char *err, size_t errlen)
{
    memset(l, 0, sizeof *l);
    l->header = header;
    if (!path)
        return 0;
    l->f = fopen(path, "wb");
    if (!l->f) {
        snprintf(err, errlen, "cannot open '%s': %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

/* giles logs WallClock.nanoseconds(): real time, not a monotonic clock. */
uint64_t sentlog_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

int sentlog_span(sentlog_t *l, const span_t *sp, uint64_t at)
{
    if (!l->f || l->failed)
        return l->failed ? -1 : 0;
    const records_t *r = sp->r;
    for (size_t i = sp->from; i < sp->to; i++) {
        size_t len = r->off[i + 1] - r->off[i];
        size_t skip = len < l->header ? len : l->header;
        if (fprintf(l->f, "%" PRIu64 ", ", at) < 0 ||
            fwrite(r->data + r->off[i] + skip, 1, len - skip, l->f) != len - skip ||
            fputc('\n', l->f) == EOF) {
            l->failed = 1;
            return -1;
        }
    }
    return 0;
}

int sentlog_close(sentlog_t *l)
{
    int rc = l->failed ? -1 : 0;
    if (l->f && fclose(l->f) != 0)
        rc = -1;
    l->f = NULL;
    return rc;
}
