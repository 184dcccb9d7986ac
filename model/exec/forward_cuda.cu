// SPDX-License-Identifier: MIT
/*
 * forward_cuda.cu - the CUDA executor's own kernels: the hi/lo split of
 * prefill activations, bias broadcast and the decode GEMV. Each matches
 * the CPU reference of the same name in forward_ref_cuda.c; fp32
 * arithmetic, one rounding on store.
 */
#include <errno.h>
#include <math.h>

#include "kvk_cuda.cuh"

#include "forward_cuda.h"
#include "gemv_cuda.cuh"


/*
 * Programmatic dependent launch (sm_90): with KVMM_PDL=1, a kernel launched
 * by launch_pdl() may start while the kernel before it drains; it must
 * call pdl_wait() before it reads anything that kernel wrote (and before it
 * writes anything that kernel reads). pdl_trigger() lets the next kernel
 * start early. Both are no-ops without PDL. Off by default: on the
 * Llama-3-8B decode step it measured no faster (6.20 against 6.15-6.21
 * ms/token, see Documentation/model/cuda.rst).
 */
__device__ __forceinline__ void pdl_wait(void)
{
#if __CUDA_ARCH__ >= 900
	asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ void pdl_trigger(void)
{
#if __CUDA_ARCH__ >= 900
	asm volatile("griddepcontrol.launch_dependents;" :::);
#endif
}

/* PDL with KVMM_PDL=1 (a measuring knob, read at each launch) */
static bool pdl_on(void)
{
	const char *e = getenv("KVMM_PDL");

	return e && atoi(e) == 1;
}

template <typename... P, typename... A>
static int launch_pdl(void (*k)(P...), dim3 grid, int threads,
		      cudaStream_t s, A... args)
{
	cudaLaunchConfig_t c = {};
	cudaLaunchAttribute at[1];

	c.gridDim = grid;
	c.blockDim = dim3(threads);
	c.stream = s;
	at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
	at[0].val.programmaticStreamSerializationAllowed = pdl_on();
	c.attrs = at;
	c.numAttrs = 1;
	return kvk_cuda_errno(cudaLaunchKernelEx(&c, k, args...));
}

template <typename D>
__global__ void llm_split_kernel(D *hi, D *lo, const float *src, size_t n)
{
	for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
	     i += (size_t)gridDim.x * blockDim.x) {
		float x = src[i];

		kvk_dst(hi, i, x);
		kvk_dst(lo, i, x - kvk_dld(hi, i));
	}
}

/**
 * llm_split_cuda() - hi = src rounded to @dt, lo = (src - hi) rounded, so
 * that hi + lo holds src to about twice the precision of @dt
 * @hi: @n elements of @dt (device)
 * @lo: @n elements of @dt (device)
 * @dt: KVK_F16 or KVK_BF16
 * @src: @n fp32 (device)
 * @n: elements; 0 is a no-op
 * @stream: cudaStream_t
 *
 * Return: 0, -EINVAL, or the launch error.
 */
extern "C" int llm_split_cuda(void *hi, void *lo, enum kvk_dtype dt,
			      const float *src, size_t n, void *stream)
{
	cudaStream_t s = (cudaStream_t)stream;
	size_t b = (n + 255) / 256;
	int blocks = b > 4096 ? 4096 : (int)b;

	if (!hi || !lo || !src || (dt != KVK_F16 && dt != KVK_BF16))
		return -EINVAL;
	if (!n)
		return 0;
	if (dt == KVK_F16)
		llm_split_kernel<<<blocks, 256, 0, s>>>((__half *)hi,
							(__half *)lo, src, n);
	else
		llm_split_kernel<<<blocks, 256, 0, s>>>(
			(__nv_bfloat16 *)hi, (__nv_bfloat16 *)lo, src, n);
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

/* ---- GEMV for decode: y = beta y + W x, W fp16/bf16, x fp32/fp16 ---- */

#define GEMV_WARPS 8

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

/* D steps of 16 bytes of each of the R rows from column @c0 (zeros past k) */
template <int D, int R, typename W>
__device__ __forceinline__ void gemv_load(uint4 (*u)[R], const W *const *wr,
					  int c0, int k)
{
#pragma unroll
	for (int d = 0; d < D; d++)
#pragma unroll
		for (int j = 0; j < R; j++)
			u[d][j] = c0 + 256 * d < k ?
				  __ldcs((const uint4 *)(wr[j] + c0 +
							 256 * d)) :
				  make_uint4(0, 0, 0, 0);
}

/*
 * Each warp computes R rows of W (with GLU: R / 2 gate rows and the up rows
 * paired with them): each lane reads 16 bytes (8 weights) of every row per
 * step, D steps in flight, and the x values under them once for all R rows
 * (from L1/L2), for every token at once; fp32 accumulation, one warp
 * reduction per row. The first weight loads are issued before pdl_wait():
 * weights do not depend on the kernel before.
 */
template <typename W, typename X, int T, int R, int D, bool GLU>
__global__ void __launch_bounds__(GEMV_WARPS * 32)
llm_gemv_kernel(const W *w, const X *x, long ldx, int n, int k,
		const float *nw, float eps, struct llm_gemv_out o, float beta)
{
	int lane = threadIdx.x % 32;
	int grp = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
	int row[R];
	const W *wr[R];
	float acc[R][T], ss[T];
	uint4 u[D][R];
	int c0 = lane * 8;

	pdl_trigger();
	gemv_warp_rows<R, GLU>(grp, n, row);
#pragma unroll
	for (int j = 0; j < R; j++) {
		wr[j] = w + (size_t)(row[j] < 0 ? 0 : row[j]) * k;
#pragma unroll
		for (int t = 0; t < T; t++)
			acc[j][t] = 0.0f;
	}
#pragma unroll
	for (int t = 0; t < T; t++)
		ss[t] = 0.0f;
	if (row[0] < 0) {
		pdl_wait();
		return;
	}
	gemv_load<D, R>(u, wr, c0, k);
	pdl_wait();
	for (;;) {
#pragma unroll
		for (int d = 0; d < D; d++) {
			int c = c0 + 256 * d;
			float a[T][8], f[8];

			if (c >= k)
				break;
#pragma unroll
			for (int t = 0; t < T; t++) {
				gemv_x8(x + t * ldx + c, a[t]);
				if (nw) {
					float g[8];

					gemv_x8(nw + c, g);
#pragma unroll
					for (int i = 0; i < 8; i++) {
						ss[t] += a[t][i] * a[t][i];
						a[t][i] *= g[i];
					}
				}
			}
#pragma unroll
			for (int j = 0; j < R; j++) {
				gemv_unpack(u[d][j], w, f);
#pragma unroll
				for (int t = 0; t < T; t++)
					acc[j][t] += f[0] * a[t][0] +
						     f[1] * a[t][1] +
						     f[2] * a[t][2] +
						     f[3] * a[t][3] +
						     f[4] * a[t][4] +
						     f[5] * a[t][5] +
						     f[6] * a[t][6] +
						     f[7] * a[t][7];
			}
		}
		c0 += 256 * D;
		if (c0 >= k)
			break;
		gemv_load<D, R>(u, wr, c0, k);
	}
	gemv_finish<T, R, GLU>(lane, row, acc, ss, k, nw, eps, o, beta);
}

/*
 * Rows per warp: 4 (KVMM_GEMV_ROWS=1, 2, 4 or 8, a measuring knob read at
 * each launch, overrides it), for one token; more tokens take one row per
 * warp, two with GLU. Four rows read each x value once for four 16-byte
 * weight loads, and keep eight loads of 16 bytes in flight per lane.
 */
static int gemv_rows(int ntok, bool glu)
{
	const char *e = getenv("KVMM_GEMV_ROWS");
	int r = e ? atoi(e) : 0;

	if (ntok > 1)
		return glu ? 2 : 1;
	if (r != 1 && r != 2 && r != 4 && r != 8)
		r = 4;
	return glu && r < 2 ? 2 : r;
}

/* warps per block: GEMV_WARPS, or KVMM_GEMV_WARPS=4 (a measuring knob) */
static int gemv_warps(void)
{
	const char *e = getenv("KVMM_GEMV_WARPS");

	return e && atoi(e) == 4 ? 4 : GEMV_WARPS;
}

template <typename W, typename X, int T, int R, bool GLU>
static int gemv_go(const void *w, const void *x, long ldx, int n, int k,
		   const float *nw, float eps, const struct llm_gemv_out *o,
		   float beta, cudaStream_t s)
{
	int groups = GLU ? (n / 2 + R / 2 - 1) / (R / 2) : (n + R - 1) / R;
	int wb = gemv_warps();

	return launch_pdl(llm_gemv_kernel<W, X, T, R, R == 1 ? 4 :
						     R == 8 ? 1 : 2, GLU>,
			  dim3((groups + wb - 1) / wb), wb * 32, s,
			  (const W *)w, (const X *)x, ldx, n, k, nw, eps, *o,
			  beta);
}

template <typename W, typename X, int T>
static int gemv_tok(const void *w, const void *x, long ldx, int n, int k,
		    const float *nw, float eps, const struct llm_gemv_out *o,
		    float beta, cudaStream_t s)
{
	int r = gemv_rows(T, o->glu);

#define GO(R, G) gemv_go<W, X, T, R, G>(w, x, ldx, n, k, nw, eps, o, beta, s)
	if constexpr (T == 1) {
		if (o->glu)
			return r == 8 ? GO(8, true) :
			       r == 4 ? GO(4, true) : GO(2, true);
		if (r == 8)
			return GO(8, false);
		if (r == 4)
			return GO(4, false);
		if (r == 2)
			return GO(2, false);
		return GO(1, false);
	} else {
		(void)r;
		return o->glu ? GO(2, true) : GO(1, false);
	}
#undef GO
}

template <typename W, typename X>
static int gemv_x(const void *w, const void *x, long ldx, int ntok, int n,
		  int k, const float *nw, float eps,
		  const struct llm_gemv_out *o, float beta, cudaStream_t s)
{
	switch (ntok) {
	case 1:
		return gemv_tok<W, X, 1>(w, x, ldx, n, k, nw, eps, o, beta, s);
	case 2:
		return gemv_tok<W, X, 2>(w, x, ldx, n, k, nw, eps, o, beta, s);
	case 3:
		return gemv_tok<W, X, 3>(w, x, ldx, n, k, nw, eps, o, beta, s);
	default:
		return gemv_tok<W, X, 4>(w, x, ldx, n, k, nw, eps, o, beta, s);
	}
}

/**
 * llm_gemv_cuda() - y = beta * y + W x for a few tokens (decode GEMMs)
 * @w: [n][k] weights of @wdt, 16-byte aligned (device)
 * @wdt: KVK_F16 or KVK_BF16
 * @x: [ntok][k] activations of @xdt, @ldx elements apart, 16-byte aligned
 *	(device)
 * @xdt: KVK_F32 or KVK_F16
 * @ldx: >= @k, a multiple of 4 (fp32) or 8 (fp16)
 * @ntok: tokens, 0..LLM_GEMV_MAX_TOK; 0 is a no-op
 * @n: rows of @w
 * @k: columns, a multiple of 8
 * @nw: NULL, or [k] fp32 RMSNorm weights (device, 16-byte aligned): then
 *	each token's x is first RMS-normalised with @eps and scaled by @nw,
 *	as kvk_rmsnorm_cuda() does, inside the same pass
 * @eps: RMSNorm epsilon, with @nw
 * @o: where each row's result goes (host struct, device outputs); with
 *	@o->glu, silu(row i) * row (n / 2 + i) goes to output i instead
 * @beta: 0 (outputs are not read) or the factor of the old outputs
 * @stream: cudaStream_t
 *
 * fp32 accumulation: each lane sums its eight-column slices in order, then
 * the warp's lanes are summed by a butterfly. With KVMM_PDL=1, launched
 * with programmatic dependent launch: the first weights are read while the
 * kernel before drains.
 *
 * Return: 0, -EINVAL, or the launch error.
 */
extern "C" int llm_gemv_cuda(const void *w, enum kvk_dtype wdt,
			     const void *x, enum kvk_dtype xdt, long ldx,
			     int ntok, int n, int k, const float *nw,
			     float eps, const struct llm_gemv_out *o,
			     float beta, void *stream)
{
	cudaStream_t s = (cudaStream_t)stream;
	int ret = llm_gemv_args_check(x, xdt, ldx, ntok, n, k, 8, o);

	if (!ret && (!w || (wdt != KVK_F16 && wdt != KVK_BF16)))
		ret = -EINVAL;
	if (ret)
		return ret;
	if ((uintptr_t)w % 16 || (uintptr_t)x % 16 || (uintptr_t)nw % 16)
		return -EINVAL;
	if (!ntok)
		return 0;
	if (wdt == KVK_F16)
		return xdt == KVK_F32 ?
			gemv_x<__half, float>(w, x, ldx, ntok, n, k, nw, eps,
					      o, beta, s) :
			gemv_x<__half, __half>(w, x, ldx, ntok, n, k, nw, eps,
					       o, beta, s);
	return xdt == KVK_F32 ?
		gemv_x<__nv_bfloat16, float>(w, x, ldx, ntok, n, k, nw, eps,
					     o, beta, s) :
		gemv_x<__nv_bfloat16, __half>(w, x, ldx, ntok, n, k, nw, eps,
					      o, beta, s);
}
