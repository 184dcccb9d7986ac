// SPDX-License-Identifier: MIT
/*
 * qweight.cu - kernels over 8- and 4-bit weight matrices (qweight.h): the
 * decode GEMV that reads them directly and the expansion to fp16/bf16 for
 * cuBLAS. CPU references of the same names in qweight.c.
 */
#include <errno.h>
#include <math.h>

#include <cuda_fp16.h>

#include "kvk_cuda.cuh"

#include "gemv_cuda.cuh"
#include "qweight.h"

#define QG_WARPS 8

/*
 * The activations of one lane's group (32 columns, from column @c) for
 * token @t, quantized as the weights are read: x (scaled by RMSNorm's
 * weights @nw, whose 1/rms is applied at the end) to int8 against the
 * group's absolute maximum, d = amax / 127, rounded to nearest-even by
 * adding 1.5 * 2^23 (the byte under the exponent is the integer; one fma,
 * where a float-to-int conversion runs at an eighth of an add's rate).
 * @xq: the 32 values, four to a word in column order; @dx: d; @xs: their
 * sum; @ss: the sum of the raw x^2 (RMSNorm), added to.
 */
template <typename X>
__device__ __forceinline__ void qg_quant_x(const X *x, int c, const float *nw,
					   int *xq, float *dx, int *xs,
					   float *ss)
{
	float a[32], amax = 0.0f, inv;

#pragma unroll
	for (int ch = 0; ch < 4; ch++)
		gemv_x8(x + c + 8 * ch, a + 8 * ch);
	if (nw) {
#pragma unroll
		for (int ch = 0; ch < 4; ch++) {
			float g[8];

			gemv_x8(nw + c + 8 * ch, g);
#pragma unroll
			for (int i = 0; i < 8; i++) {
				*ss = fmaf(a[8 * ch + i], a[8 * ch + i], *ss);
				a[8 * ch + i] = __fmul_rn(a[8 * ch + i], g[i]);
			}
		}
	}
#pragma unroll
	for (int i = 0; i < 32; i++)
		amax = fmaxf(amax, fabsf(a[i]));
	inv = amax > 0.0f ? __fdiv_rn(127.0f, amax) : 0.0f;
	*dx = __fdiv_rn(amax, 127.0f);
	*xs = 0;
#pragma unroll
	for (int w = 0; w < 8; w++) {
		uint32_t v[4];

#pragma unroll
		for (int i = 0; i < 4; i++)
			v[i] = __float_as_uint(__fmaf_rn(a[4 * w + i], inv,
							 12582912.0f));
		xq[w] = (int)__byte_perm(__byte_perm(v[0], v[1], 0x0040),
					 __byte_perm(v[2], v[3], 0x0040),
					 0x5410);
		*xs = __dp4a(xq[w], 0x01010101, *xs);
	}
}

/*
 * Each block first quantizes the whole activation vector of every token
 * into shared memory (qg_quant_x(): per group of 32 columns, int8 values,
 * d_x and their sum; RMSNorm's sum of squares reduced over the block),
 * then its warps take groups of R rows (with GLU, R / 2 gate rows and
 * their up rows), as many groups in turn as the grid leaves them (at most
 * four blocks an SM, so that the activations are read a few times, not
 * once per few rows). For a
 * group, each lane owns one group of 32 columns per warp step (1024
 * columns): it reads that group's 32 (Q8) or 16 (Q4) bytes of every row
 * and its metadata, D steps in flight, the activations from shared memory,
 * and takes the dot product in integers, four columns per dp4a (Q4's
 * nibbles are unsigned 0..15 and fit int8). The group adds d_w * (d_x *
 * sum) (+ m_w * (d_x * sum of x) for Q4) to the lane's fp32 total; one
 * butterfly per row at the end. So y is the exact dot product of the
 * dequantized weights with the dequantized activations, up to fp32
 * rounding of the per-group terms.
 *
 * Why shared memory: a Q4 row of 4096 columns is 2 KB, and when each warp
 * loaded and quantized the activations under its own columns (fp32 x and
 * the norm weights: 8 bytes a column) for its R rows, the activation
 * traffic from L2 was 8 / (R x 0.5) times the weight bytes, 2x at R = 8:
 * measured at 31-59% of the read ceiling, whether the columns were split
 * across warps or not. Now a block reads them once for all its rows.
 */
template <int F, typename X, int T, int R, int D, bool GLU>
__global__ void __launch_bounds__(QG_WARPS * 32)
llm_qgemv_kernel(const uint8_t *q, const uint8_t *meta, const X *x, long ldx,
		 int n, int k, const float *nw, float eps,
		 struct llm_gemv_out o, float beta)
{
	constexpr int NW = F == 8 ? 2 : 1;	/* 16-byte loads per row */
	extern __shared__ __align__(16) uint8_t qg_smem[];
	__shared__ float red[QG_WARPS][T];
	int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
	int nwarp = blockDim.x / 32, ng = k / 32;
	int groups = GLU ? (n / 2 + R / 2 - 1) / (R / 2) : (n + R - 1) / R;
	int8_t *xq = (int8_t *)qg_smem;			/* [T][k] */
	float *dxs = (float *)(qg_smem + (size_t)T * k);	/* [T][ng] */
	int *xss = (int *)(dxs + T * ng);			/* [T][ng] */
	size_t rb = llm_qw_row_bytes((enum llm_qw_fmt)F, k);
	size_t mb = llm_qw_meta_bytes((enum llm_qw_fmt)F, k);
	float ss[T];

#pragma unroll
	for (int t = 0; t < T; t++)
		ss[t] = 0.0f;
	for (int g = threadIdx.x; g < ng; g += blockDim.x)
#pragma unroll
		for (int t = 0; t < T; t++) {
			int v[8];

			qg_quant_x(x + t * ldx, 32 * g, nw, v, &dxs[t * ng + g],
				   &xss[t * ng + g], &ss[t]);
			((int4 *)(xq + (size_t)t * k + 32 * g))[0] =
				make_int4(v[0], v[1], v[2], v[3]);
			((int4 *)(xq + (size_t)t * k + 32 * g))[1] =
				make_int4(v[4], v[5], v[6], v[7]);
		}
#pragma unroll
	for (int t = 0; t < T; t++) {
		for (int m = 16; m > 0; m /= 2)
			ss[t] += __shfl_xor_sync(0xffffffffu, ss[t], m);
		if (lane == 0)
			red[warp][t] = ss[t];
	}
	__syncthreads();
	/* the block's sum of squares on lane 0 (gemv_finish() sums lanes) */
#pragma unroll
	for (int t = 0; t < T; t++) {
		ss[t] = 0.0f;
		for (int w = 0; lane == 0 && w < nwarp; w++)
			ss[t] += red[w][t];
	}
	for (int grp = blockIdx.x * nwarp + warp; grp < groups;
	     grp += gridDim.x * nwarp) {
		int row[R];
		const uint8_t *qr[R];
		const uint8_t *mr[R];
		float acc[R][T], s2[T];

		gemv_warp_rows<R, GLU>(grp, n, row);
#pragma unroll
		for (int j = 0; j < R; j++) {
			qr[j] = q + (size_t)(row[j] < 0 ? 0 : row[j]) * rb;
			mr[j] = meta + (size_t)(row[j] < 0 ? 0 : row[j]) * mb;
#pragma unroll
			for (int t = 0; t < T; t++)
				acc[j][t] = 0.0f;
		}
		for (int base = 0; base < k; base += 1024 * D) {
			uint4 u[D][R][NW];
			uint32_t mt[D][R];

#pragma unroll
			for (int d = 0; d < D; d++) {
				int c = base + 1024 * d + 32 * lane;
				bool in = c < k;

#pragma unroll
				for (int j = 0; j < R; j++) {
#pragma unroll
					for (int h = 0; h < NW; h++)
						u[d][j][h] = in ? __ldcs(
							(const uint4 *)(qr[j] +
							(F == 8 ? c : c / 2)) +
							h) :
							make_uint4(0, 0, 0, 0);
					if (F == 8)
						mt[d][j] = in ? __ldg(
							(const uint16_t *)mr[j] +
							c / 32) : 0;
					else
						mt[d][j] = in ? __ldg(
							(const uint32_t *)mr[j] +
							c / 32) : 0;
				}
			}
#pragma unroll
			for (int d = 0; d < D; d++) {
				int c = base + 1024 * d + 32 * lane;

				if (c >= k)
					break;
#pragma unroll
				for (int t = 0; t < T; t++) {
					const int4 *p = (const int4 *)(xq +
						(size_t)t * k + c);
					int4 a0 = p[0], a1 = p[1];
					int xv[8] = { a0.x, a0.y, a0.z, a0.w,
						      a1.x, a1.y, a1.z, a1.w };
					float dx = dxs[t * ng + c / 32];
					int xs = xss[t * ng + c / 32];

#pragma unroll
					for (int j = 0; j < R; j++) {
						const uint32_t *w =
							(const uint32_t *)u[d][j];
						float dd = __half2float(
							__ushort_as_half(
							(unsigned short)
							(mt[d][j] & 0xffffu)));
						int is = 0;

#pragma unroll
						for (int i = 0; i < 4; i++) {
							if (F == 8) {
								is = __dp4a(
								(int)w[i],
								xv[i], is);
								is = __dp4a(
								(int)w[4 + i],
								xv[4 + i], is);
							} else {
								is = __dp4a(
								(int)(w[i] &
								0x0f0f0f0fu),
								xv[i], is);
								is = __dp4a(
								(int)(w[i] >>
								4 & 0x0f0f0f0fu),
								xv[4 + i], is);
							}
						}
						acc[j][t] = __fmaf_rn(dd,
							__fmul_rn(dx,
							(float)is), acc[j][t]);
						if (F == 4) {
							float mm = __half2float(
							__ushort_as_half(
							(unsigned short)
							(mt[d][j] >> 16)));

							acc[j][t] = __fmaf_rn(
								mm, __fmul_rn(dx,
								(float)xs),
								acc[j][t]);
						}
					}
				}
			}
		}
#pragma unroll
		for (int t = 0; t < T; t++)
			s2[t] = ss[t];
		gemv_finish<T, R, GLU>(lane, row, acc, s2, k, nw, eps, o,
				       beta);
	}
}

/*
 * Rows per warp for one token: 2. On an H100 (`kvmm bench gemv --device
 * cuda`, Llama-3-8B's matrices) two rows were the best or within 2% of it
 * for every matrix of both formats, and a batch-1 decode step took 4.64
 * (Q8) and 3.54 ms (Q4) at 2 rows against 5.70 and 3.95 at 8: with the
 * activations in shared memory, more rows only cost registers and
 * occupancy. KVMM_QGEMV_ROWS=1, 2, 4 or 8 overrides it (a measuring knob,
 * read at each launch). More tokens: one row (two with GLU).
 */
static int qg_rows(int ntok, bool glu)
{
	const char *e = getenv("KVMM_QGEMV_ROWS");
	int r = e ? atoi(e) : 0;

	if (ntok > 1)
		return glu ? 2 : 1;
	if (r != 1 && r != 2 && r != 4 && r != 8)
		r = 2;
	return glu && r < 2 ? 2 : r;
}

/* streaming multiprocessors of the current device (blocks for the grid) */
static int qg_sms(void)
{
	int dev = 0, n = 0;

	if (cudaGetDevice(&dev) != cudaSuccess ||
	    cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) !=
		    cudaSuccess || n < 1)
		n = 132;
	return n;
}

template <int F, typename X, int T, int R, bool GLU>
static int qg_go(const struct llm_qw *w, const void *x, long ldx, int n,
		 int k, const float *nw, float eps,
		 const struct llm_gemv_out *o, float beta, cudaStream_t s)
{
	constexpr int D = F == 4 && R <= 8 ? 2 : 1;
	auto kern = llm_qgemv_kernel<F, X, T, R, D, GLU>;
	int groups = GLU ? (n / 2 + R / 2 - 1) / (R / 2) : (n + R - 1) / R;
	int blocks = (groups + QG_WARPS - 1) / QG_WARPS;
	/* each block quantizes the activations once: a few blocks an SM */
	int cap = 4 * qg_sms();
	size_t smem = (size_t)T * k + (size_t)T * (k / 32) * 8;
	int ret;

	if (blocks > cap)
		blocks = cap;
	if (smem > 48 * 1024) {
		ret = kvk_cuda_errno(cudaFuncSetAttribute(kern,
			cudaFuncAttributeMaxDynamicSharedMemorySize,
			(int)smem));
		if (ret)
			return ret;
	}
	kern<<<blocks, QG_WARPS * 32, smem, s>>>(
		(const uint8_t *)w->q, (const uint8_t *)w->meta,
		(const X *)x, ldx, n, k, nw, eps, *o, beta);
	return kvk_launch_errno();
}

template <int F, typename X, int T>
static int qg_tok(const struct llm_qw *w, const void *x, long ldx, int n,
		  int k, const float *nw, float eps,
		  const struct llm_gemv_out *o, float beta, cudaStream_t s)
{
	int r = qg_rows(T, o->glu);

#define GO(R, G) qg_go<F, X, T, R, G>(w, x, ldx, n, k, nw, eps, o, beta, s)
	if constexpr (T == 1) {
		if (o->glu)
			return r == 8 ? GO(8, true) : r == 4 ? GO(4, true) :
			       GO(2, true);
		return r == 8 ? GO(8, false) : r == 4 ? GO(4, false) :
		       r == 2 ? GO(2, false) : GO(1, false);
	} else {
		(void)r;
		return o->glu ? GO(2, true) : GO(1, false);
	}
#undef GO
}

template <int F, typename X>
static int qg_x(const struct llm_qw *w, const void *x, long ldx, int ntok,
		int n, int k, const float *nw, float eps,
		const struct llm_gemv_out *o, float beta, cudaStream_t s)
{
	switch (ntok) {
	case 1:
		return qg_tok<F, X, 1>(w, x, ldx, n, k, nw, eps, o, beta, s);
	case 2:
		return qg_tok<F, X, 2>(w, x, ldx, n, k, nw, eps, o, beta, s);
	case 3:
		return qg_tok<F, X, 3>(w, x, ldx, n, k, nw, eps, o, beta, s);
	default:
		return qg_tok<F, X, 4>(w, x, ldx, n, k, nw, eps, o, beta, s);
	}
}

static bool qg_args_ok(const struct llm_qw *w, const void *x,
		       enum kvk_dtype xdt, long ldx, int ntok, int n, int k,
		       const float *nw, const struct llm_gemv_out *o)
{
	if (!w || (w->fmt != LLM_QW8 && w->fmt != LLM_QW4) || !w->q ||
	    !w->meta ||
	    llm_gemv_args_check(x, xdt, ldx, ntok, n, k, LLM_QW_GROUP, o))
		return false;
	return (uintptr_t)w->q % 16 == 0 && (uintptr_t)w->meta % 4 == 0 &&
	       (uintptr_t)x % 16 == 0 && (uintptr_t)nw % 16 == 0;
}

/**
 * llm_qgemv_cuda() - y = beta * y + W x for a few tokens, W at 8 or 4 bits
 * @w: the matrix (device), q 16-byte and meta 4-byte aligned
 * @x: [ntok][k] activations of @xdt, @ldx elements apart, 16-byte aligned
 * @xdt: KVK_F32 or KVK_F16
 * @ldx: >= @k, a multiple of 4 (fp32) or 8 (fp16)
 * @ntok: tokens, 0..LLM_GEMV_MAX_TOK; 0 is a no-op
 * @n: rows
 * @k: columns, a multiple of LLM_QW_GROUP
 * @nw: NULL, or [k] fp32 RMSNorm weights: x is RMS-normalised with @eps
 *	and scaled by @nw first, in the same pass
 * @eps: RMSNorm epsilon, with @nw
 * @o: where each row's result goes (as llm_gemv_cuda())
 * @beta: 0 (outputs are not read) or the factor of the old outputs
 * @stream: cudaStream_t
 *
 * Return: 0, -EINVAL, or the launch error.
 */
extern "C" int llm_qgemv_cuda(const struct llm_qw *w, const void *x,
			      enum kvk_dtype xdt, long ldx, int ntok, int n,
			      int k, const float *nw, float eps,
			      const struct llm_gemv_out *o, float beta,
			      void *stream)
{
	cudaStream_t s = (cudaStream_t)stream;

	if (!qg_args_ok(w, x, xdt, ldx, ntok, n, k, nw, o))
		return -EINVAL;
	if (!ntok)
		return 0;
	if (w->fmt == LLM_QW8)
		return xdt == KVK_F32 ?
			qg_x<8, float>(w, x, ldx, ntok, n, k, nw, eps, o, beta,
				       s) :
			qg_x<8, __half>(w, x, ldx, ntok, n, k, nw, eps, o,
					beta, s);
	return xdt == KVK_F32 ?
		qg_x<4, float>(w, x, ldx, ntok, n, k, nw, eps, o, beta, s) :
		qg_x<4, __half>(w, x, ldx, ntok, n, k, nw, eps, o, beta, s);
}

/* eight outputs of one thread: a 16-byte store (two for fp32) */
__device__ __forceinline__ void qd_store8(float *o, const float *v)
{
	((float4 *)o)[0] = make_float4(v[0], v[1], v[2], v[3]);
	((float4 *)o)[1] = make_float4(v[4], v[5], v[6], v[7]);
}

__device__ __forceinline__ void qd_store8(__half *o, const float *v)
{
	__half2 h[4];

#pragma unroll
	for (int i = 0; i < 4; i++)
		h[i] = __floats2half2_rn(v[2 * i], v[2 * i + 1]);
	*(uint4 *)o = *(const uint4 *)h;
}

__device__ __forceinline__ void qd_store8(__nv_bfloat16 *o, const float *v)
{
	__nv_bfloat162 h[4];

#pragma unroll
	for (int i = 0; i < 4; i++)
		h[i] = __floats2bfloat162_rn(v[2 * i], v[2 * i + 1]);
	*(uint4 *)o = *(const uint4 *)h;
}

/*
 * one thread per 8 columns of a row (a quarter of a group): 8 or 4 bytes
 * in, one 16-byte store out (two for fp32)
 */
template <int F, typename O>
__global__ void llm_qw_dequant_kernel(O *dst, const uint8_t *q,
				      const uint8_t *meta, int n, int k)
{
	size_t chunks = (size_t)n * (k / 8);
	size_t rb = llm_qw_row_bytes((enum llm_qw_fmt)F, k);
	size_t mb = llm_qw_meta_bytes((enum llm_qw_fmt)F, k);

	for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
	     i < chunks; i += (size_t)gridDim.x * blockDim.x) {
		size_t r = i / (k / 8), c = i % (k / 8) * 8;
		size_t g = c / LLM_QW_GROUP;
		int ch = (int)(c % LLM_QW_GROUP / 8);
		uint32_t md = F == 8 ? ((const uint16_t *)(meta + r * mb))[g] :
				       ((const uint32_t *)(meta + r * mb))[g];
		float d = __half2float(__ushort_as_half(
				(unsigned short)(md & 0xffffu)));
		float m = __half2float(__ushort_as_half(
				(unsigned short)(md >> 16)));
		float v[8];

		if (F == 8) {
			uint2 u = *(const uint2 *)(q + r * rb + c);
			uint32_t w[2] = { u.x, u.y };

#pragma unroll
			for (int j = 0; j < 8; j++)
				v[j] = __fmul_rn(d, (float)(int8_t)(w[j / 4] >>
							    8 * (j % 4)));
		} else {
			/* chunks 0, 1: low nibbles of bytes 0-7, 8-15; 2, 3:
			 * their high nibbles */
			uint2 u = *(const uint2 *)(q + r * rb + g * 16 +
						   (ch % 2) * 8);
			uint32_t w[2] = { u.x, u.y };
			int sh = ch < 2 ? 0 : 4;

#pragma unroll
			for (int j = 0; j < 8; j++)
				v[j] = __fmaf_rn(d, (float)((w[j / 4] >>
					(8 * (j % 4) + sh)) & 15), m);
		}
		qd_store8(dst + r * k + c, v);
	}
}

/**
 * llm_qw_dequant_cuda() - @w expanded to @dt: d * q (Q8) or fma(d, q, m)
 * (Q4) in fp32, rounded once; the same bits as llm_qw_dequant_cpu()
 * @dst: [n][k] of @dt (KVK_F32, KVK_F16 or KVK_BF16), device
 * @dt: destination type
 * @w: the matrix (device)
 * @n: rows
 * @k: columns, a multiple of LLM_QW_GROUP
 * @stream: cudaStream_t
 *
 * Return: 0, -EINVAL or the launch error.
 */
extern "C" int llm_qw_dequant_cuda(void *dst, enum kvk_dtype dt,
				   const struct llm_qw *w, int n, int k,
				   void *stream)
{
	cudaStream_t s = (cudaStream_t)stream;
	size_t chunks;
	int blocks;

	if (!dst || !w || (w->fmt != LLM_QW8 && w->fmt != LLM_QW4) || !w->q ||
	    !w->meta || n < 1 || k < LLM_QW_GROUP || k % LLM_QW_GROUP ||
	    (dt != KVK_F32 && dt != KVK_F16 && dt != KVK_BF16))
		return -EINVAL;
	chunks = (size_t)n * (k / 8);
	blocks = chunks / 256 + 1 > 8192 ? 8192 : (int)(chunks / 256 + 1);
#define DQ(F, O) llm_qw_dequant_kernel<F, O><<<blocks, 256, 0, s>>>( \
		(O *)dst, (const uint8_t *)w->q, (const uint8_t *)w->meta, n, k)
	if (w->fmt == LLM_QW8) {
		if (dt == KVK_F32)
			DQ(8, float);
		else if (dt == KVK_F16)
			DQ(8, __half);
		else
			DQ(8, __nv_bfloat16);
	} else {
		if (dt == KVK_F32)
			DQ(4, float);
		else if (dt == KVK_F16)
			DQ(4, __half);
		else
			DQ(4, __nv_bfloat16);
	}
#undef DQ
	return kvk_launch_errno();
}
