/* Unit tests for the client pieces of src/net/sock shared by the workers and
 * the Python extensions: sock_handshake_strict believes an answer that comes
 * instead of the server's CHALLENGE only if it is the service's REFUSED (a
 * WELCOME or a task there is a server that proved nothing), a frame over the
 * limit is not the protocol; sock_connect_addr sorts out bad addresses; the
 * identities of the pool and the store encode with wire_begin_fields. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "net/auth.h"
#include "net/sock.h"
#include "net/wire.h"
#include "pool/proto.h"
#include "store/sproto.h"

/* A connected pair whose server end already holds `answer` (a whole frame):
 * the client's HELLO fits in the socket buffer, so no thread is needed. */
static void pair_with_answer(int sv[2], const void *answer, size_t n)
{
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    assert_int_equal(write(sv[1], answer, n), (ssize_t)n);
}

static int strict(const void *answer, size_t n, const uint8_t **body, size_t *len, buf_t *in)
{
    int sv[2];
    pair_with_answer(sv, answer, n);
    int rc = sock_handshake_strict(sv[0], in, "pool", "id", 2, "s", 1, 65536, sock_now() + 2,
                                   MSG_REFUSED, body, len);
    close(sv[0]);
    close(sv[1]);
    return rc;
}

static void test_welcome_instead_of_challenge_is_unproven(void **state)
{
    static const uint8_t welcome[] = {0, 0, 0, 9, MSG_WELCOME, 0, 0, 0, 1, 0, 0, 0, 1};
    buf_t in;
    buf_init(&in);
    const uint8_t *body;
    size_t len;
    assert_int_equal(strict(welcome, sizeof welcome, &body, &len, &in), SOCK_HS_EPROOF);
    buf_free(&in);
}

static void test_task_instead_of_challenge_is_unproven(void **state)
{
    static const uint8_t task[] = {0, 0, 0, 3, MSG_TASK, 0x80, 0x05};
    buf_t in;
    buf_init(&in);
    const uint8_t *body;
    size_t len;
    assert_int_equal(strict(task, sizeof task, &body, &len, &in), SOCK_HS_EPROOF);
    buf_free(&in);
}

static void test_refused_instead_of_challenge_is_the_answer(void **state)
{
    static const uint8_t refused[] = {0, 0, 0, 5, MSG_REFUSED, 0, 2, 'n', 'o'};
    buf_t in;
    buf_init(&in);
    const uint8_t *body = NULL;
    size_t len = 0;
    assert_int_equal(strict(refused, sizeof refused, &body, &len, &in), 0);
    assert_int_equal(len, 5);
    assert_int_equal(body[0], MSG_REFUSED);
    buf_free(&in);
}

static void test_oversized_frame_is_not_the_protocol(void **state)
{
    static const uint8_t huge[] = {0, 0x10, 0, 0, MSG_FUNCDEF};
    buf_t in;
    buf_init(&in);
    const uint8_t *body;
    size_t len;
    assert_int_equal(strict(huge, sizeof huge, &body, &len, &in), SOCK_HS_EFORMAT);
    buf_free(&in);
}

static void test_random_challenge_is_unproven(void **state)
{
    uint8_t ch[4 + 1 + AUTH_NONCE_LEN + AUTH_MAC_LEN] = {0, 0, 0, 1 + AUTH_NONCE_LEN + AUTH_MAC_LEN,
                                                         AUTH_CHALLENGE};
    for (size_t i = 5; i < sizeof ch; i++)
        ch[i] = (uint8_t)(i * 7);
    buf_t in;
    buf_init(&in);
    const uint8_t *body;
    size_t len;
    assert_int_equal(strict(ch, sizeof ch, &body, &len, &in), SOCK_HS_EPROOF);
    buf_free(&in);
}

static void test_connect_addr_bad_addresses(void **state)
{
    int what = 0;
    char why[200];
    assert_int_equal(sock_connect_addr("no-port", 1, sock_now() + 1, &what, why, sizeof why), -1);
    assert_int_equal(what, SOCK_CA_ADDRESS);
    assert_int_equal(sock_connect_addr("unix:", 1, sock_now() + 1, &what, why, sizeof why), -1);
    assert_int_equal(what, SOCK_CA_ADDRESS);
    assert_int_equal(
        sock_connect_addr("unix:/nonexistent/bettong.sock", 1, sock_now() + 1, &what, why,
                          sizeof why),
        -1);
    assert_int_equal(what, SOCK_CA_CONNECT);
}

static void test_identities(void **state)
{
    buf_t b;
    buf_init(&b);
    assert_int_equal(proto_put_identity(&b, ROLE_WORKER, 1234, "w-1", 3, NULL, 0), 0);
    wire_rd_t r;
    wire_rd_init(&r, buf_head(&b), buf_unread(&b));
    assert_int_equal(wire_u8(&r), ROLE_WORKER);
    assert_int_equal(wire_u8(&r), PROTO_VERSION);
    assert_int_equal(wire_u32(&r), 1234);
    size_t n;
    const uint8_t *name = wire_str16(&r, &n);
    assert_int_equal(n, 3);
    assert_memory_equal(name, "w-1", 3);
    wire_str16(&r, &n);
    assert_int_equal(n, 0);
    assert_true(r.p == r.end && !r.err);
    buf_clear(&b);
    char longname[1000];
    memset(longname, 'x', sizeof longname);
    assert_int_equal(sproto_put_identity(&b, longname, sizeof longname), 0);
    assert_int_equal(buf_unread(&b), 1 + 2 + SPROTO_NAME_MAX);
    assert_true(buf_unread(&b) <= AUTH_ID_MAX);
    buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_welcome_instead_of_challenge_is_unproven),
        cmocka_unit_test(test_task_instead_of_challenge_is_unproven),
        cmocka_unit_test(test_refused_instead_of_challenge_is_the_answer),
        cmocka_unit_test(test_oversized_frame_is_not_the_protocol),
        cmocka_unit_test(test_random_challenge_is_unproven),
        cmocka_unit_test(test_connect_addr_bad_addresses),
        cmocka_unit_test(test_identities),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
