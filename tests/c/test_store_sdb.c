/* Unit tests for src/store/sdb (no Python): a new or empty directory is
 * initialized and marked; a marked one reopens with its data; a foreign
 * directory, a bad marker, a marker without data and a directory locked by
 * another store are refused without being touched; objects, aliases (unique,
 * removed with their object), classes (same bytes accepted, others refused);
 * a dropped unit leaves nothing behind; an aborted transaction stores
 * nothing; the usage figures of the metrics. Crash safety itself is LMDB's
 * (synchronous commits). */
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

#include "store/sdb.h"

static char base[256];

static int setup(void **state)
{
    snprintf(base, sizeof base, "/tmp/bettong-sdb-test-XXXXXX");
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

static void path_in(char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s/%s", base, name);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int exists(const char *dir, const char *name)
{
    char p[600];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return access(p, F_OK) == 0;
}

static void test_init_and_reopen(void **state)
{
    char dir[300], err[512];
    path_in(dir, sizeof dir, "new/sub"); /* the parent must exist */
    assert_null(sdb_open(dir, err, sizeof err));
    path_in(dir, sizeof dir, "new");
    sdb_t *db = sdb_open(dir, err, sizeof err);
    assert_non_null(db);
    assert_true(sdb_was_created(db));
    assert_true(exists(dir, SDB_MARKER));
    sdb_write_t w;
    assert_int_equal(sdb_write_begin(db, &w), SDB_OK);
    assert_int_equal(sdb_put_object(&w, "obj-1", 5, 77, "STATE", 5, 1), SDB_OK);
    assert_int_equal(sdb_write_commit(&w), SDB_OK);
    sdb_close(db);

    db = sdb_open(dir, err, sizeof err);
    assert_non_null(db);
    assert_false(sdb_was_created(db));
    sdb_read_t r;
    assert_int_equal(sdb_read_begin(db, &r), SDB_OK);
    uint64_t cid;
    const uint8_t *st;
    size_t n;
    assert_int_equal(sdb_get_object(&r, "obj-1", 5, &cid, &st, &n), SDB_OK);
    assert_int_equal(cid, 77);
    assert_int_equal(n, 5);
    assert_memory_equal(st, "STATE", 5);
    assert_int_equal(sdb_get_object(&r, "obj-2", 5, &cid, &st, &n), SDB_NOTFOUND);
    sdb_read_end(&r);
    sdb_close(db);

    /* An existing empty directory is initialized too. */
    path_in(dir, sizeof dir, "empty");
    assert_int_equal(mkdir(dir, 0700), 0);
    db = sdb_open(dir, err, sizeof err);
    assert_non_null(db);
    assert_true(sdb_was_created(db));
    sdb_close(db);
}

static void test_refuse_foreign(void **state)
{
    char dir[300], err[512], f[600];
    /* A directory with someone else's files. */
    path_in(dir, sizeof dir, "foreign");
    assert_int_equal(mkdir(dir, 0700), 0);
    snprintf(f, sizeof f, "%s/notes.txt", dir);
    write_file(f, "mine\n");
    assert_null(sdb_open(dir, err, sizeof err));
    assert_non_null(strstr(err, "not a bettong store"));
    assert_false(exists(dir, SDB_MARKER));
    assert_false(exists(dir, "data.mdb"));
    assert_false(exists(dir, SDB_LOCKFILE)); /* not even a lock file is left */

    /* A marker that is not ours. */
    path_in(dir, sizeof dir, "badmark");
    assert_int_equal(mkdir(dir, 0700), 0);
    snprintf(f, sizeof f, "%s/%s", dir, SDB_MARKER);
    write_file(f, "something else\n");
    assert_null(sdb_open(dir, err, sizeof err));
    assert_non_null(strstr(err, "refusing"));
    assert_false(exists(dir, "data.mdb"));

    /* Our marker, but the data is gone: not silently re-created. */
    path_in(dir, sizeof dir, "nodata");
    sdb_t *db = sdb_open(dir, err, sizeof err);
    assert_non_null(db);
    sdb_close(db);
    snprintf(f, sizeof f, "%s/data.mdb", dir);
    assert_int_equal(unlink(f), 0);
    assert_null(sdb_open(dir, err, sizeof err));
    assert_non_null(strstr(err, "missing"));
    assert_false(exists(dir, "data.mdb"));

    /* Our marker over a data file that is not LMDB. */
    write_file(f, "garbage garbage garbage garbage garbage garbage garbage garbage\n");
    assert_null(sdb_open(dir, err, sizeof err));

    /* A file where the directory should be. */
    path_in(dir, sizeof dir, "afile");
    write_file(dir, "x");
    assert_null(sdb_open(dir, err, sizeof err));
    assert_non_null(strstr(err, "not a directory"));
}

static void test_refuse_locked(void **state)
{
    char dir[300], err[512];
    path_in(dir, sizeof dir, "locked");
    sdb_t *db = sdb_open(dir, err, sizeof err);
    assert_non_null(db);
    assert_null(sdb_open(dir, err, sizeof err));
    assert_non_null(strstr(err, "in use by another bettong store"));
    assert_non_null(strstr(err, SDB_LOCKFILE));
    sdb_close(db);
    /* Released with the first. */
    db = sdb_open(dir, err, sizeof err);
    assert_non_null(db);
    sdb_close(db);
}

static sdb_t *fresh(const char *name)
{
    char dir[300], err[512];
    path_in(dir, sizeof dir, name);
    sdb_t *db = sdb_open(dir, err, sizeof err);
    assert_non_null(db);
    return db;
}

static void test_objects_and_aliases(void **state)
{
    sdb_t *db = fresh("objs");
    sdb_write_t w;
    assert_int_equal(sdb_write_begin(db, &w), SDB_OK);
    assert_int_equal(sdb_put_object(&w, "a", 1, 1, "A1", 2, 1), SDB_OK);
    assert_int_equal(sdb_put_object(&w, "b", 1, 1, "B1", 2, 1), SDB_OK);
    assert_int_equal(sdb_put_object(&w, "a", 1, 1, "A2", 2, 1), SDB_EXISTS);
    assert_int_equal(sdb_put_object(&w, "a", 1, 2, "A3", 2, 0), SDB_OK); /* replace */
    assert_int_equal(sdb_put_object(&w, "", 0, 1, "x", 1, 1), SDB_ERROR);
    assert_int_equal(sdb_put_alias(&w, "first", 5, "a", 1), SDB_OK);
    assert_int_equal(sdb_put_alias(&w, "first", 5, "a", 1), SDB_OK); /* again: same */
    assert_int_equal(sdb_put_alias(&w, "first", 5, "b", 1), SDB_EXISTS);
    assert_int_equal(sdb_put_alias(&w, "other", 5, "a", 1), SDB_OK);
    assert_int_equal(sdb_put_alias(&w, "bee", 3, "b", 1), SDB_OK);
    assert_int_equal(sdb_put_alias(&w, "ghost", 5, "zzz", 3), SDB_NOTFOUND);
    assert_int_equal(sdb_write_commit(&w), SDB_OK);

    sdb_read_t r;
    assert_int_equal(sdb_read_begin(db, &r), SDB_OK);
    uint64_t cid;
    const uint8_t *st;
    size_t n;
    assert_int_equal(sdb_get_object(&r, "a", 1, &cid, &st, &n), SDB_OK);
    assert_int_equal(cid, 2);
    assert_memory_equal(st, "A3", 2);
    const char *id;
    assert_int_equal(sdb_get_alias(&r, "first", 5, &id, &n), SDB_OK);
    assert_int_equal(n, 1);
    assert_memory_equal(id, "a", 1);
    assert_int_equal(sdb_get_alias(&r, "ghost", 5, &id, &n), SDB_NOTFOUND);
    buf_t out;
    buf_init(&out);
    uint32_t count;
    assert_int_equal(sdb_list_aliases(&r, "a", 1, &out, &count), SDB_OK);
    assert_int_equal(count, 2);
    static const uint8_t expect[] = {0, 5, 'f', 'i', 'r', 's', 't', 0, 5, 'o', 't', 'h', 'e', 'r'};
    assert_int_equal(buf_unread(&out), sizeof expect);
    assert_memory_equal(buf_head(&out), expect, sizeof expect);
    sdb_read_end(&r);

    /* Delete an alias, then the object (its other alias goes with it). */
    assert_int_equal(sdb_write_begin(db, &w), SDB_OK);
    assert_int_equal(sdb_del_alias(&w, "other", 5), SDB_OK);
    assert_int_equal(sdb_del_alias(&w, "other", 5), SDB_NOTFOUND);
    assert_int_equal(sdb_del_object(&w, "a", 1), SDB_OK);
    assert_int_equal(sdb_del_object(&w, "a", 1), SDB_NOTFOUND);
    assert_int_equal(sdb_write_commit(&w), SDB_OK);
    assert_int_equal(sdb_read_begin(db, &r), SDB_OK);
    assert_int_equal(sdb_get_object(&r, "a", 1, &cid, &st, &n), SDB_NOTFOUND);
    assert_int_equal(sdb_get_alias(&r, "first", 5, &id, &n), SDB_NOTFOUND);
    assert_int_equal(sdb_get_alias(&r, "bee", 3, &id, &n), SDB_OK);
    buf_clear(&out);
    assert_int_equal(sdb_list_aliases(&r, "a", 1, &out, &count), SDB_OK);
    assert_int_equal(count, 0);
    sdb_read_end(&r);
    /* The freed alias can name another object. */
    assert_int_equal(sdb_write_begin(db, &w), SDB_OK);
    assert_int_equal(sdb_put_alias(&w, "first", 5, "b", 1), SDB_OK);
    assert_int_equal(sdb_write_commit(&w), SDB_OK);
    buf_free(&out);
    sdb_close(db);
}

static void test_classes(void **state)
{
    sdb_t *db = fresh("classes");
    sdb_write_t w;
    assert_int_equal(sdb_write_begin(db, &w), SDB_OK);
    assert_int_equal(sdb_has_class(&w, 9), SDB_NOTFOUND);
    assert_int_equal(sdb_put_class(&w, 9, "m.Car", 5, "PICKLE", 6), SDB_OK);
    assert_int_equal(sdb_put_class(&w, 9, "m.Car", 5, "PICKLE", 6), SDB_OK);
    assert_int_equal(sdb_put_class(&w, 9, "m.Car", 5, "PICKLF", 6), SDB_CONFLICT);
    assert_int_equal(sdb_put_class(&w, 9, "m.Cat", 5, "PICKLE", 6), SDB_CONFLICT);
    assert_int_equal(sdb_has_class(&w, 9), SDB_OK);
    assert_int_equal(sdb_write_commit(&w), SDB_OK);
    sdb_read_t r;
    assert_int_equal(sdb_read_begin(db, &r), SDB_OK);
    const char *q;
    const uint8_t *p;
    size_t qn, pn;
    assert_int_equal(sdb_get_class(&r, 9, &q, &qn, &p, &pn), SDB_OK);
    assert_int_equal(qn, 5);
    assert_memory_equal(q, "m.Car", 5);
    assert_int_equal(pn, 6);
    assert_memory_equal(p, "PICKLE", 6);
    assert_int_equal(sdb_get_class(&r, 10, &q, &qn, &p, &pn), SDB_NOTFOUND);
    sdb_read_end(&r);
    sdb_close(db);
}

static void test_units_and_abort(void **state)
{
    sdb_t *db = fresh("units");
    sdb_write_t w;
    assert_int_equal(sdb_write_begin(db, &w), SDB_OK);
    /* A unit kept, a unit dropped (its alias and object vanish), a unit kept. */
    assert_int_equal(sdb_unit_begin(&w), SDB_OK);
    assert_int_equal(sdb_put_object(&w, "k1", 2, 1, "S", 1, 1), SDB_OK);
    assert_int_equal(sdb_unit_commit(&w), SDB_OK);
    assert_int_equal(sdb_unit_begin(&w), SDB_OK);
    assert_int_equal(sdb_put_object(&w, "d1", 2, 1, "S", 1, 1), SDB_OK);
    assert_int_equal(sdb_put_alias(&w, "dropped", 7, "d1", 2), SDB_OK);
    sdb_read_t view = sdb_write_view(&w);
    uint64_t cid;
    const uint8_t *st;
    size_t n;
    assert_int_equal(sdb_get_object(&view, "d1", 2, &cid, &st, &n), SDB_OK);
    sdb_unit_abort(&w);
    assert_int_equal(sdb_unit_begin(&w), SDB_OK);
    assert_int_equal(sdb_put_alias(&w, "kept", 4, "k1", 2), SDB_OK);
    assert_int_equal(sdb_unit_commit(&w), SDB_OK);
    view = sdb_write_view(&w);
    assert_int_equal(sdb_get_object(&view, "d1", 2, &cid, &st, &n), SDB_NOTFOUND);
    assert_int_equal(sdb_write_commit(&w), SDB_OK);

    /* An aborted transaction stores nothing. */
    assert_int_equal(sdb_write_begin(db, &w), SDB_OK);
    assert_int_equal(sdb_put_object(&w, "gone", 4, 1, "S", 1, 1), SDB_OK);
    sdb_write_abort(&w);

    sdb_read_t r;
    const char *id;
    assert_int_equal(sdb_read_begin(db, &r), SDB_OK);
    assert_int_equal(sdb_get_object(&r, "k1", 2, &cid, &st, &n), SDB_OK);
    assert_int_equal(sdb_get_object(&r, "d1", 2, &cid, &st, &n), SDB_NOTFOUND);
    assert_int_equal(sdb_get_object(&r, "gone", 4, &cid, &st, &n), SDB_NOTFOUND);
    assert_int_equal(sdb_get_alias(&r, "dropped", 7, &id, &n), SDB_NOTFOUND);
    assert_int_equal(sdb_get_alias(&r, "kept", 4, &id, &n), SDB_OK);
    sdb_read_end(&r);
    sdb_close(db);
}

static void test_forwards(void **state)
{
    sdb_t *db = fresh("forwards");
    assert_int_equal(sdb_version(db), SDB_VERSION);
    sdb_write_t w;
    assert_int_equal(sdb_write_begin(db, &w), SDB_OK);
    assert_int_equal(sdb_put_forward(&w, "v1", 2, "orig", 4), SDB_OK);
    assert_int_equal(sdb_put_forward(&w, "v2", 2, "orig", 4), SDB_OK);
    assert_int_equal(sdb_put_forward(&w, "", 0, "orig", 4), SDB_ERROR); /* no id */
    assert_int_equal(sdb_write_commit(&w), SDB_OK);
    sdb_read_t r;
    char target[SDB_ID_MAX];
    size_t n = 0;
    assert_int_equal(sdb_read_begin(db, &r), SDB_OK);
    assert_int_equal(sdb_get_forward(&r, "v1", 2, target, &n), SDB_OK);
    assert_int_equal(n, 4);
    assert_memory_equal(target, "orig", 4);
    assert_int_equal(sdb_get_forward(&r, "orig", 4, target, &n), SDB_NOTFOUND);
    assert_int_equal(sdb_get_forward(&r, "", 0, target, &n), SDB_NOTFOUND);
    sdb_read_end(&r);
    sdb_close(db);
}

static void test_move_marks(void **state)
{
    sdb_t *db = fresh("moves");
    const char *dest = "0b9e7b5c-1111-4222-8333-444455556666";
    sdb_write_t w;
    assert_int_equal(sdb_write_begin(db, &w), SDB_OK);
    assert_int_equal(sdb_set_moving(&w, "obj", 3, dest, strlen(dest)), SDB_OK);
    assert_int_equal(sdb_set_moving(&w, "gone", 4, dest, strlen(dest)), SDB_OK);
    assert_int_equal(sdb_clear_moving(&w, "gone", 4), SDB_OK);
    assert_int_equal(sdb_clear_moving(&w, "never", 5), SDB_OK); /* none: no error */
    assert_int_equal(sdb_write_commit(&w), SDB_OK);
    sdb_read_t r;
    char got[SDB_BACKEND_ID_LEN + 1];
    assert_int_equal(sdb_read_begin(db, &r), SDB_OK);
    assert_int_equal(sdb_get_moving(&r, "obj", 3, got), SDB_OK);
    assert_string_equal(got, dest);
    assert_int_equal(sdb_get_moving(&r, "gone", 4, got), SDB_NOTFOUND);
    sdb_read_end(&r);
    sdb_close(db);
}

static void test_many_objects(void **state)
{
    /* 100 000 small objects in one transaction, then all read back. */
    sdb_t *db = fresh("many");
    sdb_write_t w;
    char id[40];
    assert_int_equal(sdb_write_begin(db, &w), SDB_OK);
    for (int i = 0; i < 100000; i++) {
        int n = snprintf(id, sizeof id, "00000000-0000-0000-0000-%012d", i);
        assert_int_equal(sdb_put_object(&w, id, (size_t)n, 5, id, (size_t)n, 1), SDB_OK);
    }
    assert_int_equal(sdb_write_commit(&w), SDB_OK);
    sdb_read_t r;
    assert_int_equal(sdb_read_begin(db, &r), SDB_OK);
    for (int i = 0; i < 100000; i += 7) {
        int n = snprintf(id, sizeof id, "00000000-0000-0000-0000-%012d", i);
        uint64_t cid;
        const uint8_t *st;
        size_t len;
        assert_int_equal(sdb_get_object(&r, id, (size_t)n, &cid, &st, &len), SDB_OK);
        assert_int_equal(len, (size_t)n);
        assert_memory_equal(st, id, len);
    }
    sdb_read_end(&r);
    sdb_close(db);
}

static void test_usage(void **state)
{
    /* The metrics' figures: objects in the objects database, the map's used
     * bytes and the data file's allocated bytes, which grow with the data. */
    sdb_t *db = fresh("usage");
    sdb_usage_t u0, u1;
    assert_int_equal(sdb_usage(db, &u0), 0);
    assert_int_equal(u0.objects, 0);
    assert_true(u0.used_bytes > 0 && u0.file_bytes > 0);
    sdb_write_t w;
    char id[40];
    static char body[1000];
    assert_int_equal(sdb_write_begin(db, &w), SDB_OK);
    for (int i = 0; i < 1000; i++) {
        int n = snprintf(id, sizeof id, "00000000-0000-0000-0000-%012d", i);
        assert_int_equal(sdb_put_object(&w, id, (size_t)n, 5, body, sizeof body, 1), SDB_OK);
    }
    assert_int_equal(sdb_write_commit(&w), SDB_OK);
    assert_int_equal(sdb_usage(db, &u1), 0);
    assert_int_equal(u1.objects, 1000);
    assert_true(u1.used_bytes >= u0.used_bytes + 1000 * sizeof body);
    assert_true(u1.file_bytes > u0.file_bytes);
    sdb_close(db);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_and_reopen),
        cmocka_unit_test(test_refuse_foreign),
        cmocka_unit_test(test_refuse_locked),
        cmocka_unit_test(test_objects_and_aliases),
        cmocka_unit_test(test_classes),
        cmocka_unit_test(test_units_and_abort),
        cmocka_unit_test(test_forwards),
        cmocka_unit_test(test_move_marks),
        cmocka_unit_test(test_many_objects),
        cmocka_unit_test(test_usage),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
