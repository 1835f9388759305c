#include "util/idmap.h"

#include <stdlib.h>
#include <string.h>

#include "util/hash.h"

#define MIN_CAP 16

void idmap_init(idmap_t *m) { memset(m, 0, sizeof *m); }

void idmap_free(idmap_t *m)
{
    free(m->slots);
    idmap_init(m);
}

/* Ids are mostly sequential (a client numbers its calls 1, 2, 3 ...): runs of
 * 64 consecutive ids go to consecutive slots, so a batch of calls touches few
 * cache lines, while the runs themselves are placed by a hash so that ids with
 * a stride cannot pile up in one cluster. */
static size_t slot_of(uint64_t key, size_t cap)
{
    return (size_t)(hash_u64(key >> 6) + (key & 63)) & (cap - 1);
}

void *idmap_get(const idmap_t *m, uint64_t key)
{
    if (m->cap == 0)
        return NULL;
    for (size_t i = slot_of(key, m->cap);; i = (i + 1) & (m->cap - 1)) {
        idmap_slot_t *s = &m->slots[i];
        if (!s->val)
            return NULL;
        if (s->key == key)
            return s->val;
    }
}

static void insert_fresh(idmap_slot_t *slots, size_t cap, uint64_t key, void *val)
{
    size_t i = slot_of(key, cap);
    while (slots[i].val)
        i = (i + 1) & (cap - 1);
    slots[i].key = key;
    slots[i].val = val;
}

static int grow(idmap_t *m)
{
    size_t cap = m->cap ? m->cap * 2 : MIN_CAP;
    idmap_slot_t *slots = calloc(cap, sizeof *slots);
    if (!slots)
        return -1;
    for (size_t i = 0; i < m->cap; i++)
        if (m->slots[i].val)
            insert_fresh(slots, cap, m->slots[i].key, m->slots[i].val);
    free(m->slots);
    m->slots = slots;
    m->cap = cap;
    return 0;
}

static int put(idmap_t *m, uint64_t key, void *val, int replace)
{
    if (!val)
        return -1;
    if (m->cap) {
        for (size_t i = slot_of(key, m->cap);; i = (i + 1) & (m->cap - 1)) {
            idmap_slot_t *s = &m->slots[i];
            if (!s->val)
                break;
            if (s->key == key) {
                if (!replace)
                    return IDMAP_EXISTS;
                s->val = val;
                return 0;
            }
        }
    }
    /* Keep the load at or under 1/2: probes stay short. */
    if ((m->len + 1) * 2 > m->cap && grow(m) < 0)
        return -1;
    insert_fresh(m->slots, m->cap, key, val);
    m->len++;
    return 0;
}

int idmap_put(idmap_t *m, uint64_t key, void *val) { return put(m, key, val, 1); }

int idmap_add(idmap_t *m, uint64_t key, void *val) { return put(m, key, val, 0); }

void *idmap_del(idmap_t *m, uint64_t key)
{
    if (m->cap == 0)
        return NULL;
    size_t mask = m->cap - 1;
    size_t i = slot_of(key, m->cap);
    while (m->slots[i].val && m->slots[i].key != key)
        i = (i + 1) & mask;
    if (!m->slots[i].val)
        return NULL;
    void *val = m->slots[i].val;
    /* Shift later members of the probe run back so lookups never stop early. */
    size_t hole = i;
    for (size_t j = (i + 1) & mask; m->slots[j].val; j = (j + 1) & mask) {
        size_t home = slot_of(m->slots[j].key, m->cap);
        /* j may move into the hole only if its home is not in (hole, j]. */
        int home_in_between = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
        if (!home_in_between) {
            m->slots[hole] = m->slots[j];
            hole = j;
        }
    }
    m->slots[hole].val = NULL;
    m->slots[hole].key = 0;
    m->len--;
    return val;
}

void *idmap_next(const idmap_t *m, size_t *pos, uint64_t *key)
{
    for (; *pos < m->cap; (*pos)++) {
        idmap_slot_t *s = &m->slots[*pos];
        if (s->val) {
            (*pos)++;
            if (key)
                *key = s->key;
            return s->val;
        }
    }
    return NULL;
}
