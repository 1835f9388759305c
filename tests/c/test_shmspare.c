/* Unit tests for src/pool/shmspare: a memfd taken has the payload's size and
 * no seals, and shm_fill seals it; after a take the thread makes a spare of
 * that size, which the next take of at most that size gets (cut to its size);
 * a larger take gets a new memfd; a spare left unused is freed after idle_ms;
 * none is made above SHM_SPARE_MAX or after shm_spare_stop; nothing leaks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fdcount.h"
#include "pool/shm.h"
#include "pool/shmspare.h"

#define MB (1024 * 1024)


static long long file_size(int fd)
{
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    return (long long)st.st_size;
}

/* Waits (up to 5 s) until the spare holds `want` bytes; returns what it holds. */
static size_t wait_spare(shm_spare_t *s, size_t want)
{
    for (int i = 0; i < 500; i++) {
        size_t n = shm_spare_bytes(s);
        if (n == want)
            return n;
        nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
    }
    return shm_spare_bytes(s);
}

static void test_take_fill_and_reuse(void **state)
{
    (void)state;
    int before = open_fds();
    shm_spare_t s;
    shm_spare_init(&s, SHM_SPARE_IDLE_MS);
    assert_int_equal(shm_spare_bytes(&s), 0);
    int fd = shm_spare_take(&s, 3 * MB);
    assert_true(fd >= 0);
    assert_int_equal(file_size(fd), 3 * MB);
    assert_int_equal(fcntl(fd, F_GET_SEALS) & F_SEAL_WRITE, 0);
    char *data = malloc(3 * MB);
    assert_non_null(data);
    memset(data, 'a', 3 * MB);
    struct iovec iov = {data, 3 * MB};
    assert_int_equal(shm_fill(fd, &iov, 1), 0);
    char why[160];
    assert_int_equal(shm_check(fd, 3 * MB, why, sizeof why), 0);
    close(fd);
    /* the spare made meanwhile serves a smaller payload, cut to its size */
    assert_int_equal(wait_spare(&s, 3 * MB), 3 * MB);
    fd = shm_spare_take(&s, 2 * MB);
    assert_true(fd >= 0);
    assert_int_equal(file_size(fd), 2 * MB);
    iov.iov_len = 2 * MB;
    assert_int_equal(shm_fill(fd, &iov, 1), 0);
    assert_int_equal(shm_check(fd, 2 * MB, why, sizeof why), 0);
    char c = 0;
    assert_int_equal(pread(fd, &c, 1, 2 * MB - 1), 1);
    assert_int_equal(c, 'a');
    close(fd);
    /* a larger one than the spare: a new memfd, and the next spare that size */
    assert_int_equal(wait_spare(&s, 2 * MB), 2 * MB);
    fd = shm_spare_take(&s, 4 * MB);
    assert_true(fd >= 0);
    assert_int_equal(file_size(fd), 4 * MB);
    close(fd);
    assert_int_equal(wait_spare(&s, 4 * MB), 4 * MB);
    shm_spare_close(&s);
    free(data);
    assert_int_equal(open_fds(), before);
}

static void test_idle_spare_is_freed(void **state)
{
    (void)state;
    int before = open_fds();
    shm_spare_t s;
    shm_spare_init(&s, 100);
    int fd = shm_spare_take(&s, 2 * MB);
    assert_true(fd >= 0);
    close(fd);
    size_t seen = 0;
    for (int i = 0; i < 500 && (seen = shm_spare_bytes(&s)) == 0; i++)
        nanosleep(&(struct timespec){0, 1000 * 1000}, NULL);
    assert_int_equal(seen, 2 * MB);
    assert_int_equal(wait_spare(&s, 0), 0); /* freed once idle */
    assert_int_equal(open_fds(), before + 0);
    shm_spare_close(&s);
    assert_int_equal(open_fds(), before);
}

static void test_limits_and_stop(void **state)
{
    (void)state;
    int before = open_fds();
    shm_spare_t s;
    shm_spare_init(&s, SHM_SPARE_IDLE_MS);
    /* above the limit: a memfd for it (no pages yet), no spare asked */
    int fd = shm_spare_take(&s, SHM_SPARE_MAX + 1);
    assert_true(fd >= 0);
    assert_int_equal(file_size(fd), (long long)SHM_SPARE_MAX + 1);
    close(fd);
    nanosleep(&(struct timespec){0, 50 * 1000 * 1000}, NULL);
    assert_int_equal(shm_spare_bytes(&s), 0);
    /* stopped: the spare is closed and takes still work, without spares */
    fd = shm_spare_take(&s, MB);
    close(fd);
    assert_int_equal(wait_spare(&s, MB), MB);
    shm_spare_stop(&s);
    assert_int_equal(shm_spare_bytes(&s), 0);
    fd = shm_spare_take(&s, MB);
    assert_true(fd >= 0);
    close(fd);
    nanosleep(&(struct timespec){0, 50 * 1000 * 1000}, NULL);
    assert_int_equal(shm_spare_bytes(&s), 0);
    shm_spare_close(&s);
    assert_int_equal(open_fds(), before);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_take_fill_and_reuse),
        cmocka_unit_test(test_idle_spare_is_freed),
        cmocka_unit_test(test_limits_and_stop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
