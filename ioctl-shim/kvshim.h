/* SPDX-License-Identifier: MIT */
/*
 * kvshim.h - the userspace driver that serves the kvmm uapi (uapi/kvmm.h)
 * in-process: a file-descriptor-like handle per open, one ioctl entry point.
 *
 * Every call returns 0 (or a handle) or a negative errno; a call that fails
 * changes nothing. See Documentation/uapi/kvmm.rst.
 */
#ifndef KVSHIM_H
#define KVSHIM_H

#include <stddef.h>
#include <stdint.h>

#include "kvmm.h"

/* Most handles open at once, and most spaces one handle may own. */
#define KVSHIM_MAX_FILES 64
#define KVSHIM_MAX_SPACES 64

/*
 * Bounds on the driver's own memory: tokens per sequence and the VA
 * reservation (values in range), and the bytes of host memory, and of
 * device memory, that one space's arrays may hold (kva_pool_cost(): the
 * per-page arrays follow the budget, the tables the budget and
 * max_tokens); SPACE_CREATE and SET_BUDGET refuse more with -E2BIG.
 */
#define KVSHIM_MAX_TOKENS (1U << 20)
#define KVSHIM_MAX_VA_BYTES (1ULL << 40)
#define KVSHIM_MAX_SPACE_BYTES (1ULL << 30)
/*
 * And what all spaces of all handles hold together, host and device
 * counted apart: 64 handles of 64 spaces each at the per-space bound
 * would otherwise reach 4 TiB. SPACE_CREATE and a widening SET_BUDGET
 * that would pass it are refused with -ENOMEM until spaces are destroyed.
 */
#define KVSHIM_MAX_TOTAL_BYTES (4ULL << 30)

int kvshim_open(void);
int kvshim_close(int fd);
int kvshim_ioctl(int fd, unsigned long cmd, void *arg);

/* tests and fuzzing (not uapi) */
int kvshim_check(int fd, uint32_t space, char *why, size_t len);
int kvshim_digest(int fd, uint32_t space, uint64_t *out);
int kvshim_space_cost(const struct kvmm_space_create *c,
		      uint64_t *host_bytes, uint64_t *dev_bytes);
void kvshim_held(uint64_t *host_bytes, uint64_t *dev_bytes);
int kvshim_test_total_cap(uint64_t bytes);

/* kvshim_fault_inject() @where */
#define KVSHIM_FAULT_RUNTIME 0	/* nth runtime call of the space */
#define KVSHIM_FAULT_ADMIT 1	/* nth SEQ_ADMIT allocator step */
#define KVSHIM_FAULT_SWAP_EIO 2	/* nth chunk write of the next SWAP_OUT */
#define KVSHIM_FAULT_SWAP_SHORT 3 /* ... cut short */

int kvshim_fault_inject(int fd, uint32_t space, unsigned int where,
			uint64_t nth, int err);

#endif /* KVSHIM_H */
