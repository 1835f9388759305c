#include "cluster/cproto.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "net/addr.h"
#include "util/log.h"

const char *cl_state_name(int state)
{
    switch (state) {
    case CL_JOINING: return "joining";
    case CL_ACTIVE: return "active";
    case CL_LEAVING: return "leaving";
    case CL_LEFT: return "left";
    case CL_LOST_STATE: return "LOST";
    default: return "?";
    }
}

void cl_frame_spec(frame_spec_t *spec)
{
    *spec = (frame_spec_t){.header_len = 4, .int_size = 4, .big_endian = 1,
                           .max_payload = CL_MAX_FRAME};
}

void cl_put_identity(buf_t *b, int channel, unsigned index, const char *name)
{
    size_t n = strlen(name);
    uint8_t head[5] = {(uint8_t)channel, (uint8_t)(index >> 8), (uint8_t)index,
                       (uint8_t)(n >> 8), (uint8_t)n};
    buf_append(b, head, sizeof head);
    buf_append(b, name, n);
}

int cl_get_identity(const uint8_t *p, size_t len, cl_hello_t *out)
{
    wire_rd_t r;
    wire_rd_init(&r, p, len);
    out->channel = wire_u8(&r);
    out->index = wire_u16(&r);
    size_t n;
    const uint8_t *name = wire_str16(&r, &n);
    if (r.err || r.p != r.end || n == 0 || n >= sizeof out->name ||
        out->channel < CL_CH_CONTROL || out->channel > CL_CH_ADMIN ||
        memchr(name, '\0', n))
        return -1;
    memcpy(out->name, name, n);
    out->name[n] = '\0';
    return 0;
}

void cl_put_empty(buf_t *b, uint8_t type)
{
    wire_wr_t w;
    wire_begin(&w, b, type, CL_MAX_FRAME);
    wire_end(&w);
}

void cl_put_u32(buf_t *b, uint8_t type, uint32_t v)
{
    wire_wr_t w;
    wire_begin(&w, b, type, CL_MAX_FRAME);
    wire_put_u32(&w, v);
    wire_end(&w);
}

void cl_str16(wire_rd_t *r, char *out, size_t cap)
{
    size_t n;
    const uint8_t *p = wire_str16(r, &n);
    if (!p)
        n = 0;
    if (n >= cap)
        n = cap - 1;
    memcpy(out, p ? (const char *)p : "", n);
    out[n] = '\0';
}

void cl_refuse(inconn_t *c, const char *fmt, ...)
{
    char why[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    log_warn("%s: refusing connection from %s: %s", c->listener->name, c->peer, why);
    wire_wr_t w;
    wire_begin(&w, inconn_out(c), CL_REFUSED, AUTH_MAX_FRAME);
    wire_put_str16(&w, why, strlen(why));
    wire_end(&w);
    inconn_close_after_flush(c, NULL);
}

void cl_welcome(inconn_t *c, uint64_t max)
{
    /* Accepted: the connection no longer gives way at the listener's cap. */
    inconn_authenticated(c);
    cl_put_empty(inconn_out(c), CL_WELCOME);
    inconn_flush(c);
    inconn_set_max_payload(c, max);
}

const char *cl_refused_why(const uint8_t *body, size_t len, char *why, size_t cap)
{
    wire_rd_t r;
    wire_rd_init(&r, body, len);
    if (wire_u8(&r) != CL_REFUSED)
        return NULL;
    cl_str16(&r, why, cap);
    return why;
}

int cl_accept_frame(authconn_t *a, const cl_secret_t *s, inconn_t *c, const uint8_t *body,
                    size_t len, cl_hello_t *out)
{
    if (!a->challenged && s->len == 0 && !c->peer_loopback) {
        cl_refuse(c, "no cluster secret is configured, so only loopback peers are accepted");
        return CL_ACC_REFUSED;
    }
    const char *why = NULL;
    int rc = authconn_frame(a, c, CL_SERVICE, s->secret, s->len, body, len, &why);
    if (rc == AUTHCONN_MORE)
        return CL_ACC_MORE;
    if (rc == AUTHCONN_CLOSE) {
        log_warn("%s: refusing connection from %s: %s", c->listener->name, c->peer, why);
        return CL_ACC_CLOSE;
    }
    if (rc == AUTHCONN_REFUSE) {
        cl_refuse(c, "%s%s", why, a->challenged ? " (wrong cluster secret)" : "");
        return CL_ACC_REFUSED;
    }
    if (cl_get_identity(a->s.identity, a->s.identity_len, out) < 0) {
        cl_refuse(c, "malformed identity in the handshake");
        return CL_ACC_REFUSED;
    }
    auth_session_clear(&a->s);
    return CL_ACC_DONE;
}

int cl_listen_address(const char *addr, const cl_secret_t *s, const char *what,
                      struct sockaddr_storage *sa, char *err, size_t errlen)
{
    if (hostport_lookup(addr, sa, err, errlen) < 0)
        return -1;
    if (s->len == 0 && !sockaddr_is_loopback((struct sockaddr *)sa)) {
        snprintf(err, errlen, "%s %s is not a loopback address: a cluster across machines "
                 "needs a secret (--cluster-secret or BETTONG_CLUSTER_SECRET)", what, addr);
        return -1;
    }
    return 0;
}
