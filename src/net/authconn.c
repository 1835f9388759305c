#include "net/authconn.h"

#include <string.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

int authconn_frame(authconn_t *a, inconn_t *c, const char *service, const void *secret,
                   size_t secret_len, const uint8_t *body, size_t len, const char **why)
{
    if (!a->challenged) {
        int rc = auth_server_hello(&a->s, body, len, service);
        if (rc == AUTH_EVERSION || rc == AUTH_ESERVICE) {
            *why = rc == AUTH_EVERSION ? "unsupported handshake version (another Bettong release?)"
                                       : "a handshake for another service: wrong port?";
            return AUTHCONN_REFUSE;
        }
        if (rc != AUTH_OK) {
            *why = "the first message is not a Bettong handshake HELLO";
            return AUTHCONN_CLOSE;
        }
        /* On TLS the proofs cover the session (auth.h: a relay that terminates
         * TLS on both sides has two sessions, and its proofs fail). */
        uint8_t binding[TLS_BINDING_LEN];
        auth_set_binding(&a->s, binding, inconn_binding(c, binding));
        if (auth_server_challenge(&a->s, secret, secret_len, inconn_out(c)) != AUTH_OK) {
            *why = "cannot answer the handshake: no random bytes or out of memory";
            return AUTHCONN_CLOSE;
        }
        a->challenged = 1;
        inconn_flush(c);
        return AUTHCONN_MORE;
    }
    int rc = auth_server_proof(&a->s, body, len, secret, secret_len);
    if (rc == AUTH_EPROOF) {
        *why = "authentication failed: the client's proof does not match this service's "
               "secret";
        return AUTHCONN_REFUSE;
    }
    if (rc != AUTH_OK) {
        *why = "malformed handshake PROOF";
        return AUTHCONN_CLOSE;
    }
    return AUTHCONN_DONE;
}

int authconn_frame_keyed(authconn_t *a, inconn_t *c, const char *service, authconn_key_fn key_of,
                         void *ctx, const uint8_t *body, size_t len, const char **why)
{
    if (!a->challenged) {
        /* The identity is known only once the HELLO is read: read it, pick the
         * key, then answer it as authconn_frame does (auth_server_hello is
         * idempotent: it starts the session afresh). */
        auth_session_t peek;
        memset(&peek, 0, sizeof peek);
        if (auth_server_hello(&peek, body, len, service) == AUTH_OK) {
            a->key_len = 0;
            if (key_of(ctx, peek.identity, peek.identity_len, a->key, &a->key_len) < 0 ||
                a->key_len > AUTHCONN_KEY_MAX) {
                /* no key can match: a random one fails the proof */
                a->key_len = AUTHCONN_KEY_MAX;
                RAND_bytes(a->key, AUTHCONN_KEY_MAX);
            }
        }
        auth_session_clear(&peek);
    }
    int rc = authconn_frame(a, c, service, a->key, a->key_len, body, len, why);
    if (rc != AUTHCONN_MORE) {
        OPENSSL_cleanse(a->key, sizeof a->key);
        a->key_len = 0;
    }
    return rc;
}
