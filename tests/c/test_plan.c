/* Unit tests for src/cluster/plan: a joiner gets an equal share taken only from
 * the others (never between them), a leaver's slots spread evenly, and plans
 * leave every slot with exactly one owner. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cluster/plan.h"

static plan_move_t moves[ROUTING_SLOTS];

static void spread_ok(const routing_table_t *t, const unsigned *owners, size_t n)
{
    unsigned lo = ROUTING_SLOTS, hi = 0, sum = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned c = routing_count(t, owners[i]);
        lo = c < lo ? c : lo;
        hi = c > hi ? c : hi;
        sum += c;
    }
    assert_int_equal(sum, ROUTING_SLOTS);
    if (hi - lo > 1)
        fail_msg("uneven: %u..%u", lo, hi);
}

static void test_grow_two_to_three(void **state)
{
    routing_table_t t, before;
    routing_init(&t, 2);
    before = t;
    unsigned owners[] = {0, 1};
    size_t n = plan_grow(&t, owners, 2, 2, moves);
    assert_int_equal(n, ROUTING_SLOTS / 3);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(moves[i].to, 2);
        assert_int_equal(moves[i].from, before.owner[moves[i].slot]);
    }
    plan_apply(&t, moves, n);
    unsigned all[] = {0, 1, 2};
    spread_ok(&t, all, 3);
    /* No slot moved between the two that stayed. */
    for (unsigned s = 0; s < ROUTING_SLOTS; s++)
        assert_true(t.owner[s] == before.owner[s] || t.owner[s] == 2);
}

static void test_grow_from_uneven(void **state)
{
    routing_table_t t;
    routing_init(&t, 1);
    for (unsigned s = 0; s < 1000; s++)
        routing_assign(&t, s, 1); /* worker 0: 3096, worker 1: 1000 */
    unsigned owners[] = {0, 1};
    size_t n = plan_grow(&t, owners, 2, 5, moves);
    plan_apply(&t, moves, n);
    assert_int_equal(routing_count(&t, 5), ROUTING_SLOTS / 3);
    /* Taken from the one that had the most. */
    assert_int_equal(routing_count(&t, 1), 1000);
}

static void test_shrink_three_to_two(void **state)
{
    routing_table_t t;
    routing_init(&t, 3);
    unsigned stay[] = {0, 2};
    size_t n = plan_shrink(&t, stay, 2, 1, moves);
    assert_int_equal(n, routing_count(&t, 1));
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(moves[i].from, 1);
        assert_true(moves[i].to == 0 || moves[i].to == 2);
    }
    plan_apply(&t, moves, n);
    assert_int_equal(routing_count(&t, 1), 0);
    spread_ok(&t, stay, 2);
}

static void test_grow_then_shrink_round_trip(void **state)
{
    routing_table_t t;
    routing_init(&t, 2);
    unsigned two[] = {0, 1}, three[] = {0, 1, 2};
    for (unsigned round = 0; round < 5; round++) {
        size_t n = plan_grow(&t, two, 2, 2, moves);
        plan_apply(&t, moves, n);
        spread_ok(&t, three, 3);
        n = plan_shrink(&t, two, 2, 2, moves);
        plan_apply(&t, moves, n);
        spread_ok(&t, two, 2);
    }
}

static uint64_t max_load(const routing_table_t *t, const unsigned *owners, size_t n,
                         const uint64_t *load)
{
    uint64_t best = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t sum = 0;
        for (unsigned s = 0; s < ROUTING_SLOTS; s++)
            if (t->owner[s] == owners[i])
                sum += load[s];
        best = sum > best ? sum : best;
    }
    return best;
}

static void test_balance_evens_out_hot_slots(void **state)
{
    static uint64_t load[ROUTING_SLOTS];
    memset(load, 0, sizeof load);
    routing_table_t t;
    routing_init(&t, 2);
    /* 27 busy slots of uneven weight, most of the work on worker 0's. */
    const unsigned w[] = {160, 110, 90, 80, 70, 60, 55, 50, 45, 40, 35, 30, 25, 20,
                          18, 16, 14, 12, 10, 9, 8, 7, 6, 5, 4, 3, 2};
    for (unsigned i = 0; i < 27; i++)
        load[(i * 2 + (i < 20 ? 0 : 1)) * 17] = w[i]; /* even slots belong to 0 */
    unsigned owners[] = {0, 1};
    uint64_t before = max_load(&t, owners, 2, load);
    size_t n = plan_balance(&t, owners, 2, load, 0.05, moves);
    assert_true(n > 0);
    routing_table_t after = t;
    plan_apply(&after, moves, n);
    uint64_t total = 0;
    for (unsigned s = 0; s < ROUTING_SLOTS; s++)
        total += load[s];
    uint64_t m = max_load(&after, owners, 2, load);
    assert_true(m < before);
    /* Within one middling slot of half the total. */
    assert_true(m <= total / 2 + 20);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(moves[i].from, t.owner[moves[i].slot]);
        assert_true(load[moves[i].slot] > 0); /* idle slots stay put */
    }
}

static void test_balance_leaves_a_balanced_cluster_alone(void **state)
{
    static uint64_t load[ROUTING_SLOTS];
    routing_table_t t;
    routing_init(&t, 3);
    for (unsigned s = 0; s < ROUTING_SLOTS; s++)
        load[s] = 100 + (s % 7);
    unsigned owners[] = {0, 1, 2};
    assert_int_equal(plan_balance(&t, owners, 3, load, 0.05, moves), 0);
    memset(load, 0, sizeof load);
    assert_int_equal(plan_balance(&t, owners, 3, load, 0.05, moves), 0);
    /* One slot carrying everything cannot be split: nothing helps. */
    load[5] = 1000;
    assert_int_equal(plan_balance(&t, owners, 3, load, 0.05, moves), 0);
}

static void test_empty_inputs(void **state)
{
    routing_table_t t;
    routing_init(&t, 1);
    assert_int_equal(plan_grow(&t, NULL, 0, 1, moves), 0);
    assert_int_equal(plan_shrink(&t, NULL, 0, 0, moves), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grow_two_to_three),
        cmocka_unit_test(test_grow_from_uneven),
        cmocka_unit_test(test_shrink_three_to_two),
        cmocka_unit_test(test_grow_then_shrink_round_trip),
        cmocka_unit_test(test_balance_evens_out_hot_slots),
        cmocka_unit_test(test_balance_leaves_a_balanced_cluster_alone),
        cmocka_unit_test(test_empty_inputs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
