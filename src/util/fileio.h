/* Small file helpers for what must reach the disk: writing a whole buffer
 * (retrying short writes and EINTR) and syncing a directory so that a file
 * created or renamed in it survives a crash. */
#ifndef BETTONG_FILEIO_H
#define BETTONG_FILEIO_H

#include <stddef.h>

/* Returns 0, or -1 with errno set. */
int fd_write_all(int fd, const void *p, size_t n);
/* fsync of the directory itself. Returns 0, or -1 with errno set. */
int fsync_dir(const char *dir);

#endif
