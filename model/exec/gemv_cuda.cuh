/* SPDX-License-Identifier: MIT */
/*
 * gemv_cuda.cuh - what the decode GEMV kernels share (forward_cuda.cu over
 * fp16/bf16 weights, qweight.cu over 8- and 4-bit ones): eight activations
 * as fp32, the warp's rows (GLU pairs), and the end of a kernel: the
 * butterfly over the warp's lanes, RMSNorm's scale, SiLU-mul with GLU, the
 * store into the output segments.
 */
#ifndef LLM_GEMV_CUDA_CUH
#define LLM_GEMV_CUDA_CUH

#include <cuda_fp16.h>

#include "forward_cuda.h"

/* eight activations from @x, as fp32 */
__device__ __forceinline__ void gemv_x8(const float *x, float *a)
{
	float4 p = __ldg((const float4 *)x), q = __ldg((const float4 *)x + 1);

	a[0] = p.x, a[1] = p.y, a[2] = p.z, a[3] = p.w;
	a[4] = q.x, a[5] = q.y, a[6] = q.z, a[7] = q.w;
}

__device__ __forceinline__ void gemv_x8(const __half *x, float *a)
{
	uint4 u = __ldg((const uint4 *)x);
	const __half2 *h = (const __half2 *)&u;

#pragma unroll
	for (int i = 0; i < 4; i++) {
		float2 v = __half22float2(h[i]);

		a[2 * i] = v.x;
		a[2 * i + 1] = v.y;
	}
}

/*
 * the R rows warp @grp computes of @n, -1 past the end; with GLU, R / 2
 * gate rows and the up rows paired with them (n / 2 further on)
 */
template <int R, bool GLU>
__device__ __forceinline__ void gemv_warp_rows(int grp, int n, int *row)
{
#pragma unroll
	for (int j = 0; j < R; j++) {
		if (GLU) {
			constexpr int H = R / 2 > 0 ? R / 2 : 1;
			int p = grp * H + j % H;

			row[j] = p < n / 2 ? p + (j < H ? 0 : n / 2) : -1;
		} else {
			row[j] = grp * R + j < n ? grp * R + j : -1;
		}
	}
}

/*
 * each lane's partial sums of its rows (@acc) and of x^2 (@ss, with @nw)
 * summed over the warp; lane j * T + t stores row j, token t: scaled by
 * RMSNorm's 1/rms with @nw, silu(gate) * up with GLU, into its segment
 */
template <int T, int R, bool GLU>
__device__ __forceinline__ void gemv_finish(int lane, const int *row,
					    float (*acc)[T], float *ss, int k,
					    const float *nw, float eps,
					    const struct llm_gemv_out &o,
					    float beta)
{
	float rs[T];

#pragma unroll
	for (int t = 0; t < T; t++) {
		for (int m = 16; m > 0; m /= 2) {
			ss[t] += __shfl_xor_sync(0xffffffffu, ss[t], m);
#pragma unroll
			for (int j = 0; j < R; j++)
				acc[j][t] += __shfl_xor_sync(0xffffffffu,
							     acc[j][t], m);
		}
		rs[t] = nw ? rsqrtf(ss[t] / k + eps) : 1.0f;
	}
#pragma unroll
	for (int j = 0; j < (GLU ? R / 2 : R); j++)
#pragma unroll
		for (int t = 0; t < T; t++) {
			int s = 0, r0 = 0;
			float r, *y;

			if (lane != j * T + t || row[j] < 0)
				continue;
			r = acc[j][t] * rs[t];
			if (GLU) {
				float up = acc[j + R / 2][t] * rs[t];

				r = r / (1.0f + expf(-r)) * up;
			}
			while (row[j] >= o.end[s]) {
				r0 = o.end[s];
				s++;
			}
			y = o.y[s] + (row[j] - r0) + t * o.ld[s];
			*y = beta == 0.0f ? r : r + beta * *y;
		}
}

#endif /* LLM_GEMV_CUDA_CUH */
