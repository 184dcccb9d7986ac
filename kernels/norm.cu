// SPDX-License-Identifier: MIT
/*
 * norm.cu - CUDA kernels: RMSNorm, SiLU-mul, residual add, embedding
 * gather. Each matches the CPU reference of the same name in norm.c, whose
 * kernel-doc is the specification; fp32 arithmetic, one rounding on store.
 */
#include "kvk_cuda.cuh"

#define KVK_NORM_CACHE 8	/* elements of a row a thread keeps in registers */
#define KVK_NORM_MAX_THREADS 1024

/*
 * one block per row, about 4 elements a thread (kvk_norm_threads()): every
 * load of the row is issued before the first is used, and the row stays in
 * registers for the second pass (a decode step's rows are few, so latency,
 * not bandwidth, is what a row costs). out may be x: each thread rewrites
 * what it read.
 */
template <typename T>
__global__ void __launch_bounds__(KVK_NORM_MAX_THREADS)
	kvk_rmsnorm_kernel(T *out, const T *x, const T *w, int dim, float eps)
{
	const size_t base = (size_t)blockIdx.x * dim;
	const int tail = KVK_NORM_CACHE * blockDim.x;
	float v[KVK_NORM_CACHE], ss = 0.0f, inv;

#pragma unroll
	for (int u = 0; u < KVK_NORM_CACHE; u++) {
		int j = threadIdx.x + u * blockDim.x;

		v[u] = j < dim ? kvk_dld(x, base + j) : 0.0f;
	}
#pragma unroll
	for (int u = 0; u < KVK_NORM_CACHE; u++)
		ss += v[u] * v[u];
	for (int j = threadIdx.x + tail; j < dim; j += blockDim.x) {
		float t = kvk_dld(x, base + j);

		ss += t * t;
	}
	ss = kvk_block_sum(ss);
	inv = rsqrtf(ss / dim + eps);
#pragma unroll
	for (int u = 0; u < KVK_NORM_CACHE; u++) {
		int j = threadIdx.x + u * blockDim.x;

		if (j < dim)
			kvk_dst(out, base + j, v[u] * inv * kvk_dld(w, j));
	}
	for (int j = threadIdx.x + tail; j < dim; j += blockDim.x)
		kvk_dst(out, base + j, kvk_dld(x, base + j) * inv *
					       kvk_dld(w, j));
}

/* threads for a row of @dim: about 4 elements each, whole warps */
static int kvk_norm_threads(int dim)
{
	int t = ((dim + 3) / 4 + 31) / 32 * 32;

	return t > KVK_NORM_MAX_THREADS ? KVK_NORM_MAX_THREADS : t;
}

extern "C" int kvk_rmsnorm_cuda(void *out, const void *x, const void *w,
				int rows, int dim, float eps, enum kvk_dtype dt,
				void *stream)
{
	int ret = kvk_rmsnorm_check(out, x, w, rows, dim, eps, dt);
	cudaStream_t s = (cudaStream_t)stream;

	if (ret || !rows)
		return ret;
#define LAUNCH(T)                                                              \
	kvk_rmsnorm_kernel<T><<<rows, kvk_norm_threads(dim), 0, s>>>(          \
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
