/* Python's large blocks in a worker, each in a memfd of its own, so that a
 * large bytes result goes to the client as that very file: no copy at all.
 *
 * Why: a 100 MB result made in the call was made in fresh memory, then copied
 * into a fresh memfd for the client to map. On this kind of VM fresh memory is
 * the costly part (measured for 100 MB: ~36 ms to fill a new memfd; making
 * the bytes 18 ms in huge pages the guest used lately, 250 ms in huge pages it
 * has not used for a few seconds, 48 ms in 4 KiB pages, 49 ms in a memfd's
 * pages populated in one call, ~40 ms populated by two threads). Made in a
 * memfd, the bytes are made once and never copied: the same cost every time,
 * whatever the guest did before.
 *
 * Layout: a block of size bytes is the range [LEAD, LEAD + size) of its file
 * (the file is exactly that long), mapped from offset 0, where LEAD is a page
 * less the 32-byte header of a bytes object: a bytes object's data then start
 * the file's second page, as in pool/shm.h's object file, whose first page
 * shmblock_publish writes.
 *
 * Fork: a block is a shared mapping until published, so a process forked
 * while it lives would share its pages with this one, writes included. Around
 * fork() (pthread_atfork) the child copies every such block into memory of its
 * own first thing, and the parent waits until it has (a pipe; end of file if
 * the fork failed or the child died). Published blocks are private mappings,
 * which fork copies on write as ever. A vfork()ed child (posix_spawn,
 * subprocess) runs nothing of this process's memory before exec.
 *
 * Blocks of at least SHMBLOCK_MIN bytes come from here (blocks that large
 * were each a mapping of their own already: glibc maps them); a realloc of a
 * block keeps it in its file, of a published one moves it; anything that
 * fails (no descriptor left, ...) falls back to the allocator that was there,
 * which also frees every block that is not ours. */
#ifndef BETTONG_SHMBLOCK_H
#define BETTONG_SHMBLOCK_H

#include <stddef.h>

#define SHMBLOCK_MIN ((size_t)32 << 20)

/* Wrap the raw allocator (Python running; GIL held; no other thread of ours
 * allocating yet). Once per process; a process forked after it keeps it. */
void shmblock_install(void);

/* If the len bytes at data are the data of a bytes object alone in a block of
 * ours (its file ends right after them and their NUL): make the file pool/shm.h's
 * object file for another process to map -- its first page head[0..headlen)
 * then zeros, while this process keeps its own copy of that page -- and return
 * its descriptor, which the block owns (do not close it; the caller seals the
 * file). The block is then this process's private view of the file: what it
 * writes stays here. A block published already gives its descriptor again. -1
 * when not ours or when it fails (then copy). Any thread, GIL or not; the
 * object must stay alive meanwhile. */
int shmblock_publish(const void *data, size_t len, const void *head, size_t headlen);

/* Blocks alive in this process, and those of them still shared (tests). */
size_t shmblock_live(void);
size_t shmblock_shared(void);

#endif
