// SPDX-License-Identifier: MIT
/*
 * rope.cu - rotary position embedding on the device; see kvk_rope_cpu() in
 * rope.c. The frequency table is computed on the host by
 * kvk_rope_inv_freq(), the same table the reference uses, and passed by
 * value.
 */
#include "kvk_cuda.cuh"

struct kvk_rope_args {
	float inv_freq[KVK_ROPE_MAX_HEAD_DIM / 2];
};

#define KVK_ROPE_HEADS 8	/* heads a block rotates */

/*
 * one block per token and KVK_ROPE_HEADS heads: cos/sin once into shared
 * memory, then the block's heads (a decode step has few tokens, so the
 * heads are spread over blocks rather than looped over in one)
 */
template <typename T>
__global__ void kvk_rope_kernel(T *q, T *k, const int32_t *pos, int nq, int nkv,
				int head_dim,
				const __grid_constant__ kvk_rope_args a)
{
	__shared__ float cs[KVK_ROPE_MAX_HEAD_DIM / 2];
	__shared__ float sn[KVK_ROPE_MAX_HEAD_DIM / 2];
	int half = head_dim / 2, t = blockIdx.x, h0 = blockIdx.y * KVK_ROPE_HEADS;
	int nh = min(KVK_ROPE_HEADS, nq + nkv - h0), pairs = nh * half;

	for (int i = threadIdx.x; i < half; i += blockDim.x) {
		float ang = (float)pos[t] * a.inv_freq[i];

		cs[i] = cosf(ang);
		sn[i] = sinf(ang);
	}
	__syncthreads();
	for (int p = threadIdx.x; p < pairs; p += blockDim.x) {
		int h = h0 + p / half, i = p % half;
		T *x;
		float x0, x1;

		if (h < nq)
			x = q + ((size_t)t * nq + h) * head_dim;
		else
			x = k + ((size_t)t * nkv + (h - nq)) * head_dim;
		x0 = kvk_dld(x, i);
		x1 = kvk_dld(x, i + half);
		kvk_dst(x, i, x0 * cs[i] - x1 * sn[i]);
		kvk_dst(x, i + half, x1 * cs[i] + x0 * sn[i]);
	}
}

/**
 * kvk_rope_cuda() - rotate queries and keys in place on the device; see
 * kvk_rope_cpu()
 * @q: [ntok][nq][head_dim] of @dt (device); NULL when @nq is 0
 * @k: [ntok][nkv][head_dim] of @dt (device); NULL when @nkv is 0
 * @pos: [ntok] positions (device)
 * @ntok: number of tokens; 0 is a no-op
 * @nq: query heads
 * @nkv: key heads
 * @head_dim: even, at most KVK_ROPE_MAX_HEAD_DIM
 * @cfg: theta and Llama-3 scaling (host memory)
 * @dt: dtype of @q and @k
 * @stream: cudaStream_t, NULL for the default stream
 *
 * Return: 0, -EINVAL for bad arguments, or the launch error as -errno.
 */
extern "C" int kvk_rope_cuda(void *q, void *k, const int32_t *pos, int ntok,
			     int nq, int nkv, int head_dim,
			     const struct kvk_rope_cfg *cfg, enum kvk_dtype dt,
			     void *stream)
{
	int ret = kvk_rope_check(q, k, pos, ntok, nq, nkv, head_dim, cfg, dt);
	cudaStream_t s = (cudaStream_t)stream;
	kvk_rope_args a = {};

	if (ret)
		return ret;
	ret = kvk_rope_inv_freq(a.inv_freq, head_dim, cfg);
	if (ret || !ntok || !(nq + nkv))
		return ret;
#define LAUNCH(T)                                                              \
	kvk_rope_kernel<T><<<dim3(ntok, (nq + nkv + KVK_ROPE_HEADS - 1) /      \
					    KVK_ROPE_HEADS),                   \
			     KVK_ROW_THREADS, 0, s>>>(                         \
		(T *)q, (T *)k, pos, nq, nkv, head_dim, a)
	KVK_DISPATCH(dt, LAUNCH);
#undef LAUNCH
	return kvk_launch_errno();
}
