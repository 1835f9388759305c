/* Unit tests for src/pool/shm: a sealed memfd made from iovecs holds their
 * bytes and passes shm_check; a wrong size, missing seals or a pipe do not; a
 * descriptor sent with shm_send_fd comes out of shm_recv's queue in order; more
 * than SHM_MAX_PENDING set the overflow flag and none leaks; one the receiver
 * has no room for sets the lost flag. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fdcount.h"
#include "pool/shm.h"


static void test_create_holds_the_bytes(void **state)
{
    size_t big = 3 * 1024 * 1024 + 17;
    char *payload = malloc(big);
    assert_non_null(payload);
    for (size_t i = 0; i < big; i++)
        payload[i] = (char)(i * 7);
    struct iovec iov[3] = {{"head", 4}, {payload, big}, {"tail!", 5}};
    int fd = shm_create(iov, 3, 4 + big + 5);
    assert_true(fd >= 0);
    char why[160];
    assert_int_equal(shm_check(fd, 4 + big + 5, why, sizeof why), 0);
    char *back = malloc(big + 9);
    assert_non_null(back);
    assert_int_equal(shm_read(fd, 0, back, big + 9), 0);
    assert_memory_equal(back, "head", 4);
    assert_memory_equal(back + 4, payload, big);
    assert_memory_equal(back + 4 + big, "tail!", 5);
    /* sealed: neither written nor shrunk */
    assert_true(write(fd, "x", 1) < 0);
    assert_true(ftruncate(fd, 1) < 0);
    const char *map = shm_map(fd, big + 9);
    assert_non_null(map);
    assert_memory_equal(map + 4, payload, big);
    munmap((void *)map, big + 9);
    assert_int_equal(fcntl(fd, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
    close(fd);
    free(back);
    free(payload);
}

static void test_check_refuses(void **state)
{
    char why[160];
    struct iovec iov = {"abcdef", 6};
    int fd = shm_create(&iov, 1, 6);
    assert_true(fd >= 0);
    assert_int_equal(shm_check(fd, 7, why, sizeof why), -1);
    assert_string_equal(why, "the file sent holds 6 bytes, the frame says 7");
    close(fd);

    int un = memfd_create("unsealed", MFD_CLOEXEC);
    assert_true(un >= 0);
    assert_int_equal(write(un, "abcdef", 6), 6);
    assert_int_equal(shm_check(un, 6, why, sizeof why), -1);
    assert_string_equal(why, "the file sent is not sealed against changes");
    close(un);

    int p[2];
    assert_int_equal(pipe(p), 0);
    assert_int_equal(shm_check(p[0], 0, why, sizeof why), -1);
    assert_string_equal(why, "the descriptor sent is not a file");
    close(p[0]);
    close(p[1]);
}

static void test_send_and_receive_in_order(void **state)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    int base = open_fds();
    struct iovec a = {"A", 1}, b = {"BB", 2};
    int fa = shm_create(&a, 1, 1), fb = shm_create(&b, 1, 2);
    assert_int_equal(shm_send_fd(sv[0], "one", 3, fa, 0), 3);
    assert_int_equal(shm_send_fd(sv[0], "two", 3, fb, 0), 3);
    close(fa);
    close(fb);
    shm_fdq_t q;
    shm_fdq_init(&q);
    char buf[16];
    size_t got = 0;
    while (got < 6) {
        ssize_t r = shm_recv(sv[1], buf + got, sizeof buf - got, 0, &q);
        assert_true(r > 0);
        got += (size_t)r;
    }
    assert_memory_equal(buf, "onetwo", 6);
    assert_int_equal(q.n, 2);
    assert_false(q.overflow);
    char why[160];
    int x = shm_fdq_pop(&q), y = shm_fdq_pop(&q);
    assert_int_equal(shm_check(x, 1, why, sizeof why), 0);
    assert_int_equal(shm_check(y, 2, why, sizeof why), 0);
    assert_int_equal(shm_fdq_pop(&q), -1);
    assert_int_equal(fcntl(x, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
    close(x);
    close(y);
    assert_int_equal(open_fds(), base);
    close(sv[0]);
    close(sv[1]);
}

static void test_too_many_overflow_without_leaks(void **state)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    int base = open_fds();
    struct iovec a = {"A", 1};
    for (int i = 0; i < SHM_MAX_PENDING + 3; i++) {
        int fd = shm_create(&a, 1, 1);
        assert_int_equal(shm_send_fd(sv[0], "x", 1, fd, 0), 1);
        close(fd);
    }
    shm_fdq_t q;
    shm_fdq_init(&q);
    char buf[64];
    size_t got = 0;
    while (got < SHM_MAX_PENDING + 3) {
        ssize_t r = shm_recv(sv[1], buf, sizeof buf, 0, &q);
        assert_true(r > 0);
        got += (size_t)r;
    }
    assert_true(q.overflow);
    assert_int_equal(q.n, SHM_MAX_PENDING);
    shm_fdq_close(&q);
    assert_int_equal(q.n, 0);
    assert_int_equal(open_fds(), base);
    close(sv[0]);
    close(sv[1]);
}

/* A receiver with no room in its descriptor table: the bytes come, the
 * descriptor is lost and said to be. */
static void test_no_room_sets_lost(void **state)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    struct iovec a = {"A", 1};
    int fd = shm_create(&a, 1, 1);
    assert_int_equal(shm_send_fd(sv[0], "x", 1, fd, 0), 1);
    close(fd);
    int lowest = 0;
    while (fcntl(lowest, F_GETFD) >= 0)
        lowest++;
    struct rlimit old, low;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
    low = old;
    low.rlim_cur = (rlim_t)lowest;
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
    shm_fdq_t q;
    shm_fdq_init(&q);
    char c;
    ssize_t r = shm_recv(sv[1], &c, 1, 0, &q);
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
    assert_int_equal(r, 1);
    assert_int_equal(q.n, 0);
    assert_true(q.lost);
    assert_false(q.overflow);
    close(sv[0]);
    close(sv[1]);
}

static void test_enabled_by_environment(void **state)
{
    unsetenv(SHM_ENV_OFF);
    assert_true(shm_enabled());
    setenv(SHM_ENV_OFF, "0", 1);
    assert_true(shm_enabled());
    setenv(SHM_ENV_OFF, "1", 1);
    assert_false(shm_enabled());
    unsetenv(SHM_ENV_OFF);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_holds_the_bytes),
        cmocka_unit_test(test_check_refuses),
        cmocka_unit_test(test_send_and_receive_in_order),
        cmocka_unit_test(test_too_many_overflow_without_leaks),
        cmocka_unit_test(test_no_room_sets_lost),
        cmocka_unit_test(test_enabled_by_environment),
    };
    return cmocka_run_group_tests_name("shm", tests, NULL, NULL);
}
