// SPDX-License-Identifier: MIT
/*
 * compact.cu - the parallel parts of physical compaction on the GPU: the
 * page copy (16-byte vector loads and stores, many pages in flight) and the
 * table rewrite (one thread per move). Same signatures and results as
 * kva_copy_pages_cpu() and kva_rewrite_cpu() in compact.c.
 */
#include <cuda_runtime.h>
#include <errno.h>

#include "kva.h"
#include "kvk_cuda.cuh"

#define KVA_COPY_THREADS 128 /* per block: one block per page */
#define KVA_COPY_UNROLL 4    /* 16-byte loads in flight per thread */
#define KVA_COPY_MAX_BLOCKS 16384
#define KVA_REWRITE_THREADS 256

static __device__ const uint4 *page_ptr(uint64_t base, uint32_t page_size,
					uint32_t ppg, uint32_t p)
{
	return (const uint4 *)(base + (uint64_t)(p / ppg) * KVRT_GRANULE_SIZE +
			       (uint64_t)(p % ppg) * page_size);
}

/* Blocks stride over the moves; threads of a block over one page's vectors,
 * all loads of a round issued before its stores. */
__global__ void kva_copy_pages_kernel(uint64_t base, uint32_t page_size,
				      uint32_t ppg,
				      const uint32_t *__restrict__ src,
				      const uint32_t *__restrict__ dst,
				      uint32_t n)
{
	const uint32_t nv = page_size / 16;

	for (uint32_t i = blockIdx.x; i < n; i += gridDim.x) {
		const uint4 *s = page_ptr(base, page_size, ppg, src[i]);
		uint4 *d = (uint4 *)page_ptr(base, page_size, ppg, dst[i]);

		for (uint32_t c0 = 0; c0 < nv;
		     c0 += KVA_COPY_THREADS * KVA_COPY_UNROLL) {
			uint4 r[KVA_COPY_UNROLL];

#pragma unroll
			for (int u = 0; u < KVA_COPY_UNROLL; u++) {
				uint32_t c =
					c0 + u * KVA_COPY_THREADS + threadIdx.x;

				if (c < nv)
					r[u] = s[c];
			}
#pragma unroll
			for (int u = 0; u < KVA_COPY_UNROLL; u++) {
				uint32_t c =
					c0 + u * KVA_COPY_THREADS + threadIdx.x;

				if (c < nv)
					d[c] = r[u];
			}
		}
	}
}

__global__ void kva_rewrite_kernel(struct kva_view v,
				   const uint32_t *__restrict__ src,
				   const uint32_t *__restrict__ dst, uint32_t n)
{
	const uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;

	if (i >= n)
		return;
	const uint32_t s = src[i], d = dst[i];
	const uint32_t list = v.page_list[s], pos = v.page_pos[s];

	v.table[(size_t)list * v.width + pos] = d;
	v.page_list[d] = list;
	v.page_pos[d] = pos;
	v.page_list[s] = KVA_OWNER_FREE;
	v.page_pos[s] = KVA_PAGE_NONE;
}

/**
 * kva_copy_pages_cuda() - kva_copy_pages_cpu() on the device
 * @base: device address of granule slot 0
 * @page_size: bytes, a multiple of 16
 * @ppg: pages per granule
 * @src: device array of source page ids
 * @dst: device array of destination page ids, none also a source
 * @n: number of moves
 * @stream: a cudaStream_t (NULL: the default stream)
 *
 * Return: 0; -EINVAL for a page size that is not a multiple of 16 or a
 * missing array; the launch error as an errno.
 */
extern "C" int kva_copy_pages_cuda(uint64_t base, uint32_t page_size,
				   uint32_t ppg, const uint32_t *src,
				   const uint32_t *dst, uint32_t n,
				   void *stream)
{
	cudaStream_t s = (cudaStream_t)stream;
	uint32_t nb = n < KVA_COPY_MAX_BLOCKS ? n : KVA_COPY_MAX_BLOCKS;

	if (!page_size || page_size % 16 || base % 16 || !ppg ||
	    (n && (!src || !dst)))
		return -EINVAL;
	if (!n)
		return 0;
	kva_copy_pages_kernel<<<nb, KVA_COPY_THREADS, 0, s>>>(base, page_size,
							      ppg, src, dst, n);
	return kvk_cuda_errno(cudaGetLastError());
}

/**
 * kva_rewrite_cuda() - kva_rewrite_cpu() on the device
 * @v: view whose every pointer is device memory
 * @src: device array of source page ids, each owned
 * @dst: device array of destination page ids, each free
 * @n: number of moves
 * @stream: a cudaStream_t (NULL: the default stream)
 *
 * Return: 0; -EINVAL for a missing argument; the launch error as an errno.
 */
extern "C" int kva_rewrite_cuda(const struct kva_view *v, const uint32_t *src,
				const uint32_t *dst, uint32_t n, void *stream)
{
	cudaStream_t s = (cudaStream_t)stream;

	if (!v || (n && (!src || !dst)))
		return -EINVAL;
	if (!n)
		return 0;
	kva_rewrite_kernel<<<(n + KVA_REWRITE_THREADS - 1) /
				     KVA_REWRITE_THREADS,
			     KVA_REWRITE_THREADS, 0, s>>>(*v, src, dst, n);
	return kvk_cuda_errno(cudaGetLastError());
}
