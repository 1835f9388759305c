#include "store/omap.h"

#include <string.h>

#include "util/hash.h"

#define OMAP_SEED 0x0b1ec7

void omap_init(omap_t *m)
{
    idmap_init(&m->m);
    m->len = 0;
}

void omap_free(omap_t *m)
{
    idmap_free(&m->m);
    m->len = 0;
}

void onode_set(onode_t *n, const char *id, size_t len)
{
    if (len > SDB_ID_MAX)
        len = SDB_ID_MAX;
    memcpy(n->id, id, len);
    n->id[len] = '\0';
    n->len = (uint8_t)len;
    n->hash = hash_bytes(id, len, OMAP_SEED);
    n->chain = NULL;
}

onode_t *omap_get(const omap_t *m, const char *id, size_t len)
{
    if (len == 0 || len > SDB_ID_MAX)
        return NULL;
    onode_t *n = idmap_get(&m->m, hash_bytes(id, len, OMAP_SEED));
    while (n && (n->len != len || memcmp(n->id, id, len) != 0))
        n = n->chain;
    return n;
}

int omap_add(omap_t *m, onode_t *n)
{
    onode_t *head = idmap_get(&m->m, n->hash);
    n->chain = head;
    if (!head && idmap_put(&m->m, n->hash, n) < 0)
        return -1;
    if (head && idmap_put(&m->m, n->hash, n) < 0)
        return -1;
    m->len++;
    return 0;
}

void omap_del(omap_t *m, onode_t *n)
{
    onode_t *head = idmap_get(&m->m, n->hash);
    if (head == n) {
        if (n->chain)
            idmap_put(&m->m, n->hash, n->chain); /* replacing never allocates */
        else
            idmap_del(&m->m, n->hash);
    } else {
        while (head && head->chain != n)
            head = head->chain;
        if (!head)
            return;
        head->chain = n->chain;
    }
    n->chain = NULL;
    m->len--;
}
