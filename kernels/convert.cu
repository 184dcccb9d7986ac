// SPDX-License-Identifier: MIT
/*
 * convert.cu - elementwise dtype conversion on the device; the CPU
 * reference is kvk_convert_cpu() (dtype.c).
 */
#include <errno.h>

#include "kvk_cuda.cuh"

template <typename D, typename S>
__global__ void kvk_convert_kernel(D *dst, const S *src, size_t n)
{
	for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
	     i += (size_t)gridDim.x * blockDim.x)
		kvk_dst(dst, i, kvk_dld(src, i));
}

template <typename D>
static void convert_from(D *dst, const void *src, enum kvk_dtype sdt,
			 size_t n, int blocks, cudaStream_t s)
{
#define LAUNCH(S) kvk_convert_kernel<D, S><<<blocks, 256, 0, s>>>(      \
		dst, (const S *)src, n)
	KVK_DISPATCH(sdt, LAUNCH);
#undef LAUNCH
}

/**
 * kvk_convert_cuda() - dst = src converted, elementwise
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
extern "C" int kvk_convert_cuda(void *dst, enum kvk_dtype ddt,
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
