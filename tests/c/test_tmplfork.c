/* tmplfork: the worker template's side (pool/tmplfork.h). This process plays
 * the pool (a child subreaper, as the pool is): it forks a template that
 * serves tmpl_serve on a socket pair, asks it for workers, and checks that
 * each worker becomes its own child (the template forks twice and the middle
 * process exits), that the pid comes back in the reply, that the worker runs
 * with the name asked for, that a signal a worker raises at itself reaches
 * it, not the template, and that a template that runs a second thread forks
 * nothing. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <string.h>
#include <errno.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "pool/tmpl.h"
#include "pool/tmplfork.h"
#include "py/bridge.h"
#include "pysetup.h"

#define RAN_AS_ASKED 42

/* A worker's body: exits RAN_AS_ASKED when it has the name asked for and
 * the template's parent (this process) is its parent; "raise" raises SIGUSR1
 * at itself first (default action: it dies of it). (It _exits: a forked copy
 * of this test's interpreter has nothing to clean up, and the leak checker of
 * a sanitizer build would report the interpreter it never finalised.) */
static int run(const char *name, void *arg)
{
    if (strcmp(name, "raise") == 0) {
        signal(SIGUSR1, SIG_DFL);
        raise(SIGUSR1);
        _exit(1); /* not reached */
    }
    _exit(strcmp(name, (const char *)arg) == 0 && tmpl_adopted() == 0 ? RAN_AS_ASKED : 1);
}

typedef struct {
    pid_t tmpl;
    int fd; /* our end of the control socket */
} template_t;

/* A thread that waits forever (for the template that must not fork with it). */
static void *idle_thread(void *arg)
{
    for (;;)
        pause();
    return arg;
}

static void start_template_threads(template_t *t, const char *expected_name, int threads)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
    fflush(NULL); /* (the workers exit(): nothing of ours written twice) */
    PyOS_BeforeFork();
    t->tmpl = fork();
    if (t->tmpl == 0) {
        PyOS_AfterFork_Child();
        close(sv[0]);
        pthread_t th;
        for (int i = 1; i < threads; i++)
            if (pthread_create(&th, NULL, idle_thread, NULL) != 0)
                _exit(99);
        _exit(tmpl_serve(sv[1], run, (void *)expected_name));
    }
    PyOS_AfterFork_Parent();
    assert_true(t->tmpl > 0);
    close(sv[1]);
    t->fd = sv[0];
}

static void start_template(template_t *t, const char *expected_name)
{
    start_template_threads(t, expected_name, 1);
}

/* Ask for worker `index` named `name`: its pid, from the reply. */
static pid_t ask(template_t *t, uint32_t index, const char *name)
{
    tmpl_req_t req;
    memset(&req, 0, sizeof req);
    req.index = index;
    strncpy(req.name, name, sizeof req.name - 1);
    assert_int_equal(send(t->fd, &req, sizeof req, 0), sizeof req);
    tmpl_reply_t r;
    assert_int_equal(recv(t->fd, &r, sizeof r, 0), sizeof r);
    assert_int_equal(r.index, index);
    assert_true(r.pid > 0);
    return r.pid;
}

/* Reap worker w, which is ours once the middle process that forked it has
 * exited (it writes the reply first): until then waitpid says ECHILD. */
static pid_t reap(pid_t w, int *status)
{
    struct timespec pause_ms = {0, 1000000};
    for (int i = 0; i < 5000; i++) { /* 5 s */
        pid_t r = waitpid(w, status, 0);
        if (r >= 0 || errno != ECHILD)
            return r;
        nanosleep(&pause_ms, NULL);
    }
    return -1;
}

/* The template exits 0 once our end of the socket closes. */
static void stop_template(template_t *t)
{
    close(t->fd);
    int status;
    assert_int_equal(waitpid(t->tmpl, &status, 0), t->tmpl);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

static void test_workers_become_the_templates_parents_children(void **state)
{
    template_t t;
    start_template(&t, "local-7");
    for (int i = 0; i < 2; i++) {
        pid_t w = ask(&t, 7, "local-7");
        assert_int_not_equal(w, t.tmpl);
        int status;
        assert_int_equal(reap(w, &status), w); /* ours to reap */
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), RAN_AS_ASKED);
    }
    stop_template(&t);
}

static void test_a_signal_a_worker_raises_reaches_it_not_the_template(void **state)
{
    template_t t;
    start_template(&t, "local-1");
    pid_t w = ask(&t, 1, "raise");
    int status;
    assert_int_equal(reap(w, &status), w);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGUSR1);
    /* The template still serves. */
    pid_t again = ask(&t, 1, "local-1");
    assert_int_equal(reap(again, &status), again);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), RAN_AS_ASKED);
    stop_template(&t);
}

static void test_a_template_with_two_threads_forks_nothing(void **state)
{
    template_t t;
    start_template_threads(&t, "local-1", 2);
    tmpl_req_t req;
    memset(&req, 0, sizeof req);
    req.index = 1;
    strcpy(req.name, "local-1");
    assert_int_equal(send(t.fd, &req, sizeof req, 0), sizeof req);
    tmpl_reply_t r;
    assert_int_equal(recv(t.fd, &r, sizeof r, 0), 0); /* no reply: it exited */
    int status;
    assert_int_equal(waitpid(t.tmpl, &status, 0), t.tmpl);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 1);
    assert_int_equal(waitpid(-1, &status, WNOHANG), -1); /* and forked no worker */
    close(t.fd);
}

int main(void)
{
    if (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_workers_become_the_templates_parents_children),
        cmocka_unit_test(test_a_signal_a_worker_raises_reaches_it_not_the_template),
        cmocka_unit_test(test_a_template_with_two_threads_forks_nothing),
    };
    return cmocka_run_group_tests(tests, py_group_setup, py_group_teardown);
}
