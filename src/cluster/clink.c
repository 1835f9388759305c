#include "cluster/clink.h"

#include <stdio.h>
#include <string.h>

#include "util/log.h"

enum { LINK_HELLO = 1, LINK_PROOF = 2, LINK_UP = 3, LINK_FAILED = 4 };

/* The largest frame the acceptor sends during the handshake (a CHALLENGE or a
 * REFUSED with its reason). */
#define LINK_MAX_FRAME AUTH_MAX_FRAME

static void link_fail(cl_link_t *l, const char *fmt, const char *detail)
{
    l->state = LINK_FAILED;
    l->failed = 1;
    snprintf(l->why, sizeof l->why, fmt, detail);
    log_error("%s: %s", l->o.name, l->why);
    auth_session_clear(&l->s);
    buf_clear(&l->in);
    outconn_reset(&l->o, l->why);
}

static void on_connected(outconn_t *o)
{
    cl_link_t *l = cl_link_of(o);
    buf_t out;
    buf_init(&out);
    buf_clear(&l->in);
    l->up = 0;
    l->state = LINK_HELLO;
    if (auth_client_hello(&l->s, &out, CL_SERVICE, l->identity, l->identity_len) != AUTH_OK)
        link_fail(l, "cannot start the handshake%s", " (no random bytes or out of memory)");
    else
        outconn_write_first(o, buf_head(&out), buf_unread(&out));
    buf_free(&out);
}

/* The CHALLENGE: the acceptor's proof must hold before we say anything more. */
static void on_challenge(cl_link_t *l, const uint8_t *body, size_t len)
{
    char why[200];
    if (cl_refused_why(body, len, why, sizeof why)) {
        link_fail(l, "refused: %s", why);
        return;
    }
    buf_t out;
    buf_init(&out);
    /* Over TLS the proofs cover this session (see auth.h): a relay that
     * terminates TLS toward us holds another session and cannot pass. */
    uint8_t binding[TLS_BINDING_LEN];
    auth_set_binding(&l->s, binding, outconn_binding(&l->o, binding));
    int rc = auth_client_answer(&l->s, body, len, l->secret->secret, l->secret->len, &out);
    if (rc == AUTH_OK) {
        l->state = LINK_PROOF;
        outconn_write_first(&l->o, buf_head(&out), buf_unread(&out));
    } else if (rc == AUTH_EPROOF) {
        link_fail(l, "the peer cannot prove the cluster secret (it is not a member of this "
                  "cluster, or the secret here is wrong); nothing more was sent to it%s", "");
    } else {
        link_fail(l, "the peer does not answer with a cluster handshake (%s)",
                  auth_strerror(rc));
    }
    auth_session_clear(&l->s);
    buf_free(&out);
}

static void on_answer(cl_link_t *l, const uint8_t *body, size_t len)
{
    char why[200];
    if (len == 1 && body[0] == CL_WELCOME) {
        l->state = LINK_UP;
        l->up = 1;
        buf_free(&l->in);
        outconn_release(&l->o);
        return;
    }
    if (cl_refused_why(body, len, why, sizeof why))
        link_fail(l, "refused: %s", why);
    else
        link_fail(l, "%s", "the peer broke the handshake (neither WELCOME nor REFUSED)");
}

/* After the WELCOME the acceptor says nothing more on this link, unless it
 * refuses what we said after it (the coordinator: a JOIN under a name another
 * worker took meanwhile). Anything else is dropped unread. */
/* The next whole frame in l->in (*h its length field, *len its body's
 * length): 1, 0 when it is not all there yet, -1 when the length is not one
 * of ours. */
static int next_frame(cl_link_t *l, const uint8_t **h, uint32_t *len)
{
    size_t un = buf_unread(&l->in);
    if (un < 4)
        return 0;
    *h = buf_head(&l->in);
    *len = (uint32_t)(*h)[0] << 24 | (uint32_t)(*h)[1] << 16 | (uint32_t)(*h)[2] << 8 | (*h)[3];
    if (*len == 0 || *len > LINK_MAX_FRAME)
        return -1;
    return un >= 4 + (size_t)*len;
}

static void after_welcome(cl_link_t *l, const uint8_t *p, size_t n)
{
    if (buf_append(&l->in, p, n) < 0) {
        buf_free(&l->in);
        return;
    }
    for (;;) {
        const uint8_t *h;
        uint32_t len;
        int rc = next_frame(l, &h, &len);
        if (rc < 0)
            buf_free(&l->in); /* not framed as ours: nothing here to read */
        if (rc <= 0)
            return;
        char why[200];
        if (cl_refused_why(h + 4, len, why, sizeof why)) {
            link_fail(l, "refused: %s", why);
            return;
        }
        buf_consume(&l->in, 4 + (size_t)len);
    }
}

static void on_data(outconn_t *o, const uint8_t *p, size_t n)
{
    cl_link_t *l = cl_link_of(o);
    if (l->state == LINK_UP) {
        after_welcome(l, p, n);
        return;
    }
    if (l->state != LINK_HELLO && l->state != LINK_PROOF)
        return;
    if (buf_append(&l->in, p, n) < 0) {
        link_fail(l, "%s", "out of memory");
        return;
    }
    while (l->state == LINK_HELLO || l->state == LINK_PROOF) {
        const uint8_t *h;
        uint32_t len;
        int rc = next_frame(l, &h, &len);
        if (rc < 0)
            link_fail(l, "%s", "the peer does not speak the cluster handshake");
        if (rc <= 0)
            return;
        if (l->state == LINK_HELLO)
            on_challenge(l, h + 4, len);
        else
            on_answer(l, h + 4, len);
        if (l->state == LINK_PROOF)
            buf_consume(&l->in, 4 + (size_t)len);
    }
}

void cl_link_init(cl_link_t *l, uv_loop_t *loop, const struct sockaddr *addr, const char *name,
                  void (*on_progress)(outconn_t *o), void *owner, const cl_secret_t *secret,
                  int channel, unsigned index, const char *id_name)
{
    outconn_init(&l->o, loop, addr, name, on_progress, owner);
    l->secret = secret;
    buf_t id;
    buf_init(&id);
    cl_put_identity(&id, channel, index, id_name);
    l->identity_len = buf_unread(&id) < sizeof l->identity ? buf_unread(&id) : 0;
    memcpy(l->identity, buf_head(&id), l->identity_len);
    buf_free(&id);
    buf_init(&l->in);
    l->state = 0;
    l->up = l->failed = l->timed_out = 0;
    l->conn_seen = l->conn_ms = 0;
    l->why[0] = '\0';
    outconn_set_held(&l->o);
    if (secret->tls_client)
        outconn_set_tls(&l->o, secret->tls_client);
    outconn_set_reader(&l->o, on_connected, on_data);
}

int cl_link_check_deadline(cl_link_t *l, unsigned limit_ms)
{
    outconn_t *o = &l->o;
    if (l->up || l->failed || !o->connected)
        return 0;
    uint64_t now = uv_now(o->loop);
    if (o->reconnects != l->conn_seen) {
        l->conn_seen = o->reconnects;
        l->conn_ms = now;
        return 0;
    }
    if (now - l->conn_ms < limit_ms)
        return 0;
    char detail[64];
    snprintf(detail, sizeof detail, "%.1f s", (double)limit_ms / 1000.0);
    l->timed_out = 1;
    link_fail(l, "the peer accepted the connection but did not finish the cluster handshake "
              "within %s (not a cluster member, or it hangs)", detail);
    return 1;
}

void cl_link_free(cl_link_t *l)
{
    buf_free(&l->in);
    auth_session_clear(&l->s);
}
