// SPDX-License-Identifier: MIT
/*
 * norm.cu - CUDA kernels: RMSNorm, SiLU-mul, residual add, embedding
 * gather. Each matches the CPU reference of the same name in norm.c, whose
 * kernel-doc is the specification; fp32 arithmetic, one rounding on store.
 */
#include "kvk_cuda.cuh"

/* one block per row; out may be x: each thread rewrites what it read */
template <typename T>
__global__ void kvk_rmsnorm_kernel(T *out, const T *x, const T *w, int dim,
				   float eps)
{
	size_t base = (size_t)blockIdx.x * dim;
	float ss = 0.0f, inv;

	for (int j = threadIdx.x; j < dim; j += blockDim.x) {
		float v = kvk_dld(x, base + j);

		ss += v * v;
	}
	ss = kvk_block_sum(ss);
	inv = rsqrtf(ss / dim + eps);
	for (int j = threadIdx.x; j < dim; j += blockDim.x) {
		float v = kvk_dld(x, base + j) * inv;

		kvk_dst(out, base + j, v * kvk_dld(w, j));
	}
}

/**
 * kvk_rmsnorm_cuda() - RMSNorm on the device; see kvk_rmsnorm_cpu()
 * @out: [rows][dim] of @dt (device); may be @x
 * @x: [rows][dim] of @dt (device)
 * @w: [dim] of @dt (device)
 * @rows: number of rows; 0 is a no-op
 * @dim: row length; > 0
 * @eps: added to the mean square; >= 0
 * @dt: dtype of @out, @x and @w
 * @stream: cudaStream_t, NULL for the default stream
 *
 * One block of 256 threads per row, fp32 warp-shuffle reduction.
 *
 * Return: 0, -EINVAL for bad arguments, or the launch error as -errno.
 */
extern "C" int kvk_rmsnorm_cuda(void *out, const void *x, const void *w,
				int rows, int dim, float eps, enum kvk_dtype dt,
				void *stream)
{
	int ret = kvk_rmsnorm_check(out, x, w, rows, dim, eps, dt);
	cudaStream_t s = (cudaStream_t)stream;

	if (ret || !rows)
		return ret;
#define LAUNCH(T)                                                              \
	kvk_rmsnorm_kernel<T><<<rows, KVK_ROW_THREADS, 0, s>>>(                \
		(T *)out, (const T *)x, (const T *)w, dim, eps)
	KVK_DISPATCH(dt, LAUNCH);
#undef LAUNCH
	return kvk_launch_errno();
}

static unsigned int kvk_ew_blocks(size_t n)
{
	size_t b = (n + KVK_ROW_THREADS - 1) / KVK_ROW_THREADS;

	return b > 65536 ? 65536 : (unsigned int)b;
}

template <typename T>
__global__ void kvk_silu_mul_kernel(T *out, const T *gate, const T *up,
				    size_t n)
{
	size_t stride = (size_t)gridDim.x * blockDim.x;

	for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
	     i += stride) {
		float g = kvk_dld(gate, i);
		float sg = g / (1.0f + expf(-g));

		kvk_dst(out, i, sg * kvk_dld(up, i));
	}
}

/**
 * kvk_silu_mul_cuda() - out = silu(gate) * up on the device; see
 * kvk_silu_mul_cpu()
 * @out: n elements of @dt (device); may be @gate or @up
 * @gate: n elements of @dt (device)
 * @up: n elements of @dt (device)
 * @n: element count; 0 is a no-op
 * @dt: dtype of all three
 * @stream: cudaStream_t, NULL for the default stream
 *
 * Return: 0, -EINVAL for bad arguments, or the launch error as -errno.
 */
extern "C" int kvk_silu_mul_cuda(void *out, const void *gate, const void *up,
				 size_t n, enum kvk_dtype dt, void *stream)
{
	int ret = kvk_ew_check(out, gate, up, n, dt);
	cudaStream_t s = (cudaStream_t)stream;

	if (ret || !n)
		return ret;
#define LAUNCH(T)                                                              \
	kvk_silu_mul_kernel<T><<<kvk_ew_blocks(n), KVK_ROW_THREADS, 0, s>>>(   \
		(T *)out, (const T *)gate, (const T *)up, n)
	KVK_DISPATCH(dt, LAUNCH);
#undef LAUNCH
	return kvk_launch_errno();
}

template <typename T>
__global__ void kvk_add_kernel(T *out, const T *a, const T *b, size_t n)
{
	size_t stride = (size_t)gridDim.x * blockDim.x;

	for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
	     i += stride)
		kvk_dst(out, i, kvk_dld(a, i) + kvk_dld(b, i));
}

/**
 * kvk_add_cuda() - residual add on the device; see kvk_add_cpu()
 * @out: n elements of @dt (device); may be @a or @b
 * @a: n elements of @dt (device)
 * @b: n elements of @dt (device)
 * @n: element count; 0 is a no-op
 * @dt: dtype of all three
 * @stream: cudaStream_t, NULL for the default stream
 *
 * Return: 0, -EINVAL for bad arguments, or the launch error as -errno.
 */
extern "C" int kvk_add_cuda(void *out, const void *a, const void *b, size_t n,
			    enum kvk_dtype dt, void *stream)
{
	int ret = kvk_ew_check(out, a, b, n, dt);
	cudaStream_t s = (cudaStream_t)stream;

	if (ret || !n)
		return ret;
#define LAUNCH(T)                                                              \
	kvk_add_kernel<T><<<kvk_ew_blocks(n), KVK_ROW_THREADS, 0, s>>>(        \
		(T *)out, (const T *)a, (const T *)b, n)
	KVK_DISPATCH(dt, LAUNCH);
#undef LAUNCH
	return kvk_launch_errno();
}

/* one block per token; a copy of raw elements, no conversion */
template <typename T>
__global__ void kvk_embed_kernel(T *out, const T *table, const int32_t *ids,
				 int dim, int vocab)
{
	int32_t id = ids[blockIdx.x];
	T *dst = out + (size_t)blockIdx.x * dim;

	if (id < 0 || id >= vocab) {
		for (int j = threadIdx.x; j < dim; j += blockDim.x)
			kvk_dst(dst, j, 0.0f);
		return;
	}
	for (int j = threadIdx.x; j < dim; j += blockDim.x)
		dst[j] = table[(size_t)id * dim + j];
}

/**
 * kvk_embed_cuda() - embedding gather on the device; see kvk_embed_cpu()
 * @out: [ntok][dim] of @dt (device)
 * @table: [vocab][dim] of @dt (device)
 * @ids: [ntok] token ids (device)
 * @ntok: number of tokens; 0 is a no-op
 * @dim: row length; > 0
 * @vocab: rows of @table; > 0
 * @dt: dtype of @out and @table
 * @stream: cudaStream_t, NULL for the default stream
 *
 * Return: 0, -EINVAL for bad arguments, or the launch error as -errno.
 */
extern "C" int kvk_embed_cuda(void *out, const void *table, const int32_t *ids,
			      int ntok, int dim, int vocab, enum kvk_dtype dt,
			      void *stream)
{
	int ret = kvk_embed_check(out, table, ids, ntok, dim, vocab, dt);
	cudaStream_t s = (cudaStream_t)stream;

	if (ret || !ntok)
		return ret;
#define LAUNCH(T)                                                              \
	kvk_embed_kernel<T><<<ntok, KVK_ROW_THREADS, 0, s>>>(                  \
		(T *)out, (const T *)table, ids, dim, vocab)
	KVK_DISPATCH(dt, LAUNCH);
#undef LAUNCH
	return kvk_launch_errno();
}
