/* Small file helpers for what must reach the disk: writing a whole buffer
 * (retrying short writes and EINTR), syncing a directory so that a file
 * created or renamed in it survives a crash, and naming a write error's real
 * cause. */
#ifndef BETTONG_FILEIO_H
#define BETTONG_FILEIO_H

#include <stddef.h>

/* Returns 0, or -1 with errno set. */
int fd_write_all(int fd, const void *p, size_t n);
/* fsync of the directory itself. Returns 0, or -1 with errno set. */
int fsync_dir(const char *dir);

/* Below this many bytes available, a failed write is put down to a full disk. */
#define FS_NEARLY_FULL (1024 * 1024)

/* The text for a failed write of a file under `path`: strerror(err), except that
 * an EIO or ENOSPC where path's file system has less than FS_NEARLY_FULL bytes
 * available reads "no space left on device (N KiB free on the file system of
 * PATH)" (LMDB reports a write cut short by a full disk as EIO). Returns out. */
const char *fs_strerror(int err, const char *path, char *out, size_t cap);

#endif
