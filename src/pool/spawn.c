#include "pool/spawn.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pool/tmpl.h"

extern char **environ;

#define SECRET_VAR "BETTONG_SECRET"

/* The environment for the child: ours without BETTONG_SECRET, plus the secret
 * to pass on. Built before fork: the child may only call async-signal-safe
 * functions. */
static char **child_env(const char *secret, char **secret_entry)
{
    size_t n = 0;
    while (environ[n])
        n++;
    char **env = calloc(n + 2, sizeof *env);
    if (!env)
        return NULL;
    size_t k = 0;
    size_t vlen = strlen(SECRET_VAR);
    for (size_t i = 0; i < n; i++)
        if (!(strncmp(environ[i], SECRET_VAR, vlen) == 0 && environ[i][vlen] == '='))
            env[k++] = environ[i];
    *secret_entry = NULL;
    if (secret && *secret) {
        size_t len = vlen + 1 + strlen(secret) + 1;
        *secret_entry = malloc(len);
        if (!*secret_entry) {
            free(env);
            return NULL;
        }
        snprintf(*secret_entry, len, "%s=%s", SECRET_VAR, secret);
        env[k++] = *secret_entry;
    }
    env[k] = NULL;
    return env;
}

/* In the child, before it may take a signal: the parent's handlers (libuv's,
 * which take a lock shared with the parent through an inherited pipe) must
 * never run here. What exec would do to them anyway: back to the default;
 * ignored signals stay ignored. */
static void default_handlers(void)
{
    for (int sig = 1; sig < NSIG; sig++) {
        struct sigaction sa;
        if (sigaction(sig, NULL, &sa) == 0 && sa.sa_handler != SIG_IGN &&
            sa.sa_handler != SIG_DFL)
            signal(sig, SIG_DFL);
    }
}

/* In the child, between fork and exec (signals blocked by the parent). */
static void child_exec(const char *exe, char **argv, char **env, pid_t parent, int devnull,
                       int template_fd)
{
    default_handlers();
    /* Die with the parent; if it already died before prctl, go now. */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
        _exit(127);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    if (devnull >= 0)
        dup2(devnull, 0);
    dup2(2, 1);
    /* The template's control socket as its fd 3, open across exec. */
    if (template_fd > 0 && (template_fd == TMPL_FD ? fcntl(TMPL_FD, F_SETFD, 0)
                                                   : dup2(template_fd, TMPL_FD)) < 0)
        _exit(127);
    execve(exe, argv, env);
    _exit(127);
}

pid_t spawn_worker(const spawn_args_t *a, char *err, size_t errlen)
{
    static char exe[PATH_MAX];
    if (!exe[0]) {
        ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
        if (n <= 0) {
            snprintf(err, errlen, "cannot find this program (/proc/self/exe): %s",
                     strerror(errno));
            return -1;
        }
        exe[n] = '\0';
    }
    const char *argv[14];
    int k = 0;
    argv[k++] = exe;
    argv[k++] = "worker";
    argv[k++] = "--connect";
    argv[k++] = a->connect;
    argv[k++] = "--name";
    argv[k++] = a->name;
    if (a->log_level) {
        argv[k++] = "--log-level";
        argv[k++] = a->log_level;
    }
    if (a->near) {
        argv[k++] = "--near-store";
        argv[k++] = a->near;
    }
    if (a->template_fd > 0)
        argv[k++] = "--template";
    argv[k] = NULL;
    char *secret_entry;
    char **env = child_env(a->secret, &secret_entry);
    if (!env) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    pid_t parent = getpid();
    /* No signal handler of ours may run in the child (see default_handlers). */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pid_t pid = fork();
    if (pid == 0)
        child_exec(exe, (char **)argv, env, parent, devnull, a->template_fd);
    int fork_errno = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (devnull >= 0)
        close(devnull);
    free(secret_entry);
    free(env);
    if (pid < 0) {
        snprintf(err, errlen, "fork: %s", strerror(fork_errno));
        return -1;
    }
    return pid;
}

void spawn_describe_status(int status, char *out, size_t outlen)
{
    if (WIFEXITED(status))
        snprintf(out, outlen, "exited with status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(out, outlen, "killed by signal %d (%s)", WTERMSIG(status),
                 strsignal(WTERMSIG(status)));
    else
        snprintf(out, outlen, "ended (wait status %d)", status);
}

unsigned spawn_ncpu(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0)
            return (unsigned)n;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (unsigned)n : 1;
}
