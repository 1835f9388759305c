/* Unit tests for src/stream/routing: even initial spread, slot range, assigning
 * slots and counting them, and key -> slot through the stable hash. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "stream/routing.h"
#include "util/hash.h"

static routing_table_t *new_table(unsigned workers)
{
    routing_table_t *t = malloc(sizeof *t);
    assert_non_null(t);
    memset(t, 0xff, sizeof *t); /* garbage that init must overwrite */
    routing_init(t, workers);
    return t;
}

static void test_init_even_spread(void **state)
{
    const unsigned ns[] = {1, 2, 3, 7, 5, 16, 100, 4095, 4096};
    for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++) {
        unsigned n = ns[i];
        routing_table_t *t = new_table(n);
        assert_int_equal(t->workers, n);
        unsigned lo = UINT32_MAX, hi = 0, sum = 0;
        for (unsigned w = 0; w < n; w++) {
            unsigned c = routing_count(t, w);
            lo = c < lo ? c : lo;
            hi = c > hi ? c : hi;
            sum += c;
        }
        if (hi - lo > 1)
            fail_msg("%u workers: counts range %u..%u", n, lo, hi);
        assert_int_equal(sum, ROUTING_SLOTS);
        /* Every slot is owned by a real worker. */
        for (unsigned s = 0; s < ROUTING_SLOTS; s++)
            assert_true(routing_owner(t, s) < n);
        /* Nobody beyond the last worker owns anything. */
        assert_int_equal(routing_count(t, n), 0);
        free(t);
    }
}

static void test_init_specific_counts(void **state)
{
    routing_table_t *t = new_table(1);
    assert_int_equal(routing_count(t, 0), 4096);
    free(t);
    t = new_table(2);
    assert_int_equal(routing_count(t, 0), 2048);
    assert_int_equal(routing_count(t, 1), 2048);
    free(t);
    t = new_table(3); /* 4096 = 3 * 1365 + 1 */
    assert_int_equal(routing_count(t, 0), 1366);
    assert_int_equal(routing_count(t, 1), 1365);
    assert_int_equal(routing_count(t, 2), 1365);
    free(t);
    t = new_table(7); /* 4096 = 7 * 585 + 1 */
    assert_int_equal(routing_count(t, 0), 586);
    for (unsigned w = 1; w < 7; w++)
        assert_int_equal(routing_count(t, w), 585);
    free(t);
}

static void test_init_zero_workers(void **state)
{
    /* Zero is treated as one worker rather than dividing by zero. */
    routing_table_t *t = new_table(0);
    assert_int_equal(t->workers, 1);
    assert_int_equal(routing_count(t, 0), ROUTING_SLOTS);
    free(t);
}

/* Re-initialising for one more worker (n -> n+1) gives the new worker its fair
 * share. (With the s % n layout most slots change owner between n and n+1; only
 * the share is checked here.) */
static void test_grow_new_worker_fair_share(void **state)
{
    for (unsigned n = 1; n < 10; n++) {
        routing_table_t *a = new_table(n), *b = new_table(n + 1);
        assert_int_equal(routing_count(a, n), 0);
        assert_in_range(routing_count(b, n), ROUTING_SLOTS / (n + 1), ROUTING_SLOTS / (n + 1) + 1);
        free(a);
        free(b);
    }
}

static void test_slot_in_range(void **state)
{
    assert_int_equal(routing_slot(0), 0);
    assert_int_equal(routing_slot(ROUTING_SLOTS - 1), ROUTING_SLOTS - 1);
    assert_int_equal(routing_slot(ROUTING_SLOTS), 0);
    assert_int_equal(routing_slot(ROUTING_SLOTS + 5), 5);
    assert_true(routing_slot(UINT64_MAX) < ROUTING_SLOTS);
    assert_int_equal(routing_slot(UINT64_MAX), ROUTING_SLOTS - 1);
    uint64_t x = 0x9e3779b97f4a7c15ULL;
    for (int i = 0; i < 100000; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        assert_true(routing_slot(x) < ROUTING_SLOTS);
    }
}

/* Keys hashed with hash_bytes land on every slot, roughly evenly, and the same
 * key always lands on the same worker. */
static void test_keys_to_workers(void **state)
{
    routing_table_t *t = new_table(3);
    unsigned per_worker[3] = {0};
    static unsigned per_slot[ROUTING_SLOTS];
    memset(per_slot, 0, sizeof per_slot);
    char key[32];
    for (int i = 0; i < 200000; i++) {
        int len = snprintf(key, sizeof key, "k%d", i);
        uint64_t h = hash_bytes(key, (size_t)len, 0);
        unsigned s = routing_slot(h);
        per_slot[s]++;
        unsigned w = routing_owner(t, s);
        assert_true(w < 3);
        per_worker[w]++;
        assert_int_equal(routing_owner(t, routing_slot(hash_bytes(key, (size_t)len, 0))), w);
    }
    for (unsigned s = 0; s < ROUTING_SLOTS; s++)
        assert_true(per_slot[s] > 0);
    for (unsigned w = 0; w < 3; w++)
        assert_in_range(per_worker[w], 200000 / 3 * 95 / 100, 200000 / 3 * 105 / 100);
    free(t);
}

static void test_assign_and_count(void **state)
{
    routing_table_t *t = new_table(2);
    assert_int_equal(routing_count(t, 0), 2048);
    assert_int_equal(routing_count(t, 1), 2048);

    /* Move 100 slots of worker 0 to a new worker 2. */
    unsigned moved = 0;
    for (unsigned s = 0; s < ROUTING_SLOTS && moved < 100; s++) {
        if (routing_owner(t, s) == 0) {
            routing_assign(t, s, 2);
            assert_int_equal(routing_owner(t, s), 2);
            moved++;
        }
    }
    assert_int_equal(routing_count(t, 0), 1948);
    assert_int_equal(routing_count(t, 1), 2048);
    assert_int_equal(routing_count(t, 2), 100);

    /* Assigning a slot to its current owner changes nothing. */
    routing_assign(t, 1, routing_owner(t, 1));
    assert_int_equal(routing_count(t, 1), 2048);

    /* The first and last slots. */
    routing_assign(t, 0, 5);
    routing_assign(t, ROUTING_SLOTS - 1, 5);
    assert_int_equal(routing_owner(t, 0), 5);
    assert_int_equal(routing_owner(t, ROUTING_SLOTS - 1), 5);
    assert_int_equal(routing_count(t, 5), 2);

    /* Out-of-range slots are ignored and do not touch the table. */
    routing_table_t *copy = malloc(sizeof *copy);
    assert_non_null(copy);
    memcpy(copy, t, sizeof *t);
    routing_assign(t, ROUTING_SLOTS, 1);
    routing_assign(t, ROUTING_SLOTS + 1000, 1);
    routing_assign(t, UINT32_MAX, 1);
    assert_memory_equal(copy, t, sizeof *t);

    /* A worker index above 255 is kept in full (owners are 16-bit). */
    routing_assign(t, 7, 300);
    assert_int_equal(routing_owner(t, 7), 300);
    assert_int_equal(routing_count(t, 300), 1);
    assert_int_equal(routing_count(t, 300 & 0xff), 0);

    /* Give everything to one worker. */
    for (unsigned s = 0; s < ROUTING_SLOTS; s++)
        routing_assign(t, s, 1);
    assert_int_equal(routing_count(t, 1), ROUTING_SLOTS);
    assert_int_equal(routing_count(t, 0), 0);
    assert_int_equal(routing_count(t, 2), 0);
    free(copy);
    free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_even_spread),
        cmocka_unit_test(test_init_specific_counts),
        cmocka_unit_test(test_init_zero_workers),
        cmocka_unit_test(test_grow_new_worker_fair_share),
        cmocka_unit_test(test_slot_in_range),
        cmocka_unit_test(test_keys_to_workers),
        cmocka_unit_test(test_assign_and_count),
    };
    return cmocka_run_group_tests_name("routing", tests, NULL, NULL);
}
