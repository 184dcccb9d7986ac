// SPDX-License-Identifier: MIT
/*
 * attn.cu - paged mixed-precision decode attention.
 *
 * Version 2 (fp16 and bf16 activations, below): tensor cores, a warp per
 * page, tiles of 16 tokens, formats as template parameters, the context
 * split over several blocks and merged by log-sum-exp, scores from saved
 * logits in a light third kernel; formats of at most 8 bits staged in
 * shared memory by cp.async, a tile ahead, tiles spanning a warp's pages
 * of one tier, and instances with common tier pairs' formats fixed at
 * compile time. Version 1 (fp32 activations,
 * and scores asked for without scratch): one block of 4 warps per
 * (kv-head, sequence), lanes own dims, every page read once for all query
 * heads of the group, online softmax per query head, warps merged through
 * shared memory, a second pass over K for the scores. See
 * Documentation/kernels/attention.rst for both, with figures.
 */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "kvattn.h"
#include "kvmm_base.h"
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
			best = kvk_attn_score_fold(a.update_scores, best,
						   expf(lg[g] - fin_m[g]) /
							   fin_l[g]);
		}
		if (lane == 0)
			*((float *)(pg + a.tier[tier].score_off) + slot) += best;
	}
}

/*
 * Version 2: tensor cores (mma.sync m16n8k16, fp16 or bf16 operands, fp32
 * accumulation) for fp16 and bf16 activations.
 *
 * A warp takes whole pages and walks each in tiles of 16 tokens. For the
 * logits, S^T = Q K^T: A is the group's query heads (rows 0..7, rows 8..15
 * zero), B is 8 tokens' K; lane (gid = lane / 4, q4 = lane % 4) loads the
 * contiguous quarter [q4 * hd / 4, +hd / 4) of two tokens' K rows (one or
 * more 16-byte loads), dequantizes in registers and feeds it as B: the
 * k-index of the mma is mapped to that quarter, so no lane exchanges K.
 * The logits land on the lanes as 4 consecutive tokens (4 q4 .. 4 q4 + 3)
 * of head gid, which is exactly the B operand of O^T = V^T P^T: P needs no
 * shuffle. For V, lane (gid, q4) loads tokens 4 q4 .. 4 q4 + 3, dims
 * [gid * hd / 8, +hd / 8), and packs token pairs into the A operand. The
 * online softmax runs per tile (base 2, one exp2 per lane per token),
 * with 2 shuffles for the tile maximum and 2 for the correction factors.
 *
 * The context of a (sequence, kv-head) is split over kvk_attn_splits()
 * blocks, merged by log-sum-exp in a second kernel; with update_scores the
 * logits are kept in the scratch and a third, light kernel adds each
 * token's largest probability over the group to its score field.
 */
#define V2_WARPS 4
#define V2_LOG2E 1.4426950408889634f

template <typename T> struct v2_ops;

template <> struct v2_ops<__half> {
	static constexpr bool is_half = true;
	static __device__ __forceinline__ uint32_t pack(float lo, float hi)
	{
		return kvk_pack2(__half(), lo, hi);
	}
	static __device__ __forceinline__ void mma(float *c, uint32_t a0,
						   uint32_t a1, uint32_t a2,
						   uint32_t a3, uint32_t b0,
						   uint32_t b1)
	{
		kvk_mma16816(__half(), c, a0, a1, a2, a3, b0, b1);
	}
	static __device__ __forceinline__ void store(void *p, size_t i, float v)
	{
		((__half *)p)[i] = __float2half_rn(v);
	}
};

template <> struct v2_ops<__nv_bfloat16> {
	static constexpr bool is_half = false;
	static __device__ __forceinline__ uint32_t pack(float lo, float hi)
	{
		return kvk_pack2(__nv_bfloat16(), lo, hi);
	}
	static __device__ __forceinline__ void mma(float *c, uint32_t a0,
						   uint32_t a1, uint32_t a2,
						   uint32_t a3, uint32_t b0,
						   uint32_t b1)
	{
		kvk_mma16816(__nv_bfloat16(), c, a0, a1, a2, a3, b0, b1);
	}
	static __device__ __forceinline__ void store(void *p, size_t i, float v)
	{
		((__nv_bfloat16 *)p)[i] = __float2bfloat16_rn(v);
	}
};

/* N bytes (N a power of two, the address N- or 16-aligned) into words */
template <int N>
static __device__ __forceinline__ void v2_ld(const uint8_t *p, uint32_t *w)
{
	if (N >= 16) {
#pragma unroll
		for (int i = 0; i < N / 16; i++) {
			uint4 v = __ldg((const uint4 *)p + i);

			w[4 * i] = v.x, w[4 * i + 1] = v.y;
			w[4 * i + 2] = v.z, w[4 * i + 3] = v.w;
		}
	} else if (N == 8) {
		uint2 v = __ldg((const uint2 *)p);

		w[0] = v.x, w[1] = v.y;
	} else if (N == 4) {
		w[0] = __ldg((const uint32_t *)p);
	} else if (N == 2) {
		w[0] = __ldg((const unsigned short *)p);
	} else {
		w[0] = __ldg((const unsigned char *)p);
	}
}

/* element e of a packed little-endian chunk of B-bit codes, dequantized */
template <int B>
static __device__ __forceinline__ float v2_deq(const uint32_t *w, int e,
					       float sc, float zr)
{
	uint32_t q = (w[e * B / 32] >> ((e * B) % 32)) & ((1U << B) - 1);

	/* 2^23 + q, exactly, then - 2^23: the integer as a float */
	return fmaf(__uint_as_float(0x4B000000U | q) - 8388608.0f, sc, zr);
}

static __device__ __forceinline__ float v2_h(const uint32_t *w, int e)
{
	return __half2float(__ushort_as_half(
		(unsigned short)(w[e / 2] >> (16 * (e % 2)))));
}

/* a token's (scale, zero) of one group, as two floats */
static __device__ __forceinline__ void v2_meta(const uint8_t *p, float *sc,
					       float *zr)
{
	uint32_t m = __ldg((const uint32_t *)p);
	__half2 h = *(__half2 *)&m;

	*sc = __low2float(h), *zr = __high2float(h);
}

/*
 * fp16 fast path for 8, 4 and 2 bits: elements e and e + 1 (e even) of a
 * chunk as one half2, dequantized by PRMT (and LOP3), HSUB2, HFMA2: each
 * code is placed in the mantissa of 1024 (0x6400), shifted left by its bit
 * offset o in its byte; 1024 is subtracted exactly and the fma uses scale
 * 2^-o (exact), so the result is fp16(q * scale + zero), rounded once.
 */
template <int B>
static __device__ __forceinline__ uint32_t v2_deq2h(const uint32_t *w, int e,
						   float sc, float zr)
{
	const int byte = e * B / 8, o = (e * B) % 8;
	const uint32_t wd = w[byte / 4];
	uint32_t x;
	__half2 h, s2, z2 = __float2half2_rn(zr);

	if (B == 8) {
		x = __byte_perm(wd, 0x64646464U,
				(byte % 4) | 0x40 | (((byte + 1) % 4) << 8) |
					0x4000);
		s2 = __float2half2_rn(sc);
	} else {
		const uint32_t m = (1U << B) - 1;

		x = __byte_perm(wd, 0, (byte % 4) | 0x40 | ((byte % 4) << 8) |
					       0x4000);
		x = (x & ((m << o) | (m << (o + B + 16)))) | 0x64006400U;
		s2 = __floats2half2_rn(sc * (1.0f / (1 << o)),
				       sc * (1.0f / (1 << (o + B))));
	}
	h = __hsub2(*(__half2 *)&x, __float2half2_rn(1024.0f));
	h = __hfma2(h, s2, z2);
	return *(uint32_t *)&h;
}

/* K for the B operand: this lane's quarter row of token t, bits B */
template <int HD, int B>
static __device__ __forceinline__ void v2_ld_k(const uint8_t *pg,
					       const kvk_attn_tier &t,
					       uint32_t slot, int q4,
					       uint32_t *w, float *sc,
					       float *zr)
{
	constexpr int N = HD / 4 * B / 8;

	v2_ld<N>(pg + t.k_off + slot * (HD * B / 8) + q4 * N, w);
	if (B != 16)
		v2_meta(pg + t.km_off + slot * 4 * t.kgroups +
				4 * ((q4 * t.kgroups) >> 2),
			sc, zr);
}

template <int HD, int B>
static __device__ __forceinline__ void v2_ld_v(const uint8_t *pg,
					       const kvk_attn_tier &t,
					       uint32_t slot, int gid,
					       uint32_t *w, float *sc,
					       float *zr)
{
	constexpr int N = HD / 8 * B / 8;

	v2_ld<N>(pg + t.v_off + slot * (HD * B / 8) + gid * N, w);
	if (B != 16)
		v2_meta(pg + t.vm_off + slot * 4 * t.vgroups +
				4 * ((gid * t.vgroups) >> 3),
			sc, zr);
}

/* S^T for 16 tokens: s[n-tile][c0..c3] */
template <int HD, typename T, int B, int KW>
static __device__ __forceinline__ void v2_qk(uint32_t (*kr)[KW],
					     const float *sc, const float *zr,
					     const uint32_t (*qf)[2],
					     float (*s)[4])
{
#pragma unroll
	for (int n = 0; n < 2; n++)
		s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
	/* n inner: the two mma chains interleave */
#pragma unroll
	for (int j = 0; j < HD / 16; j++) {
#pragma unroll
		for (int n = 0; n < 2; n++) {
			uint32_t b0, b1;

			if (B == 16 && v2_ops<T>::is_half) {
				b0 = kr[n][2 * j], b1 = kr[n][2 * j + 1];
			} else if (B == 16) {
				b0 = v2_ops<T>::pack(v2_h(kr[n], 4 * j),
						     v2_h(kr[n], 4 * j + 1));
				b1 = v2_ops<T>::pack(v2_h(kr[n], 4 * j + 2),
						     v2_h(kr[n], 4 * j + 3));
			} else if (v2_ops<T>::is_half && B >= 2) {
				b0 = v2_deq2h<B == 16 ? 8 : B>(kr[n], 4 * j,
							       sc[n], zr[n]);
				b1 = v2_deq2h<B == 16 ? 8 : B>(kr[n], 4 * j + 2,
							       sc[n], zr[n]);
			} else {
				const float c = sc[n], z = zr[n];

				b0 = v2_ops<T>::pack(
					v2_deq<B>(kr[n], 4 * j, c, z),
					v2_deq<B>(kr[n], 4 * j + 1, c, z));
				b1 = v2_ops<T>::pack(
					v2_deq<B>(kr[n], 4 * j + 2, c, z),
					v2_deq<B>(kr[n], 4 * j + 3, c, z));
			}
			v2_ops<T>::mma(s[n], qf[j][0], 0, qf[j][1], 0, b0, b1);
		}
	}
}

/*
 * S^T for 16 tokens of 8-bit K with one group, fp16: B is 1024 + code
 * (PRMT alone, exact in fp16), and the scale and zero are applied to the
 * fp32 result: s (sum q_d h_d - 1024 Q) + z Q, Q the sum of the head's q.
 */
template <int HD, int KW>
static __device__ __forceinline__ void v2_qk_h8(uint32_t (*kr)[KW],
						const uint32_t (*qf)[2],
						float (*s)[4])
{
#pragma unroll
	for (int n = 0; n < 2; n++)
		s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
	for (int j = 0; j < HD / 16; j++)
#pragma unroll
		for (int n = 0; n < 2; n++)
			v2_ops<__half>::mma(
				s[n], qf[j][0], 0, qf[j][1], 0,
				__byte_perm(kr[n][j], 0x64646464U, 0x4140),
				__byte_perm(kr[n][j], 0x64646464U, 0x4342));
}

/* O^T += V^T P^T for 16 tokens */
template <int HD, typename T, int B, int VW>
static __device__ __forceinline__ void v2_pv(uint32_t (*vr)[VW],
					     const float *sc, const float *zr,
					     uint32_t p0, uint32_t p1,
					     float (*acc)[4])
{
#pragma unroll
	for (int i = 0; i < HD / 16; i++) {
		uint32_t a[4];

		if (B == 16 && v2_ops<T>::is_half) {
			a[0] = __byte_perm(vr[0][i], vr[1][i], 0x5410);
			a[1] = __byte_perm(vr[0][i], vr[1][i], 0x7632);
			a[2] = __byte_perm(vr[2][i], vr[3][i], 0x5410);
			a[3] = __byte_perm(vr[2][i], vr[3][i], 0x7632);
		} else if (v2_ops<T>::is_half && B >= 2) {
			uint32_t y[4];

#pragma unroll
			for (int u = 0; u < 4; u++)
				y[u] = v2_deq2h<B == 16 ? 8 : B>(vr[u], 2 * i,
								 sc[u], zr[u]);
			a[0] = __byte_perm(y[0], y[1], 0x5410);
			a[1] = __byte_perm(y[0], y[1], 0x7632);
			a[2] = __byte_perm(y[2], y[3], 0x5410);
			a[3] = __byte_perm(y[2], y[3], 0x7632);
		} else {
			float x[4][2];

#pragma unroll
			for (int u = 0; u < 4; u++)
#pragma unroll
				for (int e = 0; e < 2; e++)
					x[u][e] = B == 16 ?
						v2_h(vr[u], 2 * i + e) :
						v2_deq<B == 16 ? 8 : B>(
							vr[u], 2 * i + e, sc[u],
							zr[u]);
			a[0] = v2_ops<T>::pack(x[0][0], x[1][0]);
			a[1] = v2_ops<T>::pack(x[0][1], x[1][1]);
			a[2] = v2_ops<T>::pack(x[2][0], x[3][0]);
			a[3] = v2_ops<T>::pack(x[2][1], x[3][1]);
		}
		v2_ops<T>::mma(acc[i], a[0], a[1], a[2], a[3], p0, p1);
	}
}

/*
 * O^T += V^T P^T for 16 tokens of 4- or 2-bit V, fp16 (staged path): the
 * A operand straight from token pairs. One PRMT takes the byte holding
 * dims 2i, 2i + 1 from two tokens; LOP3 keeps one code per half in the
 * mantissa of 1024 (shifted by its bit offset o); HSUB2 removes 1024
 * exactly and HFMA2 applies the two tokens' scale 2^-o and zero: the
 * same operations and roundings as v2_deq2h(), without repacking.
 */
template <int HD, int B, int VW>
static __device__ __forceinline__ void v2_pv_h(uint32_t (*vr)[VW],
					       const float *sc, const float *zr,
					       uint32_t p0, uint32_t p1,
					       float (*acc)[4])
{
	constexpr uint32_t M = (1U << B) - 1;
	const __half2 one = __float2half2_rn(1024.0f);
	const __half2 z01 = __floats2half2_rn(zr[0], zr[1]);
	const __half2 z23 = __floats2half2_rn(zr[2], zr[3]);

#pragma unroll
	for (int i = 0; i < HD / 16; i++) {
		const int byte = 2 * i * B / 8, o0 = (2 * i * B) % 8;
		const int o1 = o0 + B, bs = byte % 4;
		const uint32_t sel = bs | ((4 + bs) << 8);
		const uint32_t x01 = __byte_perm(vr[0][byte / 4],
						 vr[1][byte / 4], sel);
		const uint32_t x23 = __byte_perm(vr[2][byte / 4],
						 vr[3][byte / 4], sel);
		const uint32_t m0 = (M << o0) * 0x00010001U;
		const uint32_t m1 = (M << o1) * 0x00010001U;
		const float f0 = 1.0f / (1 << o0), f1 = 1.0f / (1 << o1);
		uint32_t a[4] = { (x01 & m0) | 0x64006400U,
				  (x01 & m1) | 0x64006400U,
				  (x23 & m0) | 0x64006400U,
				  (x23 & m1) | 0x64006400U };
		const __half2 s[4] = {
			__floats2half2_rn(sc[0] * f0, sc[1] * f0),
			__floats2half2_rn(sc[0] * f1, sc[1] * f1),
			__floats2half2_rn(sc[2] * f0, sc[3] * f0),
			__floats2half2_rn(sc[2] * f1, sc[3] * f1),
		};

#pragma unroll
		for (int k = 0; k < 4; k++) {
			__half2 h = __hfma2(__hsub2(*(__half2 *)&a[k], one),
					    s[k], k < 2 ? z01 : z23);

			a[k] = *(uint32_t *)&h;
		}
		v2_ops<__half>::mma(acc[i], a[0], a[1], a[2], a[3], p0, p1);
	}
}

/* the table entry of the list's page @p (high tier from the left) */
static __device__ __forceinline__ uint32_t v2_page_id(const kvk_attn_args &a,
						      uint32_t list, uint32_t p,
						      uint32_t p_hi)
{
	return a.tables[(size_t)list * a.width +
			(p < p_hi ? p : a.width - 1 - (p - p_hi))];
}

/* the list's page @p, table entry @id: address, tier, tokens in it */
static __device__ __forceinline__ const uint8_t *
v2_page_at(const kvk_attn_args &a, uint32_t id, uint32_t p, uint32_t p_hi,
	   uint32_t n_hi, uint32_t n_lo, int *tier, uint32_t *ntok)
{
	if (p < p_hi) {
		*tier = 0;
		*ntok = min(a.tier[0].tokens, n_hi - p * a.tier[0].tokens);
	} else {
		p -= p_hi;
		*tier = 1;
		*ntok = min(a.tier[1].tokens, n_lo - p * a.tier[1].tokens);
	}
	return (const uint8_t *)(a.pool +
				 (id / a.pages_per_granule) * ATTN_GRANULE +
				 (uint64_t)(id % a.pages_per_granule) *
					 a.page_size);
}

/* the list's page @p: address, tier, tokens in it */
static __device__ __forceinline__ const uint8_t *
v2_page(const kvk_attn_args &a, uint32_t list, uint32_t p, uint32_t p_hi,
	uint32_t n_hi, uint32_t n_lo, int *tier, uint32_t *ntok)
{
	return v2_page_at(a, v2_page_id(a, list, p, p_hi), p, p_hi, n_hi, n_lo,
			  tier, ntok);
}

/*
 * Staging (formats of at most 8 bits): each warp copies its next tile of
 * 16 tokens (K rows, K metadata, V rows, V metadata) into shared memory
 * with cp.async while it computes the current one, two stages per warp.
 * The copies take no registers, so a warp always has a tile in flight.
 * Rows are stored in 16-byte units (8 for rows of 8 bytes), the unit index
 * XOR-swizzled so that the mma fragment reads are free of bank conflicts:
 * K rows by (r & 1) (a lane reads a quarter row of tokens 2n, 2n + 1), V
 * rows by 2 ((r >> 2) & 3) (a lane reads an eighth of tokens 4 q4 + e).
 * Tokens past the page's end are zero-filled by the copy (nothing read):
 * finite, masked out of the logits, zero V. Segments and pages are assumed
 * 16-byte aligned (kva_page_layout() aligns them to 32); each stage starts
 * 128-byte aligned, as the swizzle's bank mapping needs.
 */
#define V2_STAGES 2
/* run-time flags of the staged walk (measuring knobs, v2_knob()) */
#define V2_FOLD 1	/* K8 with one group: scale and zero after the mma */
#define V2_SPAN 2	/* tiles span the warp's pages of one tier */
#define V2_MAXGRP 4	/* metadata groups per row (kva_tier_valid()) */

template <int HD> struct v2_stage {
	static constexpr int K = 0, KM = 16 * HD, V = KM + 16 * 4 * V2_MAXGRP;
	static constexpr int VM = V + 16 * HD, BYTES = VM + 16 * 4 * V2_MAXGRP;
	/* per warp; the block's shared memory, later also the accumulators */
	static constexpr int WARP = V2_STAGES * BYTES;
	/*
	 * after the stages (which stay 128-byte aligned, as the swizzle
	 * needs), each stage's header: the fields computing the tile
	 * needs (16 bytes)
	 */
	static constexpr int HDRS = V2_WARPS * WARP;
	/*
	 * then the A fragments of q (the same for every warp), read per tile
	 * rather than held in 16 registers: uint4 (j / 2) * 32 + lane holds
	 * the lane's words of chunks j and j + 1
	 */
	static constexpr int QF = HDRS + V2_WARPS * V2_STAGES * 16;
	static constexpr int STAGED = QF + 32 * HD / 16 * 2 * 4;
	static constexpr int BLOCK = STAGED > V2_WARPS * MAXG * HD * 4 ?
					     STAGED :
					     V2_WARPS * MAXG * HD * 4;
};

extern __shared__ __align__(16) uint8_t v2_dyn_smem[];

#define V2_BITS8_SWITCH(bits, CALL)                                            \
	switch (bits) {                                                        \
	case 8: CALL(8); break;                                                \
	case 4: CALL(4); break;                                                \
	case 2: CALL(2); break;                                                \
	default: CALL(1); break;                                               \
	}

/* U bytes (4, 8, 16) to shared memory, of which the first n are read */
template <int U>
static __device__ __forceinline__ void v2_cp(uint32_t dst, const uint8_t *src,
					     uint32_t n)
{
	if (U == 16)
		asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(
				     dst),
			     "l"(src), "r"(n)
			     : "memory");
	else
		asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;\n" ::"r"(
				     dst),
			     "l"(src), "n"(U), "r"(n)
			     : "memory");
}

static __device__ __forceinline__ void v2_cp_commit(void)
{
	asm volatile("cp.async.commit_group;\n" ::: "memory");
}

template <int N> static __device__ __forceinline__ void v2_cp_wait(void)
{
	asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

/* swizzle of a row's 16-byte units (rows of 32 bytes or more) */
template <int ROW, bool V>
static __device__ __forceinline__ uint32_t v2_swz(uint32_t r)
{
	if (ROW < 32)
		return 0;
	return V ? 2 * ((r >> 2) & 3) : (r & 1);
}

/*
 * 16 rows of ROW bytes into @dst: rows 0 .. na - 1 from @sa (the tile's
 * first row; rows are contiguous, so unit c is at sa + c U), rows na ..
 * nv - 1 from @sb (a tile that spans two pages: row na at sb), rows from
 * @nv on zeros (nothing read). A tile in one page passes na = nv.
 */
template <int ROW, bool V>
static __device__ __forceinline__ void v2_cp_rows(uint32_t dst,
						  const uint8_t *sa,
						  const uint8_t *sb,
						  uint32_t na, uint32_t nv,
						  int lane)
{
	constexpr int U = ROW < 16 ? ROW : 16, PER = ROW / U, NU = 16 * PER;
	const uint8_t *vb = sb - na * ROW;	/* row r of the second page */

#pragma unroll
	for (int i = 0; i < (NU + 31) / 32; i++) {
		const uint32_t c = lane + 32 * i, r = c / PER, u = c % PER;

		if (NU % 32 == 0 || c < NU)
			v2_cp<U>(dst + ((r * PER + u) ^ v2_swz<ROW, V>(r)) * U,
				 r < nv ? (r < na ? sa : vb) + c * U : sa,
				 r < nv ? U : 0);
	}
}

/* 16 tokens' metadata (@g groups of 4 bytes) from @src, zeros from @nv on */
static __device__ __forceinline__ void v2_cp_meta(uint32_t dst,
						  const uint8_t *src,
						  uint32_t g, uint32_t nv,
						  int lane)
{
	const int n = (int)(nv * 4 * g) - 16 * lane;

	if (lane < (int)(4 * g))
		v2_cp<16>(dst + 16 * lane, n > 0 ? src + 16 * lane : src,
			  n > 16 ? 16 : n > 0 ? n : 0);
}

/*
 * The same for a tile that spans two pages (tokens 0 .. na - 1 from @sa,
 * na .. nv - 1 from @sb), in 4-byte units: the tile starts anywhere in the
 * first page, so its metadata is not 16-byte aligned.
 */
static __device__ __forceinline__ void v2_cp_meta2(uint32_t dst,
						   const uint8_t *sa,
						   const uint8_t *sb,
						   uint32_t g, uint32_t na,
						   uint32_t nv, int lane)
{
	const uint8_t *vb = sb - 4 * na * g;

#pragma unroll
	for (int i = 0; i < 2; i++) {
		const uint32_t c = lane + 32 * i, r = c / g;

		if (c < 16 * g)
			v2_cp<4>(dst + 4 * c, r < nv ? (r < na ? sa : vb) + 4 * c : sa,
				 r < nv ? 4 : 0);
	}
}

/* N bytes of shared memory (N a power of two, aligned) into words */
template <int N>
static __device__ __forceinline__ void v2_lds(const uint8_t *p, uint32_t *w)
{
	if (N >= 16) {
		uint4 v = *(const uint4 *)p;

		w[0] = v.x, w[1] = v.y, w[2] = v.z, w[3] = v.w;
	} else if (N == 8) {
		uint2 v = *(const uint2 *)p;

		w[0] = v.x, w[1] = v.y;
	} else if (N == 4) {
		w[0] = *(const uint32_t *)p;
	} else if (N == 2) {
		w[0] = *(const unsigned short *)p;
	} else {
		w[0] = *p;
	}
}

/* bytes [off, off + N) of staged row r (ROW bytes, swizzled) into words */
template <int ROW, bool V, int N>
static __device__ __forceinline__ void v2_lds_row(const uint8_t *rows,
						  uint32_t r, uint32_t off,
						  uint32_t *w)
{
	constexpr int U = ROW < 16 ? ROW : 16, PER = ROW / U;
	const uint32_t x = v2_swz<ROW, V>(r);

	if (N >= 16) {
#pragma unroll
		for (int h = 0; h < N / 16; h++)
			v2_lds<16>(rows + ((r * PER + off / 16 + h) ^ x) * 16,
				   w + 4 * h);
	} else {
		v2_lds<N>(rows + ((r * PER + off / U) ^ x) * U + off % U, w);
	}
}

/*
 * The metadata of tokens t0 .. t0 + nv - 1 of a page's segment @seg: past
 * a spanning tile, tiles start anywhere, so 16-byte units only if aligned
 */
static __device__ __forceinline__ void v2_cp_meta_at(uint32_t dst,
						     const uint8_t *seg,
						     uint32_t g, uint32_t t0,
						     uint32_t nv, int lane)
{
	const uint8_t *src = seg + t0 * 4 * g;

	if (!(t0 * 4 * g % 16))
		v2_cp_meta(dst, src, g, nv, lane);
	else
		v2_cp_meta2(dst, src, src, g, nv, nv, lane);
}

/* one tile (16 tokens from t0 of a page of np) into the stage at @st */
template <int HD>
static __device__ __forceinline__ void v2_stage_tile(uint32_t st,
						     const uint8_t *pg,
						     const kvk_attn_tier &t,
						     uint32_t t0, uint32_t np,
						     int lane)
{
	typedef v2_stage<HD> S;
	const uint32_t nv = min(16U, np - t0);

#define CPK(B)                                                                 \
	v2_cp_rows<HD * B / 8, false>(                                         \
		st + S::K, pg + t.k_off + t0 * (HD * B / 8),                   \
		pg + t.k_off + t0 * (HD * B / 8), nv, nv, lane)
#define CPV(B)                                                                 \
	v2_cp_rows<HD * B / 8, true>(                                          \
		st + S::V, pg + t.v_off + t0 * (HD * B / 8),                   \
		pg + t.v_off + t0 * (HD * B / 8), nv, nv, lane)
	V2_BITS8_SWITCH(t.kbits, CPK)
	V2_BITS8_SWITCH(t.vbits, CPV)
#undef CPK
#undef CPV
	v2_cp_meta_at(st + S::KM, pg + t.km_off, t.kgroups, t0, nv, lane);
	v2_cp_meta_at(st + S::VM, pg + t.vm_off, t.vgroups, t0, nv, lane);
}

/*
 * A tile that spans two pages of one tier: tokens oa .. oa + na - 1 of
 * page @ga, then nv - na from the start of page @gb.
 */
template <int HD>
static __device__ __forceinline__ void v2_stage_span(uint32_t st,
						     const uint8_t *ga,
						     uint32_t oa, uint32_t na,
						     const uint8_t *gb,
						     uint32_t nv,
						     const kvk_attn_tier &t,
						     int lane)
{
	typedef v2_stage<HD> S;

#define CPK(B)                                                                 \
	v2_cp_rows<HD * B / 8, false>(st + S::K,                               \
				      ga + t.k_off + oa * (HD * B / 8),        \
				      gb + t.k_off, na, nv, lane)
#define CPV(B)                                                                 \
	v2_cp_rows<HD * B / 8, true>(st + S::V,                                \
				     ga + t.v_off + oa * (HD * B / 8),         \
				     gb + t.v_off, na, nv, lane)
	V2_BITS8_SWITCH(t.kbits, CPK)
	V2_BITS8_SWITCH(t.vbits, CPV)
#undef CPK
#undef CPV
	v2_cp_meta2(st + S::KM, ga + t.km_off + oa * 4 * t.kgroups,
		    gb + t.km_off, t.kgroups, na, nv, lane);
	v2_cp_meta2(st + S::VM, ga + t.vm_off + oa * 4 * t.vgroups,
		    gb + t.vm_off, t.vgroups, na, nv, lane);
}

/*
 * A stage's header (shared memory at @hdr, 16 bytes): what computing the
 * tile needs besides its bytes. Its first na tokens have logit slots
 * la + r, the rest (a tile that spans two pages) lb + r; nv tokens in all;
 * tier ti.
 */
static __device__ __forceinline__ void v2_stage_hdr(uint32_t hdr, uint32_t la,
						    uint32_t lb, uint32_t na,
						    uint32_t nv, int ti,
						    int lane)
{
	if (!lane)
		asm volatile("st.shared.v4.u32 [%0], {%1, %2, %3, %4};\n" ::"r"(
				     hdr),
			     "r"(la), "r"(lb), "r"(na | nv << 8),
			     "r"((uint32_t)ti)
			     : "memory");
}

/* a token's (scale, zero) of one group from shared memory */
static __device__ __forceinline__ void v2_meta_s(const uint8_t *p, float *sc,
						 float *zr)
{
	__half2 h = *(const __half2 *)p;

	*sc = __low2float(h), *zr = __high2float(h);
}

#define V2_BITS_SWITCH(bits, CALL)                                             \
	switch (bits) {                                                        \
	case 16: if constexpr (MAXB == 16) { CALL(16); } break;                \
	case 8: CALL(8); break;                                                \
	case 4: CALL(4); break;                                                \
	case 2: CALL(2); break;                                                \
	default: CALL(1); break;                                               \
	}

/* 2^x, one MUFU (flushes results below 2^-126 to 0; 2^-inf = 0) */
static __device__ __forceinline__ float v2_ex2(float x)
{
	float y;

	asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
	return y;
}

/* K and V of one staged tile into the fragments' registers */
template <int HD, int B>
static __device__ __forceinline__ void v2_lds_k(const uint8_t *st,
						const kvk_attn_tier &t,
						uint32_t r, int q4, uint32_t *w,
						float *sc, float *zr)
{
	typedef v2_stage<HD> S;
	constexpr int ROW = HD * B / 8, N = ROW / 4;

	v2_lds_row<ROW, false, N>(st + S::K, r, q4 * N, w);
	v2_meta_s(st + S::KM + 4 * (r * t.kgroups + ((q4 * t.kgroups) >> 2)),
		  sc, zr);
}

template <int HD, int B>
static __device__ __forceinline__ void v2_lds_v(const uint8_t *st,
						const kvk_attn_tier &t,
						uint32_t r, int gid, uint32_t *w,
						float *sc, float *zr)
{
	typedef v2_stage<HD> S;
	constexpr int ROW = HD * B / 8, N = ROW / 8;

	v2_lds_row<ROW, true, N>(st + S::V, r, gid * N, w);
	v2_meta_s(st + S::VM + 4 * (r * t.vgroups + ((gid * t.vgroups) >> 3)),
		  sc, zr);
}

/*
 * Tier formats fixed at compile time. FMT 0: as the call gives them (a
 * run-time switch per tile); FMT 1..V2_NR_FMT: one of the pairs below,
 * chosen at launch when the call's tiers match it exactly, so that each
 * tier's tile is straight-line code (fewer branches, constant-bank reads
 * and instructions to fetch). 1: DiffKV's pair, K8V4 (1 and 2 metadata
 * groups) high and K4V2 (2 and 4) low, as bench attn runs it; 2 and 3:
 * the uniform baselines K4V4 and K8V8 (one group, both tiers alike); 4:
 * the diffkv policy's default, K8V4 high and K4V2 low with one group each
 * (without it the policy's decode ran the run-time formats: 55% of the
 * read ceiling in the model at 32 x 8K).
 */
#define V2_NR_FMT 4

/* tier @ti of pair @fmt: kbits | vbits << 8 | kgroups << 16 | vgroups << 24 */
static constexpr __host__ __device__ uint32_t v2_fmt_code(int fmt, int ti)
{
	return fmt == 1 ? (ti ? 0x04020204U : 0x02010408U) :
	       fmt == 2 ? 0x01010404U :
	       fmt == 3 ? 0x01010808U :
	       fmt == 4 ? (ti ? 0x01010204U : 0x01010408U) : 0;
}

template <int FMT, int TI>
static __device__ __forceinline__ kvk_attn_tier v2_tier(const kvk_attn_args &a,
							int ti)
{
	kvk_attn_tier t = a.tier[FMT ? TI : ti];

	if constexpr (FMT != 0) {
		constexpr uint32_t c = v2_fmt_code(FMT, TI);

		t.kbits = c & 0xff, t.vbits = c >> 8 & 0xff;
		t.kgroups = c >> 16 & 0xff, t.vgroups = c >> 24;
	}
	return t;
}

/* f(tier @ti), the tier's formats constant where FMT fixes them */
template <int FMT, typename F>
static __device__ __forceinline__ void v2_with_tier(const kvk_attn_args &a,
						    int ti, F f)
{
	if constexpr (FMT) {
		if (ti)
			f(v2_tier<FMT, 1>(a, 1));
		else
			f(v2_tier<FMT, 0>(a, 0));
	} else {
		f(v2_tier<0, 0>(a, ti));
	}
}

/* the fixed pair the call's tiers match, 0 for none */
static inline int v2_fmt_of(const kvk_attn_args *a)
{
	for (int f = 1; f <= V2_NR_FMT; f++) {
		int ok = 1;

		for (int ti = 0; ti < 2; ti++) {
			const kvk_attn_tier *t = &a->tier[ti];

			ok &= (t->kbits | t->vbits << 8 | t->kgroups << 16 |
			       (uint32_t)t->vgroups << 24) == v2_fmt_code(f, ti);
		}
		if (ok)
			return f;
	}
	return 0;
}

/*
 * The staged walk (formats of at most 8 bits) over the warp's pages p0,
 * p0 + V2_WARPS, .. < p_end: the copy of tile i + 1 is issued before tile i
 * is computed. Lane j holds the table entry of the warp's page k0 + j, so
 * opening a page costs a shuffle, not a dependent load.
 */
template <int HD, typename T, int FMT>
static __device__ __forceinline__ void
v2_staged(const kvk_attn_args &a, const kvk_attn_work &w, uint32_t list,
	  uint32_t p0, uint32_t p_end, uint32_t p_hi, uint32_t n_hi,
	  uint32_t n_lo, int lane, uint8_t *sbuf, uint8_t *hbuf,
	  const uint4 *qs, float (*acc)[4], float &m, float &l, float *logit,
	  float qscale, int flags)
{
	constexpr int KW = HD * 8 / 128, VW = HD * 8 / 256;
	const bool span = flags & V2_SPAN;
	bool fold = flags & V2_FOLD;
	typedef v2_stage<HD> S;
	const int gid = lane / 4, q4 = lane % 4;
	float qsum = 0.0f; /* head gid's sum of q (fp16 operands), for fold */

	fold = fold && v2_ops<T>::is_half;
	if (fold) {
#pragma unroll
		for (int j = 0; j < HD / 32; j++) {
			const uint4 v = qs[j * 32 + lane];
			const uint32_t qw[4] = { v.x, v.y, v.z, v.w };

#pragma unroll
			for (int i = 0; i < 4; i++) {
				const __half2 h = *(const __half2 *)&qw[i];

				qsum += __low2float(h) + __high2float(h);
			}
		}
		qsum += __shfl_xor_sync(~0U, qsum, 1);
		qsum += __shfl_xor_sync(~0U, qsum, 2);
	}
	const uint32_t G = a.group;
	const uint32_t sbase = (uint32_t)__cvta_generic_to_shared(sbuf);
	const uint32_t hbase = (uint32_t)__cvta_generic_to_shared(hbuf);
	uint32_t cp = p0, ct0 = 0, cnp = 0, k = 0, ids;
	int cti = 0, stg = 0;
	const uint8_t *cpg = NULL;
	/* to the warp's next page: cp, and cpg, cti, cnp when cp < p_end */
	auto next_page = [&]() {
		cp += V2_WARPS, ct0 = 0, k++;
		if (cp < p_end) {
			if (k % 32 == 0) {
				const uint32_t pl = cp + lane * V2_WARPS;

				ids = pl < p_end ? v2_page_id(a, list, pl, p_hi) :
						   0;
			}
			cpg = v2_page_at(a, __shfl_sync(~0U, ids, k % 32), cp,
					 p_hi, n_hi, n_lo, &cti, &cnp);
		}
	};
	/*
	 * Stage the tile at (cp, ct0) into stage @s and move past it. With
	 * span, a tile that would end short at its page's end takes the rest
	 * of its slots from the warp's next page of the same tier (the low
	 * tier's 53-token pages would otherwise leave 17% of them empty).
	 */
	auto issue = [&](int s) {
		const uint32_t sa = sbase + s * S::BYTES, ha = hbase + 16 * s;
		const uint32_t na = min(16U, cnp - ct0);
		const uint32_t la = cp * w.tstride + ct0, oa = ct0;
		const uint8_t *ga = cpg;
		const int ti = cti;

		if (na == 16 || !span) {
			v2_with_tier<FMT>(a, cti, [&](const kvk_attn_tier &t) {
				v2_stage_tile<HD>(sa, cpg, t, ct0, cnp, lane);
			});
			v2_stage_hdr(ha, la, la, na, na, cti, lane);
			ct0 += 16;
			if (ct0 >= cnp)
				next_page();
			return;
		}
		next_page();
		if (cp >= p_end || cti != ti) {
			v2_with_tier<FMT>(a, ti, [&](const kvk_attn_tier &t) {
				v2_stage_tile<HD>(sa, ga, t, oa, oa + na, lane);
			});
			v2_stage_hdr(ha, la, la, na, na, ti, lane);
			return;
		}
		ct0 = min(16U - na, cnp);
		v2_with_tier<FMT>(a, ti, [&](const kvk_attn_tier &t) {
			v2_stage_span<HD>(sa, ga, oa, na, cpg, na + ct0, t,
					  lane);
		});
		v2_stage_hdr(ha, la, cp * w.tstride - na, na, na + ct0, ti,
			     lane);
		if (ct0 >= cnp)
			next_page();
	};

	if (p0 >= p_end)
		return;
	ids = p0 + lane * V2_WARPS < p_end ?
		      v2_page_id(a, list, p0 + lane * V2_WARPS, p_hi) : 0;
	cpg = v2_page_at(a, __shfl_sync(~0U, ids, 0), cp, p_hi, n_hi, n_lo,
			 &cti, &cnp);
	issue(0);
	v2_cp_commit();
	for (;;) {
		/* the tile in stage stg */
		const uint8_t *st = sbuf + stg * S::BYTES;
		const bool more = cp < p_end;

		if (more)
			issue(stg ^ 1);
		v2_cp_commit();
		v2_cp_wait<1>();
		__syncwarp();
		{
			const uint4 hdr = *(const uint4 *)(hbuf + stg * 16);
			const uint32_t la = hdr.x, lb = hdr.y;
			const uint32_t na = hdr.z & 0xff;
			const int nv = (int)(hdr.z >> 8);

			v2_with_tier<FMT>(a, (int)hdr.w,
					  [&](const kvk_attn_tier &t) {
			const int kb = t.kbits, vb = t.vbits;
			uint32_t kr[2][KW], vr[4][VW], pp0, pp1, qf[HD / 16][2];
			float ksc[2], kzr[2], vsc[4], vzr[4], st2[2][4], x[4];
			float mx = -INFINITY, mn, base, corr;

#pragma unroll
			for (int j = 0; j < HD / 16; j += 2) {
				const uint4 v = qs[j / 2 * 32 + lane];

				qf[j][0] = v.x, qf[j][1] = v.y;
				qf[j + 1][0] = v.z, qf[j + 1][1] = v.w;
			}

#define LDK(B)                                                                 \
	for (int n = 0; n < 2; n++)                                            \
		v2_lds_k<HD, B>(st, t, 4 * (gid >> 1) + 2 * n + (gid & 1), q4, \
				kr[n], &ksc[n], &kzr[n])
#define LDV(B)                                                                 \
	for (int e = 0; e < 4; e++)                                            \
		v2_lds_v<HD, B>(st, t, 4 * q4 + e, gid, vr[e], &vsc[e], &vzr[e])
#define QK(B) v2_qk<HD, T, B, KW>(kr, ksc, kzr, qf, st2)
#define PV(B)                                                                  \
	if constexpr (v2_ops<T>::is_half && (B == 4 || B == 2))                \
		v2_pv_h<HD, B, VW>(vr, vsc, vzr, pp0, pp1, acc);               \
	else                                                                   \
		v2_pv<HD, T, B, VW>(vr, vsc, vzr, pp0, pp1, acc)
			if (fold && kb == 8 && t.kgroups == 1) {
				/* tokens 4 q4 + e: their (scale, zero) */
				const uint4 km = *(const uint4 *)(st + S::KM +
								  16 * q4);
				const uint32_t kmw[4] = { km.x, km.y, km.z,
							  km.w };

				for (int n = 0; n < 2; n++)
					v2_lds_row<HD, false, HD / 4>(
						st + S::K,
						4 * (gid >> 1) + 2 * n +
							(gid & 1),
						q4 * (HD / 4), kr[n]);
				v2_qk_h8<HD, KW>(kr, qf, st2);
#pragma unroll
				for (int e = 0; e < 4; e++) {
					const __half2 h =
						*(const __half2 *)&kmw[e];

					st2[e / 2][e % 2] = fmaf(
						__low2float(h),
						st2[e / 2][e % 2] - qsum * 1024.0f,
						__high2float(h) * qsum);
				}
			} else {
				V2_BITS8_SWITCH(kb, LDK)
				V2_BITS8_SWITCH(kb, QK)
			}
#pragma unroll
			for (int e = 0; e < 4; e++) {
				x[e] = st2[e / 2][e % 2] * qscale;
				if (4 * q4 + e >= nv)
					x[e] = -INFINITY;
				mx = fmaxf(mx, x[e]);
			}
			if (logit && gid < (int)G)
				for (int e = 0; e < 4; e++) {
					const uint32_t r = 4 * q4 + e;

					if ((int)r < nv)
						logit[(r < na ? la : lb) + r] =
							x[e];
				}
			V2_BITS8_SWITCH(vb, LDV)
			mx = fmaxf(mx, __shfl_xor_sync(~0U, mx, 1));
			mx = fmaxf(mx, __shfl_xor_sync(~0U, mx, 2));
			mn = fmaxf(m, mx);
			base = mn == -INFINITY ? 0.0f : mn;
			corr = v2_ex2(m - base);
#pragma unroll
			for (int e = 0; e < 4; e++)
				x[e] = v2_ex2(x[e] - base);
			l = l * corr + (x[0] + x[1]) + (x[2] + x[3]);
			pp0 = v2_ops<T>::pack(x[0], x[1]);
			pp1 = v2_ops<T>::pack(x[2], x[3]);
			m = mn;
			/* rescale only when some head's maximum moved */
			if (__any_sync(~0U, corr != 1.0f)) {
				float c0 = __shfl_sync(~0U, corr, 8 * q4);
				float c1 = __shfl_sync(~0U, corr, 8 * q4 + 4);

#pragma unroll
				for (int i = 0; i < HD / 16; i++) {
					acc[i][0] *= c0, acc[i][1] *= c1;
					acc[i][2] *= c0, acc[i][3] *= c1;
				}
			}
			V2_BITS8_SWITCH(vb, PV)
#undef LDK
#undef LDV
#undef QK
#undef PV
			});
		}
		__syncwarp(); /* every lane is done with stage stg */
		if (!more)
			break;
		stg ^= 1;
	}
	v2_cp_wait<0>();
	__syncwarp();
}

/*
 * MAXB: the widest format of the call (16 or 8 bits): it sizes the raw
 * registers. NT: tiles of 16 tokens loaded per step before any arithmetic
 * in the register path (launched with 1). STG: formats of at most 8 bits
 * staged in shared memory (v2_staged()). flags (run time): V2_FOLD, V2_SPAN.
 */
template <int HD, typename T, int MAXB, int NT, int MINB, bool STG,
	  int FMT = 0>
__global__ void __launch_bounds__(V2_WARPS * 32, MINB)
	kvk_attn_v2_kernel(const kvk_attn_args a, const kvk_attn_work w,
			   const int flags)
{
	constexpr int VD = HD / 8;
	constexpr int KW = HD * MAXB / 128, VW = HD * MAXB / 256;
	/* staged: the accumulators reuse the stages (after a barrier) */
	__shared__ float sm_acc_st[STG ? 1 : V2_WARPS][MAXG][HD];
	float (*sm_acc)[MAXG][HD] =
		STG ? (float (*)[MAXG][HD])v2_dyn_smem : sm_acc_st;
	__shared__ float sm_m[V2_WARPS][MAXG], sm_l[V2_WARPS][MAXG];
	const uint32_t h = blockIdx.x, s = blockIdx.y, z = blockIdx.z;
	const uint32_t G = a.group, splits = w.splits;
	const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
	const int gid = lane / 4, q4 = lane % 4;
	const uint32_t list = a.list_base[s] + h;
	const size_t pair = (size_t)s * a.nr_kv_heads + h;
	const float qscale = a.scale * V2_LOG2E;
	uint32_t n_hi = a.ntokens[2 * list], n_lo = a.ntokens[2 * list + 1];
	uint32_t p_hi = (n_hi + a.tier[0].tokens - 1) / a.tier[0].tokens;
	uint32_t p_all = p_hi +
			 (n_lo + a.tier[1].tokens - 1) / a.tier[1].tokens;
	uint32_t per, p_end;
	uint32_t qf[HD / 16][2];
	float acc[HD / 16][4], m = -INFINITY, l = 0.0f;
	float *logit = NULL;

	if (p_all > a.width) /* table too short: read nothing, output 0 */
		p_all = 0;
	per = (p_all + splits - 1) / splits;
	p_end = min(p_all, (z + 1) * per);
	if (a.update_scores)
		logit = (float *)((uint8_t *)a.work + w.logit_off) +
			(pair * G + gid) * a.width * w.tstride;
	{
		const uint32_t *qp =
			(const uint32_t *)a.q +
			((pair * G + gid) * HD + q4 * (HD / 4)) / 2;

#pragma unroll
		for (int j = 0; j < HD / 16; j++) {
			qf[j][0] = gid < (int)G ? qp[2 * j] : 0;
			qf[j][1] = gid < (int)G ? qp[2 * j + 1] : 0;
		}
	}
#pragma unroll
	for (int i = 0; i < HD / 16; i++)
		acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.0f;

	if constexpr (STG) {
		uint4 *qs = (uint4 *)(v2_dyn_smem + v2_stage<HD>::QF);

		if (!warp)
#pragma unroll
			for (int j = 0; j < HD / 16; j += 2)
				qs[j / 2 * 32 + lane] = make_uint4(
					qf[j][0], qf[j][1], qf[j + 1][0],
					qf[j + 1][1]);
		__syncthreads();
		v2_staged<HD, T, FMT>(a, w, list, z * per + warp, p_end, p_hi,
				      n_hi,
				 n_lo, lane,
				 v2_dyn_smem + warp * v2_stage<HD>::WARP,
				 v2_dyn_smem + v2_stage<HD>::HDRS + warp * 32, qs,
				 acc, m, l, logit, qscale, flags);
		__syncthreads(); /* the stages become the accumulators */
	} else
	for (uint32_t p = z * per + warp; p < p_end; p += V2_WARPS) {
		uint32_t np;
		int ti;
		const uint8_t *pg = v2_page(a, list, p, p_hi, n_hi, n_lo, &ti,
					    &np);
		const kvk_attn_tier &t = a.tier[ti];
		const int kb = t.kbits, vb = t.vbits;

		for (uint32_t t0 = 0; t0 < np; t0 += 16 * NT) {
			uint32_t kr[NT][2][KW], vr[NT][4][VW];
			float ksc[NT][2] = { 0 }, kzr[NT][2] = { 0 };
			float vsc[NT][4] = { 0 }, vzr[NT][4] = { 0 };

#define LDK(B)                                                                 \
	for (int u = 0; u < NT; u++)                                           \
		for (int n = 0; n < 2; n++)                                    \
			v2_ld_k<HD, B>(pg, t,                                  \
				       min(t0 + 16 * u + 4 * (gid >> 1) +      \
						   2 * n + (gid & 1),          \
					   np - 1),                            \
				       q4, kr[u][n], &ksc[u][n], &kzr[u][n])
#define LDV(B)                                                                 \
	for (int u = 0; u < NT; u++)                                           \
		for (int e = 0; e < 4; e++)                                    \
			v2_ld_v<HD, B>(pg, t,                                  \
				       min(t0 + 16 * u + 4 * q4 + e, np - 1),  \
				       gid, vr[u][e], &vsc[u][e], &vzr[u][e])
			V2_BITS_SWITCH(kb, LDK)
			V2_BITS_SWITCH(vb, LDV)
		{
			/* one softmax step over NT tiles (NT * 16 tokens) */
			float x[NT][4], mx = -INFINITY, mn, base, corr;
			uint32_t pp[NT][2];

#pragma unroll
			for (int u = 0; u < NT; u++) {
				const uint32_t tu = t0 + 16 * u;
				const int nv =
					tu < np ? (int)min(16U, np - tu) : 0;
				float st[2][4];

#define QK(B) v2_qk<HD, T, B, KW>(kr[u], ksc[u], kzr[u], qf, st)
				V2_BITS_SWITCH(kb, QK)
#pragma unroll
				for (int e = 0; e < 4; e++) {
					x[u][e] = st[e / 2][e % 2] * qscale;
					if (4 * q4 + e >= nv)
						x[u][e] = -INFINITY;
					mx = fmaxf(mx, x[u][e]);
				}
				if (logit && gid < (int)G)
					for (int e = 0; e < 4; e++)
						if (4 * q4 + e < nv)
							logit[p * w.tstride +
							      tu + 4 * q4 + e] =
								x[u][e];
			}
			mx = fmaxf(mx, __shfl_xor_sync(~0U, mx, 1));
			mx = fmaxf(mx, __shfl_xor_sync(~0U, mx, 2));
			mn = fmaxf(m, mx);
			base = mn == -INFINITY ? 0.0f : mn;
			corr = exp2f(m - base);
#pragma unroll
			for (int u = 0; u < NT; u++) {
#pragma unroll
				for (int e = 0; e < 4; e++)
					x[u][e] = exp2f(x[u][e] - base);
				l = l * (u ? 1.0f : corr) +
				    (x[u][0] + x[u][1]) + (x[u][2] + x[u][3]);
				pp[u][0] = v2_ops<T>::pack(x[u][0], x[u][1]);
				pp[u][1] = v2_ops<T>::pack(x[u][2], x[u][3]);
			}
			m = mn;
			/* rescale only when some head's maximum moved */
			if (__any_sync(~0U, corr != 1.0f)) {
				float c0 = __shfl_sync(~0U, corr, 8 * q4);
				float c1 = __shfl_sync(~0U, corr, 8 * q4 + 4);

#pragma unroll
				for (int i = 0; i < HD / 16; i++) {
					acc[i][0] *= c0, acc[i][1] *= c1;
					acc[i][2] *= c0, acc[i][3] *= c1;
				}
			}
#pragma unroll
			for (int u = 0; u < NT; u++) {
#define PV(B)                                                                  \
	v2_pv<HD, T, B, VW>(vr[u], vsc[u], vzr[u], pp[u][0], pp[u][1], acc)
				V2_BITS_SWITCH(vb, PV)
			}
		}
#undef LDK
#undef LDV
#undef QK
#undef PV
		}
	}
	/* merge the warps */
	l += __shfl_xor_sync(~0U, l, 1);
	l += __shfl_xor_sync(~0U, l, 2);
	if (q4 == 0 && gid < (int)G)
		sm_m[warp][gid] = m, sm_l[warp][gid] = l;
#pragma unroll
	for (int i = 0; i < HD / 16; i++) {
		int d = gid * VD + 2 * i;

		if (2 * q4 < (int)G) {
			sm_acc[warp][2 * q4][d] = acc[i][0];
			sm_acc[warp][2 * q4][d + 1] = acc[i][2];
		}
		if (2 * q4 + 1 < (int)G) {
			sm_acc[warp][2 * q4 + 1][d] = acc[i][1];
			sm_acc[warp][2 * q4 + 1][d + 1] = acc[i][3];
		}
	}
	__syncthreads();
	for (uint32_t idx = threadIdx.x; idx < G * HD; idx += blockDim.x) {
		uint32_t g = idx / HD, d = idx % HD;
		float M = -INFINITY, L = 0.0f, o = 0.0f;

		for (int v = 0; v < V2_WARPS; v++)
			if (sm_l[v][g] > 0.0f)
				M = fmaxf(M, sm_m[v][g]);
		for (int v = 0; v < V2_WARPS; v++)
			if (sm_l[v][g] > 0.0f) {
				float f = exp2f(sm_m[v][g] - M);

				L += sm_l[v][g] * f;
				o += sm_acc[v][g][d] * f;
			}
		if (splits == 1) {
			v2_ops<T>::store(a.out, (pair * G + g) * HD + d,
					 L > 0.0f ? o / L : 0.0f);
			if (a.update_scores && d == 0)
				((float *)((uint8_t *)a.work + w.lse_off))
					[pair * G + g] = M + log2f(L);
		} else {
			size_t b = (pair * splits + z) * G + g;

			float *ac = (float *)((uint8_t *)a.work + w.acc_off);

			ac[b * HD + d] = o;
			if (d == 0) {
				float *ml = (float *)((uint8_t *)a.work +
						      w.ml_off);

				ml[2 * b] = M, ml[2 * b + 1] = L;
			}
		}
	}
}

/* the splits of one (sequence, kv-head) merged by log-sum-exp */
template <typename T>
__global__ void kvk_attn_v2_merge(const kvk_attn_args a, const kvk_attn_work w)
{
	const size_t pair = blockIdx.x;
	const uint32_t G = a.group, HD = a.head_dim, S = w.splits;
	const float *acc = (const float *)((const uint8_t *)a.work + w.acc_off);
	const float *ml = (const float *)((const uint8_t *)a.work + w.ml_off);

	for (uint32_t idx = threadIdx.x; idx < G * HD; idx += blockDim.x) {
		uint32_t g = idx / HD, d = idx % HD;
		float M = -INFINITY, L = 0.0f, o = 0.0f;

		/*
		 * unrolled, with each split's (M, L) one 8-byte load and its
		 * output used unconditionally (every split block writes both;
		 * an empty one M = -inf, L = 0, output 0), so that the loads
		 * are issued together: a short batch has few blocks here and
		 * many splits, and when the compiler placed a load behind
		 * each split's L > 0 test the loop was a chain of load
		 * latencies (23 us a call at batch 1, H100)
		 */
#pragma unroll 8
		for (uint32_t z = 0; z < S; z++) {
			size_t b = (pair * S + z) * G + g;
			float2 v = ((const float2 *)ml)[b];

			M = fmaxf(M, v.y > 0.0f ? v.x : -INFINITY);
		}
#pragma unroll 8
		for (uint32_t z = 0; z < S; z++) {
			size_t b = (pair * S + z) * G + g;
			float2 v = ((const float2 *)ml)[b];
			float x = acc[b * HD + d];
			float f = exp2f((v.y > 0.0f ? v.x : M) - M);

			f = v.y > 0.0f ? f : 0.0f;
			L += v.y * f;
			o += x * f;
		}
		v2_ops<T>::store(a.out, (pair * G + g) * HD + d,
				 L > 0.0f ? o / L : 0.0f);
		if (a.update_scores && d == 0) {
			float *lse = (float *)((uint8_t *)a.work + w.lse_off);

			lse[pair * G + g] = M + log2f(L);
		}
	}
}

/* score += max over the group of exp2(logit - lse), every token */
__global__ void kvk_attn_v2_scores(const kvk_attn_args a, const kvk_attn_work w)
{
	const uint32_t h = blockIdx.x, s = blockIdx.y, G = a.group;
	const uint32_t list = a.list_base[s] + h;
	const size_t pair = (size_t)s * a.nr_kv_heads + h;
	const uint32_t n_hi = a.ntokens[2 * list];
	const uint32_t n_lo = a.ntokens[2 * list + 1];
	const uint32_t p_hi = (n_hi + a.tier[0].tokens - 1) / a.tier[0].tokens;
	const uint32_t p_all =
		p_hi + (n_lo + a.tier[1].tokens - 1) / a.tier[1].tokens;
	const uint8_t *wk = (const uint8_t *)a.work;
	const float *lse = (const float *)(wk + w.lse_off) + pair * G;
	const float *lg = (const float *)(wk + w.logit_off) +
			  pair * G * a.width * w.tstride;
	const size_t hstride = (size_t)a.width * w.tstride;
	const uint32_t lane = threadIdx.x % 32;
	const uint32_t p = blockIdx.z * (blockDim.x / 32) + threadIdx.x / 32;

	if (p_all > a.width || p >= p_all)
		return;
	{
		uint32_t np;
		int ti;
		const uint8_t *pg = v2_page(a, list, p, p_hi, n_hi, n_lo, &ti,
					    &np);
		float *sc = (float *)(pg + a.tier[ti].score_off);

		for (uint32_t i = lane; i < np; i += 32) {
			float best = 0.0f;

			for (uint32_t g = 0; g < G; g++)
				best = kvk_attn_score_fold(
					a.update_scores, best,
					exp2f(lg[g * hstride + p * w.tstride +
						 i] - lse[g]));
			sc[i] += best;
		}
	}
}

/*
 * Measuring knobs, read once per process: KVMM_ATTN_MINB (blocks per SM
 * the head_dim-128 kernel is compiled for: 1, 3 (staged only) or 4),
 * KVMM_ATTN_STAGED=0 (formats of at most 8 bits through the register path
 * instead of the shared-memory stages), KVMM_ATTN_FOLD=0 (no K8 fold),
 * KVMM_ATTN_SPAN=0 (staged tiles end at page ends), KVMM_ATTN_TIERS=0
 * (no instance with a tier pair's formats fixed at compile time),
 * KVMM_ATTN_V1 (run version 1). Unset: fp16 pages compiled for 1 block
 * per SM (213 registers, 2 blocks fit; 95% of the read ceiling at 64 x 8K
 * on an H100; MINB=4 costs 24%); formats of at most 8 bits staged, for 4
 * blocks per SM (128 registers, about 70 bytes spilled; 3 blocks without
 * spills is slower).
 */
static int v2_knob(const char *name)
{
	static const char *const names[] = {
		"KVMM_ATTN_MINB", "KVMM_ATTN_STAGED", "KVMM_ATTN_FOLD",
		"KVMM_ATTN_SPAN", "KVMM_ATTN_TIERS",
	};
	static int val[ARRAY_SIZE(names)] = { -2, -2, -2, -2, -2 };

	for (size_t i = 0; i < ARRAY_SIZE(names); i++) {
		if (strcmp(name, names[i]))
			continue;
		if (val[i] == -2) {
			const char *e = getenv(names[i]);

			val[i] = e ? atoi(e) : -1;
		}
		return val[i];
	}
	return -1;
}

/* one instance; staged ones get their dynamic shared memory */
template <int HD, typename T, int MAXB, int MINB, bool STG, int FMT = 0>
static void v2_launch_one(const kvk_attn_args *a, const kvk_attn_work *w,
			  cudaStream_t st)
{
	dim3 grid(a->nr_kv_heads, a->nr_seqs, w->splits);
	const int smem = STG ? v2_stage<HD>::BLOCK : 0;
	const int flags = (v2_knob("KVMM_ATTN_FOLD") ? V2_FOLD : 0) |
			  (v2_knob("KVMM_ATTN_SPAN") ? V2_SPAN : 0);
	static int attr;

	if (smem > 48 * 1024 && !attr) {
		cudaFuncSetAttribute(
			kvk_attn_v2_kernel<HD, T, MAXB, 1, MINB, STG, FMT>,
			cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
		attr = 1;
	}
	kvk_attn_v2_kernel<HD, T, MAXB, 1, MINB, STG, FMT>
		<<<grid, V2_WARPS * 32, smem, st>>>(*a, *w, flags);
}

template <typename T, int MAXB, bool STG>
static void v2_launch_main(const kvk_attn_args *a, const kvk_attn_work *w,
			   cudaStream_t st)
{
	int minb = v2_knob("KVMM_ATTN_MINB"), fmt = 0;

	if (minb < 0)	/* quantized pages: occupancy beats spills */
		minb = MAXB == 16 ? 1 : 4;
	switch (a->head_dim) {
	case 64:
		v2_launch_one<64, T, MAXB, 1, STG>(a, w, st);
		break;
	case 128:
		if (minb == 4 && STG && v2_knob("KVMM_ATTN_TIERS"))
			fmt = v2_fmt_of(a);
		if (fmt == 1)
			v2_launch_one<128, T, MAXB, 4, STG, 1>(a, w, st);
		else if (fmt == 2)
			v2_launch_one<128, T, MAXB, 4, STG, 2>(a, w, st);
		else if (fmt == 3)
			v2_launch_one<128, T, MAXB, 4, STG, 3>(a, w, st);
		else if (fmt == 4)
			v2_launch_one<128, T, MAXB, 4, STG, 4>(a, w, st);
		else if (minb == 4)
			v2_launch_one<128, T, MAXB, 4, STG>(a, w, st);
		else if (minb == 3 && STG)
			v2_launch_one<128, T, MAXB, 3, STG>(a, w, st);
		else
			v2_launch_one<128, T, MAXB, 1, STG>(a, w, st);
		break;
	default:
		v2_launch_one<256, T, MAXB, 1, STG>(a, w, st);
	}
}

template <typename T>
static void v2_launch(const kvk_attn_args *a, const kvk_attn_work *w,
		      cudaStream_t st)
{
	dim3 grid(a->nr_kv_heads, a->nr_seqs, w->splits);

	if (a->tier[0].kbits == 16 || a->tier[0].vbits == 16 ||
	    a->tier[1].kbits == 16 || a->tier[1].vbits == 16)
		v2_launch_main<T, 16, false>(a, w, st);
	else if (v2_knob("KVMM_ATTN_STAGED") != 0)
		v2_launch_main<T, 8, true>(a, w, st);
	else
		v2_launch_main<T, 8, false>(a, w, st);
	if (w->splits > 1)
		kvk_attn_v2_merge<T>
			<<<a->nr_seqs * a->nr_kv_heads, 256, 0, st>>>(*a, *w);
	if (a->update_scores)
		kvk_attn_v2_scores<<<dim3(a->nr_kv_heads, a->nr_seqs,
					  (a->width + 7) / 8),
				     256, 0, st>>>(*a, *w);
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
	if (a->dtype != KVK_F32 && !getenv("KVMM_ATTN_V1") &&
	    a->width <= 8U * 65535) {
		struct kvk_attn_work w;

		kvk_attn_work_layout(a, kvk_attn_splits(a), &w);
		if (!a->work || a->work_bytes < w.bytes)
			kvk_attn_work_layout(a, 1, &w);
		if (!w.bytes || (a->work && w.bytes <= a->work_bytes)) {
			if (a->dtype == KVK_F16)
				v2_launch<__half>(a, &w, st);
			else
				v2_launch<__nv_bfloat16>(a, &w, st);
			return kvk_cuda_errno(cudaGetLastError());
		}
	}
	/* fp32 activations, or scores without scratch: version 1 */
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
