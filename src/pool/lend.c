#include "pool/lend.h"

#include <stdio.h>
#include <stdlib.h>

#include "pool/peer.h"
#include "pool/pool.h"
#include "pool/spawn.h"
#include "util/log.h"

struct lend {
    unsigned max;
    pid_t *pids;     /* max slots; 0: free */
    unsigned *index; /* slot i runs lent-<index[i]> */
    unsigned n;      /* slots in use */
    unsigned next;   /* the next one's name is lent-<next> */
    int warned;      /* the bound was reached (warned once per time it is) */
    uint64_t retry_ms; /* a busy one was not let go: try again from then */
};

/* How often to look again for a temporary worker to let go while the ones
 * too many are all busy (each look walks the peers). */
#define LET_GO_RETRY_MS 100

int lend_init(pool_t *p, unsigned max)
{
    struct lend *l = calloc(1, sizeof *l);
    if (!l)
        return -1;
    l->max = max;
    l->pids = max ? calloc(max, sizeof *l->pids) : NULL;
    l->index = max ? calloc(max, sizeof *l->index) : NULL;
    if (max && (!l->pids || !l->index)) {
        free(l->pids);
        free(l->index);
        free(l);
        return -1;
    }
    p->lend = l;
    return 0;
}

void lend_free(pool_t *p)
{
    if (!p->lend)
        return;
    free(p->lend->pids);
    free(p->lend->index);
    free(p->lend);
    p->lend = NULL;
}

unsigned lend_count(const pool_t *p) { return p->lend ? p->lend->n : 0; }

static void start_one(pool_t *p, struct lend *l)
{
    unsigned slot = 0;
    while (slot < l->max && l->pids[slot])
        slot++;
    if (slot == l->max)
        return;
    char name[32], err[256];
    snprintf(name, sizeof name, "lent-%u", ++l->next);
    spawn_args_t a = {.connect = p->worker_connect,
                      .name = name,
                      .secret = p->secret_len ? p->secret : NULL,
                      .log_level = p->log_level};
    pid_t pid = spawn_worker(&a, err, sizeof err);
    if (pid < 0) {
        log_error("cannot start temporary worker %s: %s", name, err);
        return;
    }
    l->pids[slot] = pid;
    l->index[slot] = l->next;
    l->n++;
    log_info("started temporary worker %s (pid %d): a call waits on its sub-calls", name,
             (int)pid);
}

/* Let go of one temporary worker with nothing to do, if any (the last first). */
static int let_one_go(pool_t *p, struct lend *l)
{
    for (unsigned i = l->max; i-- > 0;) {
        char name[32];
        snprintf(name, sizeof name, "lent-%u", l->index[i]);
        if (l->pids[i] && peer_close_idle_worker(p, (uint32_t)l->pids[i], name)) {
            log_debug("temporary worker pid %d let go", (int)l->pids[i]);
            l->pids[i] = 0; /* it exits once its connection closes; reaped then */
            l->n--;
            return 1;
        }
    }
    return 0;
}

void lend_adjust(pool_t *p)
{
    struct lend *l = p->lend;
    if (!l || p->stopping)
        return;
    uint32_t lending = sched_lending(p->sched);
    unsigned target = lending < l->max ? lending : l->max;
    if (lending > l->max && !l->warned) {
        log_warn("%u calls wait on their own sub-calls, more than --max-lent %u: no more "
                 "temporary workers are started, and calls may wait on each other",
                 (unsigned)lending, l->max);
        l->warned = 1;
    } else if (lending <= l->max) {
        l->warned = 0;
    }
    while (l->n < target) {
        unsigned before = l->n;
        start_one(p, l);
        if (l->n == before)
            break;
    }
    if (l->n > target) {
        uint64_t now = pool_now_ms(p);
        if (now < l->retry_ms)
            return;
        while (l->n > target && let_one_go(p, l))
            ;
        l->retry_ms = l->n > target ? now + LET_GO_RETRY_MS : 0;
    }
}

int lend_reaped(pool_t *p, pid_t pid)
{
    struct lend *l = p->lend;
    if (!l || pid <= 0)
        return 0;
    for (unsigned i = 0; i < l->max; i++) {
        if (l->pids[i] == pid) {
            l->pids[i] = 0;
            l->n--;
            return 1;
        }
    }
    return 0;
}
