#include "net/tls.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

static const char BINDING_LABEL[] = "EXPORTER-bettong-auth";
/* Plaintext is read out in steps of at most one TLS record. */
#define READ_STEP (16 * 1024)

struct tls_ctx {
    SSL_CTX *ssl;
    int server;
};

struct tls_conn {
    SSL *ssl;
    BIO *rbio, *wbio; /* ciphertext in (we write, SSL reads) and out */
    int ready;
    int failed;
    char err[256];
};

/* OpenSSL's first queued error, or `fallback`, into buf; the queue is emptied
 * so a later failure does not report an old reason. */
static void take_ssl_error(char *buf, size_t len, const char *what, const char *fallback)
{
    unsigned long e = ERR_get_error();
    char reason[200];
    if (e)
        ERR_error_string_n(e, reason, sizeof reason);
    snprintf(buf, len, "%s: %s", what, e ? reason : fallback);
    ERR_clear_error();
}

static tls_ctx_t *ctx_new(int server, char *err, size_t errlen)
{
    tls_ctx_t *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    c->server = server;
    c->ssl = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
    if (!c->ssl || SSL_CTX_set_min_proto_version(c->ssl, TLS1_3_VERSION) != 1) {
        take_ssl_error(err, errlen, "cannot set up TLS", "out of memory");
        tls_ctx_free(c);
        return NULL;
    }
    /* No resumption: every connection runs a full handshake (and so a fresh
     * binding); tickets would only be bytes nobody uses. */
    SSL_CTX_set_num_tickets(c->ssl, 0);
    SSL_CTX_set_session_cache_mode(c->ssl, SSL_SESS_CACHE_OFF);
    return c;
}

tls_ctx_t *tls_ctx_server(const char *cert_file, const char *key_file, char *err,
                          size_t errlen)
{
    tls_ctx_t *c = ctx_new(1, err, errlen);
    if (!c)
        return NULL;
    char what[300];
    if (SSL_CTX_use_certificate_chain_file(c->ssl, cert_file) != 1) {
        snprintf(what, sizeof what, "cannot load the TLS certificate %s", cert_file);
        take_ssl_error(err, errlen, what, "unreadable");
    } else if (SSL_CTX_use_PrivateKey_file(c->ssl, key_file, SSL_FILETYPE_PEM) != 1) {
        snprintf(what, sizeof what, "cannot load the TLS key %s", key_file);
        take_ssl_error(err, errlen, what, "unreadable");
    } else if (SSL_CTX_check_private_key(c->ssl) != 1) {
        snprintf(what, sizeof what, "the TLS key %s does not match the certificate %s",
                 key_file, cert_file);
        take_ssl_error(err, errlen, what, "mismatch");
    } else {
        return c;
    }
    tls_ctx_free(c);
    return NULL;
}

tls_ctx_t *tls_ctx_client(char *err, size_t errlen)
{
    tls_ctx_t *c = ctx_new(0, err, errlen);
    if (c)
        SSL_CTX_set_verify(c->ssl, SSL_VERIFY_NONE, NULL);
    return c;
}

void tls_ctx_free(tls_ctx_t *ctx)
{
    if (!ctx)
        return;
    SSL_CTX_free(ctx->ssl);
    free(ctx);
}

int tls_ctx_is_server(const tls_ctx_t *ctx) { return ctx->server; }

tls_conn_t *tls_conn_new(tls_ctx_t *ctx)
{
    tls_conn_t *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->ssl = SSL_new(ctx->ssl);
    t->rbio = BIO_new(BIO_s_mem());
    t->wbio = BIO_new(BIO_s_mem());
    if (!t->ssl || !t->rbio || !t->wbio) {
        BIO_free(t->rbio);
        BIO_free(t->wbio);
        SSL_free(t->ssl);
        free(t);
        ERR_clear_error();
        return NULL;
    }
    /* An empty memory BIO reads as "retry later", not as end of file. */
    BIO_set_mem_eof_return(t->rbio, -1);
    SSL_set_bio(t->ssl, t->rbio, t->wbio); /* the SSL owns both BIOs now */
    if (ctx->server) {
        SSL_set_accept_state(t->ssl);
    } else {
        SSL_set_connect_state(t->ssl);
        /* The ClientHello goes into wbio now. */
        tls_feed(t, NULL, 0, NULL);
    }
    return t;
}

void tls_conn_free(tls_conn_t *t)
{
    if (!t)
        return;
    SSL_free(t->ssl);
    free(t);
}

static int fail(tls_conn_t *t, const char *what, const char *fallback)
{
    t->failed = 1;
    take_ssl_error(t->err, sizeof t->err, what, fallback);
    return -1;
}

/* One SSL call's result: 0 to go on later (it wants more input), -1 failed. */
static int check(tls_conn_t *t, int rc, const char *what)
{
    switch (SSL_get_error(t->ssl, rc)) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        return 0;
    case SSL_ERROR_ZERO_RETURN:
        return fail(t, what, "the peer closed the TLS session");
    case SSL_ERROR_SYSCALL:
        return fail(t, what, "the TLS stream ended unexpectedly");
    default:
        return fail(t, what, "protocol error");
    }
}

static int read_plain(tls_conn_t *t, buf_t *plain)
{
    for (;;) {
        if (buf_reserve(plain, READ_STEP) < 0) {
            t->failed = 1;
            snprintf(t->err, sizeof t->err, "out of memory decrypting");
            return -1;
        }
        size_t got = 0;
        int rc = SSL_read_ex(t->ssl, plain->data + plain->len, plain->cap - plain->len, &got);
        if (rc != 1)
            return check(t, rc, "TLS");
        plain->len += got;
    }
}

int tls_feed(tls_conn_t *t, const uint8_t *p, size_t n, buf_t *plain)
{
    if (t->failed)
        return -1;
    if (n > 0 && BIO_write(t->rbio, p, (int)n) != (int)n) {
        t->failed = 1;
        snprintf(t->err, sizeof t->err, "out of memory receiving TLS records");
        return -1;
    }
    if (!t->ready) {
        int rc = SSL_do_handshake(t->ssl);
        if (rc != 1)
            return check(t, rc, "TLS handshake failed");
        t->ready = 1;
    }
    return plain ? read_plain(t, plain) : 0;
}

int tls_ready(const tls_conn_t *t) { return t->ready && !t->failed; }

int tls_encrypt(tls_conn_t *t, const void *p, size_t n)
{
    if (!tls_ready(t)) {
        snprintf(t->err, sizeof t->err, "TLS: writing before the handshake completed");
        return -1;
    }
    if (n == 0)
        return 0;
    size_t done = 0;
    /* A memory BIO takes everything: one call writes it all (in records). */
    int rc = SSL_write_ex(t->ssl, p, n, &done);
    if (rc != 1 || done != n)
        return fail(t, "TLS", "cannot encrypt");
    return 0;
}

size_t tls_out_pending(const tls_conn_t *t) { return BIO_ctrl_pending(t->wbio); }

int tls_take_out(tls_conn_t *t, buf_t *out)
{
    size_t n = BIO_ctrl_pending(t->wbio);
    if (n == 0)
        return 0;
    if (buf_reserve(out, n) < 0)
        return -1;
    int got = BIO_read(t->wbio, out->data + out->len, (int)n);
    if (got > 0)
        out->len += (size_t)got;
    return 0;
}

int tls_binding(tls_conn_t *t, uint8_t out[TLS_BINDING_LEN])
{
    if (!tls_ready(t))
        return -1;
    if (SSL_export_keying_material(t->ssl, out, TLS_BINDING_LEN, BINDING_LABEL,
                                   sizeof BINDING_LABEL - 1, NULL, 0, 0) != 1)
        return fail(t, "TLS", "cannot export keying material");
    return 0;
}

const char *tls_error(const tls_conn_t *t) { return t->err[0] ? t->err : "no error"; }
