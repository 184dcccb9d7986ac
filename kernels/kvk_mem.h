/* SPDX-License-Identifier: MIT */
/*
 * kvk_mem.h - memory-bound reference kernels: a streaming read that every
 * bandwidth figure is compared with. Usable from C and CUDA.
 */
#ifndef KVK_MEM_H
#define KVK_MEM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Sum of the 32-bit words of @bytes bytes at @p (a multiple of 16, @p
 * 16-byte aligned), modulo 2^64, into *@out. On CUDA @p and @out are device
 * addresses; @p may be any mapped address of a kvrt space, device or host
 * NUMA granule.
 */
int kvk_read_sum_cpu(const void *p, size_t bytes, uint64_t *out,
		     void *stream);
#ifdef KVMM_HAVE_CUDA
int kvk_read_sum_cuda(const void *p, size_t bytes, uint64_t *out,
		      void *stream);
#endif

#ifdef __cplusplus
}
#endif

#endif /* KVK_MEM_H */
