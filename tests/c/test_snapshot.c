/* Unit tests for src/stream/snapshot and src/stream/catalog (no Python): a
 * snapshot's entries round-trip through its file; a truncated file, a flipped
 * byte and a file that disagrees with the catalog are each refused with the
 * reason; a failed write leaves no file behind; the catalog lists complete
 * checkpoints newest first, prunes older records, keeps its records across a
 * reopen, refuses another application's directory and a directory locked by
 * another worker. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "stream/catalog.h"
#include "stream/snapshot.h"

static char base[256];

static int setup(void **state)
{
    snprintf(base, sizeof base, "/tmp/bettong-snap-test-XXXXXX");
    assert_non_null(mkdtemp(base));
    return 0;
}

static int teardown(void **state)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", base);
    assert_int_equal(system(cmd), 0);
    return 0;
}

/* A snapshot with a store, two slots and a stream position. */
static void make_snapshot(buf_t *b, uint64_t n, uint64_t basen, int full, snap_info_t *info)
{
    snap_begin(b, n, basen, full);
    wire_wr_t w;
    wire_begin(&w, b, SNAP_STORE, SNAP_MAX_ENTRY);
    wire_put_u16(&w, 0);
    wire_put_str16(&w, "totals", 6);
    assert_int_equal(wire_end(&w), 0);
    for (unsigned slot = 7; slot < 9; slot++) {
        wire_begin(&w, b, full ? SNAP_SLOT : SNAP_DELTA, SNAP_MAX_ENTRY);
        wire_put_u16(&w, 0);
        wire_put_u16(&w, (uint16_t)slot);
        wire_put_bytes(&w, "pickled-dict", 12);
        assert_int_equal(wire_end(&w), 0);
    }
    wire_begin(&w, b, SNAP_STREAM, SNAP_MAX_ENTRY);
    wire_put_u64(&w, 12345);
    wire_put_str16(&w, "input-a", 7);
    assert_int_equal(wire_end(&w), 0);
    assert_int_equal(snap_finish(b, info), 0);
}

static void test_round_trip(void **state)
{
    buf_t b, r;
    buf_init(&b);
    buf_init(&r);
    snap_info_t info, got;
    make_snapshot(&b, 3, 1, 0, &info);
    assert_int_equal(info.n, 3);
    assert_int_equal(info.base, 1);
    assert_int_equal(info.full, 0);
    assert_int_equal(info.size, buf_unread(&b));
    char err[512];
    assert_int_equal(snap_write_file(base, 3, &b, err, sizeof err), 0);
    assert_int_equal(snap_read_file(base, 3, &info, &r, &got, err, sizeof err), 0);
    assert_int_equal(got.n, 3);
    assert_int_equal(got.crc, info.crc);
    snap_iter_t it;
    snap_iter_init(&it, &r);
    uint8_t type;
    wire_rd_t f;
    assert_int_equal(snap_next(&it, &type, &f), 1);
    assert_int_equal(type, SNAP_STORE);
    assert_int_equal(wire_u16(&f), 0);
    for (unsigned slot = 7; slot < 9; slot++) {
        assert_int_equal(snap_next(&it, &type, &f), 1);
        assert_int_equal(type, SNAP_DELTA);
        assert_int_equal(wire_u16(&f), 0);
        assert_int_equal(wire_u16(&f), slot);
        size_t n;
        const uint8_t *p = wire_rest(&f, &n);
        assert_int_equal(n, 12);
        assert_memory_equal(p, "pickled-dict", 12);
    }
    assert_int_equal(snap_next(&it, &type, &f), 1);
    assert_int_equal(type, SNAP_STREAM);
    assert_int_equal(wire_u64(&f), 12345);
    assert_int_equal(snap_next(&it, &type, &f), 0);
    buf_free(&b);
    buf_free(&r);
}

static void rewrite(const char *path, const uint8_t *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, n, f), n);
    fclose(f);
}

static void expect_damaged(uint64_t n, const snap_info_t *want, const char *reason)
{
    buf_t r;
    buf_init(&r);
    snap_info_t got;
    char err[512] = "";
    assert_int_equal(snap_read_file(base, n, want, &r, &got, err, sizeof err), -1);
    if (!strstr(err, reason))
        fail_msg("expected '%s' in: %s", reason, err);
    buf_free(&r);
}

static void test_damage_detected(void **state)
{
    buf_t b;
    buf_init(&b);
    snap_info_t info;
    make_snapshot(&b, 4, 4, 1, &info);
    char err[512], path[4200];
    assert_int_equal(snap_write_file(base, 4, &b, err, sizeof err), 0);
    snap_path(path, sizeof path, base, 4);
    /* Truncated: the trailer is gone. */
    rewrite(path, buf_head(&b), buf_unread(&b) - 3);
    expect_damaged(4, &info, "truncated");
    /* One byte of an entry flipped: the CRC catches it. */
    uint8_t *copy = malloc(buf_unread(&b));
    memcpy(copy, buf_head(&b), buf_unread(&b));
    copy[40] ^= 0x20;
    rewrite(path, copy, buf_unread(&b));
    expect_damaged(4, &info, "checksum");
    /* Whole, but not the file the catalog recorded. */
    rewrite(path, buf_head(&b), buf_unread(&b));
    snap_info_t other = info;
    other.crc ^= 1;
    expect_damaged(4, &other, "catalog");
    /* Missing. */
    snap_remove_file(base, 4);
    expect_damaged(4, &info, "cannot open");
    free(copy);
    buf_free(&b);
}

static void test_write_failure_leaves_nothing(void **state)
{
    buf_t b;
    buf_init(&b);
    snap_info_t info;
    make_snapshot(&b, 5, 5, 1, &info);
    char err[512] = "", dir[300];
    snprintf(dir, sizeof dir, "%s/missing", base);
    assert_int_equal(snap_write_file(dir, 5, &b, err, sizeof err), -1);
    assert_non_null(strstr(err, "No such file or directory"));
    buf_free(&b);
}

static snap_info_t rec(uint64_t n, uint64_t basen)
{
    snap_info_t s = {.n = n, .base = basen, .full = n == basen, .size = 100 + n, .crc = 7 * n};
    return s;
}

static void test_catalog(void **state)
{
    char err[512], dir[300];
    snprintf(dir, sizeof dir, "%s/w/initializer", base);
    catalog_t *c = catalog_open(dir, "application 'A'", err, sizeof err);
    assert_non_null(c);
    snap_info_t list[8];
    assert_int_equal(catalog_list(c, list, 8, err, sizeof err), 0);
    for (uint64_t n = 1; n <= 5; n++) {
        snap_info_t s = rec(n, n <= 2 ? 1 : 3);
        assert_int_equal(catalog_complete(c, &s, n == 5 ? 3 : 0, err, sizeof err), 0);
    }
    /* A second worker on the same directory is refused while this one holds it. */
    assert_null(catalog_open(dir, "application 'A'", err, sizeof err));
    assert_non_null(strstr(err, "in use by another worker"));
    catalog_close(c);
    /* Reopened: checkpoints 3..5, newest first (1 and 2 were pruned). */
    c = catalog_open(dir, "application 'A'", err, sizeof err);
    assert_non_null(c);
    int n = catalog_list(c, list, 8, err, sizeof err);
    assert_int_equal(n, 3);
    assert_int_equal(list[0].n, 5);
    assert_int_equal(list[0].base, 3);
    assert_int_equal(list[0].size, 105);
    assert_int_equal(list[0].crc, 35);
    assert_int_equal(list[2].n, 3);
    assert_int_equal(list[2].full, 1);
    catalog_close(c);
    /* Another application's directory. */
    assert_null(catalog_open(dir, "application 'B'", err, sizeof err));
    assert_non_null(strstr(err, "belongs to another application"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_damage_detected),
        cmocka_unit_test(test_write_failure_leaves_nothing),
        cmocka_unit_test(test_catalog),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
