/* SPDX-License-Identifier: MIT */
/*
 * kvk_cuda.cuh - device helpers shared by the kernels/ *.cu files: element
 * load/store per dtype (fp32 arithmetic, round to nearest even on store),
 * block reductions, dtype dispatch and cudaError_t -> errno.
 */
#ifndef KVK_CUDA_CUH
#define KVK_CUDA_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "kvk_cudart.h"
#include "kvk_internal.h"

__device__ __forceinline__ float kvk_dld(const float *p, size_t i)
{
	return p[i];
}

__device__ __forceinline__ float kvk_dld(const __half *p, size_t i)
{
	return __half2float(p[i]);
}

__device__ __forceinline__ float kvk_dld(const __nv_bfloat16 *p, size_t i)
{
	return __bfloat162float(p[i]);
}

__device__ __forceinline__ void kvk_dst(float *p, size_t i, float v)
{
	p[i] = v;
}

__device__ __forceinline__ void kvk_dst(__half *p, size_t i, float v)
{
	p[i] = __float2half_rn(v);
}

__device__ __forceinline__ void kvk_dst(__nv_bfloat16 *p, size_t i, float v)
{
	p[i] = __float2bfloat16_rn(v);
}

/* sum over the block; every thread gets the result; blockDim.x % 32 == 0 */
template <typename T> __device__ T kvk_block_sum(T v)
{
	__shared__ T part[32];
	int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
	int nwarps = blockDim.x / 32;

	for (int o = 16; o > 0; o /= 2)
		v += __shfl_xor_sync(0xffffffffu, v, o);
	__syncthreads(); /* part[] may still be read by a previous call */
	if (lane == 0)
		part[warp] = v;
	__syncthreads();
	v = lane < nwarps ? part[lane] : T(0);
	for (int o = 16; o > 0; o /= 2)
		v += __shfl_xor_sync(0xffffffffu, v, o);
	return v;
}

/* the launch's error, if any, as -errno */
static inline int kvk_launch_errno(void)
{
	return kvk_cuda_errno(cudaGetLastError());
}

/*
 * Call LAUNCH(T) with T the element type of @dt; the caller has checked dt.
 */
#define KVK_DISPATCH(dt, LAUNCH)                                               \
	do {                                                                   \
		switch (dt) {                                                  \
		case KVK_F16:                                                  \
			LAUNCH(__half);                                        \
			break;                                                 \
		case KVK_BF16:                                                 \
			LAUNCH(__nv_bfloat16);                                 \
			break;                                                 \
		default:                                                       \
			LAUNCH(float);                                         \
			break;                                                 \
		}                                                              \
	} while (0)

#endif /* KVK_CUDA_CUH */
