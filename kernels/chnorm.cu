// SPDX-License-Identifier: MIT
/*
 * chnorm.cu - per-channel key normalization on CUDA (chnorm.h); the CPU
 * reference is chnorm.c. Same IEEE operations in the same order (each
 * channel's sum and maximum over tokens in token order by one thread, the
 * mean spread over channels in channel order by one thread; explicit
 * round-to-nearest intrinsics, no fused multiply-add), so both agree to
 * the bit.
 */
#include <errno.h>

#include "chnorm.h"
#include "kvk_cuda.cuh"

#define CHN_THREADS 256

/* STATS: one block per (kv-head, sequence), one thread per channel */
__global__ void __launch_bounds__(CHN_THREADS)
	kvk_chn_stats_kernel(const kvk_chn_args a)
{
	__shared__ float dev[256];
	__shared__ float g;
	uint32_t h = blockIdx.x, s = blockIdx.y, d = a.head_dim;
	uint32_t c = threadIdx.x;
	uint32_t b = a.seq_start ? a.seq_start[s] : s;
	uint32_t e = a.seq_start ? a.seq_start[s + 1] : s + 1;
	float *m = a.param + (size_t)(a.list_base[s] + h) * 2 * d;

	if (e <= b)
		return;	/* the whole block: no barrier is skipped by some */
	if (c < d) {
		float sum = 0.0f, mx = 0.0f, mean;

		for (uint32_t t = b; t < e; t++)
			sum = __fadd_rn(sum,
					a.x[((size_t)t * a.heads + h) * d + c]);
		mean = __fdiv_rn(sum, (float)(e - b));
		for (uint32_t t = b; t < e; t++) {
			float v = fabsf(__fsub_rn(
				a.x[((size_t)t * a.heads + h) * d + c], mean));

			mx = v > mx ? v : mx;
		}
		m[c] = mean;
		dev[c] = mx;
	}
	__syncthreads();
	if (c == 0) {
		float sum = 0.0f;

		for (uint32_t i = 0; i < d; i++)
			sum = __fadd_rn(sum, dev[i]);
		g = __fdiv_rn(sum, (float)d);
	}
	__syncthreads();
	if (c < d) {
		float r = g > 0.0f ? __fdiv_rn(dev[c], g) : 1.0f;

		m[d + c] = r > KVK_CHN_MIN_SCALE ? r : KVK_CHN_MIN_SCALE;
	}
}

/* KEYS, QUERIES: one block per row (token, head), a thread per channel */
__global__ void __launch_bounds__(CHN_THREADS)
	kvk_chn_apply_kernel(const kvk_chn_args a)
{
	uint32_t d = a.head_dim, c = threadIdx.x;

	for (size_t row = blockIdx.x; row < (size_t)a.ntok * a.heads;
	     row += gridDim.x) {
		uint32_t t = (uint32_t)(row / a.heads);
		uint32_t h = (uint32_t)(row % a.heads), s = t;
		const float *m;
		float *x = a.x + row * d;

		if (a.seq_start) {	/* the last s with seq_start[s] <= t */
			uint32_t lo = 0, hi = a.nr_seqs - 1;

			while (lo < hi) {
				uint32_t mid = (lo + hi + 1) / 2;

				if (a.seq_start[mid] <= t)
					lo = mid;
				else
					hi = mid - 1;
			}
			s = lo;
		}
		m = a.param + (size_t)(a.list_base[s] + h / a.group) * 2 * d;
		if (c < d)
			x[c] = a.op == KVK_CHN_KEYS
				       ? __fdiv_rn(__fsub_rn(x[c], m[c]),
						   m[d + c])
				       : __fmul_rn(x[c], m[d + c]);
	}
}

/**
 * kvk_chnorm_cuda() - per-channel key normalization on the device
 * @a: arguments, device pointers (struct kvk_chn_args)
 * @stream: cudaStream_t, or NULL
 *
 * Return: 0, -EINVAL, or a launch error as -errno.
 */
extern "C" int kvk_chnorm_cuda(const struct kvk_chn_args *a, void *stream)
{
	cudaStream_t st = (cudaStream_t)stream;
	size_t rows;

	if (kvk_chnorm_check(a))
		return -EINVAL;
	if (a->op == KVK_CHN_STATS) {
		dim3 grid(a->heads, a->nr_seqs);

		kvk_chn_stats_kernel<<<grid, CHN_THREADS, 0, st>>>(*a);
		return kvk_launch_errno();
	}
	rows = (size_t)a->ntok * a->heads;
	if (!rows)
		return 0;
	kvk_chn_apply_kernel<<<rows > 65535 ? 65535 : (unsigned)rows,
			       CHN_THREADS, 0, st>>>(*a);
	return kvk_launch_errno();
}
