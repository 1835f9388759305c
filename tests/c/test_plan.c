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
        cmocka_unit_test(test_empty_inputs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
