// SPDX-License-Identifier: MIT
/*
 * rotate.cu - the normalised Walsh-Hadamard rotation of rows on the
 * device; the CPU reference is kvk_hadamard_cpu() (rotate.c), whose DOC
 * block gives the transform and why.
 */
#include <errno.h>

#include "kvk_cuda.cuh"

#define HAD_THREADS 128

/*
 * one block per row at a time (grid-stride over rows): the row in shared
 * memory as fp32, log2(dim) butterfly stages with the reference's pairing,
 * scaled and stored
 */
template <typename T>
__global__ void kvk_hadamard_kernel(T *x, size_t rows, uint32_t dim, float s)
{
	__shared__ float sh[KVK_HADAMARD_MAX_DIM];

	for (size_t r = blockIdx.x; r < rows; r += gridDim.x) {
		T *row = x + r * dim;

		for (uint32_t e = threadIdx.x; e < dim; e += blockDim.x)
			sh[e] = kvk_dld(row, e);
		__syncthreads();
		for (uint32_t h = 1; h < dim; h <<= 1) {
			for (uint32_t p = threadIdx.x; p < dim / 2;
			     p += blockDim.x) {
				uint32_t i = (p / h) * 2 * h + p % h;
				float a = sh[i], b = sh[i + h];

				sh[i] = __fadd_rn(a, b);
				sh[i + h] = __fsub_rn(a, b);
			}
			__syncthreads();
		}
		for (uint32_t e = threadIdx.x; e < dim; e += blockDim.x)
			kvk_dst(row, e, __fmul_rn(sh[e], s));
		__syncthreads();
	}
}

/**
 * kvk_hadamard_cuda() - x[r] = H x[r] / sqrt(dim), in place, per row
 * @x: @rows rows of @dim elements of @dt, packed (device)
 * @dt: dtype of @x; computed in fp32, stored rounded to @dt
 * @rows: rows; 0 is a no-op
 * @dim: a power of two, 2 to KVK_HADAMARD_MAX_DIM
 * @stream: cudaStream_t
 *
 * Return: 0, -EINVAL, or the launch error.
 */
extern "C" int kvk_hadamard_cuda(void *x, enum kvk_dtype dt, size_t rows,
				 uint32_t dim, void *stream)
{
	cudaStream_t st = (cudaStream_t)stream;
	int blocks = rows > 65535 ? 65535 : (int)rows;
	float s = 1.0f / sqrtf((float)dim);

	if (!x || dt < 0 || dt >= KVK_DTYPE_NR || dim < 2 ||
	    dim > KVK_HADAMARD_MAX_DIM || (dim & (dim - 1)))
		return -EINVAL;
	if (!rows)
		return 0;
#define LAUNCH(T) kvk_hadamard_kernel<T><<<blocks, HAD_THREADS, 0, st>>>( \
		(T *)x, rows, dim, s)
	KVK_DISPATCH(dt, LAUNCH);
#undef LAUNCH
	return kvk_launch_errno();
}
