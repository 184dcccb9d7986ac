// SPDX-License-Identifier: MIT
/*
 * mem.cu - the streaming-read kernel: 16-byte loads, grid-stride, four
 * loads in flight per thread, a block reduction and one 64-bit atomic per
 * block (the sum keeps the loads from being optimised away and checks that
 * every byte was read).
 */
#include <cuda_runtime.h>
#include <errno.h>

#include "kvk_mem.h"
#include "kvk_cuda.cuh"

#define READ_THREADS 512
#define READ_UNROLL 4

__global__ void kvk_read_sum_kernel(const uint4 *__restrict__ p, size_t n,
				    unsigned long long *out)
{
	__shared__ unsigned long long part[READ_THREADS / 32];
	size_t stride = (size_t)gridDim.x * blockDim.x;
	size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
	unsigned long long s = 0;

	for (; i + (READ_UNROLL - 1) * stride < n; i += READ_UNROLL * stride) {
		uint4 v[READ_UNROLL];

#pragma unroll
		for (int u = 0; u < READ_UNROLL; u++)
			v[u] = __ldcs(p + i + u * stride);
#pragma unroll
		for (int u = 0; u < READ_UNROLL; u++)
			s += (unsigned long long)v[u].x + v[u].y + v[u].z +
			     v[u].w;
	}
	for (; i < n; i += stride) {
		uint4 v = __ldcs(p + i);

		s += (unsigned long long)v.x + v.y + v.z + v.w;
	}
	for (int o = 16; o; o >>= 1)
		s += __shfl_xor_sync(~0U, s, o);
	if (threadIdx.x % 32 == 0)
		part[threadIdx.x / 32] = s;
	__syncthreads();
	if (threadIdx.x == 0) {
		s = 0;
		for (int w = 0; w < READ_THREADS / 32; w++)
			s += part[w];
		atomicAdd(out, s);
	}
}

/**
 * kvk_read_sum_cuda() - sum the 32-bit words of a device-visible buffer
 * @p: device address, 16-byte aligned (device or host-NUMA granules)
 * @bytes: length, a multiple of 16
 * @out: device address of the sum modulo 2^64
 * @stream: cudaStream_t
 *
 * Same signature and result as kvk_read_sum_cpu().
 *
 * Return: 0, -EINVAL for a misaligned buffer or length, or the launch error.
 */
extern "C" int kvk_read_sum_cuda(const void *p, size_t bytes, uint64_t *out,
				 void *stream)
{
	int dev = 0, sms = 0;
	size_t n = bytes / 16, blocks;
	cudaError_t e;

	if (((uintptr_t)p | bytes) % 16 || !out)
		return -EINVAL;
	e = cudaMemsetAsync(out, 0, 8, (cudaStream_t)stream);
	if (e == cudaSuccess)
		e = cudaGetDevice(&dev);
	if (e == cudaSuccess)
		e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount,
					   dev);
	if (e != cudaSuccess)
		return kvk_cuda_errno(e);
	if (!n)
		return 0;
	blocks = (n + READ_THREADS - 1) / READ_THREADS;
	if (blocks > (size_t)sms * 4)
		blocks = (size_t)sms * 4; /* 4 x 512 threads fill an SM */
	kvk_read_sum_kernel<<<blocks, READ_THREADS, 0, (cudaStream_t)stream>>>(
		(const uint4 *)p, n, (unsigned long long *)out);
	e = cudaGetLastError();
	return kvk_cuda_errno(e);
}
