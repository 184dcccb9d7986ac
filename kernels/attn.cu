// SPDX-License-Identifier: MIT
/*
 * attn.cu - paged mixed-precision decode attention, first version.
 *
 * One block per (kv-head, sequence): every page of the head is read once
 * for all query heads of its GQA group (DiffKV runs one block per query
 * head and re-reads K and V group-size times). Four warps take tokens in
 * turn; each lane holds head_dim / 32 consecutive dimensions, dequantizes
 * them in registers and keeps an online softmax per query head. The warps
 * are merged through shared memory. With update_scores, a second pass over
 * K (the final maximum and sum known) adds each token's largest probability
 * over the group to its score field.
 *
 * Not yet: splitting a long context over several blocks (low batch leaves
 * SMs idle), templated formats (bits are read at run time), vector loads of
 * whole rows. See Documentation/kernels/attention.rst for figures.
 */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <errno.h>

#include "kvattn.h"
#include "kvq.h"
#include "kvk_cuda.cuh"

#define ATTN_WARPS 4
#define ATTN_GRANULE (2ULL << 20)
#define MAXG KVK_ATTN_MAX_GROUP

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

static __device__ void act_store(void *p, size_t i, float v, int dt)
{
	switch (dt) {
	case KVK_F16:
		((__half *)p)[i] = __float2half_rn(v);
		break;
	case KVK_BF16:
		((__nv_bfloat16 *)p)[i] = __float2bfloat16_rn(v);
		break;
	default:
		((float *)p)[i] = v;
	}
}

/* this lane's E dims [lane * E, lane * E + E) of a token's K or V row */
template <int E>
static __device__ void dequant_lane(const uint8_t *page, uint32_t off,
				    uint32_t moff, int bits, int groups,
				    uint32_t slot, int lane, float *x)
{
	constexpr uint32_t HD = 32 * E;

	if (bits == 16) {
		const __half *r = (const __half *)(page + off) +
				  (size_t)slot * HD + lane * E;

#pragma unroll
		for (int e = 0; e < E; e++)
			x[e] = __half2float(r[e]);
		return;
	}
	const uint8_t *row = page + off + (size_t)slot * (HD * bits / 8);
	const uint32_t d0 = lane * E, sb = d0 * bits, nbits = E * bits;
	/* a lane's dims never straddle a group: E divides head_dim / groups */
	const __half *m = (const __half *)(page + moff +
					   (size_t)slot * 4 * groups) +
			  2 * (d0 / (HD / groups));
	const float sc = __half2float(m[0]), zr = __half2float(m[1]);
	uint64_t w = 0;

	if (sb % 8 == 0 && nbits % 8 == 0) {
		const uint8_t *p = row + sb / 8;

		switch (nbits / 8) { /* aligned: rows start on 32 bytes */
		case 1:
			w = *p;
			break;
		case 2:
			w = *(const uint16_t *)p;
			break;
		case 4:
			w = *(const uint32_t *)p;
			break;
		default:
			w = *(const uint64_t *)p;
		}
	} else {
		w = row[sb / 8] >> (sb % 8);
	}
#pragma unroll
	for (int e = 0; e < E; e++)
		x[e] = fmaf((float)((w >> (e * bits)) & ((1U << bits) - 1)),
			    sc, zr);
}

static __device__ const uint8_t *token_page(const kvk_attn_args &a,
					    uint32_t list, uint32_t i,
					    uint32_t n_hi, int *tier,
					    uint32_t *slot)
{
	uint32_t page;

	if (i < n_hi) {
		*tier = 0;
		page = a.tables[(size_t)list * a.width + i / a.tier[0].tokens];
		*slot = i % a.tier[0].tokens;
	} else {
		i -= n_hi;
		*tier = 1;
		page = a.tables[(size_t)list * a.width + a.width - 1 -
				i / a.tier[1].tokens];
		*slot = i % a.tier[1].tokens;
	}
	return (const uint8_t *)(a.pool +
				 (page / a.pages_per_granule) * ATTN_GRANULE +
				 (uint64_t)(page % a.pages_per_granule) *
					 a.page_size);
}

template <int E>
static __device__ void token_logits(const kvk_attn_args &a, uint32_t list,
				    uint32_t i, uint32_t n_hi, int lane,
				    const float (*q)[E], float *lg,
				    const uint8_t **pg, int *tier,
				    uint32_t *slot)
{
	float k[E];

	*pg = token_page(a, list, i, n_hi, tier, slot);
	const kvk_attn_tier &t = a.tier[*tier];
	dequant_lane<E>(*pg, t.k_off, t.km_off, t.kbits, t.kgroups, *slot,
			lane, k);
#pragma unroll
	for (int g = 0; g < MAXG; g++) {
		float d = 0.0f;

		if (g >= (int)a.group)
			break;
#pragma unroll
		for (int e = 0; e < E; e++)
			d = fmaf(q[g][e], k[e], d);
		for (int o = 16; o; o >>= 1)
			d += __shfl_xor_sync(~0U, d, o);
		lg[g] = d;
	}
}

template <int E>
__global__ void __launch_bounds__(ATTN_WARPS * 32)
	kvk_attn_decode_kernel(const kvk_attn_args a)
{
	constexpr uint32_t HD = 32 * E;
	__shared__ float sm_m[ATTN_WARPS][MAXG], sm_l[ATTN_WARPS][MAXG];
	__shared__ float sm_acc[ATTN_WARPS][MAXG][HD];
	__shared__ float fin_m[MAXG], fin_l[MAXG];
	const uint32_t h = blockIdx.x, s = blockIdx.y, G = a.group;
	const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
	const uint32_t list = a.list_base[s] + h;
	const uint32_t n_hi = a.ntokens[2 * list], n_lo = a.ntokens[2 * list + 1];
	const size_t qbase = ((size_t)s * a.nr_kv_heads + h) * G * HD;
	uint32_t n = n_hi + n_lo;
	float q[MAXG][E], m[MAXG], l[MAXG], acc[MAXG][E];

	/* a table too short for its counts: read nothing, output zeros */
	if ((n_hi + a.tier[0].tokens - 1) / a.tier[0].tokens +
		    (n_lo + a.tier[1].tokens - 1) / a.tier[1].tokens >
	    a.width)
		n = 0;
#pragma unroll
	for (int g = 0; g < MAXG; g++) {
		m[g] = -INFINITY, l[g] = 0.0f;
#pragma unroll
		for (int e = 0; e < E; e++) {
			acc[g][e] = 0.0f;
			q[g][e] = g < (int)G ? act_load(a.q, qbase + g * HD +
							    lane * E + e,
							a.dtype) * a.scale :
					       0.0f;
		}
	}
	for (uint32_t i = warp; i < n; i += ATTN_WARPS) {
		float lg[MAXG], v[E];
		const uint8_t *pg;
		uint32_t slot;
		int tier;

		token_logits<E>(a, list, i, n_hi, lane, q, lg, &pg, &tier,
				&slot);
		const kvk_attn_tier &t = a.tier[tier];
		dequant_lane<E>(pg, t.v_off, t.vm_off, t.vbits, t.vgroups, slot,
				lane, v);
#pragma unroll
		for (int g = 0; g < MAXG; g++) {
			if (g >= (int)G)
				break;
			float mn = fmaxf(m[g], lg[g]);
			float corr = expf(m[g] - mn), p = expf(lg[g] - mn);

			l[g] = l[g] * corr + p;
#pragma unroll
			for (int e = 0; e < E; e++)
				acc[g][e] = fmaf(p, v[e], acc[g][e] * corr);
			m[g] = mn;
		}
	}
#pragma unroll
	for (int g = 0; g < MAXG; g++) {
		if (g >= (int)G)
			break;
		if (lane == 0)
			sm_m[warp][g] = m[g], sm_l[warp][g] = l[g];
#pragma unroll
		for (int e = 0; e < E; e++)
			sm_acc[warp][g][lane * E + e] = acc[g][e];
	}
	__syncthreads();
	if (threadIdx.x < G) {
		float M = -INFINITY, L = 0.0f;

		for (int w = 0; w < ATTN_WARPS; w++)
			M = fmaxf(M, sm_m[w][threadIdx.x]);
		for (int w = 0; w < ATTN_WARPS; w++)
			if (sm_l[w][threadIdx.x] > 0.0f)
				L += sm_l[w][threadIdx.x] *
				     expf(sm_m[w][threadIdx.x] - M);
		fin_m[threadIdx.x] = M, fin_l[threadIdx.x] = L;
	}
	__syncthreads();
	for (uint32_t idx = threadIdx.x; idx < G * HD; idx += blockDim.x) {
		uint32_t g = idx / HD, d = idx % HD;
		float o = 0.0f;

		if (fin_l[g] > 0.0f) {
			for (int w = 0; w < ATTN_WARPS; w++)
				if (sm_l[w][g] > 0.0f)
					o += sm_acc[w][g][d] *
					     expf(sm_m[w][g] - fin_m[g]);
			o /= fin_l[g];
		}
		act_store(a.out, qbase + idx, o, a.dtype);
	}
	if (!a.update_scores)
		return;
	for (uint32_t i = warp; i < n; i += ATTN_WARPS) {
		float lg[MAXG], best = 0.0f;
		const uint8_t *pg;
		uint32_t slot;
		int tier;

		token_logits<E>(a, list, i, n_hi, lane, q, lg, &pg, &tier,
				&slot);
#pragma unroll
		for (int g = 0; g < MAXG; g++) {
			if (g >= (int)G)
				break;
			best = fmaxf(best, expf(lg[g] - fin_m[g]) / fin_l[g]);
		}
		if (lane == 0)
			*((float *)(pg + a.tier[tier].score_off) + slot) += best;
	}
}

/**
 * kvk_attn_decode_cuda() - decode attention on the GPU
 * @a: arguments; every pointer and address is a device address
 * @stream: cudaStream_t
 *
 * Same signature and results (to rounding) as kvk_attn_decode_cpu(). A
 * (sequence, head) whose counts need more pages than its table row holds
 * reads nothing and outputs zeros (the CPU reference returns -EINVAL).
 *
 * Return: 0, -EINVAL for bad arguments, or the launch error.
 */
extern "C" int kvk_attn_decode_cuda(const struct kvk_attn_args *a,
				    void *stream)
{
	cudaStream_t st = (cudaStream_t)stream;
	dim3 grid;
	cudaError_t e;
	int ret = kvk_attn_check(a);

	if (ret)
		return ret;
	if (!a->nr_seqs)
		return 0;
	if (a->nr_seqs > 65535 || a->nr_kv_heads > 65535)
		return -EINVAL;
	grid = dim3(a->nr_kv_heads, a->nr_seqs);
	switch (a->head_dim) {
	case 64:
		kvk_attn_decode_kernel<2><<<grid, ATTN_WARPS * 32, 0, st>>>(*a);
		break;
	case 128:
		kvk_attn_decode_kernel<4><<<grid, ATTN_WARPS * 32, 0, st>>>(*a);
		break;
	default:
		kvk_attn_decode_kernel<8><<<grid, ATTN_WARPS * 32, 0, st>>>(*a);
	}
	e = cudaGetLastError();
	return kvk_cuda_errno(e);
}
