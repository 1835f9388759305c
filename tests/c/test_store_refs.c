/* Unit tests for src/store/pickrefs (the persistent references inside a
 * pickle, without Python) and src/store/srefs (the stored reference counts:
 * kept by state changes, refusing nothing themselves, rebuilt when a version 1
 * store is opened). The pickles below were made with CPython's pickle and a
 * persistent_id giving ("bettong.obj", id, class_id) for two objects A
 * (11111111-aaaa) and B (22222222-bbbb):
 *   P5     protocol 5: {"puppies": [A, B, A], "name": "Q-dog", "self": A}
 *          (the second A through the memo: BINGET of the tag and the id)
 *   P0     protocol 0: text persistent ids (PERSID), which are not ours
 *   P2     protocol 2: [B, (A,)] with BINPUT/BINGET
 *   NOREF  protocol 5: a plain tuple ("bettong.obj", "zz", 1) and 'Q' bytes
 *          in strings, but no persistent id
 *   ONLY_B protocol 5: {"x": B}
 *   OTHERTAG protocol 5: [pid] whose tag is "other.tag" */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "store/pickrefs.h"
#include "store/sdb.h"
#include "store/srefs.h"

static const char P5[] =
    "\x80\x05\x95\x99\x00\x00\x00\x00\x00\x00\x00\x7d\x94\x28\x8c\x07\x70\x75\x70"
    "\x70\x69\x65\x73\x94\x5d\x94\x28\x8c\x0b\x62\x65\x74\x74\x6f\x6e\x67\x2e\x6f"
    "\x62\x6a\x94\x8c\x0d\x31\x31\x31\x31\x31\x31\x31\x31\x2d\x61\x61\x61\x61\x94"
    "\x8a\x09\xd2\x0a\x1f\xeb\x8c\xa9\x54\xab\x00\x87\x94\x51\x68\x03\x8c\x0d\x32"
    "\x32\x32\x32\x32\x32\x32\x32\x2d\x62\x62\x62\x62\x94\x8a\x09\xd2\x0a\x1f\xeb"
    "\x8c\xa9\x54\xab\x00\x87\x94\x51\x68\x03\x68\x04\x8a\x09\xd2\x0a\x1f\xeb\x8c"
    "\xa9\x54\xab\x00\x87\x94\x51\x65\x8c\x04\x6e\x61\x6d\x65\x94\x8c\x05\x51\x2d"
    "\x64\x6f\x67\x94\x8c\x04\x73\x65\x6c\x66\x94\x68\x03\x68\x04\x8a\x09\xd2\x0a"
    "\x1f\xeb\x8c\xa9\x54\xab\x00\x87\x94\x51\x75\x2e"
    ;
#define P5_LEN 164
static const char P0[] =
    "\x28\x64\x70\x30\x0a\x56\x70\x75\x70\x70\x69\x65\x73\x0a\x70\x31\x0a\x28\x6c"
    "\x70\x32\x0a\x50\x28\x27\x62\x65\x74\x74\x6f\x6e\x67\x2e\x6f\x62\x6a\x27\x2c"
    "\x20\x27\x31\x31\x31\x31\x31\x31\x31\x31\x2d\x61\x61\x61\x61\x27\x2c\x20\x31"
    "\x32\x33\x34\x35\x36\x37\x38\x39\x30\x31\x32\x33\x34\x35\x36\x37\x38\x39\x30"
    "\x29\x0a\x61\x50\x28\x27\x62\x65\x74\x74\x6f\x6e\x67\x2e\x6f\x62\x6a\x27\x2c"
    "\x20\x27\x32\x32\x32\x32\x32\x32\x32\x32\x2d\x62\x62\x62\x62\x27\x2c\x20\x31"
    "\x32\x33\x34\x35\x36\x37\x38\x39\x30\x31\x32\x33\x34\x35\x36\x37\x38\x39\x30"
    "\x29\x0a\x61\x73\x56\x74\x0a\x70\x33\x0a\x28\x49\x31\x0a\x49\x32\x0a\x49\x33"
    "\x0a\x74\x70\x34\x0a\x73\x2e"
    ;
#define P0_LEN 159
static const char P2[] =
    "\x80\x02\x5d\x71\x00\x28\x58\x0b\x00\x00\x00\x62\x65\x74\x74\x6f\x6e\x67\x2e"
    "\x6f\x62\x6a\x71\x01\x58\x0d\x00\x00\x00\x32\x32\x32\x32\x32\x32\x32\x32\x2d"
    "\x62\x62\x62\x62\x71\x02\x8a\x09\xd2\x0a\x1f\xeb\x8c\xa9\x54\xab\x00\x87\x71"
    "\x03\x51\x68\x01\x58\x0d\x00\x00\x00\x31\x31\x31\x31\x31\x31\x31\x31\x2d\x61"
    "\x61\x61\x61\x71\x04\x8a\x09\xd2\x0a\x1f\xeb\x8c\xa9\x54\xab\x00\x87\x71\x05"
    "\x51\x85\x71\x06\x65\x2e"
    ;
#define P2_LEN 101
static const char NOREF[] =
    "\x80\x05\x95\x35\x00\x00\x00\x00\x00\x00\x00\x7d\x94\x28\x8c\x04\x6e\x61\x6d"
    "\x65\x94\x8c\x03\x51\x51\x51\x94\x8c\x01\x78\x94\x5d\x94\x28\x4b\x01\x4b\x02"
    "\x8c\x0b\x62\x65\x74\x74\x6f\x6e\x67\x2e\x6f\x62\x6a\x94\x8c\x02\x7a\x7a\x94"
    "\x4b\x01\x87\x94\x65\x75\x2e"
    ;
#define NOREF_LEN 64
static const char ONLY_B[] =
    "\x80\x05\x95\x34\x00\x00\x00\x00\x00\x00\x00\x7d\x94\x8c\x01\x78\x94\x8c\x0b"
    "\x62\x65\x74\x74\x6f\x6e\x67\x2e\x6f\x62\x6a\x94\x8c\x0d\x32\x32\x32\x32\x32"
    "\x32\x32\x32\x2d\x62\x62\x62\x62\x94\x8a\x09\xd2\x0a\x1f\xeb\x8c\xa9\x54\xab"
    "\x00\x87\x94\x51\x73\x2e"
    ;
#define ONLY_B_LEN 63
static const char OTHERTAG[] =
    "\x80\x05\x95\x25\x00\x00\x00\x00\x00\x00\x00\x5d\x94\x8c\x09\x6f\x74\x68\x65"
    "\x72\x2e\x74\x61\x67\x94\x8c\x0d\x31\x31\x31\x31\x31\x31\x31\x31\x2d\x61\x61"
    "\x61\x61\x94\x4b\x01\x87\x94\x51\x61\x2e"
    ;
#define OTHERTAG_LEN 48

#define A "11111111-aaaa"
#define B "22222222-bbbb"

static size_t scan(const char *p, size_t n, pickref_t **refs)
{
    size_t count = 99;
    assert_int_equal(pickrefs_scan((const uint8_t *)p, n, refs, &count), 0);
    return count;
}

static void assert_ref(const pickref_t *r, const char *id)
{
    assert_int_equal(r->len, strlen(id));
    assert_memory_equal(r->id, id, r->len);
}

static void test_protocol5_with_memo(void **state)
{
    pickref_t *refs;
    assert_int_equal(scan(P5, P5_LEN, &refs), 2); /* A three times, B once: unique */
    assert_ref(&refs[0], A);
    assert_ref(&refs[1], B);
    free(refs);
}

static void test_protocol2(void **state)
{
    pickref_t *refs;
    assert_int_equal(scan(P2, P2_LEN, &refs), 2);
    assert_ref(&refs[0], A);
    assert_ref(&refs[1], B);
    free(refs);
}

static void test_not_references(void **state)
{
    pickref_t *refs;
    assert_int_equal(scan(NOREF, NOREF_LEN, &refs), 0);
    assert_null(refs);
    assert_int_equal(scan(OTHERTAG, OTHERTAG_LEN, &refs), 0);
    assert_int_equal(scan(P0, P0_LEN, &refs), 0); /* text ids: not ours */
    assert_int_equal(scan("", 0, &refs), 0);
}

static void test_malformed(void **state)
{
    pickref_t *refs = (pickref_t *)1;
    size_t count = 7;
    /* every cut of a pickle with references fails cleanly */
    for (size_t n = 1; n < P5_LEN; n++) {
        int rc = pickrefs_scan((const uint8_t *)P5, n, &refs, &count);
        if (rc == 0) {
            free(refs);
            continue; /* a cut before the first 'Q' byte has no references */
        }
        assert_int_equal(rc, -1);
        assert_null(refs);
        assert_int_equal(count, 0);
    }
    /* an unknown opcode, a BINGET of an unset memo slot */
    assert_int_equal(pickrefs_scan((const uint8_t *)"\xff" "Q.", 3, &refs, &count), -1);
    assert_int_equal(pickrefs_scan((const uint8_t *)"\x80\x05h\x09Q.", 6, &refs, &count), -1);
    /* BINPERSID on an empty stack */
    assert_int_equal(pickrefs_scan((const uint8_t *)"Q.", 2, &refs, &count), -1);
}

/* ---------------------------------------------------------------- srefs */

static char dir[256];

static int setup(void **state)
{
    snprintf(dir, sizeof dir, "/tmp/bettong-refs-test-XXXXXX");
    assert_non_null(mkdtemp(dir));
    return 0;
}

static int teardown(void **state)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
    return 0;
}

static uint64_t count_of(sdb_t *db, const char *id)
{
    sdb_read_t r;
    uint64_t n = 99;
    assert_int_equal(sdb_read_begin(db, &r), SDB_OK);
    assert_int_equal(srefs_count(&r, id, strlen(id), &n), SDB_OK);
    sdb_read_end(&r);
    return n;
}

/* Write id's state as the committer does: counts first, then the state. */
static void put(sdb_t *db, const char *id, const char *st, size_t len)
{
    sdb_write_t w;
    sdb_read_t v;
    uint64_t cid;
    const uint8_t *old = NULL;
    size_t oldlen = 0;
    assert_int_equal(sdb_write_begin(db, &w), SDB_OK);
    v = sdb_write_view(&w);
    if (sdb_get_object(&v, id, strlen(id), &cid, &old, &oldlen) != SDB_OK)
        old = NULL;
    assert_int_equal(
        srefs_update(&w, id, strlen(id), old, oldlen, (const uint8_t *)st, len, NULL, NULL),
        SDB_OK);
    assert_int_equal(sdb_put_object(&w, id, strlen(id), 1, st, len, 0), SDB_OK);
    assert_int_equal(sdb_write_commit(&w), SDB_OK);
}

static void test_counts_follow_states(void **state)
{
    char err[512];
    sdb_t *db = sdb_open(dir, err, sizeof err);
    assert_non_null(db);
    assert_int_equal(srefs_ensure(db, err, sizeof err), 0);
    put(db, "dog", P5, P5_LEN);            /* dog -> A, B */
    put(db, "cat", ONLY_B, ONLY_B_LEN);    /* cat -> B */
    assert_int_equal(count_of(db, A), 1);
    assert_int_equal(count_of(db, B), 2);
    put(db, "dog", ONLY_B, ONLY_B_LEN);    /* dog now -> B only */
    assert_int_equal(count_of(db, A), 0);
    assert_int_equal(count_of(db, B), 2);
    put(db, A, P5, P5_LEN);                /* A names itself: not counted */
    assert_int_equal(count_of(db, A), 0);
    assert_int_equal(count_of(db, B), 3);
    put(db, "cat", NOREF, NOREF_LEN);
    assert_int_equal(count_of(db, B), 2);
    sdb_close(db);

    /* the same store as a version 1 store (no counts): rebuilt on open */
    db = sdb_open(dir, err, sizeof err);
    assert_non_null(db);
    sdb_write_t w;
    assert_int_equal(sdb_write_begin(db, &w), SDB_OK);
    assert_int_equal(sdb_refs_clear(&w), SDB_OK);
    assert_int_equal(sdb_set_version(&w, 1), SDB_OK);
    assert_int_equal(sdb_write_commit(&w), SDB_OK);
    assert_int_equal(count_of(db, B), 0);
    sdb_close(db);
    db = sdb_open(dir, err, sizeof err);
    assert_non_null(db);
    assert_int_equal(sdb_version(db), 1);
    assert_int_equal(srefs_ensure(db, err, sizeof err), 0);
    assert_int_equal(sdb_version(db), SDB_VERSION);
    assert_int_equal(count_of(db, A), 0);
    assert_int_equal(count_of(db, B), 2);
    sdb_close(db);
    db = sdb_open(dir, err, sizeof err);
    assert_non_null(db);
    assert_int_equal(sdb_version(db), SDB_VERSION); /* upgraded for good */
    sdb_close(db);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_protocol5_with_memo),
        cmocka_unit_test(test_protocol2),
        cmocka_unit_test(test_not_references),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test_setup_teardown(test_counts_follow_states, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
