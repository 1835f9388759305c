#include "net/authconn.h"

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
