/* Unit tests for src/cluster/align: a worker is ready to snapshot only after it
 * cut and every other participant's barrier came, in any order; barriers that
 * come before the cut count; a barrier of another checkpoint, or one twice, is
 * refused; a lost participant is not waited for; a worker alone is ready at
 * once; done starts afresh. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "cluster/align.h"

static void parts(uint8_t p[CL_MAX_WORKERS], unsigned n)
{
    memset(p, 0, CL_MAX_WORKERS);
    for (unsigned i = 0; i < n; i++)
        p[i] = 1;
}

static void test_cut_then_barriers(void **state)
{
    align_t a;
    uint8_t p[CL_MAX_WORKERS];
    align_init(&a, 1);
    parts(p, 3);
    assert_int_equal(align_cut(&a, 5, p), 0);
    assert_false(align_ready(&a, NULL));
    assert_int_equal(align_barrier(&a, 5, 2), 0);
    assert_false(align_ready(&a, NULL));
    assert_int_equal(align_barrier(&a, 5, 0), 0);
    assert_true(align_ready(&a, NULL));
    align_done(&a);
    assert_false(align_ready(&a, NULL));
    assert_int_equal(a.n, 0);
}

static void test_barriers_before_the_cut(void **state)
{
    align_t a;
    uint8_t p[CL_MAX_WORKERS];
    align_init(&a, 0);
    parts(p, 2);
    assert_int_equal(align_barrier(&a, 7, 1), 0);
    /* Not ready before this worker has cut, even with every barrier in. */
    assert_false(align_ready(&a, NULL));
    assert_int_equal(align_cut(&a, 7, p), 0);
    assert_true(align_ready(&a, NULL));
}

static void test_refusals(void **state)
{
    align_t a;
    uint8_t p[CL_MAX_WORKERS];
    align_init(&a, 0);
    parts(p, 3);
    assert_int_equal(align_barrier(&a, 3, 1), 0);
    assert_int_equal(align_barrier(&a, 3, 1), -1);  /* twice */
    assert_int_equal(align_barrier(&a, 4, 2), -1);  /* another checkpoint */
    assert_int_equal(align_cut(&a, 4, p), -1);      /* another checkpoint */
    assert_int_equal(align_barrier(&a, 0, 2), -1);  /* no checkpoint 0 */
    assert_int_equal(align_barrier(&a, 3, CL_MAX_WORKERS), -1);
    assert_int_equal(align_cut(&a, 3, p), 0);
    assert_int_equal(align_cut(&a, 3, p), -1);      /* cut twice */
}

static void test_lost_participant_and_alone(void **state)
{
    align_t a;
    uint8_t p[CL_MAX_WORKERS], gone[CL_MAX_WORKERS];
    memset(gone, 0, sizeof gone);
    align_init(&a, 0);
    parts(p, 3);
    assert_int_equal(align_cut(&a, 9, p), 0);
    assert_int_equal(align_barrier(&a, 9, 1), 0);
    assert_false(align_ready(&a, gone));
    gone[2] = 1;
    assert_true(align_ready(&a, gone));
    /* Alone (the only participant): ready at the cut. */
    align_init(&a, 4);
    memset(p, 0, sizeof p);
    p[4] = 1;
    assert_false(align_ready(&a, NULL));
    assert_int_equal(align_cut(&a, 1, p), 0);
    assert_true(align_ready(&a, NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cut_then_barriers),
        cmocka_unit_test(test_barriers_before_the_cut),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_lost_participant_and_alone),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
