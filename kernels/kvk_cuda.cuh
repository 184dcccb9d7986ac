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

/*
 * mma.sync m16n8k16 with fp32 accumulators, c += A B, for fp16 or bf16
 * operands (A: four registers of the 16x16 row-major fragment, B: two of
 * the 16x8 column-major one), and two floats packed into one operand
 * register; shared by the decode and prefill attention kernels.
 */
__device__ __forceinline__ void kvk_mma16816(__half, float *c, uint32_t a0,
					     uint32_t a1, uint32_t a2,
					     uint32_t a3, uint32_t b0,
					     uint32_t b1)
{
	asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
		     "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
		     "{%0,%1,%2,%3};\n"
		     : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
		     : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void kvk_mma16816(__nv_bfloat16, float *c,
					     uint32_t a0, uint32_t a1,
					     uint32_t a2, uint32_t a3,
					     uint32_t b0, uint32_t b1)
{
	asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
		     "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
		     "{%0,%1,%2,%3};\n"
		     : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
		     : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t kvk_pack2(__half, float lo, float hi)
{
	__half2 h = __floats2half2_rn(lo, hi);

	return *(uint32_t *)&h;
}

__device__ __forceinline__ uint32_t kvk_pack2(__nv_bfloat16, float lo,
					      float hi)
{
	__nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);

	return *(uint32_t *)&h;
}

#endif /* KVK_CUDA_CUH */
