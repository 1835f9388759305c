/* Transparent huge pages for Python's large blocks, in a process whose glibc
 * was not started with the malloc.hugetlb tunable (a pool's worker forked from
 * its caller: the tunable is read at a process's start only; exec'd workers
 * get it from spawn.c).
 *
 * Python allocates every block above 512 bytes with its raw allocator
 * (malloc). This wraps the raw allocator: a block of at least HUGEALLOC_MIN
 * bytes (above glibc's largest mmap threshold, so always a mapping of its
 * own, whose first page the block's header starts) is madvise(MADV_HUGEPAGE)d
 * before anything touches it, as the tunable would, so that a 100 MB bytes
 * object is faulted in 2 MiB at a time instead of 4 KiB (on a VM, where each
 * fault is also the hypervisor's, that is most of the time of filling it).
 * Everything else goes to the allocator that was there, unchanged, which also
 * frees every block (those made before the wrap included). */
#ifndef BETTONG_HUGEALLOC_H
#define BETTONG_HUGEALLOC_H

#define HUGEALLOC_MIN (32u << 20)

/* Wrap the raw allocator (Python running; GIL held). Once per process; a
 * process forked after it keeps it. */
void hugealloc_install(void);

#endif
