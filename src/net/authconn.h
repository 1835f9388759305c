/* The server side of the handshake of net/auth.h on an inbound connection
 * (net/inconn.h): what the pool, the store and the cluster's listeners run on
 * the frames a connection sends before it is authenticated. */
#ifndef BETTONG_AUTHCONN_H
#define BETTONG_AUTHCONN_H

#include <stddef.h>
#include <stdint.h>

#include "net/auth.h"
#include "net/inconn.h"

/* The longest key authconn_frame_keyed can hold. */
#define AUTHCONN_KEY_MAX 256

typedef struct {
    auth_session_t s; /* after AUTHCONN_DONE: the identity the peer proved */
    int challenged;   /* the CHALLENGE went out; a PROOF is expected next */
    /* authconn_frame_keyed: the key the identity of the HELLO was given */
    uint8_t key[AUTHCONN_KEY_MAX];
    size_t key_len;
} authconn_t;

enum {
    AUTHCONN_MORE = 0,    /* go on reading: the handshake is under way */
    AUTHCONN_DONE = 1,    /* the peer proved the secret for a->s.identity */
    AUTHCONN_REFUSE = -1, /* a well-formed handshake that failed: answer with the
                             service's refusal (*why), then close */
    AUTHCONN_CLOSE = -2,  /* not our handshake (garbage, another protocol, a frame
                             out of order): close without answering (*why) */
};

/* Run one frame body of a connection that is not authenticated yet, with the
 * service's name and secret (empty: none). A HELLO is answered with a CHALLENGE
 * (written and flushed on c); a PROOF is checked. *why is set for every result
 * below AUTHCONN_MORE. The frame limit before authentication is AUTH_MAX_FRAME
 * (the caller sets it with inconn_set_max_payload when the connection opens). */
int authconn_frame(authconn_t *a, inconn_t *c, const char *service, const void *secret,
                   size_t secret_len, const uint8_t *body, size_t len, const char **why);

/* The key a peer must prove, chosen from the identity its HELLO claims: fill
 * key (at most AUTHCONN_KEY_MAX bytes) and *key_len, return 0; -1 when that
 * identity can have no key (the handshake is then refused as a failed proof). */
typedef int (*authconn_key_fn)(void *ctx, const uint8_t *identity, size_t identity_len,
                               uint8_t *key, size_t *key_len);

/* authconn_frame with a key per identity (a service that accepts capability
 * tokens as well as its secret: see pool/subcall.h). The key is wiped once the
 * handshake ends. */
int authconn_frame_keyed(authconn_t *a, inconn_t *c, const char *service, authconn_key_fn key_of,
                         void *ctx, const uint8_t *body, size_t len, const char **why);

#endif
