/* Unit tests for src/net/addr: host:port parsing, numeric resolution, the text
 * form of socket addresses and the loopback check. No traffic is sent. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cmocka.h>

#include "net/addr.h"

static void parse_ok(const char *s, const char *host, int port)
{
    hostport_t hp;
    char err[256] = "";
    memset(&hp, 0x55, sizeof hp);
    if (hostport_parse(s, &hp, err, sizeof err) != 0)
        fail_msg("'%s' rejected: %s", s, err);
    assert_string_equal(hp.host, host);
    assert_int_equal(hp.port, port);
}

static void parse_bad(const char *s)
{
    hostport_t hp;
    char err[256] = "";
    if (hostport_parse(s, &hp, err, sizeof err) == 0)
        fail_msg("'%s' accepted as host '%s' port %d", s, hp.host, hp.port);
    /* There is a message, and it names the input. */
    assert_true(err[0] != '\0');
    assert_non_null(strstr(err, s));
}

static void test_parse_valid(void **state)
{
    parse_ok("127.0.0.1:7000", "127.0.0.1", 7000);
    parse_ok(":7000", "127.0.0.1", 7000);
    parse_ok("localhost:0", "localhost", 0);
    parse_ok("[::1]:9000", "::1", 9000);
    parse_ok("[fe80::1:2]:65535", "fe80::1:2", 65535);
    parse_ok("example.com:80", "example.com", 80);
    parse_ok("10.1.2.3:1", "10.1.2.3", 1);
    parse_ok("0.0.0.0:65535", "0.0.0.0", 65535);
    parse_ok("host:007", "host", 7);
}

static void test_parse_errors(void **state)
{
    parse_bad("127.0.0.1");      /* no colon */
    parse_bad("localhost");      /* no colon */
    parse_bad("");               /* nothing */
    parse_bad("host:abc");       /* bad port */
    parse_bad("host:12ab");      /* trailing garbage */
    parse_bad("host:-1");        /* negative */
    parse_bad("host:65536");     /* > 65535 */
    parse_bad("host:99999999999999999999"); /* overflows long */
    parse_bad("host:");          /* empty port */
    parse_bad(":");              /* empty port, empty host */
    parse_bad("[::1]9000");      /* missing colon after ] */
    parse_bad("[::1]");          /* no port */
    parse_bad("[::1]:");         /* empty port */
    parse_bad("[::1:9000");      /* no closing bracket */
    parse_bad("[::1]:70000");    /* > 65535 */
}

static void test_parse_host_too_long(void **state)
{
    hostport_t hp;
    char s[400], err[512];
    /* 255 characters fit (with the terminator), 256 do not. */
    memset(s, 'h', 255);
    strcpy(s + 255, ":80");
    assert_int_equal(hostport_parse(s, &hp, err, sizeof err), 0);
    assert_int_equal(strlen(hp.host), 255);
    assert_int_equal(hp.port, 80);
    memset(s, 'h', 256);
    strcpy(s + 256, ":80");
    assert_int_equal(hostport_parse(s, &hp, err, sizeof err), -1);
}

static void test_parse_small_err_buffer(void **state)
{
    hostport_t hp;
    char err[8];
    memset(err, 'Z', sizeof err);
    assert_int_equal(hostport_parse("a-rather-long-bad-address", &hp, err, sizeof err), -1);
    /* Truncated, but terminated. */
    assert_non_null(memchr(err, '\0', sizeof err));
}

static void test_resolve_numeric_v4(void **state)
{
    hostport_t hp = {"127.0.0.1", 7000};
    struct sockaddr_storage ss;
    char err[256] = "";
    memset(&ss, 0xee, sizeof ss);
    if (hostport_resolve(&hp, &ss, err, sizeof err) != 0)
        fail_msg("resolve: %s", err);
    assert_int_equal(ss.ss_family, AF_INET);
    const struct sockaddr_in *in = (const struct sockaddr_in *)&ss;
    assert_int_equal(ntohs(in->sin_port), 7000);
    assert_int_equal(ntohl(in->sin_addr.s_addr), 0x7f000001);

    hostport_t any = {"0.0.0.0", 0};
    assert_int_equal(hostport_resolve(&any, &ss, err, sizeof err), 0);
    assert_int_equal(ss.ss_family, AF_INET);
    in = (const struct sockaddr_in *)&ss;
    assert_int_equal(in->sin_addr.s_addr, htonl(INADDR_ANY));
    assert_int_equal(in->sin_port, 0);
}

static void test_resolve_numeric_v6(void **state)
{
    hostport_t hp = {"::1", 9000};
    struct sockaddr_storage ss;
    char err[256] = "";
    if (hostport_resolve(&hp, &ss, err, sizeof err) != 0)
        fail_msg("resolve: %s", err);
    assert_int_equal(ss.ss_family, AF_INET6);
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&ss;
    assert_int_equal(ntohs(in6->sin6_port), 9000);
    assert_true(IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr));

    hostport_t hp2 = {"2001:db8::42", 443};
    assert_int_equal(hostport_resolve(&hp2, &ss, err, sizeof err), 0);
    assert_int_equal(ss.ss_family, AF_INET6);
    struct in6_addr want;
    assert_int_equal(inet_pton(AF_INET6, "2001:db8::42", &want), 1);
    in6 = (const struct sockaddr_in6 *)&ss;
    assert_memory_equal(&in6->sin6_addr, &want, sizeof want);
    assert_int_equal(ntohs(in6->sin6_port), 443);
}

static void test_resolve_failure(void **state)
{
    /* A numeric host with a port outside 0..65535: getaddrinfo refuses the service
     * locally (no name lookup, no traffic), which exercises the error path. */
    hostport_t hp = {"127.0.0.1", -1};
    struct sockaddr_storage ss;
    char err[512] = "";
    assert_int_equal(hostport_resolve(&hp, &ss, err, sizeof err), -1);
    assert_non_null(strstr(err, "cannot resolve '127.0.0.1'"));
}

static struct sockaddr_in v4(const char *ip, int port)
{
    struct sockaddr_in in;
    memset(&in, 0, sizeof in);
    in.sin_family = AF_INET;
    in.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, ip, &in.sin_addr) != 1)
        fail_msg("inet_pton %s", ip);
    return in;
}

static struct sockaddr_in6 v6(const char *ip, int port)
{
    struct sockaddr_in6 in6;
    memset(&in6, 0, sizeof in6);
    in6.sin6_family = AF_INET6;
    in6.sin6_port = htons((uint16_t)port);
    if (inet_pton(AF_INET6, ip, &in6.sin6_addr) != 1)
        fail_msg("inet_pton %s", ip);
    return in6;
}

static void test_sockaddr_text(void **state)
{
    char out[128];
    struct sockaddr_in a = v4("192.168.1.20", 8080);
    sockaddr_text((struct sockaddr *)&a, out, sizeof out);
    assert_string_equal(out, "192.168.1.20:8080");
    struct sockaddr_in6 b = v6("::1", 9000);
    sockaddr_text((struct sockaddr *)&b, out, sizeof out);
    assert_string_equal(out, "[::1]:9000");
    struct sockaddr_in6 c = v6("::ffff:127.0.0.1", 1);
    sockaddr_text((struct sockaddr *)&c, out, sizeof out);
    assert_string_equal(out, "[::ffff:127.0.0.1]:1");
    struct sockaddr_un u;
    memset(&u, 0, sizeof u);
    u.sun_family = AF_UNIX;
    sockaddr_text((struct sockaddr *)&u, out, sizeof out);
    assert_string_equal(out, "(unix)");
    /* Truncation to a small buffer stays terminated. */
    char small[6];
    sockaddr_text((struct sockaddr *)&a, small, sizeof small);
    assert_string_equal(small, "192.1");
}

/* text -> parse -> resolve -> text gives back the same address. */
static void test_text_round_trip(void **state)
{
    const char *texts[] = {"127.0.0.1:7000", "10.0.0.1:1", "0.0.0.0:65535", "[::1]:9000",
                           "[2001:db8::1]:443", "[fe80::abcd]:0"};
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        hostport_t hp;
        struct sockaddr_storage ss;
        char err[256] = "", out[128];
        if (hostport_parse(texts[i], &hp, err, sizeof err) != 0)
            fail_msg("parse '%s': %s", texts[i], err);
        if (hostport_resolve(&hp, &ss, err, sizeof err) != 0)
            fail_msg("resolve '%s': %s", texts[i], err);
        sockaddr_text((struct sockaddr *)&ss, out, sizeof out);
        assert_string_equal(out, texts[i]);
    }
}

static void test_is_loopback(void **state)
{
    struct sockaddr_in a;
    a = v4("127.0.0.1", 1);
    assert_true(sockaddr_is_loopback((struct sockaddr *)&a));
    a = v4("127.5.5.5", 1);
    assert_true(sockaddr_is_loopback((struct sockaddr *)&a));
    a = v4("127.255.255.255", 1);
    assert_true(sockaddr_is_loopback((struct sockaddr *)&a));
    a = v4("10.0.0.1", 1);
    assert_false(sockaddr_is_loopback((struct sockaddr *)&a));
    a = v4("0.0.0.0", 1);
    assert_false(sockaddr_is_loopback((struct sockaddr *)&a));
    a = v4("128.0.0.1", 1);
    assert_false(sockaddr_is_loopback((struct sockaddr *)&a));
    a = v4("1.0.0.127", 1); /* 127 in the wrong octet */
    assert_false(sockaddr_is_loopback((struct sockaddr *)&a));

    struct sockaddr_in6 b;
    b = v6("::1", 1);
    assert_true(sockaddr_is_loopback((struct sockaddr *)&b));
    b = v6("::ffff:127.0.0.1", 1);
    assert_true(sockaddr_is_loopback((struct sockaddr *)&b));
    b = v6("::ffff:127.9.8.7", 1);
    assert_true(sockaddr_is_loopback((struct sockaddr *)&b));
    b = v6("::ffff:10.0.0.1", 1);
    assert_false(sockaddr_is_loopback((struct sockaddr *)&b));
    b = v6("::", 1);
    assert_false(sockaddr_is_loopback((struct sockaddr *)&b));
    b = v6("::2", 1);
    assert_false(sockaddr_is_loopback((struct sockaddr *)&b));
    b = v6("2001:db8::1", 1);
    assert_false(sockaddr_is_loopback((struct sockaddr *)&b));
    b = v6("fe80::1", 1);
    assert_false(sockaddr_is_loopback((struct sockaddr *)&b));
    /* 127 in the last 32 bits but not a v4-mapped address. */
    b = v6("::7f00:1", 1);
    assert_false(sockaddr_is_loopback((struct sockaddr *)&b));
    b = v6("2001:db8::7f00:1", 1);
    assert_false(sockaddr_is_loopback((struct sockaddr *)&b));

    /* Unix sockets are local. */
    struct sockaddr_un u;
    memset(&u, 0, sizeof u);
    u.sun_family = AF_UNIX;
    assert_true(sockaddr_is_loopback((struct sockaddr *)&u));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_valid),
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_parse_host_too_long),
        cmocka_unit_test(test_parse_small_err_buffer),
        cmocka_unit_test(test_resolve_numeric_v4),
        cmocka_unit_test(test_resolve_numeric_v6),
        cmocka_unit_test(test_resolve_failure),
        cmocka_unit_test(test_sockaddr_text),
        cmocka_unit_test(test_text_round_trip),
        cmocka_unit_test(test_is_loopback),
    };
    return cmocka_run_group_tests_name("addr", tests, NULL, NULL);
}
