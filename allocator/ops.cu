// SPDX-License-Identifier: MIT
/*
 * ops.cu - the batched operations on the GPU: admit, trim, append and
 * free, each as count -> exclusive scan -> scatter -> finish kernels on one
 * stream, with the ring head and tail and the result in device memory: no
 * atomics, no host synchronisation. The same computation as the *_cpu()
 * references in ops.c, so the arrays come out identical.
 */
#include <cuda_runtime.h>
#include <errno.h>

#include "kva.h"
#include "kvk_cuda.cuh"

#define KVA_THREADS 256	      /* per block, count and scatter kernels */
#define KVA_SCAN_THREADS 1024 /* the one block of the scan kernel */

static __device__ uint32_t dev_tier_full(const struct kva_view &v,
					 uint32_t list, int tier)
{
	if (tier == KVA_LO && !v.lo_grows)
		return 0;
	return v.ntokens[2 * list + tier] ==
	       v.npages[2 * list + tier] * v.tpp[tier];
}

static __device__ uint32_t dev_list(const struct kva_view &v,
				    const uint32_t *slots, uint32_t k)
{
	return slots[k / v.lists_per_slot] * v.lists_per_slot +
	       k % v.lists_per_slot;
}

/*
 * The scan, in three steps spread over the op's kernels (no extra scratch):
 * each count kernel block reduces its KVA_THREADS counts and parks the sum
 * in off[] at the block's first index; kva_scan_blocks_kernel() turns those
 * sums into exclusive block bases and writes the total to off[nk]; each
 * scatter kernel block scans its counts again and adds its base, writing
 * every off[k]. The values equal kva_scan()'s.
 */
static __device__ uint32_t block_excl_scan(uint32_t x, uint32_t *total)
{
	__shared__ uint32_t warp_sum[KVA_THREADS / 32];
	const uint32_t lane = threadIdx.x % 32, warp = threadIdx.x / 32;
	uint32_t incl = x;

	for (int d = 1; d < 32; d <<= 1) {
		uint32_t y = __shfl_up_sync(~0U, incl, d);

		if (lane >= (uint32_t)d)
			incl += y;
	}
	if (lane == 31)
		warp_sum[warp] = incl;
	__syncthreads();
	if (warp == 0) {
		uint32_t w = lane < KVA_THREADS / 32 ? warp_sum[lane] : 0;
		uint32_t wi = w;

		for (int d = 1; d < 32; d <<= 1) {
			uint32_t y = __shfl_up_sync(~0U, wi, d);

			if (lane >= (uint32_t)d)
				wi += y;
		}
		if (lane < KVA_THREADS / 32)
			warp_sum[lane] = wi - w; /* exclusive */
		if (lane == KVA_THREADS / 32 - 1)
			*total = wi;
	}
	__syncthreads();
	return warp_sum[warp] + incl - x;
}

/* count kernels end here: park the block's sum at its first index */
static __device__ void block_park_sum(struct kva_view &v, uint32_t c)
{
	__shared__ uint32_t total;
	const uint32_t first = blockIdx.x * KVA_THREADS;

	block_excl_scan(c, &total);
	__syncthreads();
	if (threadIdx.x == 0)
		v.off[first] = total;
}

__global__ void kva_scan_blocks_kernel(uint64_t *__restrict__ off, uint32_t nk,
				       uint32_t nb)
{
	__shared__ uint64_t sum[KVA_SCAN_THREADS];
	const uint32_t t = threadIdx.x;
	const uint32_t per = (nb + KVA_SCAN_THREADS - 1) / KVA_SCAN_THREADS;
	const uint32_t lo = min(nb, t * per), hi = min(nb, lo + per);
	uint64_t s = 0;

	for (uint32_t b = lo; b < hi; b++)
		s += off[(size_t)b * KVA_THREADS];
	sum[t] = s;
	__syncthreads();
	for (uint32_t d = 1; d < KVA_SCAN_THREADS; d <<= 1) {
		uint64_t x = t >= d ? sum[t - d] : 0;

		__syncthreads();
		sum[t] += x;
		__syncthreads();
	}
	s = sum[t] - s;
	for (uint32_t b = lo; b < hi; b++) {
		uint64_t c = off[(size_t)b * KVA_THREADS];

		off[(size_t)b * KVA_THREADS] = s;
		s += c;
	}
	if (t == KVA_SCAN_THREADS - 1)
		off[nk] = sum[t];
}

/* scatter kernels start here: off[k] for every k of the block */
static __device__ uint64_t block_offset(struct kva_view &v, uint32_t k,
					uint32_t nk)
{
	__shared__ uint32_t total;
	const uint64_t base = v.off[blockIdx.x * KVA_THREADS];
	const uint32_t x = block_excl_scan(k < nk ? v.cnt[k] : 0, &total);

	/* thread 0 rewrites base + 0 = base: no reader is disturbed */
	if (k < nk)
		v.off[k] = base + x;
	return base + x;
}

__global__ void kva_append_count_kernel(struct kva_view v,
					const uint32_t *__restrict__ slots,
					uint32_t nk)
{
	const uint32_t k = blockIdx.x * blockDim.x + threadIdx.x;
	uint32_t c = 0;

	if (k < nk) {
		const uint32_t list = dev_list(v, slots, k);

		c = dev_tier_full(v, list, KVA_HI) +
		    dev_tier_full(v, list, KVA_LO);
		if (v.npages[2 * list] + v.npages[2 * list + 1] + c > v.width)
			*v.err = -E2BIG; /* every writer stores one value */
		v.cnt[k] = c;
	}
	block_park_sum(v, c);
}

__global__ void kva_append_scatter_kernel(struct kva_view v,
					  const uint32_t *__restrict__ slots,
					  uint32_t nk)
{
	const uint32_t k = blockIdx.x * blockDim.x + threadIdx.x;
	const uint64_t off = block_offset(v, k, nk);

	/* every thread takes the same decision from the same values */
	if (k >= nk || *v.err || v.off[nk] > *v.tail - *v.head)
		return;
	const uint32_t list = dev_list(v, slots, k);
	uint32_t *t = &v.table[(size_t)list * v.width];
	uint64_t pos = *v.head + off;

	if (dev_tier_full(v, list, KVA_HI)) {
		const uint32_t p = v.ring[pos++ % v.ring_cap];
		const uint32_t j = v.npages[2 * list + KVA_HI]++;

		t[j] = p;
		v.page_list[p] = list;
		v.page_pos[p] = j;
	}
	if (dev_tier_full(v, list, KVA_LO)) {
		const uint32_t p = v.ring[pos % v.ring_cap];
		const uint32_t j = v.width - 1 - v.npages[2 * list + KVA_LO]++;

		t[j] = p;
		v.page_list[p] = list;
		v.page_pos[p] = j;
	}
}

__global__ void kva_append_finish_kernel(struct kva_view v, uint32_t nk)
{
	const uint64_t total = v.off[nk];

	if (!*v.err && total > *v.tail - *v.head)
		*v.err = -ENOSPC;
	if (!*v.err)
		*v.head += total;
}

__global__ void kva_free_count_kernel(struct kva_view v,
				      const uint32_t *__restrict__ slots,
				      uint32_t nk)
{
	const uint32_t k = blockIdx.x * blockDim.x + threadIdx.x;
	uint32_t c = 0;

	if (k < nk) {
		const uint32_t list = dev_list(v, slots, k);

		c = v.npages[2 * list + KVA_HI] + v.npages[2 * list + KVA_LO];
		v.cnt[k] = c;
	}
	block_park_sum(v, c);
}

__global__ void kva_free_scatter_kernel(struct kva_view v,
					const uint32_t *__restrict__ slots,
					uint32_t nk)
{
	const uint32_t k = blockIdx.x * blockDim.x + threadIdx.x;
	const uint64_t off = block_offset(v, k, nk);

	if (k >= nk)
		return;
	const uint32_t list = dev_list(v, slots, k);
	const uint32_t w = v.width;
	uint32_t *t = &v.table[(size_t)list * w];
	const uint32_t nh = v.npages[2 * list + KVA_HI];
	const uint32_t nl = v.npages[2 * list + KVA_LO];
	const uint64_t pos = *v.tail + off;

	for (uint32_t j = 0; j < nh + nl; j++) {
		const uint32_t e = j < nh ? j : w - 1 - (j - nh);
		const uint32_t p = t[e];

		v.ring[(pos + j) % v.ring_cap] = p;
		v.page_list[p] = KVA_OWNER_FREE;
		v.page_pos[p] = KVA_PAGE_NONE;
		t[e] = KVA_PAGE_NONE;
	}
	v.npages[2 * list + KVA_HI] = 0;
	v.npages[2 * list + KVA_LO] = 0;
	v.ntokens[2 * list + KVA_HI] = 0;
	v.ntokens[2 * list + KVA_LO] = 0;
}

__global__ void kva_free_finish_kernel(struct kva_view v, uint32_t nk)
{
	*v.tail += v.off[nk];
}

__global__ void kva_admit_count_kernel(struct kva_view v,
				       const uint32_t *__restrict__ prompt,
				       uint32_t nk)
{
	const uint32_t k = blockIdx.x * blockDim.x + threadIdx.x;
	uint32_t c = 0;

	if (k < nk) {
		c = kva_worst_pages(v.tpp[KVA_HI], v.tpp[KVA_LO],
				    prompt[k / v.lists_per_slot]);
		v.cnt[k] = c;
	}
	block_park_sum(v, c);
}

__global__ void kva_admit_scatter_kernel(struct kva_view v,
					 const uint32_t *__restrict__ slots,
					 uint32_t nk)
{
	const uint32_t k = blockIdx.x * blockDim.x + threadIdx.x;
	const uint64_t off = block_offset(v, k, nk);

	if (k >= nk || v.off[nk] > *v.tail - *v.head)
		return;
	const uint32_t list = dev_list(v, slots, k);
	uint32_t *t = &v.table[(size_t)list * v.width];
	const uint32_t c = v.cnt[k];

	for (uint32_t j = 0; j < c; j++) {
		const uint32_t p = v.ring[(*v.head + off + j) % v.ring_cap];

		t[j] = p;
		v.page_list[p] = list;
		v.page_pos[p] = j;
	}
	v.npages[2 * list + KVA_HI] = c;
	v.npages[2 * list + KVA_LO] = 0;
	v.ntokens[2 * list + KVA_HI] = 0;
	v.ntokens[2 * list + KVA_LO] = 0;
}

__global__ void kva_admit_finish_kernel(struct kva_view v, uint32_t nk)
{
	const uint64_t total = v.off[nk];

	if (total > *v.tail - *v.head)
		*v.err = -ENOSPC;
	else
		*v.head += total;
}

__global__ void kva_trim_count_kernel(struct kva_view v,
				      const uint32_t *__restrict__ slots,
				      const uint32_t *__restrict__ hi_tokens,
				      const uint32_t *__restrict__ lo_tokens,
				      uint32_t nk)
{
	const uint32_t k = blockIdx.x * blockDim.x + threadIdx.x;
	uint32_t c = 0;

	if (k < nk) {
		const uint32_t list = dev_list(v, slots, k);
		const uint32_t a = v.tpp[KVA_HI], b = v.tpp[KVA_LO];
		const uint64_t keep = ((uint64_t)hi_tokens[k] + a - 1) / a +
				      ((uint64_t)lo_tokens[k] + b - 1) / b;
		const uint32_t have = v.npages[2 * list + KVA_HI];

		if (keep > have)
			*v.err = -EINVAL; /* every writer stores one value */
		else
			c = have - (uint32_t)keep;
		v.cnt[k] = c;
	}
	block_park_sum(v, c);
}

__global__ void kva_trim_scatter_kernel(struct kva_view v,
					const uint32_t *__restrict__ slots,
					const uint32_t *__restrict__ hi_tokens,
					const uint32_t *__restrict__ lo_tokens,
					uint32_t nk)
{
	const uint32_t k = blockIdx.x * blockDim.x + threadIdx.x;
	const uint64_t off = block_offset(v, k, nk);

	if (k >= nk || *v.err)
		return;
	const uint32_t list = dev_list(v, slots, k);
	const uint32_t w = v.width, a = v.tpp[KVA_HI], b = v.tpp[KVA_LO];
	uint32_t *t = &v.table[(size_t)list * w];
	const uint32_t kh = (hi_tokens[k] + a - 1) / a;
	const uint32_t kl = (lo_tokens[k] + b - 1) / b;
	const uint32_t half = (w - kh) / 2;
	const uint32_t c = v.cnt[k];

	for (uint32_t j = 0; j < c; j++) {
		const uint32_t p = t[kh + kl + j];

		v.ring[(*v.tail + off + j) % v.ring_cap] = p;
		v.page_list[p] = KVA_OWNER_FREE;
		v.page_pos[p] = KVA_PAGE_NONE;
		t[kh + kl + j] = KVA_PAGE_NONE;
	}
	for (uint32_t i = 0; i < kl && i < half; i++) {
		const uint32_t x = t[kh + i];

		t[kh + i] = t[w - 1 - i];
		t[w - 1 - i] = x;
	}
	for (uint32_t j = kh; j < w - kl; j++)
		t[j] = KVA_PAGE_NONE;
	for (uint32_t i = 0; i < kl; i++)
		v.page_pos[t[w - 1 - i]] = w - 1 - i;
	v.npages[2 * list + KVA_HI] = kh;
	v.npages[2 * list + KVA_LO] = kl;
	v.ntokens[2 * list + KVA_HI] = hi_tokens[k];
	v.ntokens[2 * list + KVA_LO] = lo_tokens[k];
}

__global__ void kva_trim_finish_kernel(struct kva_view v, uint32_t nk)
{
	if (!*v.err)
		*v.tail += v.off[nk];
}

static unsigned int blocks(uint32_t nk)
{
	return (nk + KVA_THREADS - 1) / KVA_THREADS;
}

/**
 * kva_append_cuda() - kva_append_cpu() on the device
 * @v: view whose every pointer is device memory
 * @slots: device array of decoding slots, validated by the caller
 * @n: number of slots
 * @stream: a cudaStream_t (NULL: the default stream)
 *
 * Enqueues count, scan, scatter and finish; the host does not wait. The
 * result lands in *@v->err (0, -E2BIG or -ENOSPC, in which case nothing
 * else changed).
 *
 * Return: 0, -EINVAL for a missing view, or the launch error as an errno.
 */
extern "C" int kva_append_cuda(const struct kva_view *v, const uint32_t *slots,
			       uint32_t n, void *stream)
{
	cudaStream_t s = (cudaStream_t)stream;
	const uint32_t nk = n * (v ? v->lists_per_slot : 0);
	cudaError_t e;

	if (!v || (n && !slots))
		return -EINVAL;
	e = cudaMemsetAsync(v->err, 0, sizeof(*v->err), s);
	if (e)
		return kvk_cuda_errno(e);
	if (nk)
		kva_append_count_kernel<<<blocks(nk), KVA_THREADS, 0, s>>>(
			*v, slots, nk);
	kva_scan_blocks_kernel<<<1, KVA_SCAN_THREADS, 0, s>>>(v->off, nk,
							      blocks(nk));
	if (nk)
		kva_append_scatter_kernel<<<blocks(nk), KVA_THREADS, 0, s>>>(
			*v, slots, nk);
	kva_append_finish_kernel<<<1, 1, 0, s>>>(*v, nk);
	return kvk_cuda_errno(cudaGetLastError());
}

/**
 * kva_free_cuda() - kva_free_cpu() on the device
 * @v: view whose every pointer is device memory
 * @slots: device array of admitted slots, validated by the caller
 * @n: number of slots
 * @stream: a cudaStream_t (NULL: the default stream)
 *
 * Return: 0, -EINVAL for a missing view, or the launch error as an errno.
 */
extern "C" int kva_free_cuda(const struct kva_view *v, const uint32_t *slots,
			     uint32_t n, void *stream)
{
	cudaStream_t s = (cudaStream_t)stream;
	const uint32_t nk = n * (v ? v->lists_per_slot : 0);
	cudaError_t e;

	if (!v || (n && !slots))
		return -EINVAL;
	e = cudaMemsetAsync(v->err, 0, sizeof(*v->err), s);
	if (e)
		return kvk_cuda_errno(e);
	if (nk)
		kva_free_count_kernel<<<blocks(nk), KVA_THREADS, 0, s>>>(
			*v, slots, nk);
	kva_scan_blocks_kernel<<<1, KVA_SCAN_THREADS, 0, s>>>(v->off, nk,
							      blocks(nk));
	if (nk)
		kva_free_scatter_kernel<<<blocks(nk), KVA_THREADS, 0, s>>>(
			*v, slots, nk);
	kva_free_finish_kernel<<<1, 1, 0, s>>>(*v, nk);
	return kvk_cuda_errno(cudaGetLastError());
}

/**
 * kva_admit_cuda() - kva_admit_cpu() on the device
 * @v: view whose every pointer is device memory
 * @slots: device array of free slots, validated by the caller
 * @prompt: device array of prompt lengths, at most max_tokens
 * @n: number of slots
 * @stream: a cudaStream_t (NULL: the default stream)
 *
 * Enqueues count, block-sum scan, scatter and finish; the host does not
 * wait. The result lands in *@v->err (0 or -ENOSPC, in which case nothing
 * else changed).
 *
 * Return: 0, -EINVAL for a missing view, or the launch error as an errno.
 */
extern "C" int kva_admit_cuda(const struct kva_view *v, const uint32_t *slots,
			      const uint32_t *prompt, uint32_t n, void *stream)
{
	cudaStream_t s = (cudaStream_t)stream;
	const uint32_t nk = n * (v ? v->lists_per_slot : 0);
	cudaError_t e;

	if (!v || (n && (!slots || !prompt)))
		return -EINVAL;
	e = cudaMemsetAsync(v->err, 0, sizeof(*v->err), s);
	if (e)
		return kvk_cuda_errno(e);
	if (nk)
		kva_admit_count_kernel<<<blocks(nk), KVA_THREADS, 0, s>>>(
			*v, prompt, nk);
	kva_scan_blocks_kernel<<<1, KVA_SCAN_THREADS, 0, s>>>(v->off, nk,
							      blocks(nk));
	if (nk)
		kva_admit_scatter_kernel<<<blocks(nk), KVA_THREADS, 0, s>>>(
			*v, slots, nk);
	kva_admit_finish_kernel<<<1, 1, 0, s>>>(*v, nk);
	return kvk_cuda_errno(cudaGetLastError());
}

/**
 * kva_trim_cuda() - kva_trim_cpu() on the device
 * @v: view whose every pointer is device memory
 * @slots: device array of slots in prefill, validated by the caller
 * @n: number of slots
 * @hi_tokens: device array, [n * lists_per_slot] high-tier tokens
 * @lo_tokens: device array, [n * lists_per_slot] low-tier tokens
 * @stream: a cudaStream_t (NULL: the default stream)
 *
 * The result lands in *@v->err (0 or -EINVAL, in which case nothing else
 * changed).
 *
 * Return: 0, -EINVAL for a missing view, or the launch error as an errno.
 */
extern "C" int kva_trim_cuda(const struct kva_view *v, const uint32_t *slots,
			     uint32_t n, const uint32_t *hi_tokens,
			     const uint32_t *lo_tokens, void *stream)
{
	cudaStream_t s = (cudaStream_t)stream;
	const uint32_t nk = n * (v ? v->lists_per_slot : 0);
	cudaError_t e;

	if (!v || (n && (!slots || !hi_tokens || !lo_tokens)))
		return -EINVAL;
	e = cudaMemsetAsync(v->err, 0, sizeof(*v->err), s);
	if (e)
		return kvk_cuda_errno(e);
	if (nk)
		kva_trim_count_kernel<<<blocks(nk), KVA_THREADS, 0, s>>>(
			*v, slots, hi_tokens, lo_tokens, nk);
	kva_scan_blocks_kernel<<<1, KVA_SCAN_THREADS, 0, s>>>(v->off, nk,
							      blocks(nk));
	if (nk)
		kva_trim_scatter_kernel<<<blocks(nk), KVA_THREADS, 0, s>>>(
			*v, slots, hi_tokens, lo_tokens, nk);
	kva_trim_finish_kernel<<<1, 1, 0, s>>>(*v, nk);
	return kvk_cuda_errno(cudaGetLastError());
}

__global__ void kva_err_latch_kernel(const int32_t *__restrict__ err,
				     int32_t *__restrict__ sticky)
{
	if (*err && !*sticky)
		*sticky = *err;
}

/**
 * kva_err_latch_cuda() - kva_err_latch_cpu() on the device
 * @err: device word, the result of the op just enqueued
 * @sticky: device word, the first refusal since it was last cleared
 * @stream: a cudaStream_t (NULL: the default stream)
 *
 * Return: 0, -EINVAL for a missing word, or the launch error as an errno.
 */
extern "C" int kva_err_latch_cuda(const int32_t *err, int32_t *sticky,
				  void *stream)
{
	if (!err || !sticky)
		return -EINVAL;
	kva_err_latch_kernel<<<1, 1, 0, (cudaStream_t)stream>>>(err, sticky);
	return kvk_cuda_errno(cudaGetLastError());
}

__global__ void kva_gather_tokens_kernel(struct kva_view v,
					 const uint32_t *__restrict__ slots,
					 uint32_t nk, uint32_t *__restrict__ hi,
					 uint32_t *__restrict__ lo)
{
	const uint32_t k = blockIdx.x * blockDim.x + threadIdx.x;

	if (k >= nk)
		return;
	const uint32_t list = dev_list(v, slots, k);

	hi[k] = v.ntokens[2 * list + KVA_HI];
	lo[k] = v.ntokens[2 * list + KVA_LO];
}

/**
 * kva_gather_tokens_cuda() - kva_gather_tokens_cpu() on the device
 * @v: view whose every pointer is device memory
 * @slots: device array of slots, validated by the caller
 * @n: number of slots
 * @hi: device array, out: [n * lists_per_slot] high-tier counts
 * @lo: device array, out: [n * lists_per_slot] low-tier counts
 * @stream: a cudaStream_t (NULL: the default stream)
 *
 * Return: 0, -EINVAL for a missing array, or the launch error as an errno.
 */
extern "C" int kva_gather_tokens_cuda(const struct kva_view *v,
				      const uint32_t *slots, uint32_t n,
				      uint32_t *hi, uint32_t *lo, void *stream)
{
	const uint32_t nk = n * (v ? v->lists_per_slot : 0);

	if (!v || (n && (!slots || !hi || !lo)))
		return -EINVAL;
	if (nk)
		kva_gather_tokens_kernel<<<blocks(nk), KVA_THREADS, 0,
					   (cudaStream_t)stream>>>(*v, slots,
								   nk, hi,
								   lo);
	return kvk_cuda_errno(cudaGetLastError());
}

__global__ void kva_grow_kernel(struct kva_view v,
				const uint32_t *__restrict__ gran,
				uint32_t n, uint32_t ppg)
{
	const uint64_t x = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;

	if (x >= (uint64_t)n * ppg)
		return;
	const uint32_t i = (uint32_t)(x / ppg), j = (uint32_t)(x % ppg);
	const uint32_t p = gran[i] * ppg + j;

	v.page_list[p] = KVA_OWNER_FREE;
	v.ring[(*v.tail + x) % v.ring_cap] = p;
}

__global__ void kva_grow_finish_kernel(struct kva_view v, uint64_t total)
{
	*v.tail += total;
}

/**
 * kva_grow_cuda() - kva_grow_cpu() on the device
 * @v: view whose every pointer is device memory
 * @gran: device array of the granule slots just mapped
 * @n: number of granules
 * @ppg: pages per granule
 * @stream: a cudaStream_t (NULL: the default stream)
 *
 * One thread per new page writes its ring entry at the tail and its owner;
 * then one thread advances the tail. No host synchronisation.
 *
 * Return: 0, -EINVAL for a missing array, or the launch error as an errno.
 */
extern "C" int kva_grow_cuda(const struct kva_view *v, const uint32_t *gran,
			     uint32_t n, uint32_t ppg, void *stream)
{
	cudaStream_t s = (cudaStream_t)stream;
	const uint64_t total = (uint64_t)n * ppg;

	if (!v || (n && !gran))
		return -EINVAL;
	if (!total)
		return 0;
	kva_grow_kernel<<<(unsigned int)((total + KVA_THREADS - 1) /
					 KVA_THREADS),
			  KVA_THREADS, 0, s>>>(*v, gran, n, ppg);
	kva_grow_finish_kernel<<<1, 1, 0, s>>>(*v, total);
	return kvk_cuda_errno(cudaGetLastError());
}

__global__ void kva_evict_quota_kernel(struct kva_view v,
				       const uint32_t *__restrict__ slots,
				       const uint32_t *__restrict__ keep,
				       uint32_t n, uint32_t *__restrict__ quota,
				       uint32_t *__restrict__ list_base)
{
	const uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;

	if (i >= n)
		return;
	const uint32_t lps = v.lists_per_slot, a = v.tpp[KVA_HI];
	uint64_t have = 0;

	for (uint32_t j = 0; j < lps; j++) {
		const uint32_t list = slots[i] * lps + j;

		have += (v.ntokens[2 * list + KVA_HI] + (uint64_t)a - 1) / a;
	}
	quota[i] = have > keep[i] ? (uint32_t)(have - keep[i]) : 0;
	list_base[i] = slots[i] * lps;
}

/**
 * kva_evict_quota_cuda() - kva_evict_quota_cpu() on the device
 * @v: view whose every pointer is device memory
 * @slots: device array of decoding slots, validated by the caller
 * @keep: device array, [n] pages each slot may keep
 * @n: number of slots
 * @quota: device array, out: [n] pages to free
 * @list_base: device array, out: [n] first list of each slot
 * @stream: a cudaStream_t (NULL: the default stream)
 *
 * Return: 0, -EINVAL for a missing array, or the launch error as an errno.
 */
extern "C" int kva_evict_quota_cuda(const struct kva_view *v,
				    const uint32_t *slots,
				    const uint32_t *keep, uint32_t n,
				    uint32_t *quota, uint32_t *list_base,
				    void *stream)
{
	if (!v || (n && (!slots || !keep || !quota || !list_base)))
		return -EINVAL;
	if (n)
		kva_evict_quota_kernel<<<blocks(n), KVA_THREADS, 0,
					 (cudaStream_t)stream>>>(
			*v, slots, keep, n, quota, list_base);
	return kvk_cuda_errno(cudaGetLastError());
}

static __device__ uint32_t dev_keep(const struct kva_view &v, uint32_t list,
				    int tier)
{
	const uint32_t a = v.tpp[tier];

	return (v.ntokens[2 * list + tier] + a - 1) / a;
}

__global__ void kva_shrink_count_kernel(struct kva_view v,
					const uint32_t *__restrict__ slots,
					uint32_t nk)
{
	const uint32_t k = blockIdx.x * blockDim.x + threadIdx.x;
	uint32_t c = 0;

	if (k < nk) {
		const uint32_t list = dev_list(v, slots, k);
		const uint32_t kh = dev_keep(v, list, KVA_HI);
		const uint32_t kl = dev_keep(v, list, KVA_LO);
		const uint32_t nh = v.npages[2 * list + KVA_HI];
		const uint32_t nl = v.npages[2 * list + KVA_LO];

		c = (nh > kh ? nh - kh : 0) + (nl > kl ? nl - kl : 0);
		v.cnt[k] = c;
	}
	block_park_sum(v, c);
}

__global__ void kva_shrink_scatter_kernel(struct kva_view v,
					  const uint32_t *__restrict__ slots,
					  uint32_t nk)
{
	const uint32_t k = blockIdx.x * blockDim.x + threadIdx.x;
	const uint64_t off = block_offset(v, k, nk);

	if (k >= nk)
		return;
	const uint32_t list = dev_list(v, slots, k);
	const uint32_t w = v.width;
	uint32_t *t = &v.table[(size_t)list * w];
	uint32_t *np = &v.npages[2 * list];
	const uint32_t kh = dev_keep(v, list, KVA_HI);
	const uint32_t kl = dev_keep(v, list, KVA_LO);
	uint64_t pos = *v.tail + off;

	for (uint32_t e = kh; e < np[KVA_HI]; e++, pos++) {
		const uint32_t p = t[e];

		v.ring[pos % v.ring_cap] = p;
		v.page_list[p] = KVA_OWNER_FREE;
		v.page_pos[p] = KVA_PAGE_NONE;
		t[e] = KVA_PAGE_NONE;
	}
	for (uint32_t i = kl; i < np[KVA_LO]; i++, pos++) {
		const uint32_t e = w - 1 - i, p = t[e];

		v.ring[pos % v.ring_cap] = p;
		v.page_list[p] = KVA_OWNER_FREE;
		v.page_pos[p] = KVA_PAGE_NONE;
		t[e] = KVA_PAGE_NONE;
	}
	if (np[KVA_HI] > kh)
		np[KVA_HI] = kh;
	if (np[KVA_LO] > kl)
		np[KVA_LO] = kl;
}

/**
 * kva_shrink_cuda() - kva_shrink_cpu() on the device
 * @v: view whose every pointer is device memory
 * @slots: device array of decoding slots, validated by the caller
 * @n: number of slots
 * @stream: a cudaStream_t (NULL: the default stream)
 *
 * count (pages beyond what each tier's tokens need), block-sum scan,
 * scatter them to the tail (high then low, as the CPU reference), finish
 * (the tail advances; kva_free_finish_kernel() does exactly that). The
 * arrays come out identical to kva_shrink_cpu()'s.
 *
 * Return: 0, -EINVAL for a missing view, or the launch error as an errno.
 */
extern "C" int kva_shrink_cuda(const struct kva_view *v, const uint32_t *slots,
			       uint32_t n, void *stream)
{
	cudaStream_t s = (cudaStream_t)stream;
	const uint32_t nk = n * (v ? v->lists_per_slot : 0);
	cudaError_t e;

	if (!v || (n && !slots))
		return -EINVAL;
	e = cudaMemsetAsync(v->err, 0, sizeof(*v->err), s);
	if (e)
		return kvk_cuda_errno(e);
	if (nk)
		kva_shrink_count_kernel<<<blocks(nk), KVA_THREADS, 0, s>>>(
			*v, slots, nk);
	kva_scan_blocks_kernel<<<1, KVA_SCAN_THREADS, 0, s>>>(v->off, nk,
							      blocks(nk));
	if (nk)
		kva_shrink_scatter_kernel<<<blocks(nk), KVA_THREADS, 0, s>>>(
			*v, slots, nk);
	kva_free_finish_kernel<<<1, 1, 0, s>>>(*v, nk);
	return kvk_cuda_errno(cudaGetLastError());
}
