// SPDX-License-Identifier: MIT
/*
 * prefill.cu - causal prefill attention on tensor cores (mma.sync
 * m16n8k16, fp16 or bf16 in, fp32 accumulate), flash-attention-2 style,
 * and the token scores compress-and-append consumes.
 */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kvk_cuda.cuh"
#include "prefill.h"

#define PF_BN 64	     /* keys per tile */
#define PF_DEFAULT_VARIANT 1 /* see pf_variant() */
#define PF_PAD 8	     /* elements of padding per smem row */

#define SC_KEYS 64 /* keys per block of the score kernel */
#define SC_ROWS 16 /* query rows staged at a time */
#define SC_THREADS 256

/* ------------------------------------------------------------------ */
/* PTX wrappers                                                        */

__device__ __forceinline__ uint32_t pf_smem(const void *p)
{
	return (uint32_t)__cvta_generic_to_shared(p);
}

__device__ __forceinline__ void pf_cp16(void *dst, const void *src, int ok)
{
	asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(
			     pf_smem(dst)),
		     "l"(src), "r"(ok ? 16 : 0));
}

__device__ __forceinline__ void pf_commit(void)
{
	asm volatile("cp.async.commit_group;\n" ::);
}

template <int N> __device__ __forceinline__ void pf_wait(void)
{
	asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void pf_ldm4(uint32_t *r, const void *p)
{
	asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, "
		     "[%4];\n"
		     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
		     : "r"(pf_smem(p)));
}

__device__ __forceinline__ void pf_ldm4t(uint32_t *r, const void *p)
{
	asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 "
		     "{%0,%1,%2,%3}, [%4];\n"
		     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
		     : "r"(pf_smem(p)));
}

template <typename T> struct pf_mma;

template <> struct pf_mma<__half> {
	static __device__ __forceinline__ void run(float *d, const uint32_t *a,
						   uint32_t b0, uint32_t b1)
	{
		kvk_mma16816(__half(), d, a[0], a[1], a[2], a[3], b0, b1);
	}
	static __device__ __forceinline__ uint32_t pack(float lo, float hi)
	{
		return kvk_pack2(__half(), lo, hi);
	}
	static __device__ __forceinline__ void store2(__half *p, float a,
						      float b)
	{
		*(__half2 *)p = __floats2half2_rn(a, b);
	}
};

template <> struct pf_mma<__nv_bfloat16> {
	static __device__ __forceinline__ void run(float *d, const uint32_t *a,
						   uint32_t b0, uint32_t b1)
	{
		kvk_mma16816(__nv_bfloat16(), d, a[0], a[1], a[2], a[3], b0,
			     b1);
	}
	static __device__ __forceinline__ uint32_t pack(float lo, float hi)
	{
		return kvk_pack2(__nv_bfloat16(), lo, hi);
	}
	static __device__ __forceinline__ void store2(__nv_bfloat16 *p, float a,
						      float b)
	{
		*(__nv_bfloat162 *)p = __floats2bfloat162_rn(a, b);
	}
};

/* ------------------------------------------------------------------ */
/* attention                                                           */

/* rows [r0, r0 + R) of a [total][heads][D] tensor into smem [R][D + PAD] */
template <typename T, int D, int R>
__device__ __forceinline__ void pf_load_tile(T *sm, const T *g, uint32_t b,
					     uint32_t r0, uint32_t len,
					     uint32_t heads, uint32_t h)
{
	constexpr int CH = D / 8; /* 16-byte chunks per row */

	for (int c = threadIdx.x; c < R * CH; c += blockDim.x) {
		int r = c / CH, e = (c % CH) * 8;
		uint32_t row = r0 + r;
		int ok = row < len;
		const T *src =
			g + (((size_t)b + (ok ? row : 0)) * heads + h) * D + e;

		pf_cp16(sm + r * (D + PF_PAD) + e, src, ok);
	}
}

/*
 * WARPS warps of 16 query rows each: a block covers BM = 16 WARPS rows;
 * MINB blocks per SM asked of the register allocator.
 */
template <typename T, int D, int WARPS, int MINB>
__global__ void __launch_bounds__(32 * WARPS, MINB)
	kvk_prefill_kernel(const kvk_prefill_args a)
{
	extern __shared__ __align__(16) unsigned char pf_sm[];
	constexpr int LD = D + PF_PAD, PF_BM = 16 * WARPS;
	T *qs = (T *)pf_sm;
	T *ks = qs + PF_BM * LD;     /* [2][BN][LD] */
	T *vs = ks + 2 * PF_BN * LD; /* [2][BN][LD] */
	const uint32_t nq = a.nr_q_heads, nkv = a.nr_kv_heads;
	const uint32_t h = blockIdx.y, s = blockIdx.z;
	const uint32_t kvh = h / (nq / nkv);
	const uint32_t b = a.seq_start[s], len = a.seq_start[s + 1] - b;
	/* the longest row blocks first */
	const uint32_t m0 = (gridDim.x - 1 - blockIdx.x) * PF_BM;
	const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
	const int g = lane / 4, t = lane % 4;
	const float sl2 = a.scale * 1.4426950408889634f;
	const T *Q = (const T *)a.q, *K = (const T *)a.k, *V = (const T *)a.v;
	uint32_t qf[D / 16][4];
	float o[D / 8][4], m[2] = {-INFINITY, -INFINITY}, l[2] = {0, 0};
	uint32_t nt, rlo = m0 + warp * 16 + g;

	if (m0 >= len)
		return;
	nt = ((m0 + PF_BM < len ? m0 + PF_BM : len) + PF_BN - 1) / PF_BN;
#pragma unroll
	for (int n = 0; n < D / 8; n++)
		o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;

	pf_load_tile<T, D, PF_BM>(qs, Q, b, m0, len, nq, h);
	pf_load_tile<T, D, PF_BN>(ks, K, b, 0, len, nkv, kvh);
	pf_load_tile<T, D, PF_BN>(vs, V, b, 0, len, nkv, kvh);
	pf_commit();
	for (uint32_t j = 0; j < nt; j++) {
		const T *kt = ks + (j & 1) * PF_BN * LD;
		const T *vt = vs + (j & 1) * PF_BN * LD;
		uint32_t n0 = j * PF_BN;
		float sc[PF_BN / 8][4];

		if (j + 1 < nt) {
			pf_load_tile<T, D, PF_BN>(
				ks + ((j + 1) & 1) * PF_BN * LD, K, b,
				n0 + PF_BN, len, nkv, kvh);
			pf_load_tile<T, D, PF_BN>(
				vs + ((j + 1) & 1) * PF_BN * LD, V, b,
				n0 + PF_BN, len, nkv, kvh);
		}
		pf_commit();
		pf_wait<1>();
		__syncthreads();
		if (j == 0) {
#pragma unroll
			for (int kk = 0; kk < D / 16; kk++)
				pf_ldm4(qf[kk],
					qs + (warp * 16 + lane % 16) * LD +
						kk * 16 + (lane / 16) * 8);
		}
		/* a tile wholly above this warp's rows adds nothing */
		if (n0 > m0 + warp * 16 + 15) {
			__syncthreads();
			continue;
		}
		/* S = Q K^T */
#pragma unroll
		for (int n = 0; n < PF_BN / 8; n++)
			sc[n][0] = sc[n][1] = sc[n][2] = sc[n][3] = 0.0f;
#pragma unroll
		for (int jj = 0; jj < PF_BN / 16; jj++)
#pragma unroll
			for (int kk = 0; kk < D / 16; kk++) {
				uint32_t r[4];

				pf_ldm4(r, kt +
						   (jj * 16 + (lane / 16) * 8 +
						    lane % 8) *
							   LD +
						   kk * 16 +
						   ((lane / 8) % 2) * 8);
				pf_mma<T>::run(sc[2 * jj], qf[kk], r[0], r[1]);
				pf_mma<T>::run(sc[2 * jj + 1], qf[kk], r[2],
					       r[3]);
			}
		/* mask, online softmax in the log2 domain */
		float mx[2] = {m[0], m[1]};
		const bool diag = n0 + PF_BN > m0 + warp * 16;

#pragma unroll
		for (int n = 0; n < PF_BN / 8; n++)
#pragma unroll
			for (int e = 0; e < 4; e++) {
				uint32_t key = n0 + n * 8 + 2 * t + (e & 1);
				uint32_t row = rlo + (e >> 1) * 8;
				float x = sc[n][e] * sl2;

				if (diag && key > row)
					x = -INFINITY;
				sc[n][e] = x;
				mx[e >> 1] = fmaxf(mx[e >> 1], x);
			}
#pragma unroll
		for (int r = 0; r < 2; r++) {
			mx[r] = fmaxf(mx[r], __shfl_xor_sync(~0U, mx[r], 1));
			mx[r] = fmaxf(mx[r], __shfl_xor_sync(~0U, mx[r], 2));
		}
		float al[2] = {exp2f(m[0] - mx[0]), exp2f(m[1] - mx[1])};

		m[0] = mx[0];
		m[1] = mx[1];
		l[0] *= al[0];
		l[1] *= al[1];
#pragma unroll
		for (int n = 0; n < D / 8; n++) {
			o[n][0] *= al[0];
			o[n][1] *= al[0];
			o[n][2] *= al[1];
			o[n][3] *= al[1];
		}
#pragma unroll
		for (int n = 0; n < PF_BN / 8; n++)
#pragma unroll
			for (int e = 0; e < 4; e++) {
				float p = exp2f(sc[n][e] - m[e >> 1]);

				sc[n][e] = p;
				l[e >> 1] += p;
			}
			/* O += P V */
#pragma unroll
		for (int kk = 0; kk < PF_BN / 16; kk++) {
			uint32_t pa[4];

			pa[0] = pf_mma<T>::pack(sc[2 * kk][0], sc[2 * kk][1]);
			pa[1] = pf_mma<T>::pack(sc[2 * kk][2], sc[2 * kk][3]);
			pa[2] = pf_mma<T>::pack(sc[2 * kk + 1][0],
						sc[2 * kk + 1][1]);
			pa[3] = pf_mma<T>::pack(sc[2 * kk + 1][2],
						sc[2 * kk + 1][3]);
#pragma unroll
			for (int dd = 0; dd < D / 16; dd++) {
				uint32_t r[4];

				pf_ldm4t(r, vt +
						    (kk * 16 + lane % 8 +
						     ((lane / 8) % 2) * 8) *
							    LD +
						    dd * 16 + (lane / 16) * 8);
				pf_mma<T>::run(o[2 * dd], pa, r[0], r[1]);
				pf_mma<T>::run(o[2 * dd + 1], pa, r[2], r[3]);
			}
		}
		__syncthreads(); /* stage j & 1 is refilled next iteration */
	}
	pf_wait<0>();
#pragma unroll
	for (int r = 0; r < 2; r++) {
		l[r] += __shfl_xor_sync(~0U, l[r], 1);
		l[r] += __shfl_xor_sync(~0U, l[r], 2);
	}
#pragma unroll
	for (int r = 0; r < 2; r++) {
		uint32_t row = rlo + r * 8;
		float inv = 1.0f / l[r];
		T *out;

		if (row >= len)
			continue;
		out = (T *)a.out + ((size_t)(b + row) * nq + h) * D;
#pragma unroll
		for (int n = 0; n < D / 8; n++)
			pf_mma<T>::store2(out + n * 8 + 2 * t,
					  o[n][2 * r] * inv,
					  o[n][2 * r + 1] * inv);
		if (a.lse && t == 0)
			a.lse[(size_t)(b + row) * nq + h] =
				m[r] * 0.6931471805599453f + logf(l[r]);
	}
}

/* ------------------------------------------------------------------ */
/* scores                                                              */

/*
 * One block per (64 keys, kv-head, sequence): for each query head of the
 * group, the probability each of the last W rows gives each key, from the
 * row's lse, summed over the rows; then the max over the group (or, for
 * KVK_ATTN_SCORE_SUMSQ, the squared probabilities, summed over the group). Thread
 * (key, rg) takes the rows rg, rg + 4, ... of each staged chunk: the query
 * row is a broadcast, the key rows sit in distinct banks.
 */
template <typename T, int D>
__global__ void __launch_bounds__(SC_THREADS)
	kvk_prefill_score_kernel(const kvk_prefill_args a)
{
	__shared__ float ks[SC_KEYS][D + 1];
	__shared__ float qrow[SC_ROWS][D + 1];
	__shared__ float lrow[SC_ROWS];
	__shared__ float part[SC_THREADS / SC_KEYS][SC_KEYS];
	const uint32_t nq = a.nr_q_heads, nkv = a.nr_kv_heads;
	const uint32_t group = nq / nkv, kvh = blockIdx.y, s = blockIdx.z;
	const uint32_t b = a.seq_start[s], len = a.seq_start[s + 1] - b;
	const uint32_t k0 = blockIdx.x * SC_KEYS;
	const uint32_t key = threadIdx.x % SC_KEYS, rg = threadIdx.x / SC_KEYS;
	const uint32_t w0 = len > a.score_window ? len - a.score_window : 0;
	const uint32_t r0 = k0 > w0 ? k0 : w0;
	const T *Q = (const T *)a.q, *K = (const T *)a.k;
	const bool sq = a.score_mode == KVK_ATTN_SCORE_SUMSQ;
	float best = 0.0f;

	if (k0 >= len)
		return;
	for (uint32_t c = threadIdx.x; c < SC_KEYS * D; c += SC_THREADS) {
		uint32_t r = c / D, e = c % D;

		ks[r][e] = k0 + r < len
				   ? kvk_dld(K, ((size_t)(b + k0 + r) * nkv +
						 kvh) * D +
							e)
				   : 0.0f;
	}
	for (uint32_t hh = 0; hh < group; hh++) {
		uint32_t h = kvh * group + hh;
		float acc = 0.0f;

		for (uint32_t i0 = r0; i0 < len; i0 += SC_ROWS) {
			__syncthreads();
			for (uint32_t c = threadIdx.x; c < SC_ROWS * D;
			     c += SC_THREADS) {
				uint32_t r = c / D, e = c % D, i = i0 + r;

				qrow[r][e] =
					i < len ? kvk_dld(Q, ((size_t)(b + i) *
								      nq +
							      h) * D +
								     e)
						: 0.0f;
			}
			if (threadIdx.x < SC_ROWS)
				lrow[threadIdx.x] =
					i0 + threadIdx.x < len
						? a.lse[(size_t)(b + i0 +
								 threadIdx.x) *
								nq +
							h]
						: 0.0f;
			__syncthreads();
#pragma unroll
			for (uint32_t r = rg; r < SC_ROWS;
			     r += SC_THREADS / SC_KEYS) {
				float d = 0.0f;

				if (i0 + r >= len)
					break;
#pragma unroll 8
				for (uint32_t e = 0; e < D; e++)
					d += qrow[r][e] * ks[key][e];
				if (k0 + key <= i0 + r) {
					float p = expf(d * a.scale - lrow[r]);

					acc += sq ? p * p : p;
				}
			}
		}
		__syncthreads();
		part[rg][key] = acc;
		__syncthreads();
		if (rg == 0) {
			for (uint32_t g = 1; g < SC_THREADS / SC_KEYS; g++)
				acc += part[g][key];
			best = sq ? best + acc : fmaxf(best, acc);
		}
	}
	if (rg == 0 && k0 + key < len)
		a.scores[(size_t)(b + k0 + key) * nkv + kvh] = best;
}

template <typename T, int D, int WARPS, int MINB>
static cudaError_t pf_attn(const struct kvk_prefill_args *a, cudaStream_t st)
{
	const int bm = 16 * WARPS;
	size_t smem = (size_t)(bm + 4 * PF_BN) * (D + PF_PAD) * sizeof(T);
	dim3 grid((a->max_len + bm - 1) / bm, a->nr_q_heads, a->nr_seqs);
	cudaError_t e;

	e = cudaFuncSetAttribute(kvk_prefill_kernel<T, D, WARPS, MINB>,
				 cudaFuncAttributeMaxDynamicSharedMemorySize,
				 (int)smem);
	if (e != cudaSuccess)
		return e;
	kvk_prefill_kernel<T, D, WARPS, MINB>
		<<<grid, 32 * WARPS, smem, st>>>(*a);
	return cudaGetLastError();
}

/*
 * The block shape: KVMM_PREFILL_VARIANT "4" (64 rows, 4 warps), "8" (128
 * rows, 8 warps) or "8x2" (128 rows, 8 warps, registers capped for two
 * blocks per SM); measured in Documentation/kernels/prefill.rst. The
 * variable is for experiments and tests; the default is the fastest.
 */
static int pf_variant(void)
{
	const char *e = getenv("KVMM_PREFILL_VARIANT");

	if (e && !strcmp(e, "4"))
		return 0;
	if (e && !strcmp(e, "8"))
		return 1;
	if (e && !strcmp(e, "8x2"))
		return 2;
	return PF_DEFAULT_VARIANT;
}

template <typename T, int D>
static int pf_launch(const struct kvk_prefill_args *a, cudaStream_t st)
{
	int v = pf_variant();
	cudaError_t e = v == 0	 ? pf_attn<T, D, 4, 1>(a, st)
			: v == 1 ? pf_attn<T, D, 8, 1>(a, st)
				 : pf_attn<T, D, 8, 2>(a, st);

	if (e != cudaSuccess || !a->scores)
		return kvk_cuda_errno(e);
	dim3 sgrid((a->max_len + SC_KEYS - 1) / SC_KEYS, a->nr_kv_heads,
		   a->nr_seqs);
	kvk_prefill_score_kernel<T, D><<<sgrid, SC_THREADS, 0, st>>>(*a);
	return kvk_launch_errno();
}

/**
 * kvk_prefill_cuda() - causal prefill attention on the GPU
 * @a: arguments; every pointer a device address
 * @stream: cudaStream_t
 *
 * One block of 4 warps per (64 query rows, query head, sequence), the
 * longest rows first; each warp owns 16 rows. K and V tiles of 64 keys
 * stream through shared memory, double-buffered with cp.async; S = Q K^T
 * and O += P V run on mma.sync m16n8k16 with fp32 accumulators, P staying
 * in registers (the accumulator layout of S is the A-operand layout of P);
 * online softmax in the log2 domain. With @a->scores a second kernel
 * computes the token scores from the rows' lse.
 *
 * Return: 0, -EINVAL, or a launch error.
 */
extern "C" int kvk_prefill_cuda(const struct kvk_prefill_args *a, void *stream)
{
	cudaStream_t st = (cudaStream_t)stream;

	if (kvk_prefill_check(a))
		return -EINVAL;
	if (!a->nr_seqs || !a->max_len)
		return 0;
	if (a->dtype == KVK_F16)
		return a->head_dim == 64 ? pf_launch<__half, 64>(a, st)
					 : pf_launch<__half, 128>(a, st);
	return a->head_dim == 64 ? pf_launch<__nv_bfloat16, 64>(a, st)
				 : pf_launch<__nv_bfloat16, 128>(a, st);
}
