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
#include "py/bridge.h"
#include "util/log.h"
#include "util/sigreset.h"

#ifndef BETTONG_PYTHON
#define BETTONG_PYTHON "python3"
#endif
#ifndef BETTONG_EXT_SUFFIX
#define BETTONG_EXT_SUFFIX ".so"
#endif
#ifndef BETTONG_PURELIB
#define BETTONG_PURELIB ""
#endif

extern char **environ;

#define SECRET_VAR "BETTONG_SECRET"

/* glibc's malloc asks for transparent huge pages for what it maps (glibc 2.35
 * on; an older one ignores the name): a large argument or result, or a large
 * object user code makes, is then faulted in 2 MiB at a time, 512 times fewer
 * faults (on a VM whose memory is backed lazily, each is also the
 * hypervisor's). Set only when the environment has no GLIBC_TUNABLES. */
#define HUGE_PAGES_TUNABLE "GLIBC_TUNABLES=glibc.malloc.hugetlb=1"

/* The environment for the child: ours without BETTONG_SECRET, plus the secret
 * to pass on, and HUGE_PAGES_TUNABLE. Built before fork: the child may only
 * call async-signal-safe functions. */
static char **child_env(const char *secret, char **secret_entry)
{
    size_t n = 0;
    while (environ[n])
        n++;
    char **env = calloc(n + 3, sizeof *env);
    if (!env)
        return NULL;
    size_t k = 0;
    size_t vlen = strlen(SECRET_VAR);
    int tunables = 0;
    for (size_t i = 0; i < n; i++) {
        tunables |= strncmp(environ[i], "GLIBC_TUNABLES=", 15) == 0;
        if (!(strncmp(environ[i], SECRET_VAR, vlen) == 0 && environ[i][vlen] == '='))
            env[k++] = environ[i];
    }
    if (!tunables)
        env[k++] = (char *)HUGE_PAGES_TUNABLE;
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

/* In the child, between fork and exec (signals blocked by the parent). */
static void child_exec(const char *exe, char **argv, char **env, pid_t parent, int devnull,
                       int template_fd)
{
    sig_reset_handlers(); /* (libuv's share a pipe with the parent) */
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

/* The python3 host's start: the library directory goes first on sys.path, in
 * place of the current directory that -c puts there (none under
 * PYTHONSAFEPATH), as in the embedded interpreter; the rest of argv are the
 * worker's flags. */
#define PYTHON_HOST_BOOT \
    "import sys; sys.path[:1] = [sys.argv[1]] + ([] if sys.path[0] == '' else sys.path[:1]); " \
    "from bettong._wproc import main; sys.exit(main(sys.argv[2:]))"

/* Whether workers run in the python3 host (spawn.h): 1, 0, or -1 when
 * BETTONG_WORKER_HOST asks for neither. Decided once. */
static int use_python_host(void)
{
    static int decided = -2;
    if (decided > -2)
        return decided;
    const char *host = getenv("BETTONG_WORKER_HOST");
    if (host && *host && strcmp(host, "python") != 0 && strcmp(host, "embedded") != 0)
        return decided = -1;
    decided = 0;
#ifdef BETTONG_WORKER_EMBEDDED_ONLY
    return decided;
#endif
    if (host && strcmp(host, "embedded") == 0)
        return decided;
    /* The bettong package next to the binary's Python library (a build tree),
     * or where `make install` put it (the configured Python's purelib, on
     * python3's sys.path after the library directory). */
    char ext[PATH_MAX], installed[PATH_MAX];
    snprintf(ext, sizeof ext, "%s/bettong/_wproc%s", py_library_dir(), BETTONG_EXT_SUFFIX);
    snprintf(installed, sizeof installed, "%s/bettong/_wproc%s", BETTONG_PURELIB,
             BETTONG_EXT_SUFFIX);
    int found = access(ext, R_OK) == 0 || (BETTONG_PURELIB[0] && access(installed, R_OK) == 0);
    if (found && access(BETTONG_PYTHON, X_OK) == 0)
        decided = 1;
    else
        log_info("workers use the embedded interpreter (slower for CPU-bound Python): %s is "
                 "missing", found ? BETTONG_PYTHON : ext);
    return decided;
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
    int python_host = use_python_host();
    if (python_host < 0) {
        snprintf(err, errlen, "BETTONG_WORKER_HOST is '%s': it takes 'python' or 'embedded'",
                 getenv("BETTONG_WORKER_HOST"));
        return -1;
    }
    const char *argv[17];
    int k = 0;
    if (python_host) {
        argv[k++] = BETTONG_PYTHON;
        argv[k++] = "-u";
        argv[k++] = "-c";
        argv[k++] = PYTHON_HOST_BOOT;
        argv[k++] = py_library_dir();
    } else {
        argv[k++] = exe;
        argv[k++] = "worker";
    }
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
    /* No signal handler of ours may run in the child (see sig_reset_handlers). */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pid_t pid = fork();
    if (pid == 0)
        child_exec(argv[0], (char **)argv, env, parent, devnull, a->template_fd);
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
