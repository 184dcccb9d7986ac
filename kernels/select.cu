// SPDX-License-Identifier: MIT
/*
 * select.cu - page selection for sparse decode attention and the
 * page-summary update (select.h), on the GPU.
 *
 * Selection: one block per (kv-head, sequence). The group's queries are
 * staged in shared memory as fp32; each thread scores pages (the bound in
 * channel order with explicit round-to-nearest multiplies and adds, no
 * fused multiply-add, the CPU reference's arithmetic exactly; a channel's
 * min and max are loaded once for all the group's queries, one running sum
 * per query); each non-forced page's rank is counted over the others (O(pages^2 / threads),
 * fine for the lists of a decode step; a radix select would scale
 * better); thread 0 compacts the kept ids in order. Summary: one block per
 * entry, threads over channels.
 */
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <errno.h>

#include "kvk_cuda.cuh"
#include "select.h"

#define SEL_THREADS 1024
#define SEL_GRANULE (2ULL << 20)

static __device__ float act_load(const void *p, size_t i, int dt)
{
	switch (dt) {
	case KVK_F16:
		return __half2float(((const __half *)p)[i]);
	case KVK_BF16:
		return __bfloat162float(((const __nv_bfloat16 *)p)[i]);
	default:
		return ((const float *)p)[i];
	}
}

__global__ void __launch_bounds__(SEL_THREADS)
	kvk_select_pages_kernel(struct kvk_select_args s)
{
	extern __shared__ float smem[];
	const struct kvk_attn_args &a = s.attn;
	const uint32_t hd = a.head_dim, G = a.group, W = a.width;
	const uint32_t h = blockIdx.x, sq = blockIdx.y;
	const uint32_t nq = a.nr_kv_heads * G;
	const uint32_t list = a.list_base[sq] + h;
	const uint32_t n_hi = a.ntokens[2 * list];
	const uint32_t n_lo = a.ntokens[2 * list + 1];
	const uint32_t T = a.tier[0].tokens;
	const uint32_t p_hi = (n_hi + T - 1) / T;
	const uint32_t p_lo = (n_lo + a.tier[1].tokens - 1) / a.tier[1].tokens;
	const uint32_t first_win = n_hi > s.window ? (n_hi - s.window) / T : 0;
	const uint32_t *row = a.tables + (size_t)list * W;
	uint32_t *out = s.sel_tables + (size_t)list * W;
	float *q = smem;			/* [G][hd] */
	float *score = smem + G * hd;		/* [W] */
	uint8_t *keep = (uint8_t *)(score + W);	/* [W] */
	__shared__ uint32_t forced;

	if ((uint64_t)p_hi + p_lo > W)
		return; /* the CPU reference refuses it; nothing written */
	for (uint32_t i = threadIdx.x; i < G * hd; i += blockDim.x)
		q[i] = act_load(a.q, ((size_t)sq * nq + h * G) * hd + i,
				a.dtype);
	if (threadIdx.x == 0)
		forced = 0;
	__syncthreads();
	for (uint32_t i = threadIdx.x; i < p_hi; i += blockDim.x) {
		bool f = i < s.sink || i >= first_win || i == p_hi - 1;
		float best = -INFINITY;

		keep[i] = f;
		if (f) {
			atomicAdd(&forced, 1u);
			continue;
		}
		size_t r = (size_t)row[i] * 2 * hd;
		float acc[KVK_ATTN_MAX_GROUP];

		/*
		 * each (page, query) sum runs in channel order, as the CPU
		 * reference's; the channel's min and max are loaded once for
		 * every query of the group
		 */
#pragma unroll
		for (uint32_t g = 0; g < KVK_ATTN_MAX_GROUP; g++)
			acc[g] = 0.0f;
#pragma unroll 2
		for (uint32_t e = 0; e < hd; e++) {
			float lo, hi;

			if (s.sum_dtype == KVK_F16) {
				const __half *p = (const __half *)s.summary;

				lo = __half2float(p[r + e]);
				hi = __half2float(p[r + hd + e]);
			} else {
				const float *p = (const float *)s.summary;

				lo = p[r + e];
				hi = p[r + hd + e];
			}
#pragma unroll	/* acc[] stays in registers */
			for (uint32_t g = 0; g < KVK_ATTN_MAX_GROUP; g++) {
				if (g >= G)
					break;
				float qe = q[g * hd + e];

				acc[g] = __fadd_rn(acc[g],
						   fmaxf(__fmul_rn(qe, lo),
							 __fmul_rn(qe, hi)));
			}
		}
#pragma unroll
		for (uint32_t g = 0; g < KVK_ATTN_MAX_GROUP; g++)
			if (g < G)
				best = fmaxf(best, acc[g]);
		score[i] = best;
	}
	__syncthreads();
	const uint32_t budget = s.topk > forced ? s.topk - forced : 0;
	/* rank among the non-forced: higher score first, ties to lower index */
	uint8_t sel[32];
	for (uint32_t i = threadIdx.x, c = 0; i < p_hi; i += blockDim.x, c++) {
		uint32_t rank = 0;

		sel[c % 32] = 0;
		if (keep[i] || !budget)
			continue;
		for (uint32_t j = 0; j < p_hi && rank < budget; j++)
			if (!keep[j] && (score[j] > score[i] ||
					 (score[j] == score[i] && j < i)))
				rank++;
		sel[c % 32] = rank < budget;
	}
	__syncthreads(); /* every rank counted before keep[] changes */
	for (uint32_t i = threadIdx.x, c = 0; i < p_hi; i += blockDim.x, c++)
		if (sel[c % 32])
			keep[i] = 1;
	__syncthreads();
	if (threadIdx.x == 0) {
		uint32_t m = 0;

		for (uint32_t i = 0; i < p_hi; i++)
			if (keep[i])
				out[m++] = row[i];
		s.sel_ntokens[2 * list] =
			p_hi ? (m - 1) * T + (n_hi - (p_hi - 1) * T) : 0;
		s.sel_ntokens[2 * list + 1] = n_lo;
	}
	for (uint32_t j = threadIdx.x; j < p_lo; j += blockDim.x)
		out[W - 1 - j] = row[W - 1 - j];
}

/**
 * kvk_select_pages_cuda() - choose the pages each list attends, on the GPU
 * @s: arguments (device addresses), as for kvk_select_pages_cpu()
 * @stream: cudaStream_t
 *
 * The same selection as the CPU reference, bit for bit. A list with more
 * pages than its row holds is left unwritten (the CPU refuses the call).
 *
 * Return: 0, -EINVAL, or an errno from the launch.
 */
int kvk_select_pages_cuda(const struct kvk_select_args *s, void *stream)
{
	size_t smem;
	int ret;

	ret = kvk_select_check(s);
	if (ret)
		return ret;
	if (!s->attn.nr_seqs || !s->attn.nr_kv_heads)
		return 0;
	/* one rank flag per thread and stride step: SEL_THREADS * 32 pages */
	static_assert(SEL_THREADS * 32 >= KVK_SELECT_MAX_PAGES, "sel[]");
	smem = ((size_t)s->attn.group * s->attn.head_dim + s->attn.width) * 4 +
	       s->attn.width;
	if (smem > 48 * 1024) {
		ret = kvk_cuda_errno(cudaFuncSetAttribute(
			kvk_select_pages_kernel,
			cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
		if (ret)
			return ret;
	}
	kvk_select_pages_kernel<<<dim3(s->attn.nr_kv_heads, s->attn.nr_seqs),
				  SEL_THREADS, smem, (cudaStream_t)stream>>>(*s);
	return kvk_cuda_errno(cudaGetLastError());
}

__global__ void kvk_page_summary_kernel(struct kvk_summary_args u)
{
	const uint32_t hd = u.head_dim;
	const uint32_t page = u.upd[3 * blockIdx.x];
	const uint32_t first = u.upd[3 * blockIdx.x + 1];
	uint32_t end = first + u.upd[3 * blockIdx.x + 2];
	const uint8_t *pg = (const uint8_t *)(uintptr_t)(
		u.pool + (page / u.pages_per_granule) * SEL_GRANULE +
		(uint64_t)(page % u.pages_per_granule) * u.page_size);
	const __half *k = (const __half *)(pg + u.tier.k_off);
	const size_t row = (size_t)page * 2 * hd;

	if (end > u.tier.tokens || end < first)
		end = u.tier.tokens; /* clipped (the CPU refuses) */
	for (uint32_t e = threadIdx.x; e < hd; e += blockDim.x) {
		float mn = INFINITY, mx = -INFINITY;

		if (first) {
			if (u.sum_dtype == KVK_F16) {
				mn = __half2float(((__half *)u.summary)[row + e]);
				mx = __half2float(
					((__half *)u.summary)[row + hd + e]);
			} else {
				mn = ((float *)u.summary)[row + e];
				mx = ((float *)u.summary)[row + hd + e];
			}
		}
		for (uint32_t t = first; t < end; t++) {
			float x = __half2float(k[(size_t)t * hd + e]);

			mn = fminf(mn, x);
			mx = fmaxf(mx, x);
		}
		if (u.sum_dtype == KVK_F16) {
			((__half *)u.summary)[row + e] = __float2half_rn(mn);
			((__half *)u.summary)[row + hd + e] = __float2half_rn(mx);
		} else {
			((float *)u.summary)[row + e] = mn;
			((float *)u.summary)[row + hd + e] = mx;
		}
	}
}

/**
 * kvk_page_summary_cuda() - fold appended keys into page summaries, on the
 * GPU
 * @u: arguments (device addresses), as for kvk_page_summary_cpu()
 * @stream: cudaStream_t
 *
 * Return: 0, -EINVAL, or an errno from the launch.
 */
int kvk_page_summary_cuda(const struct kvk_summary_args *u, void *stream)
{
	int ret;

	ret = kvk_summary_check(u);
	if (ret)
		return ret;
	if (!u->nr)
		return 0;
	kvk_page_summary_kernel<<<u->nr, 128, 0, (cudaStream_t)stream>>>(*u);
	return kvk_cuda_errno(cudaGetLastError());
}
