#include "cluster/cproto.h"

#include <stdio.h>
#include <string.h>

#include "net/addr.h"
#include "util/ctcmp.h"
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

void cl_put_hello(buf_t *b, const cl_secret_t *s, int channel, unsigned index, const char *name)
{
    wire_wr_t w;
    wire_begin(&w, b, CL_HELLO, CL_MAX_HELLO);
    wire_put_str16(&w, s->secret, s->len);
    wire_put_u8(&w, (uint8_t)channel);
    wire_put_u16(&w, (uint16_t)index);
    wire_put_str16(&w, name, strlen(name));
    wire_end(&w);
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

int cl_check_hello(const cl_secret_t *s, inconn_t *c, const uint8_t *body, size_t len,
                   cl_hello_t *out)
{
    const char *name = c->listener->name;
    wire_rd_t r;
    wire_rd_init(&r, body, len);
    if (wire_u8(&r) != CL_HELLO) {
        log_warn("%s: refusing connection from %s: it did not start with a cluster HELLO",
                 name, c->peer);
        return -1;
    }
    size_t slen;
    const uint8_t *secret = wire_str16(&r, &slen);
    out->channel = wire_u8(&r);
    out->index = wire_u16(&r);
    cl_str16(&r, out->name, sizeof out->name);
    if (r.err || out->channel < CL_CH_CONTROL || out->channel > CL_CH_ADMIN) {
        log_warn("%s: refusing connection from %s: malformed HELLO", name, c->peer);
        return -1;
    }
    if (s->len == 0) {
        if (!c->peer_loopback) {
            log_warn("%s: refusing connection from %s: no cluster secret is configured, so "
                     "only loopback peers are accepted", name, c->peer);
            return -1;
        }
    } else if (!ct_equal(s->secret, s->len, secret, slen)) {
        log_warn("%s: refusing connection from %s ('%s'): wrong cluster secret", name, c->peer,
                 out->name);
        return -1;
    }
    return 0;
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
