#include "net/auth.h"

#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "net/wire.h"

/* Each side's proof has its own label, so a server's proof is never a valid
 * client proof of the same transcript (and the reverse). */
static const char LABEL_SERVER[] = "bettong-auth-1 server";
static const char LABEL_CLIENT[] = "bettong-auth-1 client";

const char *auth_strerror(int rc)
{
    switch (rc) {
    case AUTH_OK:
        return "ok";
    case AUTH_EFORMAT:
        return "malformed or unexpected handshake message";
    case AUTH_EVERSION:
        return "unsupported handshake version";
    case AUTH_ESERVICE:
        return "a handshake for another service";
    case AUTH_EPROOF:
        return "the proof of the shared secret is wrong";
    case AUTH_ESYSTEM:
        return "no random bytes or out of memory";
    }
    return "unknown error";
}

/* The transcript both proofs cover: each variable field with its length first,
 * so no two transcripts can run together into the same bytes. */
static int put_transcript(buf_t *t, const char *label, const auth_session_t *s)
{
    wire_wr_t w;
    wire_begin(&w, t, 0, UINT32_MAX);
    wire_put_str16(&w, label, strlen(label));
    wire_put_str16(&w, s->service, strlen(s->service));
    wire_put_u16(&w, (uint16_t)s->identity_len);
    wire_put_bytes(&w, s->identity, s->identity_len);
    wire_put_bytes(&w, s->nonce_c, AUTH_NONCE_LEN);
    wire_put_bytes(&w, s->nonce_s, AUTH_NONCE_LEN);
    /* Only with a binding: every transcript without TLS stays byte for byte
     * what it was (older clients, the pure-Python one in the tests). */
    if (s->binding_len > 0) {
        wire_put_u16(&w, (uint16_t)s->binding_len);
        wire_put_bytes(&w, s->binding, s->binding_len);
    }
    return wire_end(&w);
}

static int make_proof(const auth_session_t *s, const char *label, const void *secret,
                      size_t secret_len, uint8_t mac[AUTH_MAC_LEN])
{
    static const uint8_t empty_key[1];
    buf_t t;
    buf_init(&t);
    int rc = AUTH_ESYSTEM;
    unsigned maclen = 0;
    if (put_transcript(&t, label, s) == 0 &&
        HMAC(EVP_sha256(), secret_len ? secret : empty_key, (int)secret_len, buf_head(&t),
             buf_unread(&t), mac, &maclen) && maclen == AUTH_MAC_LEN)
        rc = AUTH_OK;
    buf_free(&t);
    return rc;
}

static int proof_matches(const auth_session_t *s, const char *label, const void *secret,
                         size_t secret_len, const uint8_t *given)
{
    uint8_t want[AUTH_MAC_LEN];
    int rc = make_proof(s, label, secret, secret_len, want);
    if (rc == AUTH_OK && CRYPTO_memcmp(want, given, AUTH_MAC_LEN) != 0)
        rc = AUTH_EPROOF;
    OPENSSL_cleanse(want, sizeof want);
    return rc;
}

static int random_nonce(uint8_t nonce[AUTH_NONCE_LEN])
{
    return RAND_bytes(nonce, AUTH_NONCE_LEN) == 1 ? AUTH_OK : AUTH_ESYSTEM;
}

int auth_set_binding(auth_session_t *s, const void *binding, size_t len)
{
    if (len > AUTH_BINDING_MAX)
        return AUTH_EFORMAT;
    if (len)
        memcpy(s->binding, binding, len);
    s->binding_len = len;
    return AUTH_OK;
}

/* ------------------------------------------------------------ client */

int auth_client_hello(auth_session_t *s, buf_t *out, const char *service, const void *identity,
                      size_t identity_len)
{
    memset(s, 0, sizeof *s);
    size_t slen = strlen(service);
    if (slen > AUTH_SERVICE_MAX || identity_len > AUTH_ID_MAX)
        return AUTH_EFORMAT;
    memcpy(s->service, service, slen);
    /* An empty identity may come as (NULL, 0), and memcpy from NULL is undefined
     * even for no bytes. */
    if (identity_len)
        memcpy(s->identity, identity, identity_len);
    s->identity_len = identity_len;
    if (random_nonce(s->nonce_c) != AUTH_OK)
        return AUTH_ESYSTEM;
    wire_wr_t w;
    wire_begin(&w, out, AUTH_HELLO, AUTH_MAX_FRAME);
    wire_put_u8(&w, AUTH_VERSION);
    wire_put_str16(&w, service, slen);
    wire_put_u16(&w, (uint16_t)identity_len);
    wire_put_bytes(&w, identity, identity_len);
    wire_put_bytes(&w, s->nonce_c, AUTH_NONCE_LEN);
    return wire_end(&w) == 0 ? AUTH_OK : AUTH_ESYSTEM;
}

int auth_client_answer(auth_session_t *s, const uint8_t *body, size_t len, const void *secret,
                       size_t secret_len, buf_t *out)
{
    wire_rd_t r;
    wire_rd_init(&r, body, len);
    if (wire_u8(&r) != AUTH_CHALLENGE)
        return AUTH_EFORMAT;
    const uint8_t *nonce = wire_bytes(&r, AUTH_NONCE_LEN);
    const uint8_t *mac = wire_bytes(&r, AUTH_MAC_LEN);
    if (r.err || r.p != r.end)
        return AUTH_EFORMAT;
    memcpy(s->nonce_s, nonce, AUTH_NONCE_LEN);
    int rc = proof_matches(s, LABEL_SERVER, secret, secret_len, mac);
    if (rc != AUTH_OK)
        return rc;
    uint8_t proof[AUTH_MAC_LEN];
    if (make_proof(s, LABEL_CLIENT, secret, secret_len, proof) != AUTH_OK)
        return AUTH_ESYSTEM;
    wire_wr_t w;
    wire_begin(&w, out, AUTH_PROOF, AUTH_MAX_FRAME);
    wire_put_bytes(&w, proof, AUTH_MAC_LEN);
    OPENSSL_cleanse(proof, sizeof proof);
    return wire_end(&w) == 0 ? AUTH_OK : AUTH_ESYSTEM;
}

/* ------------------------------------------------------------ server */

int auth_server_hello(auth_session_t *s, const uint8_t *body, size_t len, const char *service)
{
    memset(s, 0, sizeof *s);
    wire_rd_t r;
    wire_rd_init(&r, body, len);
    if (wire_u8(&r) != AUTH_HELLO)
        return AUTH_EFORMAT;
    uint8_t version = wire_u8(&r);
    size_t slen, idlen;
    const uint8_t *svc = wire_str16(&r, &slen);
    idlen = wire_u16(&r);
    const uint8_t *id = wire_bytes(&r, idlen);
    const uint8_t *nonce = wire_bytes(&r, AUTH_NONCE_LEN);
    if (r.err || r.p != r.end || slen > AUTH_SERVICE_MAX || idlen > AUTH_ID_MAX)
        return AUTH_EFORMAT;
    if (version != AUTH_VERSION)
        return AUTH_EVERSION;
    if (slen != strlen(service) || memcmp(svc, service, slen) != 0)
        return AUTH_ESERVICE;
    memcpy(s->service, svc, slen);
    memcpy(s->identity, id, idlen);
    s->identity_len = idlen;
    memcpy(s->nonce_c, nonce, AUTH_NONCE_LEN);
    return AUTH_OK;
}

int auth_server_challenge(auth_session_t *s, const void *secret, size_t secret_len, buf_t *out)
{
    if (random_nonce(s->nonce_s) != AUTH_OK)
        return AUTH_ESYSTEM;
    uint8_t proof[AUTH_MAC_LEN];
    if (make_proof(s, LABEL_SERVER, secret, secret_len, proof) != AUTH_OK)
        return AUTH_ESYSTEM;
    wire_wr_t w;
    wire_begin(&w, out, AUTH_CHALLENGE, AUTH_MAX_FRAME);
    wire_put_bytes(&w, s->nonce_s, AUTH_NONCE_LEN);
    wire_put_bytes(&w, proof, AUTH_MAC_LEN);
    OPENSSL_cleanse(proof, sizeof proof);
    return wire_end(&w) == 0 ? AUTH_OK : AUTH_ESYSTEM;
}

int auth_server_proof(const auth_session_t *s, const uint8_t *body, size_t len,
                      const void *secret, size_t secret_len)
{
    wire_rd_t r;
    wire_rd_init(&r, body, len);
    if (wire_u8(&r) != AUTH_PROOF)
        return AUTH_EFORMAT;
    const uint8_t *mac = wire_bytes(&r, AUTH_MAC_LEN);
    if (r.err || r.p != r.end)
        return AUTH_EFORMAT;
    return proof_matches(s, LABEL_CLIENT, secret, secret_len, mac);
}

void auth_session_clear(auth_session_t *s) { OPENSSL_cleanse(s, sizeof *s); }

int auth_warm(void)
{
    uint8_t b[AUTH_MAC_LEN];
    unsigned int len = sizeof b;
    if (RAND_bytes(b, sizeof b) != 1 || !HMAC(EVP_sha256(), b, sizeof b, b, sizeof b, b, &len))
        return -1;
    OPENSSL_cleanse(b, sizeof b);
    return 0;
}
