#include "util/fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

int fd_write_all(int fd, const void *p, size_t n)
{
    const uint8_t *q = p;
    while (n > 0) {
        ssize_t k = write(fd, q, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return -1;
        q += k;
        n -= (size_t)k;
    }
    return 0;
}

int fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    int saved = errno;
    close(fd);
    errno = saved;
    return rc;
}

const char *fs_strerror(int err, const char *path, char *out, size_t cap)
{
    struct statvfs fs;
    if ((err == EIO || err == ENOSPC) && statvfs(path, &fs) == 0) {
        unsigned long long avail = (unsigned long long)fs.f_bavail * fs.f_frsize;
        if (avail < FS_NEARLY_FULL) {
            snprintf(out, cap, "no space left on device (%llu KiB free on the file system of %s)",
                     avail / 1024, path);
            return out;
        }
    }
    snprintf(out, cap, "%s", strerror(err));
    return out;
}
