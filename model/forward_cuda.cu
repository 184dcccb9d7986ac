// SPDX-License-Identifier: MIT
/*
 * forward_cuda.cu - the CUDA executor's own kernels: keys and values into
 * the allocator's fp16 pages, causal attention of prompt tokens over those
 * pages, dtype conversion and bias broadcast. Each matches the CPU
 * reference of the same name in forward_ref_cuda.c; fp32 arithmetic, one
 * rounding on store.
 */
#include <errno.h>
#include <math.h>

#include "kvk_cuda.cuh"

#include "forward_cuda.h"

#define PREFILL_WARPS 4
#define HD_MAX 256 /* largest head_dim */
#define MAX_PER_LANE (HD_MAX / 32)

__device__ __forceinline__ uint8_t *page_at(const struct llm_kvpages &p,
					    uint32_t list, uint32_t tok)
{
	uint32_t pg = p.tables[(size_t)list * p.width + tok / p.tokens];

	return (uint8_t *)(uintptr_t)(p.pool +
				      (uint64_t)(pg / p.ppg) * (2ULL << 20) +
				      (uint64_t)(pg % p.ppg) * p.page_size);
}

/* one block per (token, kv-head) */
__global__ void llm_kv_store_kernel(struct llm_kvpages p, const float *k,
				    const float *v, long ld,
				    const int32_t *pos, const uint32_t *list,
				    uint32_t list_add, const float *q,
				    __half *qh, int n_heads)
{
	int t = blockIdx.x, h = blockIdx.y, hd = p.head_dim;
	uint32_t ps = (uint32_t)pos[t], slot = ps % p.tokens;
	uint8_t *pg = page_at(p, list[t] + list_add + h, ps);
	__half *kr = (__half *)(pg + p.k_off) + (size_t)slot * hd;
	__half *vr = (__half *)(pg + p.v_off) + (size_t)slot * hd;
	const float *ks = k + t * ld + (size_t)h * hd;
	const float *vs = v + t * ld + (size_t)h * hd;

	for (int i = threadIdx.x; i < hd; i += blockDim.x) {
		kr[i] = __float2half_rn(ks[i]);
		vr[i] = __float2half_rn(vs[i]);
	}
	if (q) {
		int gsz = n_heads / p.n_kv * hd;
		size_t q0 = ((size_t)t * n_heads) * hd + (size_t)h * gsz;

		for (int i = threadIdx.x; i < gsz; i += blockDim.x)
			qh[q0 + i] = __float2half_rn(q[q0 + i]);
	}
	if (threadIdx.x == 0) {
		((int32_t *)(pg + p.pos_off))[slot] = (int32_t)ps;
		((float *)(pg + p.score_off))[slot] = 0.0f;
	}
}

static int kvpages_check(const struct llm_kvpages *p)
{
	if (!p || !p->pool || !p->tables || !p->tokens || !p->ppg ||
	    !p->width || !p->n_kv || !p->head_dim || p->head_dim % 32 ||
	    p->head_dim > HD_MAX)
		return -EINVAL;
	return 0;
}

/**
 * llm_kv_store_cuda() - write keys and values of new tokens into their pages
 * @p: the pages (device tables and pool)
 * @k: keys, [ntok] rows of n_kv * head_dim fp32, @ld floats apart (device)
 * @v: values, likewise (device)
 * @ld: floats between two tokens' rows
 * @pos: [ntok] positions (device); token t goes to slot pos % tokens of
 *	page pos / tokens of its list
 * @list: [ntok] list of kv-head 0 of each token's (slot, layer), less
 *	@list_add (device)
 * @list_add: added to every @list entry (the layer's offset)
 * @ntok: tokens; 0 is a no-op
 * @q: NULL, or [ntok][n_heads][head_dim] fp32 queries (device) to convert
 *	to fp16 into @qh, same layout, in the same pass
 * @qh: fp16 queries out, with @q
 * @n_heads: query heads of @q, a multiple of p->n_kv
 * @stream: cudaStream_t
 *
 * Also stores each token's position and a zero score. Every page must be in
 * the tables already.
 *
 * Return: 0, -EINVAL, or the launch error.
 */
extern "C" int llm_kv_store_cuda(const struct llm_kvpages *p, const float *k,
				 const float *v, long ld, const int32_t *pos,
				 const uint32_t *list, uint32_t list_add,
				 int ntok, const float *q, void *qh,
				 int n_heads, void *stream)
{
	int ret = kvpages_check(p);

	if (ret || ntok < 0 || !k || !v || !pos || !list)
		return ret ? ret : -EINVAL;
	if (q && (!qh || n_heads < 1 || n_heads % p->n_kv))
		return -EINVAL;
	if (!ntok)
		return 0;
	llm_kv_store_kernel<<<dim3(ntok, p->n_kv), 128, 0,
			      (cudaStream_t)stream>>>(*p, k, v, ld, pos, list,
						      list_add, q,
						      (__half *)qh, n_heads);
	return kvk_launch_errno();
}

/*
 * One block per (token, query head); each warp runs an online softmax over
 * every PREFILL_WARPS-th key, then the warps' partial results are merged.
 */
template <typename T>
__global__ void llm_attn_prefill_kernel(struct llm_kvpages p, const float *q,
					const int32_t *pos,
					const uint32_t *list,
					uint32_t list_add, int n_heads,
					float scale, T *out)
{
	__shared__ float sm[PREFILL_WARPS], sl[PREFILL_WARPS];
	__shared__ float sacc[PREFILL_WARPS][HD_MAX];
	int t = blockIdx.x, h = blockIdx.y, hd = p.head_dim;
	int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
	int per = hd / 32, group = n_heads / p.n_kv;
	uint32_t li = list[t] + list_add + h / group;
	int n = pos[t] + 1;
	const float *qr = q + ((size_t)t * n_heads + h) * hd;
	float qv[MAX_PER_LANE], acc[MAX_PER_LANE];
	float m = -INFINITY, l = 0.0f, M, L;

#pragma unroll
	for (int i = 0; i < MAX_PER_LANE; i++) {
		qv[i] = i < per ? qr[lane + 32 * i] : 0.0f;
		acc[i] = 0.0f;
	}
	for (int j = warp; j < n; j += PREFILL_WARPS) {
		const uint8_t *pg = page_at(p, li, j);
		uint32_t slot = j % p.tokens;
		const __half *kr = (const __half *)(pg + p.k_off) +
				   (size_t)slot * hd;
		const __half *vr = (const __half *)(pg + p.v_off) +
				   (size_t)slot * hd;
		float s = 0.0f, mn, c, e;

#pragma unroll
		for (int i = 0; i < MAX_PER_LANE; i++)
			if (i < per)
				s += qv[i] * __half2float(kr[lane + 32 * i]);
		for (int o = 16; o > 0; o /= 2)
			s += __shfl_xor_sync(0xffffffffu, s, o);
		s *= scale;
		mn = fmaxf(m, s);
		c = expf(m - mn);
		e = expf(s - mn);
		l = l * c + e;
#pragma unroll
		for (int i = 0; i < MAX_PER_LANE; i++)
			if (i < per)
				acc[i] = acc[i] * c +
					 e * __half2float(vr[lane + 32 * i]);
		m = mn;
	}
	if (lane == 0) {
		sm[warp] = m;
		sl[warp] = l;
	}
#pragma unroll
	for (int i = 0; i < MAX_PER_LANE; i++)
		if (i < per)
			sacc[warp][lane + 32 * i] = acc[i];
	__syncthreads();
	M = sm[0];
	for (int w = 1; w < PREFILL_WARPS; w++)
		M = fmaxf(M, sm[w]);
	L = 0.0f;
	for (int w = 0; w < PREFILL_WARPS; w++)
		L += sm[w] == -INFINITY ? 0.0f : sl[w] * expf(sm[w] - M);
	for (int i = threadIdx.x; i < hd; i += blockDim.x) {
		float o = 0.0f;

		for (int w = 0; w < PREFILL_WARPS; w++)
			if (sm[w] != -INFINITY)
				o += sacc[w][i] * expf(sm[w] - M);
		kvk_dst(out, ((size_t)t * n_heads + h) * hd + i, o / L);
	}
}

/**
 * llm_attn_prefill_cuda() - causal attention of new tokens over the pages
 * @p: the pages, holding every position 0 .. pos[t] of each token's list
 * @q: [ntok][n_heads][head_dim] fp32 queries, RoPE applied (device)
 * @pos: [ntok] positions (device); token t attends to 0 .. pos[t]
 * @list: [ntok] list of kv-head 0 of each token, less @list_add (device)
 * @list_add: added to every @list entry
 * @ntok: tokens; 0 is a no-op
 * @n_heads: query heads, a multiple of p->n_kv (query head h reads kv-head
 *	h / (n_heads / n_kv))
 * @scale: softmax scale
 * @out: [ntok][n_heads][head_dim] of @dt (device)
 * @dt: dtype of @out
 * @stream: cudaStream_t
 *
 * Return: 0, -EINVAL, or the launch error.
 */
extern "C" int llm_attn_prefill_cuda(const struct llm_kvpages *p,
				     const float *q, const int32_t *pos,
				     const uint32_t *list, uint32_t list_add,
				     int ntok, int n_heads, float scale,
				     void *out, enum kvk_dtype dt,
				     void *stream)
{
	cudaStream_t s = (cudaStream_t)stream;
	int ret = kvpages_check(p);

	if (ret)
		return ret;
	if (ntok < 0 || n_heads < 1 || n_heads % p->n_kv || !q || !pos ||
	    !list || !out || dt < 0 || dt >= KVK_DTYPE_NR)
		return -EINVAL;
	if (!ntok)
		return 0;
#define LAUNCH(T)                                                              \
	llm_attn_prefill_kernel<T><<<dim3(ntok, n_heads), PREFILL_WARPS * 32,  \
				     0, s>>>(*p, q, pos, list, list_add,       \
					     n_heads, scale, (T *)out)
	KVK_DISPATCH(dt, LAUNCH);
#undef LAUNCH
	return kvk_launch_errno();
}

template <typename D, typename S>
__global__ void llm_convert_kernel(D *dst, const S *src, size_t n)
{
	for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
	     i += (size_t)gridDim.x * blockDim.x)
		kvk_dst(dst, i, kvk_dld(src, i));
}

template <typename D>
static void convert_from(D *dst, const void *src, enum kvk_dtype sdt,
			 size_t n, int blocks, cudaStream_t s)
{
#define LAUNCH(S) llm_convert_kernel<D, S><<<blocks, 256, 0, s>>>(      \
		dst, (const S *)src, n)
	KVK_DISPATCH(sdt, LAUNCH);
#undef LAUNCH
}

/**
 * llm_convert_cuda() - dst = src converted, elementwise
 * @dst: @n elements of @ddt (device)
 * @ddt: destination dtype
 * @src: @n elements of @sdt (device); not overlapping @dst unless equal
 *	to it with @ddt == @sdt
 * @sdt: source dtype
 * @n: elements; 0 is a no-op
 * @stream: cudaStream_t
 *
 * Return: 0, -EINVAL, or the launch error.
 */
extern "C" int llm_convert_cuda(void *dst, enum kvk_dtype ddt,
				const void *src, enum kvk_dtype sdt, size_t n,
				void *stream)
{
	cudaStream_t s = (cudaStream_t)stream;
	size_t b = (n + 255) / 256;
	int blocks = b > 4096 ? 4096 : (int)b;

	if (!dst || !src || ddt < 0 || ddt >= KVK_DTYPE_NR || sdt < 0 ||
	    sdt >= KVK_DTYPE_NR)
		return -EINVAL;
	if (!n)
		return 0;
#define LAUNCH(D) convert_from<D>((D *)dst, src, sdt, n, blocks, s)
	KVK_DISPATCH(ddt, LAUNCH);
#undef LAUNCH
	return kvk_launch_errno();
}

__global__ void llm_bias_add_kernel(float *y, const float *b, int rows,
				    int n)
{
	size_t total = (size_t)rows * n;

	for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
	     i < total; i += (size_t)gridDim.x * blockDim.x)
		y[i] += b[i % n];
}

/**
 * llm_bias_add_cuda() - y[r][i] += b[i] for every row
 * @y: [rows][n] fp32 (device)
 * @b: [n] fp32 (device)
 * @rows: rows; 0 is a no-op
 * @n: row length; > 0
 * @stream: cudaStream_t
 *
 * Return: 0, -EINVAL, or the launch error.
 */
extern "C" int llm_bias_add_cuda(float *y, const float *b, int rows, int n,
				 void *stream)
{
	size_t blk = ((size_t)rows * n + 255) / 256;

	if (!y || !b || rows < 0 || n < 1)
		return -EINVAL;
	if (!rows)
		return 0;
	llm_bias_add_kernel<<<blk > 4096 ? 4096 : (int)blk, 256, 0,
			      (cudaStream_t)stream>>>(y, b, rows, n);
	return kvk_launch_errno();
}

/* ---- GEMV for decode: y = beta y + W x, W [n][k] fp16/bf16, x fp32 ---- */

#define GEMV_WARPS 8
#define GEMV_DEPTH 4

static int gemv_check(const void *w, enum kvk_dtype wdt, const float *x,
		      long ldx, int ntok, int n, int k,
		      const struct llm_gemv_out *o)
{
	int prev = 0;

	if (!w || !x || !o || (wdt != KVK_F16 && wdt != KVK_BF16) ||
	    ntok < 0 || ntok > LLM_GEMV_MAX_TOK || n < 1 || k < 8 || k % 8 ||
	    ldx < k || ldx % 4 || o->n_seg < 1 ||
	    o->n_seg > LLM_GEMV_MAX_SEG || o->end[o->n_seg - 1] != n)
		return -EINVAL;
	for (int s = 0; s < o->n_seg; s++) {
		if (!o->y[s] || o->end[s] <= prev ||
		    o->ld[s] < o->end[s] - prev)
			return -EINVAL;
		prev = o->end[s];
	}
	return 0;
}

__device__ __forceinline__ void gemv_unpack(uint4 u, const __half *,
					    float *f)
{
	const __half2 *h = (const __half2 *)&u;

#pragma unroll
	for (int i = 0; i < 4; i++) {
		float2 v = __half22float2(h[i]);

		f[2 * i] = v.x;
		f[2 * i + 1] = v.y;
	}
}

__device__ __forceinline__ void gemv_unpack(uint4 u, const __nv_bfloat16 *,
					    float *f)
{
	uint32_t a[4] = { u.x, u.y, u.z, u.w };

#pragma unroll
	for (int i = 0; i < 4; i++) {
		f[2 * i] = __uint_as_float(a[i] << 16);
		f[2 * i + 1] = __uint_as_float(a[i] & 0xffff0000u);
	}
}

/*
 * One warp per row of W: each lane reads 16 bytes (8 weights) per step,
 * 256 weights per warp per step, and the x values under them (fp32, from
 * L1/L2), for every token at once; fp32 accumulation, one warp reduction.
 */
template <typename W, int T, int DEPTH>
__global__ void __launch_bounds__(GEMV_WARPS * 32)
llm_gemv_kernel(const W *w, const float *x, long ldx, int n, int k,
		const float *nw, float eps, struct llm_gemv_out o, float beta)
{
	int lane = threadIdx.x % 32;
	int row = blockIdx.x * GEMV_WARPS + threadIdx.x / 32, s = 0, r0 = 0;
	const W *wr = w + (size_t)row * k;
	float acc[T], ss[T];
	float *y;

	if (row >= n)
		return;
#pragma unroll
	for (int t = 0; t < T; t++)
		acc[t] = ss[t] = 0.0f;
	/* DEPTH loads of 16 bytes in flight per lane */
	for (int c0 = lane * 8; c0 < k; c0 += 256 * DEPTH) {
		uint4 u[DEPTH];

#pragma unroll
		for (int j = 0; j < DEPTH; j++) {
			int c = c0 + 256 * j;

			u[j] = c < k ? __ldcs((const uint4 *)(wr + c)) :
				       make_uint4(0, 0, 0, 0);
		}
#pragma unroll
		for (int j = 0; j < DEPTH; j++) {
			int c = c0 + 256 * j;
			float f[8];

			if (c >= k)
				break;
			gemv_unpack(u[j], wr, f);
#pragma unroll
			for (int t = 0; t < T; t++) {
				const float4 *xp =
					(const float4 *)(x + t * ldx + c);
				float4 a = __ldg(xp), b = __ldg(xp + 1);

				if (nw) {
					const float4 *gp =
						(const float4 *)(nw + c);
					float4 g = __ldg(gp), h = __ldg(gp + 1);

					ss[t] += a.x * a.x + a.y * a.y +
						 a.z * a.z + a.w * a.w +
						 b.x * b.x + b.y * b.y +
						 b.z * b.z + b.w * b.w;
					a.x *= g.x, a.y *= g.y, a.z *= g.z;
					a.w *= g.w, b.x *= h.x, b.y *= h.y;
					b.z *= h.z, b.w *= h.w;
				}
				acc[t] += f[0] * a.x + f[1] * a.y +
					  f[2] * a.z + f[3] * a.w +
					  f[4] * b.x + f[5] * b.y +
					  f[6] * b.z + f[7] * b.w;
			}
		}
	}
#pragma unroll
	for (int t = 0; t < T; t++) {
		for (int d = 16; d > 0; d /= 2) {
			acc[t] += __shfl_xor_sync(0xffffffffu, acc[t], d);
			ss[t] += __shfl_xor_sync(0xffffffffu, ss[t], d);
		}
		if (nw)
			acc[t] *= rsqrtf(ss[t] / k + eps);
	}
	if (lane)
		return;
	while (row >= o.end[s]) {
		r0 = o.end[s];
		s++;
	}
	y = o.y[s] + (row - r0);
#pragma unroll
	for (int t = 0; t < T; t++)
		y[t * o.ld[s]] = beta == 0.0f ? acc[t] :
						acc[t] + beta * y[t * o.ld[s]];
}

/*
 * Loads in flight per lane: GEMV_DEPTH, or KVMM_GEMV_DEPTH=8 (a measuring
 * knob, read at each launch so a test can compare both in one process).
 */
static int gemv_depth(void)
{
	const char *e = getenv("KVMM_GEMV_DEPTH");

	return e && atoi(e) == 8 ? 8 : GEMV_DEPTH;
}

/**
 * llm_gemv_cuda() - y = beta * y + W x for a few tokens (decode GEMMs)
 * @w: [n][k] weights of @wdt, 16-byte aligned (device)
 * @wdt: KVK_F16 or KVK_BF16
 * @x: [ntok][k] fp32, @ldx floats apart, 16-byte aligned (device)
 * @ldx: a multiple of 4, >= @k
 * @ntok: tokens, 0..LLM_GEMV_MAX_TOK; 0 is a no-op
 * @n: rows of @w
 * @k: columns, a multiple of 8
 * @nw: NULL, or [k] fp32 RMSNorm weights (device, 16-byte aligned): then
 *	each token's x is first RMS-normalised with @eps and scaled by @nw,
 *	as kvk_rmsnorm_cuda() does, inside the same pass
 * @eps: RMSNorm epsilon, with @nw
 * @o: where each row's result goes (host struct, device outputs)
 * @beta: 0 (outputs are not read) or the factor of the old outputs
 * @stream: cudaStream_t
 *
 * fp32 accumulation: each lane sums its eight-column slices in order, then
 * the warp's lanes are summed by a butterfly.
 *
 * Return: 0, -EINVAL, or the launch error.
 */
extern "C" int llm_gemv_cuda(const void *w, enum kvk_dtype wdt,
			     const float *x, long ldx, int ntok, int n, int k,
			     const float *nw, float eps,
			     const struct llm_gemv_out *o, float beta,
			     void *stream)
{
	cudaStream_t s = (cudaStream_t)stream;
	int ret = gemv_check(w, wdt, x, ldx, ntok, n, k, o);
	int blocks = (n + GEMV_WARPS - 1) / GEMV_WARPS;

	if (ret)
		return ret;
	if ((uintptr_t)w % 16 || (uintptr_t)x % 16 || (uintptr_t)nw % 16)
		return -EINVAL;
	if (!ntok)
		return 0;
#define LAUNCH_T(W, T)                                                         \
	do {                                                                   \
		if (gemv_depth() == 8)                                         \
			llm_gemv_kernel<W, T, 8><<<blocks, GEMV_WARPS * 32, 0, \
						   s>>>((const W *)w, x, ldx,  \
							n, k, nw, eps, *o,     \
							beta);                 \
		else                                                           \
			llm_gemv_kernel<W, T, GEMV_DEPTH>                      \
				<<<blocks, GEMV_WARPS * 32, 0, s>>>(           \
					(const W *)w, x, ldx, n, k, nw, eps,   \
					*o, beta);                             \
	} while (0)
#define LAUNCH(W)                                                              \
	do {                                                                   \
		switch (ntok) {                                                \
		case 1: LAUNCH_T(W, 1); break;                                 \
		case 2: LAUNCH_T(W, 2); break;                                 \
		case 3: LAUNCH_T(W, 3); break;                                 \
		default: LAUNCH_T(W, 4); break;                                \
		}                                                              \
	} while (0)
	if (wdt == KVK_F16)
		LAUNCH(__half);
	else
		LAUNCH(__nv_bfloat16);
#undef LAUNCH
#undef LAUNCH_T
	return kvk_launch_errno();
}
