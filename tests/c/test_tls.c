/* Unit tests for src/net/tls: two engines, a client and a server, talk through
 * buffers only. The handshake completes, data goes both ways in order, both
 * ends export the same binding and another session another one; garbage, a
 * flipped ciphertext bit and a bad key file fail with a reason. The
 * certificate and key are made here (a throwaway self-signed pair written into
 * a temporary directory): no private key is committed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "net/tls.h"

static char dir[64], cert_path[128], key_path[128], other_key_path[128];

static void write_key(EVP_PKEY *k, const char *path)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL), 1);
    fclose(f);
}

static int make_cert(void **state)
{
    snprintf(dir, sizeof dir, "/tmp/bettong-tls-XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(cert_path, sizeof cert_path, "%s/cert.pem", dir);
    snprintf(key_path, sizeof key_path, "%s/key.pem", dir);
    snprintf(other_key_path, sizeof other_key_path, "%s/other.pem", dir);
    EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    EVP_PKEY *other = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    X509 *x = X509_new();
    assert_non_null(k);
    assert_non_null(other);
    assert_non_null(x);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, k);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"test", -1, -1,
                               0);
    X509_set_issuer_name(x, name);
    assert_true(X509_sign(x, k, EVP_sha256()) > 0);
    FILE *f = fopen(cert_path, "w");
    assert_non_null(f);
    assert_int_equal(PEM_write_X509(f, x), 1);
    fclose(f);
    write_key(k, key_path);
    write_key(other, other_key_path);
    X509_free(x);
    EVP_PKEY_free(k);
    EVP_PKEY_free(other);
    return 0;
}

static int remove_cert(void **state)
{
    unlink(cert_path);
    unlink(key_path);
    unlink(other_key_path);
    rmdir(dir);
    return 0;
}

typedef struct {
    tls_ctx_t *sctx, *cctx;
    tls_conn_t *s, *c;
    buf_t s_plain, c_plain, wire;
} pair_t;

static void pair_init(pair_t *p)
{
    char err[300];
    memset(p, 0, sizeof *p);
    p->sctx = tls_ctx_server(cert_path, key_path, err, sizeof err);
    assert_non_null(p->sctx);
    p->cctx = tls_ctx_client(err, sizeof err);
    assert_non_null(p->cctx);
    p->s = tls_conn_new(p->sctx);
    p->c = tls_conn_new(p->cctx);
    assert_non_null(p->s);
    assert_non_null(p->c);
    buf_init(&p->s_plain);
    buf_init(&p->c_plain);
    buf_init(&p->wire);
}

static void pair_free(pair_t *p)
{
    tls_conn_free(p->s);
    tls_conn_free(p->c);
    tls_ctx_free(p->sctx);
    tls_ctx_free(p->cctx);
    buf_free(&p->s_plain);
    buf_free(&p->c_plain);
    buf_free(&p->wire);
}

/* Move what `from` has to write into `to`; returns the bytes moved. */
static size_t pass(pair_t *p, tls_conn_t *from, tls_conn_t *to, buf_t *plain, int *rc)
{
    buf_clear(&p->wire);
    assert_int_equal(tls_take_out(from, &p->wire), 0);
    size_t n = buf_unread(&p->wire);
    *rc = tls_feed(to, buf_head(&p->wire), n, plain);
    return n;
}

static void handshake(pair_t *p)
{
    int rc;
    for (int i = 0; i < 10 && !(tls_ready(p->s) && tls_ready(p->c)); i++) {
        pass(p, p->c, p->s, &p->s_plain, &rc);
        assert_int_equal(rc, 0);
        pass(p, p->s, p->c, &p->c_plain, &rc);
        assert_int_equal(rc, 0);
    }
    assert_true(tls_ready(p->s));
    assert_true(tls_ready(p->c));
}

static void test_round_trip(void **state)
{
    pair_t p;
    pair_init(&p);
    uint8_t b[TLS_BINDING_LEN];
    assert_int_equal(tls_binding(p.c, b), -1); /* not before the handshake */
    assert_int_equal(tls_encrypt(p.c, "x", 1), -1);
    handshake(&p);
    static const char msg1[] = "first message", msg2[] = "second";
    assert_int_equal(tls_encrypt(p.c, msg1, sizeof msg1), 0);
    assert_int_equal(tls_encrypt(p.c, msg2, sizeof msg2), 0);
    int rc;
    size_t n = pass(&p, p.c, p.s, &p.s_plain, &rc);
    assert_int_equal(rc, 0);
    assert_int_equal(buf_unread(&p.s_plain), sizeof msg1 + sizeof msg2);
    assert_memory_equal(buf_head(&p.s_plain), msg1, sizeof msg1);
    assert_memory_equal(buf_head(&p.s_plain) + sizeof msg1, msg2, sizeof msg2);
    /* The wire carried ciphertext, not the message. */
    assert_true(n > sizeof msg1);
    assert_null(memmem(buf_head(&p.wire), n, msg1, sizeof msg1 - 1));
    /* A large answer, fed back a few bytes at a time. */
    size_t big = 100000;
    uint8_t *data = malloc(big);
    assert_non_null(data);
    for (size_t i = 0; i < big; i++)
        data[i] = (uint8_t)(i * 7);
    assert_int_equal(tls_encrypt(p.s, data, big), 0);
    buf_t w;
    buf_init(&w);
    assert_int_equal(tls_take_out(p.s, &w), 0);
    for (size_t off = 0; off < buf_unread(&w); off += 999) {
        size_t k = buf_unread(&w) - off < 999 ? buf_unread(&w) - off : 999;
        assert_int_equal(tls_feed(p.c, buf_head(&w) + off, k, &p.c_plain), 0);
    }
    assert_int_equal(buf_unread(&p.c_plain), big);
    assert_memory_equal(buf_head(&p.c_plain), data, big);
    free(data);
    buf_free(&w);
    pair_free(&p);
}

static void test_binding(void **state)
{
    pair_t a, b;
    pair_init(&a);
    pair_init(&b);
    handshake(&a);
    handshake(&b);
    uint8_t ac[TLS_BINDING_LEN], as[TLS_BINDING_LEN], bc[TLS_BINDING_LEN], zero[TLS_BINDING_LEN];
    memset(zero, 0, sizeof zero);
    assert_int_equal(tls_binding(a.c, ac), 0);
    assert_int_equal(tls_binding(a.s, as), 0);
    assert_int_equal(tls_binding(b.c, bc), 0);
    assert_memory_equal(ac, as, TLS_BINDING_LEN);
    assert_memory_not_equal(ac, bc, TLS_BINDING_LEN);
    assert_memory_not_equal(ac, zero, TLS_BINDING_LEN);
    pair_free(&a);
    pair_free(&b);
}

static void test_not_tls(void **state)
{
    pair_t p;
    pair_init(&p);
    /* A Bettong HELLO frame's start, as a client without TLS sends it. */
    static const uint8_t plain_hello[] = {0, 0, 0, 60, 0xf0, 1, 0, 7, 'c', 'l', 'u', 's'};
    assert_int_equal(tls_feed(p.s, plain_hello, sizeof plain_hello, &p.s_plain), -1);
    assert_non_null(strstr(tls_error(p.s), "TLS handshake failed"));
    assert_int_equal(buf_unread(&p.s_plain), 0);
    pair_free(&p);
}

static void test_tampered(void **state)
{
    pair_t p;
    pair_init(&p);
    handshake(&p);
    assert_int_equal(tls_encrypt(p.c, "hello there", 11), 0);
    buf_clear(&p.wire);
    assert_int_equal(tls_take_out(p.c, &p.wire), 0);
    buf_head(&p.wire)[buf_unread(&p.wire) - 3] ^= 1;
    assert_int_equal(tls_feed(p.s, buf_head(&p.wire), buf_unread(&p.wire), &p.s_plain), -1);
    assert_int_equal(buf_unread(&p.s_plain), 0);
    assert_true(strlen(tls_error(p.s)) > 5);
    pair_free(&p);
}

static void test_bad_files(void **state)
{
    char err[300] = "";
    assert_null(tls_ctx_server("/nonexistent/cert.pem", key_path, err, sizeof err));
    assert_non_null(strstr(err, "/nonexistent/cert.pem"));
    err[0] = '\0';
    assert_null(tls_ctx_server(cert_path, other_key_path, err, sizeof err));
    assert_non_null(strstr(err, other_key_path)); /* it does not match */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip), cmocka_unit_test(test_binding),
        cmocka_unit_test(test_not_tls), cmocka_unit_test(test_tampered),
        cmocka_unit_test(test_bad_files),
    };
    return cmocka_run_group_tests(tests, make_cert, remove_cert);
}
