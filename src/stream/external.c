#include "stream/external.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/addr.h"
#include "net/authconn.h"
#include "net/inconn.h"
#include "net/wire.h"
#include "util/log.h"

struct external {
    external_config_t cfg;
    frame_spec_t spec;
    listener_t l;
    int listening;
};

/* Per connection. */
typedef struct {
    authconn_t auth;
    int in_handshake; /* a HELLO came: the frames are the handshake's until it ends */
    int trusted;      /* on loopback, or it proved the secret */
    int proven;       /* it proved the secret */
} ext_conn_t;

static uint16_t be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void conn_opened(void *owner, inconn_t *ic)
{
    ext_conn_t *ec = calloc(1, sizeof *ec);
    if (!ec) {
        inconn_close(ic, "out of memory");
        return;
    }
    ec->trusted = ic->peer_loopback;
    if (ec->trusted)
        inconn_authenticated(ic); /* no handshake deadline for it */
    ic->user = ec;
    inconn_set_max_payload(ic, ec->trusted ? EXT_MAX_FRAME : AUTH_MAX_FRAME);
}

static void conn_closed(void *owner, inconn_t *ic)
{
    ext_conn_t *ec = ic->user;
    if (ec)
        auth_session_clear(&ec->auth.s);
    free(ec);
    ic->user = NULL;
}

static void refuse(inconn_t *ic, const char *why)
{
    log_warn("%s: refusing connection from %s: %s", ic->listener->name, ic->peer, why);
    wire_wr_t w;
    wire_begin(&w, inconn_out(ic), EXT_REFUSED, AUTH_MAX_FRAME);
    wire_put_str16(&w, why, strlen(why));
    wire_end(&w);
    inconn_close_after_flush(ic, NULL);
}

/* A frame of the handshake. Returns what the frame callback returns. */
static int handshake_frame(external_t *x, inconn_t *ic, ext_conn_t *ec, const uint8_t *body,
                           size_t len)
{
    const char *why = NULL;
    int rc = authconn_frame(&ec->auth, ic, EXT_SERVICE, x->cfg.secret, x->cfg.secret_len, body,
                            len, &why);
    if (rc == AUTHCONN_MORE)
        return 0;
    if (rc == AUTHCONN_CLOSE) {
        log_warn("%s: refusing connection from %s: %s", ic->listener->name, ic->peer, why);
        return -1;
    }
    if (rc == AUTHCONN_REFUSE) {
        char text[300];
        snprintf(text, sizeof text, "%s%s", why, ec->auth.challenged ? " (wrong secret)" : "");
        refuse(ic, text);
        return 0;
    }
    auth_session_clear(&ec->auth.s);
    ec->in_handshake = 0;
    ec->trusted = ec->proven = 1;
    inconn_authenticated(ic);
    wire_wr_t w;
    wire_begin(&w, inconn_out(ic), EXT_WELCOME, AUTH_MAX_FRAME);
    wire_end(&w);
    inconn_flush(ic);
    inconn_set_max_payload(ic, EXT_MAX_FRAME);
    return 0;
}

int external_decode(const uint8_t *body, size_t len, int *version, unsigned *id,
                    const uint8_t **payload, size_t *n)
{
    /* 0.6: ids are below 256, so the first byte is 0; 0.4: a type tag of 1,
     * and its string's own length must match the frame's. */
    if (len >= 2 && body[0] == 0x00) {
        *version = 6;
        *id = be16(body);
        *payload = body + 2;
        *n = len - 2;
        return 0;
    }
    if (len >= 7 && body[0] == 0x01 && be32(body + 3) == len - 7) {
        *version = 4;
        *id = be16(body + 1);
        *payload = body + 7;
        *n = len - 7;
        return 0;
    }
    return -1;
}

static int message_frame(external_t *x, inconn_t *ic, const uint8_t *body, size_t len)
{
    int version;
    unsigned id;
    const uint8_t *payload;
    size_t n;
    if (external_decode(body, len, &version, &id, &payload, &n) < 0) {
        log_warn("%s: a frame from %s is not a Wallaroo external message; closing",
                 ic->listener->name, ic->peer);
        return -1;
    }
    /* The payload goes into a log line: control characters become '?'. */
    char text[512];
    size_t k = n < sizeof text ? n : sizeof text - 1;
    for (size_t i = 0; i < k; i++)
        text[i] = payload[i] < 0x20 || payload[i] == 0x7f ? '?' : (char)payload[i];
    text[k] = '\0';
    int v6 = version == 6;
    if (id == (v6 ? EXT06_CLEAN_SHUTDOWN : EXT04_CLEAN_SHUTDOWN)) {
        log_info("%s: external clean shutdown received from %s%s%s", ic->listener->name,
                 ic->peer, text[0] ? ": " : "", text);
        /* Closed once written: the sender knows the message was taken. */
        inconn_close_after_flush(ic, NULL);
        x->cfg.shutdown(x->cfg.ctx, text);
        return 1;
    }
    if (id == (v6 ? EXT06_PRINT : EXT04_PRINT)) {
        log_info("%s: external print: %s", ic->listener->name, text);
        return 0;
    }
    log_warn("%s: Wallaroo external message %u (version %s) from %s is not supported here "
             "(only clean shutdown and print are); closing", ic->listener->name, id,
             v6 ? "0.6" : "0.4", ic->peer);
    return -1;
}

static int conn_frame(void *owner, inconn_t *ic, const uint8_t *frame, size_t frame_len,
                      const uint8_t *payload, size_t payload_len)
{
    external_t *x = owner;
    ext_conn_t *ec = ic->user;
    if (!ec)
        return -1;
    if (ec->in_handshake || (payload_len > 0 && payload[0] == AUTH_HELLO && !ec->proven)) {
        ec->in_handshake = 1;
        return handshake_frame(x, ic, ec, payload, payload_len);
    }
    if (!ec->trusted) {
        refuse(ic, "a peer beyond loopback must prove the cluster secret first");
        return 0;
    }
    return message_frame(x, ic, payload, payload_len);
}

static const inconn_handler_t handler = {
    .opened = conn_opened,
    .frame = conn_frame,
    .closed = conn_closed,
};

/* Where to listen: loopback for a bare port; beyond loopback only with a
 * secret (a peer there must prove it). */
static int resolve(const char *text, size_t secret_len, struct sockaddr_storage *sa, char *err,
                   size_t errlen)
{
    char tmp[300], why[300];
    const char *spec = text;
    if (*text && strspn(text, "0123456789") == strlen(text)) {
        snprintf(tmp, sizeof tmp, "127.0.0.1:%s", text);
        spec = tmp;
    }
    if (hostport_lookup(spec, sa, why, sizeof why) < 0) {
        snprintf(err, errlen, "--external %s: %s", text, why);
        return -1;
    }
    if (!sockaddr_is_loopback((struct sockaddr *)sa) && secret_len == 0) {
        snprintf(err, errlen, "--external %s is not a loopback address: the external channel "
                 "stops the cluster, so beyond loopback it needs the cluster secret "
                 "(--cluster-secret-file or BETTONG_CLUSTER_SECRET)", text);
        return -1;
    }
    return 0;
}

int external_start(external_t **out, uv_loop_t *loop, const external_config_t *cfg, char *err,
                   size_t errlen)
{
    external_t *x = calloc(1, sizeof *x);
    *out = x;
    if (!x) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    x->cfg = *cfg;
    x->spec = (frame_spec_t){.header_len = 4, .int_size = 4, .big_endian = 1,
                             .max_payload = EXT_MAX_FRAME};
    struct sockaddr_storage sa;
    if (resolve(cfg->addr, cfg->secret_len, &sa, err, errlen) < 0)
        return -1;
    if (listener_start(&x->l, loop, (struct sockaddr *)&sa, &x->spec, &handler, x,
                       "external channel", err, errlen) < 0)
        return -1;
    x->listening = 1;
    /* A peer beyond loopback that does not prove the secret in time is closed,
     * as on every other port that runs commands. */
    listener_require_auth(&x->l, EXT_HANDSHAKE_MS);
    log_info("external channel listening on %s", x->l.addr);
    return 0;
}

const char *external_address(const external_t *x) { return x->l.addr; }

static void on_closed(listener_t *l) { (void)l; }

void external_close(external_t *x)
{
    if (x && x->listening) {
        x->listening = 0;
        listener_close(&x->l, on_closed);
    }
}

void external_free(external_t *x) { free(x); }
