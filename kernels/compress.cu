// SPDX-License-Identifier: MIT
/*
 * compress.cu - compress-and-append on the GPU, prompt and decode phases.
 * The same classification (kvk_tok_classify(), kvk_decode_choose()), the
 * same quantization operations as quant.c and the same token order as
 * compress.c, so the pages written are identical to the byte.
 */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <errno.h>
#include <stdint.h>

#include "compress.h"
#include "kvk_cuda.cuh"
#include "kvq.h"

#define KVC_GRANULE (2ULL << 20)
#define KVC_CHUNK 64 /* prompt tokens per block of the writer (<= threads) */
#define KVC_THREADS 256
#define KVC_SCAN 4	/* tokens a thread loads at once in the victim scan */
/*
 * the victim scan's block: one per (kv-head, sequence), so at 32 x 8 there
 * are 256 blocks for 132 SMs; a block of 256 threads left it a chain of
 * load latencies (0.79 ms of a 17 ms diffkv step at 32 x 8K, H100)
 */
#define KVC_PLAN_THREADS 1024
#define KVC_PER_LANE (KVQ_MAX_HEAD_DIM / 32)

static_assert(KVC_CHUNK <= KVC_THREADS, "one token per thread in the scan");

__device__ __forceinline__ uint8_t *kvc_page(const kvk_compress_pages &pg,
					     uint32_t p)
{
	return (uint8_t *)(uintptr_t)(pg.pool +
				      (uint64_t)(p / pg.pages_per_granule) *
					      KVC_GRANULE +
				      (uint64_t)(p % pg.pages_per_granule) *
					      pg.page_size);
}

__device__ __forceinline__ uint32_t kvc_rb(uint32_t hd, uint32_t bits)
{
	return hd * bits / 8;
}

__device__ __forceinline__ uint32_t kvc_mb(uint32_t bits, uint32_t groups)
{
	return bits == 16 ? 0 : 4 * groups;
}

__device__ __forceinline__ float kvc_clamp_f16(float x)
{
	return fminf(fmaxf(x, -65504.0f), 65504.0f);
}

template <typename T>
__device__ void kvc_warp_load(float *x, const T *src, uint32_t hd)
{
	uint32_t lane = threadIdx.x % 32;

#pragma unroll
	for (int j = 0; j < KVC_PER_LANE; j++) {
		uint32_t i = lane + 32 * j;

		x[j] = i < hd ? kvk_dld(src, i) : 0.0f;
	}
}

/*
 * One warp quantizes one vector: x[j] is element lane + 32 j. Same
 * operations as kvq_quantize_row(); @qs is the warp's 256-byte staging.
 */
__device__ void kvc_warp_quant(const float *x, uint32_t hd, uint32_t bits,
			       uint32_t groups, uint8_t *row, uint16_t *meta,
			       uint8_t *qs)
{
	uint32_t lane = threadIdx.x % 32, gsize = hd / groups, rb;
	float s[KVQ_MAX_GROUPS], z[KVQ_MAX_GROUPS];
	float qmax = (float)((1U << bits) - 1);

	if (bits == 16) {
#pragma unroll
		for (int j = 0; j < KVC_PER_LANE; j++)
			if (lane + 32 * j < hd)
				((__half *)row)[lane + 32 * j] =
					__float2half_rn(x[j]);
		return;
	}
	for (uint32_t g = 0; g < groups; g++) {
		float mn = INFINITY, mx = -INFINITY;

#pragma unroll
		for (int j = 0; j < KVC_PER_LANE; j++) {
			uint32_t i = lane + 32 * j;

			if (i < hd && i / gsize == g) {
				float c = kvc_clamp_f16(x[j]);

				mn = fminf(mn, c);
				mx = fmaxf(mx, c);
			}
		}
		for (int o = 16; o; o >>= 1) {
			mn = fminf(mn, __shfl_xor_sync(~0U, mn, o));
			mx = fmaxf(mx, __shfl_xor_sync(~0U, mx, o));
		}
		__half sh = __float2half_rn(kvc_clamp_f16((mx - mn) / qmax));
		__half zh = __float2half_rn(mn);

		s[g] = __half2float(sh);
		z[g] = __half2float(zh);
		if (lane == 0) {
			meta[2 * g] = __half_as_ushort(sh);
			meta[2 * g + 1] = __half_as_ushort(zh);
		}
	}
#pragma unroll
	for (int j = 0; j < KVC_PER_LANE; j++) {
		uint32_t i = lane + 32 * j;
		float q = 0.0f, sg, zg;

		if (i >= hd)
			continue;
		sg = s[i / gsize];
		zg = z[i / gsize];
		if (sg > 0.0f)
			q = fminf(fmaxf(rintf((kvc_clamp_f16(x[j]) - zg) / sg),
					0.0f),
				  qmax);
		qs[i] = (uint8_t)q;
	}
	__syncwarp();
	rb = hd * bits / 8;
	for (uint32_t b = lane; b < rb; b += 32) {
		uint32_t per = 8 / bits, v = 0;

		for (uint32_t k = 0; k < per; k++)
			v |= (uint32_t)qs[b * per + k] << (k * bits);
		row[b] = (uint8_t)v;
	}
	__syncwarp();
}

/* One warp expands one vector, as kvq_dequantize_row() */
__device__ void kvc_warp_dequant(float *x, uint32_t hd, uint32_t bits,
				 uint32_t groups, const uint8_t *row,
				 const uint16_t *meta)
{
	uint32_t lane = threadIdx.x % 32, gsize = hd / groups;

#pragma unroll
	for (int j = 0; j < KVC_PER_LANE; j++) {
		uint32_t i = lane + 32 * j, bit, q, g;

		x[j] = 0.0f;
		if (i >= hd)
			continue;
		if (bits == 16) {
			x[j] = __half2float(((const __half *)row)[i]);
			continue;
		}
		bit = i * bits;
		q = (row[bit / 8] >> (bit % 8)) & ((1U << bits) - 1);
		g = i / gsize;
		x[j] = fmaf((float)q,
			    __half2float(__ushort_as_half(meta[2 * g])),
			    __half2float(__ushort_as_half(meta[2 * g + 1])));
	}
}

/* k, v of one token into slot @slot of @page, tier @t; one warp each side */
__device__ void kvc_put_side(uint8_t *page, const kvk_attn_tier &t, uint32_t hd,
			     uint32_t slot, int side, const float *x,
			     uint8_t *qs)
{
	if (side == 0)
		kvc_warp_quant(x, hd, t.kbits, t.kgroups,
			       page + t.k_off + slot * kvc_rb(hd, t.kbits),
			       (uint16_t *)(page + t.km_off +
					    slot * kvc_mb(t.kbits, t.kgroups)),
			       qs);
	else
		kvc_warp_quant(x, hd, t.vbits, t.vgroups,
			       page + t.v_off + slot * kvc_rb(hd, t.vbits),
			       (uint16_t *)(page + t.vm_off +
					    slot * kvc_mb(t.vbits, t.vgroups)),
			       qs);
}

__device__ void kvc_get_side(const uint8_t *page, const kvk_attn_tier &t,
			     uint32_t hd, uint32_t slot, int side, float *x)
{
	if (side == 0)
		kvc_warp_dequant(
			x, hd, t.kbits, t.kgroups,
			page + t.k_off + slot * kvc_rb(hd, t.kbits),
			(const uint16_t *)(page + t.km_off +
					   slot * kvc_mb(t.kbits, t.kgroups)));
	else
		kvc_warp_dequant(
			x, hd, t.vbits, t.vgroups,
			page + t.v_off + slot * kvc_rb(hd, t.vbits),
			(const uint16_t *)(page + t.vm_off +
					   slot * kvc_mb(t.vbits, t.vgroups)));
}

/* ------------------------------------------------------------------ */
/* prompt phase                                                        */

__device__ __forceinline__ void kvc_alphas(const float *seq_alpha, float ap,
					   float aq, uint32_t s, float *p,
					   float *q)
{
	*p = seq_alpha ? seq_alpha[2 * s] : ap;
	*q = seq_alpha ? seq_alpha[2 * s + 1] : aq;
}

/* pass 1: one block per (kv-head, sequence) counts each class */
__global__ void kvk_compress_count_kernel(const kvk_compress_prompt a)
{
	uint32_t h = blockIdx.x, s = blockIdx.y, nkv = a.nr_kv_heads;
	uint32_t b = a.seq_start[s], len = a.seq_start[s + 1] - b;
	uint32_t c[KVK_TOK_NR] = {0, 0, 0};
	float ap, aq;

	kvc_alphas(a.seq_alpha, a.alpha_prune, a.alpha_quant, s, &ap, &aq);
	for (uint32_t t = threadIdx.x; t < len; t += blockDim.x)
		c[kvk_tok_classify(a.scores[(size_t)(b + t) * nkv + h], t, len,
				   a.score_window, a.window, a.sinks, ap,
				   aq)]++;
	for (int k = 0; k < KVK_TOK_NR; k++)
		c[k] = kvk_block_sum(c[k]);
	if (threadIdx.x == 0) {
		uint32_t list = a.pg.list_base[s] + h;
		uint32_t t0 = a.pg.tier[0].tokens, t1 = a.pg.tier[1].tokens;
		uint32_t need = (c[0] + t0 - 1) / t0 + (c[1] + t1 - 1) / t1;

		for (int k = 0; k < KVK_TOK_NR; k++)
			a.counts[((size_t)s * nkv + h) * KVK_TOK_NR + k] = c[k];
		if (need > a.pg.width)
			atomicMin(a.err, -E2BIG);
		else if (a.npages && need > a.npages[2 * list])
			atomicMin(a.err, -ENOSPC);
	}
}

/* exclusive block scan of @v (KVC_THREADS threads); *total gets the sum */
__device__ uint32_t kvc_block_scan(uint32_t v, uint32_t *total)
{
	__shared__ uint32_t wsum[KVC_THREADS / 32];
	uint32_t lane = threadIdx.x % 32, warp = threadIdx.x / 32, x = v;

	for (int o = 1; o < 32; o <<= 1) {
		uint32_t y = __shfl_up_sync(~0U, x, o);

		if (lane >= (uint32_t)o)
			x += y;
	}
	if (lane == 31)
		wsum[warp] = x;
	__syncthreads();
	uint32_t before = 0, all = 0;

	for (uint32_t w = 0; w < KVC_THREADS / 32; w++) {
		before += w < warp ? wsum[w] : 0;
		all += wsum[w];
	}
	__syncthreads();
	*total = all;
	return before + x - v;
}

/* pass 2: grid (chunks, kv-heads, sequences) writes the kept tokens */
template <typename T>
__global__ void __launch_bounds__(KVC_THREADS)
	kvk_compress_write_kernel(const kvk_compress_prompt a)
{
	__shared__ uint8_t cls[KVC_THREADS];
	__shared__ uint32_t idx[KVC_THREADS];
	__shared__ uint8_t qs[KVC_THREADS / 32][KVQ_MAX_HEAD_DIM];
	uint32_t h = blockIdx.y, s = blockIdx.z, nkv = a.nr_kv_heads;
	uint32_t b = a.seq_start[s], len = a.seq_start[s + 1] - b;
	uint32_t c0 = blockIdx.x * KVC_CHUNK, hd = a.head_dim;
	uint32_t warp = threadIdx.x / 32, lane = threadIdx.x % 32;
	uint32_t pre_hi = 0, pre_lo = 0, t = c0 + threadIdx.x, flags, tot;
	const uint32_t *cnt = &a.counts[((size_t)s * nkv + h) * KVK_TOK_NR];
	uint32_t list = a.pg.list_base[s] + h;
	const uint32_t *row = &a.pg.tables[(size_t)list * a.pg.width];
	uint32_t kh = (cnt[0] + a.pg.tier[0].tokens - 1) / a.pg.tier[0].tokens;
	float ap, aq;
	int c;

	if (*a.err || c0 >= len)
		return;
	kvc_alphas(a.seq_alpha, a.alpha_prune, a.alpha_quant, s, &ap, &aq);
	if (blockIdx.x == 0 && threadIdx.x == 0 && a.ntokens) {
		a.ntokens[2 * list] = cnt[0];
		a.ntokens[2 * list + 1] = cnt[1];
	}
	/* kept tokens before the chunk, per tier */
	for (uint32_t u = threadIdx.x; u < c0; u += blockDim.x) {
		int k = kvk_tok_classify(a.scores[(size_t)(b + u) * nkv + h], u,
					 len, a.score_window, a.window, a.sinks,
					 ap, aq);

		pre_hi += k == KVK_TOK_HIGH;
		pre_lo += k == KVK_TOK_LOW;
	}
	pre_hi = kvk_block_sum(pre_hi);
	pre_lo = kvk_block_sum(pre_lo);
	/* ranks inside the chunk: high count in bits 0-15, low in 16-31 */
	c = threadIdx.x < KVC_CHUNK && t < len
		    ? kvk_tok_classify(a.scores[(size_t)(b + t) * nkv + h], t,
				       len, a.score_window, a.window, a.sinks,
				       ap, aq)
		    : KVK_TOK_PRUNED;
	flags = (c == KVK_TOK_HIGH) | (uint32_t)(c == KVK_TOK_LOW) << 16;
	flags = kvc_block_scan(flags, &tot);
	cls[threadIdx.x] = (uint8_t)c;
	idx[threadIdx.x] = c == KVK_TOK_HIGH ? pre_hi + (flags & 0xffff)
					     : pre_lo + (flags >> 16);
	__syncthreads();
	for (uint32_t u = warp; u < KVC_CHUNK && c0 + u < len;
	     u += KVC_THREADS / 32) {
		int k = cls[u];
		uint32_t i = idx[u], tt = c0 + u, p;
		size_t at = (size_t)(b + tt) * nkv + h;
		const kvk_attn_tier &ti = a.pg.tier[k == KVK_TOK_LOW];
		float x[KVC_PER_LANE];
		uint8_t *pg;

		if (k == KVK_TOK_PRUNED)
			continue;
		p = k == KVK_TOK_HIGH ? row[i / ti.tokens]
				      : row[kh + i / ti.tokens];
		pg = kvc_page(a.pg, p);
		kvc_warp_load(x, (const T *)a.k + at * hd, hd);
		kvc_put_side(pg, ti, hd, i % ti.tokens, 0, x, qs[warp]);
		kvc_warp_load(x, (const T *)a.v + at * hd, hd);
		kvc_put_side(pg, ti, hd, i % ti.tokens, 1, x, qs[warp]);
		if (lane == 0) {
			((float *)(pg + ti.score_off))[i % ti.tokens] =
				a.scores[at];
			((int32_t *)(pg + ti.pos_off))[i % ti.tokens] =
				kvk_tok_field(tt, len, a.score_window,
					      a.real_pos);
		}
	}
}

/**
 * kvk_compress_prompt_cuda() - prompt-phase compress-and-append on the GPU
 * @a: arguments; every pointer a device address
 * @stream: cudaStream_t
 *
 * Same signature and bytes as kvk_compress_prompt_cpu(). Two kernels: one
 * block per (kv-head, sequence) counts the classes and checks the
 * reservation; then one block per 64 tokens of each (kv-head, sequence)
 * counts the kept tokens before its chunk, scans its own and writes them,
 * one warp per token and side. Nothing but @counts is written when the
 * check fails.
 *
 * Return: 0, -EINVAL, or a launch error; the outcome is in *@a->err.
 */
extern "C" int kvk_compress_prompt_cuda(const struct kvk_compress_prompt *a,
					void *stream)
{
	cudaStream_t st = (cudaStream_t)stream;
	int ret;

	if (kvk_compress_prompt_check(a))
		return -EINVAL;
	ret = kvk_cuda_errno(cudaMemsetAsync(a->err, 0, sizeof(int32_t), st));
	if (ret || !a->nr_seqs)
		return ret;
	kvk_compress_count_kernel<<<dim3(a->nr_kv_heads, a->nr_seqs),
				    KVC_THREADS, 0, st>>>(*a);
	ret = kvk_launch_errno();
	if (ret || !a->max_len)
		return ret;
	dim3 grid((a->max_len + KVC_CHUNK - 1) / KVC_CHUNK, a->nr_kv_heads,
		  a->nr_seqs);
#define LAUNCH(T) kvk_compress_write_kernel<T><<<grid, KVC_THREADS, 0, st>>>(*a)
	KVK_DISPATCH(a->dtype, LAUNCH);
#undef LAUNCH
	return kvk_launch_errno();
}

/* ------------------------------------------------------------------ */
/* decode phase                                                        */

__device__ __forceinline__ uint8_t *
kvc_decode_slot(const kvk_compress_pages &pg, uint32_t list, int tier,
		uint32_t i, uint32_t *slot)
{
	const uint32_t *row = &pg.tables[(size_t)list * pg.width];
	uint32_t tpp = pg.tier[tier].tokens;

	*slot = i % tpp;
	return kvc_page(pg, tier ? row[pg.width - 1 - i / tpp] : row[i / tpp]);
}

/* (mean, index) order: smaller mean, then smaller index */
__device__ __forceinline__ void kvc_min(float *m, uint32_t *i, float m2,
					uint32_t i2)
{
	if (m2 < *m || (m2 == *m && i2 < *i)) {
		*m = m2;
		*i = i2;
	}
}

/* the block's candidate of least mean in one tier, indices @first .. @n - 1 */
__device__ void kvc_victim(const kvk_compress_pages &pg, uint32_t list,
			   int tier, uint32_t first, uint32_t n, int32_t p,
			   uint32_t minq, float *best, uint32_t *bi)
{
	__shared__ float sm[KVC_PLAN_THREADS / 32];
	__shared__ uint32_t si[KVC_PLAN_THREADS / 32];
	const kvk_attn_tier &t = pg.tier[tier];
	const kvk_fastdiv dt = kvk_fastdiv_make(t.tokens);
	const kvk_fastdiv dg = kvk_fastdiv_make(pg.pages_per_granule);
	const uint32_t *row = &pg.tables[(size_t)list * pg.width];
	uint32_t lane = threadIdx.x % 32, warp = threadIdx.x / 32;
	float m = INFINITY;
	uint32_t mi = UINT32_MAX;

	/*
	 * KVC_SCAN tokens a thread in flight: each is a table read and then
	 * two page reads, so one at a time the scan is a chain of dependent
	 * loads (the order of the minima does not change the result)
	 */
	for (uint32_t i0 = threadIdx.x; i0 < n;
	     i0 += KVC_SCAN * blockDim.x) {
		const uint8_t *pp[KVC_SCAN];
		uint32_t slot[KVC_SCAN];
		float sc[KVC_SCAN];
		int32_t pos[KVC_SCAN];

#pragma unroll
		for (int u = 0; u < KVC_SCAN; u++) {
			uint32_t i = i0 + u * blockDim.x, q, id, g;

			pp[u] = NULL;
			if (i >= n)
				continue;
			q = kvk_fastdiv_q(&dt, i);
			slot[u] = i - q * t.tokens;
			id = tier ? row[pg.width - 1 - q] : row[q];
			g = kvk_fastdiv_q(&dg, id);
			pp[u] = (const uint8_t *)(uintptr_t)(
				pg.pool + (uint64_t)g * KVC_GRANULE +
				(uint64_t)(id - g * pg.pages_per_granule) *
					pg.page_size);
		}
#pragma unroll
		for (int u = 0; u < KVC_SCAN; u++) {
			if (!pp[u])
				continue;
			sc[u] = ((const float *)(pp[u] + t.score_off))[slot[u]];
			pos[u] = ((const int32_t *)(pp[u] + t.pos_off))[slot[u]];
		}
#pragma unroll
		for (int u = 0; u < KVC_SCAN; u++) {
			int64_t nq = (int64_t)p - pos[u];
			uint32_t i = i0 + u * blockDim.x;

			if (pp[u] && nq >= minq && i >= first)
				kvc_min(&m, &mi, sc[u] / (float)nq, i);
		}
	}
	for (int o = 16; o; o >>= 1) {
		float m2 = __shfl_xor_sync(~0U, m, o);
		uint32_t i2 = __shfl_xor_sync(~0U, mi, o);

		kvc_min(&m, &mi, m2, i2);
	}
	__syncthreads();
	if (lane == 0) {
		sm[warp] = m;
		si[warp] = mi;
	}
	__syncthreads();
	m = INFINITY;
	mi = UINT32_MAX;
	for (uint32_t w = 0; w < blockDim.x / 32; w++)
		kvc_min(&m, &mi, sm[w], si[w]);
	*best = m;
	*bi = mi;
}

/* pass 1: one block per (kv-head, sequence) decides */
__global__ void __launch_bounds__(KVC_PLAN_THREADS)
	kvk_compress_plan_kernel(const kvk_compress_decode a)
{
	uint32_t h = blockIdx.x, s = blockIdx.y, nkv = a.nr_kv_heads;
	uint32_t list = a.pg.list_base[s] + h;
	uint32_t n_hi = a.ntokens[2 * list], n_lo = a.ntokens[2 * list + 1];
	uint32_t minq = a.window ? a.window : 1, hi, lo;
	int32_t p = a.pos[s];
	float hm, lm, ap, aq;

	kvc_alphas(a.seq_alpha, a.alpha_prune, a.alpha_quant, s, &ap, &aq);
	hm = lm = INFINITY;
	hi = lo = UINT32_MAX;
	if (kvk_decode_may_move(ap, aq)) {	/* the same for the block */
		kvc_victim(a.pg, list, 0, a.sinks, n_hi, p, minq, &hm, &hi);
		kvc_victim(a.pg, list, 1, 0, n_lo, p, minq, &lm, &lo);
	}
	if (threadIdx.x == 0) {
		kvk_compress_action ac;

		ac.op = kvk_decode_choose(hm, lm, ap / (float)p, aq / (float)p);
		ac.need = 0;
		ac.lo = UINT32_MAX;
		ac.hi = hi;
		if (ac.op == KVK_OP_APPEND) {
			ac.hi = n_hi;
			if (n_hi >= a.npages[2 * list] * a.pg.tier[0].tokens)
				ac.op = KVK_OP_NO_ROOM;
		} else if (ac.op == KVK_OP_DEMOTE_SWAP) {
			ac.lo = lo;
		} else if (ac.op == KVK_OP_DEMOTE) {
			ac.lo = n_lo;
			if (n_lo >=
			    a.npages[2 * list + 1] * a.pg.tier[1].tokens) {
				ac.op = KVK_OP_NO_ROOM;
				ac.need = 1;
			}
		}
		if (ac.op == KVK_OP_NO_ROOM)
			atomicMin(a.err, -ENOSPC);
		a.actions[(size_t)s * nkv + h] = ac;
	}
}

/* pass 2: two warps per (kv-head, sequence): K on warp 0, V on warp 1 */
template <typename T>
__global__ void kvk_compress_apply_kernel(const kvk_compress_decode a)
{
	__shared__ uint8_t qs[2][KVQ_MAX_HEAD_DIM];
	uint32_t h = blockIdx.x, s = blockIdx.y, nkv = a.nr_kv_heads;
	uint32_t list = a.pg.list_base[s] + h, hd = a.head_dim;
	uint32_t side = threadIdx.x / 32, slot;
	kvk_compress_action ac = a.actions[(size_t)s * nkv + h];
	size_t at = ((size_t)s * nkv + h) * hd;
	float x[KVC_PER_LANE];
	uint8_t *hp;

	if (*a.err)
		return;
	hp = kvc_decode_slot(a.pg, list, 0, ac.hi, &slot);
	if (ac.op == KVK_OP_DEMOTE || ac.op == KVK_OP_DEMOTE_SWAP) {
		const kvk_attn_tier &t0 = a.pg.tier[0], &t1 = a.pg.tier[1];
		uint32_t lslot;
		uint8_t *lp = kvc_decode_slot(a.pg, list, 1, ac.lo, &lslot);
		float sc = ((const float *)(hp + t0.score_off))[slot];
		int32_t q0 = ((const int32_t *)(hp + t0.pos_off))[slot];

		kvc_get_side(hp, t0, hd, slot, side, x);
		kvc_put_side(lp, t1, hd, lslot, side, x, qs[side]);
		if (threadIdx.x == 0) {
			((float *)(lp + t1.score_off))[lslot] = sc;
			((int32_t *)(lp + t1.pos_off))[lslot] = q0;
		}
	}
	__syncthreads(); /* the victim is read before the new token lands */
	kvc_warp_load(x, (const T *)(side ? a.v : a.k) + at, hd);
	kvc_put_side(hp, a.pg.tier[0], hd, slot, side, x, qs[side]);
	if (threadIdx.x == 0) {
		((float *)(hp + a.pg.tier[0].score_off))[slot] = 0.0f;
		((int32_t *)(hp + a.pg.tier[0].pos_off))[slot] = a.pos[s];
		if (ac.op == KVK_OP_APPEND)
			a.ntokens[2 * list]++;
		if (ac.op == KVK_OP_DEMOTE)
			a.ntokens[2 * list + 1]++;
	}
}

/**
 * kvk_compress_decode_cuda() - decode-phase compress-and-append on the GPU
 * @a: arguments; every pointer a device address
 * @stream: cudaStream_t
 *
 * Same signature and bytes as kvk_compress_decode_cpu(). One block of 1024
 * threads per (kv-head, sequence) scans the scores and positions of both
 * tiers and picks the action; then, when every list has room, two warps per
 * (kv-head, sequence) requantize the victim and write the new token.
 *
 * Return: 0, -EINVAL, or a launch error; the outcome is in *@a->err.
 */
extern "C" int kvk_compress_decode_cuda(const struct kvk_compress_decode *a,
					void *stream)
{
	cudaStream_t st = (cudaStream_t)stream;
	dim3 grid(a ? a->nr_kv_heads : 0, a ? a->nr_seqs : 0);
	int ret;

	if (kvk_compress_decode_check(a))
		return -EINVAL;
	ret = kvk_cuda_errno(cudaMemsetAsync(a->err, 0, sizeof(int32_t), st));
	if (ret || !a->nr_seqs)
		return ret;
	kvk_compress_plan_kernel<<<grid, KVC_PLAN_THREADS, 0, st>>>(*a);
	ret = kvk_launch_errno();
	if (ret)
		return ret;
#define LAUNCH(T) kvk_compress_apply_kernel<T><<<grid, 64, 0, st>>>(*a)
	KVK_DISPATCH(a->dtype, LAUNCH);
#undef LAUNCH
	return kvk_launch_errno();
}
