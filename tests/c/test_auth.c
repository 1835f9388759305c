/* Unit tests for src/net/auth: the challenge-response handshake. Both sides with
 * the same secret agree; a wrong secret fails on the side that checks first (a
 * client sees a server that cannot prove the secret before it sends anything
 * more); a recorded client PROOF does not pass against a fresh challenge; the
 * HELLO carries neither the secret nor anything that depends on it alone; a
 * HELLO for another service or version, and truncated or padded frames, are
 * refused; the proofs cover the identity the client claims. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "net/auth.h"

static const char SECRET[] = "correct horse battery staple";

/* The body (type + fields) of the only frame in b. */
static const uint8_t *body_of(const buf_t *b, size_t *len)
{
    const uint8_t *p = buf_head(b);
    *len = (size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3];
    assert_int_equal(*len + 4, buf_unread(b));
    return p + 4;
}

typedef struct {
    auth_session_t client, server;
    buf_t hello, challenge, proof;
} run_t;

static void run_init(run_t *r)
{
    memset(r, 0, sizeof *r);
    buf_init(&r->hello);
    buf_init(&r->challenge);
    buf_init(&r->proof);
}

static void run_free(run_t *r)
{
    buf_free(&r->hello);
    buf_free(&r->challenge);
    buf_free(&r->proof);
}

/* HELLO and CHALLENGE; returns the client's verdict on the challenge. */
static int run_to_proof(run_t *r, const char *client_secret, const char *server_secret,
                        const char *identity)
{
    size_t len;
    assert_int_equal(auth_client_hello(&r->client, &r->hello, "pool", identity, strlen(identity)),
                     AUTH_OK);
    const uint8_t *h = body_of(&r->hello, &len);
    assert_true(auth_is_hello(h, len));
    assert_int_equal(auth_server_hello(&r->server, h, len, "pool"), AUTH_OK);
    assert_memory_equal(r->server.identity, identity, strlen(identity));
    assert_int_equal(auth_server_challenge(&r->server, server_secret, strlen(server_secret),
                                           &r->challenge),
                     AUTH_OK);
    const uint8_t *c = body_of(&r->challenge, &len);
    return auth_client_answer(&r->client, c, len, client_secret, strlen(client_secret),
                              &r->proof);
}

/* The same with channel bindings set on each side (NULL: none). */
static int run_bound(run_t *r, const char *secret, const char *cbind, const char *sbind)
{
    size_t len;
    assert_int_equal(auth_client_hello(&r->client, &r->hello, "cluster", "w", 1), AUTH_OK);
    if (cbind)
        assert_int_equal(auth_set_binding(&r->client, cbind, strlen(cbind)), AUTH_OK);
    const uint8_t *h = body_of(&r->hello, &len);
    assert_int_equal(auth_server_hello(&r->server, h, len, "cluster"), AUTH_OK);
    if (sbind)
        assert_int_equal(auth_set_binding(&r->server, sbind, strlen(sbind)), AUTH_OK);
    assert_int_equal(auth_server_challenge(&r->server, secret, strlen(secret), &r->challenge),
                     AUTH_OK);
    const uint8_t *c = body_of(&r->challenge, &len);
    return auth_client_answer(&r->client, c, len, secret, strlen(secret), &r->proof);
}

static int server_verdict(run_t *r, const char *server_secret)
{
    size_t len;
    const uint8_t *p = body_of(&r->proof, &len);
    return auth_server_proof(&r->server, p, len, server_secret, strlen(server_secret));
}

static void test_same_secret_passes(void **state)
{
    run_t r;
    run_init(&r);
    assert_int_equal(run_to_proof(&r, SECRET, SECRET, "worker-1"), AUTH_OK);
    assert_int_equal(server_verdict(&r, SECRET), AUTH_OK);
    run_free(&r);
}

static void test_no_secret_on_both_sides_passes(void **state)
{
    run_t r;
    run_init(&r);
    assert_int_equal(run_to_proof(&r, "", "", "c"), AUTH_OK);
    assert_int_equal(server_verdict(&r, ""), AUTH_OK);
    run_free(&r);
}

static void test_client_refuses_server_without_the_secret(void **state)
{
    run_t r;
    run_init(&r);
    assert_int_equal(run_to_proof(&r, SECRET, "guess", "c"), AUTH_EPROOF);
    assert_int_equal(buf_unread(&r.proof), 0); /* nothing to send back */
    run_free(&r);
    run_init(&r);
    assert_int_equal(run_to_proof(&r, SECRET, "", "c"), AUTH_EPROOF);
    run_free(&r);
}

/* A client without the secret cannot check the server's proof either: it stops
 * there; and a PROOF made with another key is refused by the server. */
static void test_server_refuses_client_without_the_secret(void **state)
{
    run_t r;
    run_init(&r);
    assert_int_equal(run_to_proof(&r, "", SECRET, "c"), AUTH_EPROOF);
    run_free(&r);
    run_init(&r);
    assert_int_equal(run_to_proof(&r, "other", "other", "c"), AUTH_OK);
    assert_int_equal(server_verdict(&r, SECRET), AUTH_EPROOF);
    assert_int_equal(server_verdict(&r, ""), AUTH_EPROOF);
    run_free(&r);
}

static void test_recorded_proof_does_not_replay(void **state)
{
    run_t r;
    run_init(&r);
    assert_int_equal(run_to_proof(&r, SECRET, SECRET, "c"), AUTH_OK);
    assert_int_equal(server_verdict(&r, SECRET), AUTH_OK);
    /* The attacker replays the recorded HELLO: the server answers a fresh
     * challenge, and the recorded PROOF does not fit it. */
    size_t len;
    const uint8_t *h = body_of(&r.hello, &len);
    auth_session_t again;
    buf_t chal;
    buf_init(&chal);
    assert_int_equal(auth_server_hello(&again, h, len, "pool"), AUTH_OK);
    assert_int_equal(auth_server_challenge(&again, SECRET, strlen(SECRET), &chal), AUTH_OK);
    assert_memory_not_equal(again.nonce_s, r.server.nonce_s, AUTH_NONCE_LEN);
    const uint8_t *p = body_of(&r.proof, &len);
    assert_int_equal(auth_server_proof(&again, p, len, SECRET, strlen(SECRET)), AUTH_EPROOF);
    buf_free(&chal);
    run_free(&r);
}

static void test_secret_never_on_the_wire(void **state)
{
    run_t r;
    run_init(&r);
    assert_int_equal(run_to_proof(&r, SECRET, SECRET, "c"), AUTH_OK);
    buf_t *frames[] = {&r.hello, &r.challenge, &r.proof};
    for (int i = 0; i < 3; i++)
        assert_null(memmem(buf_head(frames[i]), buf_unread(frames[i]), SECRET, 8));
    run_free(&r);
}

/* Claiming another identity with a proof made for the first one fails. */
static void test_proof_covers_the_identity(void **state)
{
    run_t r;
    run_init(&r);
    assert_int_equal(run_to_proof(&r, SECRET, SECRET, "worker-1"), AUTH_OK);
    r.server.identity[7] = '2';
    assert_int_equal(server_verdict(&r, SECRET), AUTH_EPROOF);
    run_free(&r);
}

/* Equal bindings pass; a different one (a man in the middle with two TLS
 * sessions) or a binding on one side only fails; a binding that is too long
 * is refused. Without bindings the proofs are those of the plain handshake. */
static void test_binding(void **state)
{
    static const char B1[] = "0123456789abcdef0123456789abcdef";
    static const char B2[] = "0123456789abcdef0123456789abcdeX";
    run_t r;
    run_init(&r);
    assert_int_equal(run_bound(&r, SECRET, B1, B1), AUTH_OK);
    assert_int_equal(server_verdict(&r, SECRET), AUTH_OK);
    run_free(&r);
    run_init(&r);
    assert_int_equal(run_bound(&r, SECRET, B1, B2), AUTH_EPROOF);
    run_free(&r);
    run_init(&r);
    assert_int_equal(run_bound(&r, SECRET, B1, NULL), AUTH_EPROOF);
    run_free(&r);
    run_init(&r);
    assert_int_equal(run_bound(&r, "", NULL, B1), AUTH_EPROOF);
    run_free(&r);
    run_init(&r);
    assert_int_equal(run_bound(&r, SECRET, NULL, NULL), AUTH_OK);
    assert_int_equal(server_verdict(&r, SECRET), AUTH_OK);
    run_free(&r);
    char big[AUTH_BINDING_MAX + 1];
    memset(big, 'x', sizeof big);
    assert_int_equal(auth_set_binding(&r.client, big, sizeof big), AUTH_EFORMAT);
}

static void test_bad_hellos(void **state)
{
    auth_session_t c, s;
    buf_t b;
    buf_init(&b);
    assert_int_equal(auth_client_hello(&c, &b, "pool", "x", 1), AUTH_OK);
    size_t len;
    const uint8_t *h = body_of(&b, &len);
    assert_int_equal(auth_server_hello(&s, h, len, "store"), AUTH_ESERVICE);
    for (size_t n = 0; n < len; n++)
        assert_int_equal(auth_server_hello(&s, h, n, "pool"), AUTH_EFORMAT);
    uint8_t copy[AUTH_MAX_FRAME + 8];
    memcpy(copy, h, len);
    copy[len] = 0;
    assert_int_equal(auth_server_hello(&s, copy, len + 1, "pool"), AUTH_EFORMAT);
    copy[1] = AUTH_VERSION + 1;
    assert_int_equal(auth_server_hello(&s, copy, len, "pool"), AUTH_EVERSION);
    copy[1] = AUTH_VERSION;
    copy[0] = AUTH_PROOF;
    assert_int_equal(auth_server_hello(&s, copy, len, "pool"), AUTH_EFORMAT);
    buf_free(&b);
    char big[AUTH_ID_MAX + 1];
    memset(big, 'a', sizeof big);
    buf_init(&b);
    assert_int_equal(auth_client_hello(&c, &b, "pool", big, sizeof big), AUTH_EFORMAT);
    assert_int_equal(auth_client_hello(&c, &b, "pool", big, AUTH_ID_MAX), AUTH_OK);
    assert_true(buf_unread(&b) <= 4 + AUTH_MAX_FRAME);
    buf_free(&b);
}

static void test_bad_challenges_and_proofs(void **state)
{
    run_t r;
    run_init(&r);
    assert_int_equal(run_to_proof(&r, SECRET, SECRET, "c"), AUTH_OK);
    size_t len;
    const uint8_t *c = body_of(&r.challenge, &len);
    buf_t out;
    buf_init(&out);
    for (size_t n = 0; n < len; n++)
        assert_int_equal(auth_client_answer(&r.client, c, n, SECRET, strlen(SECRET), &out),
                         AUTH_EFORMAT);
    const uint8_t refused[] = {3, 0, 2, 'n', 'o'};
    assert_int_equal(auth_client_answer(&r.client, refused, sizeof refused, SECRET,
                                        strlen(SECRET), &out),
                     AUTH_EFORMAT);
    assert_int_equal(buf_unread(&out), 0);
    const uint8_t *p = body_of(&r.proof, &len);
    for (size_t n = 0; n < len; n++)
        assert_int_equal(auth_server_proof(&r.server, p, n, SECRET, strlen(SECRET)),
                         AUTH_EFORMAT);
    buf_free(&out);
    run_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_same_secret_passes),
        cmocka_unit_test(test_no_secret_on_both_sides_passes),
        cmocka_unit_test(test_client_refuses_server_without_the_secret),
        cmocka_unit_test(test_server_refuses_client_without_the_secret),
        cmocka_unit_test(test_recorded_proof_does_not_replay),
        cmocka_unit_test(test_secret_never_on_the_wire),
        cmocka_unit_test(test_proof_covers_the_identity),
        cmocka_unit_test(test_binding),
        cmocka_unit_test(test_bad_hellos),
        cmocka_unit_test(test_bad_challenges_and_proofs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
