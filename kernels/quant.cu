// SPDX-License-Identifier: MIT
/*
 * quant.cu - the KV quantization formats on the GPU. The same operations as
 * quant.c, so the bytes are identical; instantiated from KVQ_FORMATS.
 */
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <errno.h>

#include "kvq.h"
#include "kvk_cuda.cuh"

#define KVQ_WARPS 4 /* rows per block: one warp each */

static __device__ float clamp_f16(float x)
{
	return fminf(fmaxf(x, -65504.0f), 65504.0f);
}

template <int BITS, int GROUPS>
__global__ void kvk_quantize_rows_kernel(const float *__restrict__ x,
					 uint32_t rows, uint32_t head_dim,
					 uint8_t *__restrict__ data,
					 uint16_t *__restrict__ meta)
{
	__shared__ uint8_t qs[KVQ_WARPS][KVQ_MAX_HEAD_DIM];
	const uint32_t warp = threadIdx.x / 32, lane = threadIdx.x % 32;
	const uint32_t r = blockIdx.x * KVQ_WARPS + warp;
	const uint32_t rb = head_dim * BITS / 8;
	const float *v = x + (size_t)r * head_dim;
	uint8_t *row = data + (size_t)r * rb;

	if (r >= rows)
		return; /* whole warps leave together */
	if (BITS == 16) {
		for (uint32_t i = lane; i < head_dim; i += 32)
			((__half *)row)[i] = __float2half_rn(v[i]);
		return;
	}
	const uint32_t gsize = head_dim / GROUPS;
	const float qmax = (float)((1U << BITS) - 1);
	float mn[GROUPS], mx[GROUPS], s[GROUPS], z[GROUPS];

#pragma unroll
	for (int g = 0; g < GROUPS; g++)
		mn[g] = INFINITY, mx[g] = -INFINITY;
	for (uint32_t i = lane; i < head_dim; i += 32) {
		float c = clamp_f16(v[i]);
		uint32_t gi = i / gsize;

#pragma unroll
		for (int g = 0; g < GROUPS; g++)
			if (gi == (uint32_t)g)
				mn[g] = fminf(mn[g], c), mx[g] = fmaxf(mx[g], c);
	}
#pragma unroll
	for (int g = 0; g < GROUPS; g++) {
		for (int o = 16; o; o >>= 1) {
			mn[g] = fminf(mn[g], __shfl_xor_sync(~0U, mn[g], o));
			mx[g] = fmaxf(mx[g], __shfl_xor_sync(~0U, mx[g], o));
		}
		__half sh = __float2half_rn(clamp_f16((mx[g] - mn[g]) / qmax));
		__half zh = __float2half_rn(mn[g]);

		s[g] = __half2float(sh);
		z[g] = __half2float(zh);
		if (lane == 0) {
			meta[(size_t)r * 2 * GROUPS + 2 * g] = __half_as_ushort(sh);
			meta[(size_t)r * 2 * GROUPS + 2 * g + 1] =
				__half_as_ushort(zh);
		}
	}
	for (uint32_t i = lane; i < head_dim; i += 32) {
		uint32_t gi = i / gsize;
		float sg = 0.0f, zg = 0.0f, q = 0.0f;

#pragma unroll
		for (int g = 0; g < GROUPS; g++)
			if (gi == (uint32_t)g)
				sg = s[g], zg = z[g];
		if (sg > 0.0f)
			q = fminf(fmaxf(rintf((clamp_f16(v[i]) - zg) / sg), 0.0f),
				  qmax);
		qs[warp][i] = (uint8_t)q;
	}
	__syncwarp();
	for (uint32_t j = lane; j < rb; j += 32) {
		uint32_t b = 0;

#pragma unroll
		for (int k = 0; k < 8 / BITS; k++)
			b |= (uint32_t)qs[warp][j * (8 / BITS) + k] << (k * BITS);
		row[j] = (uint8_t)b;
	}
}

template <int BITS, int GROUPS>
__global__ void kvk_dequantize_rows_kernel(const uint8_t *__restrict__ data,
					   const uint16_t *__restrict__ meta,
					   uint32_t rows, uint32_t head_dim,
					   float *__restrict__ x)
{
	const uint32_t warp = threadIdx.x / 32, lane = threadIdx.x % 32;
	const uint32_t r = blockIdx.x * KVQ_WARPS + warp;
	const uint32_t rb = head_dim * BITS / 8;
	const uint8_t *row = data + (size_t)r * rb;
	float *out = x + (size_t)r * head_dim;

	if (r >= rows)
		return;
	for (uint32_t i = lane; i < head_dim; i += 32) {
		if (BITS == 16) {
			out[i] = __half2float(((const __half *)row)[i]);
			continue;
		}
		uint32_t g = i / (head_dim / GROUPS), bit = i * BITS;
		uint32_t q = (row[bit / 8] >> (bit % 8)) & ((1U << BITS) - 1);
		const uint16_t *m = meta + (size_t)r * 2 * GROUPS + 2 * g;

		out[i] = fmaf((float)q, __half2float(__ushort_as_half(m[0])),
			      __half2float(__ushort_as_half(m[1])));
	}
}

/**
 * kvk_quantize_rows_cuda() - quantize @rows head vectors on the GPU
 * @x: device [rows][head_dim] fp32
 * @rows: number of vectors
 * @head_dim: dimension
 * @bits: format bits
 * @groups: metadata groups
 * @data: device out: [rows][kvq_row_bytes()]
 * @meta: device out: [rows][2 * groups] fp16; unused for 16 bits
 * @stream: CUstream / cudaStream_t
 *
 * Same signature and bytes as kvk_quantize_rows_cpu().
 *
 * Return: 0, -EINVAL for a format outside the table, or the launch error.
 */
extern "C" int kvk_quantize_rows_cuda(const float *x, uint32_t rows,
				      uint32_t head_dim, uint32_t bits,
				      uint32_t groups, uint8_t *data,
				      uint16_t *meta, void *stream)
{
	dim3 grid((rows + KVQ_WARPS - 1) / KVQ_WARPS);

	if (kvq_format_valid(head_dim, bits, groups))
		return -EINVAL;
	if (!rows)
		return 0;
#define X(b, g)                                                                \
	if (bits == (b) && groups == (g))                                      \
		kvk_quantize_rows_kernel<b, g>                                 \
			<<<grid, 32 * KVQ_WARPS, 0, (cudaStream_t)stream>>>(   \
				x, rows, head_dim, data, meta);
	KVQ_FORMATS(X)
#undef X
	return kvk_cuda_errno(cudaGetLastError());
}

/**
 * kvk_dequantize_rows_cuda() - expand @rows quantized vectors on the GPU
 * @data: device [rows][kvq_row_bytes()]
 * @meta: device [rows][2 * groups] fp16
 * @rows: number of vectors
 * @head_dim: dimension
 * @bits: format bits
 * @groups: metadata groups
 * @x: device out: [rows][head_dim] fp32
 * @stream: CUstream / cudaStream_t
 *
 * Return: 0, -EINVAL for a format outside the table, or the launch error.
 */
extern "C" int kvk_dequantize_rows_cuda(const uint8_t *data,
					const uint16_t *meta, uint32_t rows,
					uint32_t head_dim, uint32_t bits,
					uint32_t groups, float *x, void *stream)
{
	dim3 grid((rows + KVQ_WARPS - 1) / KVQ_WARPS);

	if (kvq_format_valid(head_dim, bits, groups))
		return -EINVAL;
	if (!rows)
		return 0;
#define X(b, g)                                                                \
	if (bits == (b) && groups == (g))                                      \
		kvk_dequantize_rows_kernel<b, g>                               \
			<<<grid, 32 * KVQ_WARPS, 0, (cudaStream_t)stream>>>(   \
				data, meta, rows, head_dim, x);
	KVQ_FORMATS(X)
#undef X
	return kvk_cuda_errno(cudaGetLastError());
}
