// SPDX-License-Identifier: MIT
/*
 * sample.cu - the samplers on the device; see sample.c for the
 * specification and kvk_internal.h for the shared arithmetic.
 *
 * kvk_sample_kernel runs one block of 1024 threads per row. The tokens that
 * can be drawn (weight > 0, i.e. within about 22 T of the maximum) are first
 * staged in shared memory, up to KVK_SAMPLE_CANDS of them; the kept set is
 * "every key >= cut", and cut is found by a most-significant-bit-first
 * search over the 64-bit keys, one counting (top-k) or weighing (top-p)
 * pass per bit, over the staged candidates, or over the whole row (from L2)
 * when there are more candidates than fit. Bits 31..L of the key's low half
 * are the complement of an index below 2^L, so for every token they are
 * ones and need no pass: about 32 + L passes per search (49 for a 128K
 * vocabulary). Integer sums make every pass exact, so the cut is the one
 * the sorting reference finds. The draw is an exclusive scan of per-thread
 * chunk weights over the row, in index order, then one thread walks its
 * chunk.
 */
#include <limits.h>

#include "kvk_cuda.cuh"

typedef unsigned long long kvk_u64;

/* candidates staged in shared memory per row: 96 KiB */
#define KVK_SAMPLE_CANDS 12288

static __device__ __forceinline__ bool kvk_better(float v, int i, float bv,
						  int bi)
{
	return v > bv || (v == bv && i < bi);
}

/* argmax of the block's (bv, bi) pairs; every thread gets the result */
static __device__ int kvk_block_argmax(float bv, int bi)
{
	__shared__ float sv[32];
	__shared__ int si[32];
	int lane = threadIdx.x % 32, warp = threadIdx.x / 32;

	for (int o = 16; o > 0; o /= 2) {
		float ov = __shfl_xor_sync(0xffffffffu, bv, o);
		int oi = __shfl_xor_sync(0xffffffffu, bi, o);

		if (kvk_better(ov, oi, bv, bi)) {
			bv = ov;
			bi = oi;
		}
	}
	__syncthreads();
	if (lane == 0) {
		sv[warp] = bv;
		si[warp] = bi;
	}
	__syncthreads();
	bv = lane < (int)blockDim.x / 32 ? sv[lane] : -INFINITY;
	bi = lane < (int)blockDim.x / 32 ? si[lane] : INT_MAX;
	for (int o = 16; o > 0; o /= 2) {
		float ov = __shfl_xor_sync(0xffffffffu, bv, o);
		int oi = __shfl_xor_sync(0xffffffffu, bi, o);

		if (kvk_better(ov, oi, bv, bi)) {
			bv = ov;
			bi = oi;
		}
	}
	return bi;
}

template <typename T>
__global__ void kvk_argmax_kernel(int32_t *ids, const T *logits, int vocab)
{
	const T *x = logits + (size_t)blockIdx.x * vocab;
	float bv = -INFINITY;
	int bi = INT_MAX;

	for (int j = threadIdx.x; j < vocab; j += blockDim.x) {
		float v = kvk_dld(x, j);

		if (kvk_better(v, j, bv, bi)) { /* NaN never is */
			bv = v;
			bi = j;
		}
	}
	bi = kvk_block_argmax(bv, bi);
	if (threadIdx.x == 0)
		ids[blockIdx.x] = bi == INT_MAX ? 0 : bi;
}

/**
 * kvk_argmax_cuda() - greedy decoding on the device; see kvk_argmax_cpu()
 * @ids: out: [rows] token ids (device)
 * @logits: [rows][vocab] of @dt (device)
 * @rows: number of rows; 0 is a no-op
 * @vocab: row length; > 0
 * @dt: dtype of @logits
 * @stream: cudaStream_t, NULL for the default stream
 *
 * Return: 0, -EINVAL for bad arguments, or the launch error as -errno.
 */
extern "C" int kvk_argmax_cuda(int32_t *ids, const void *logits, int rows,
			       int vocab, enum kvk_dtype dt, void *stream)
{
	int ret = kvk_rows_check(ids, logits, rows, vocab, dt);
	cudaStream_t s = (cudaStream_t)stream;

	if (ret || !rows)
		return ret;
#define LAUNCH(T)                                                              \
	kvk_argmax_kernel<T><<<rows, KVK_SAMPLE_THREADS, 0, s>>>(              \
		ids, (const T *)logits, vocab)
	KVK_DISPATCH(dt, LAUNCH);
#undef LAUNCH
	return kvk_launch_errno();
}

static __device__ float kvk_block_max(float v)
{
	__shared__ float part[32];
	int lane = threadIdx.x % 32, warp = threadIdx.x / 32;

	for (int o = 16; o > 0; o /= 2)
		v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
	__syncthreads();
	if (lane == 0)
		part[warp] = v;
	__syncthreads();
	v = lane < (int)blockDim.x / 32 ? part[lane] : -INFINITY;
	for (int o = 16; o > 0; o /= 2)
		v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
	return v;
}

/* exclusive prefix sum over the block in thread order */
static __device__ kvk_u64 kvk_block_excl_scan(kvk_u64 v)
{
	__shared__ kvk_u64 part[32];
	int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
	kvk_u64 incl = v, w;

	for (int o = 1; o < 32; o *= 2) {
		kvk_u64 n = __shfl_up_sync(0xffffffffu, incl, o);

		if (lane >= o)
			incl += n;
	}
	__syncthreads();
	if (lane == 31)
		part[warp] = incl;
	__syncthreads();
	w = lane < (int)blockDim.x / 32 ? part[lane] : 0;
	for (int o = 1; o < 32; o *= 2) {
		kvk_u64 n = __shfl_up_sync(0xffffffffu, w, o);

		if (lane >= o)
			w += n;
	}
	/* w: inclusive over warps 0..lane; take warp - 1's */
	w = __shfl_sync(0xffffffffu, w, (warp + 31) % 32);
	return (warp ? w : 0) + incl - v;
}

/* a token that can be drawn (weight > 0), staged in shared memory */
struct kvk_cand {
	float l;
	int i;
};

struct kvk_row {
	const void *x; /* the row's logits */
	int vocab;
	float m;	      /* the row's maximum */
	float t;	      /* temperature */
	const kvk_cand *cand; /* shared: the candidates, or NULL */
	int ncand;	      /* how many */
};

/*
 * Sum over the tokens with key >= lo of 1 (by_weight false) or of their
 * weight: over the staged candidates when there are, else over the row.
 */
template <typename T>
__device__ kvk_u64 kvk_row_mass(const kvk_row &r, kvk_u64 lo, bool by_weight)
{
	const T *x = (const T *)r.x;
	kvk_u64 acc = 0;

	if (r.cand) {
		for (int c = threadIdx.x; c < r.ncand; c += blockDim.x) {
			float l = r.cand[c].l;

			if (kvk_sample_key(l, r.cand[c].i) < lo)
				continue;
			acc += by_weight ? kvk_sample_weight(l, r.m, r.t) : 1;
		}
		return kvk_block_sum(acc);
	}
	for (int j = threadIdx.x; j < r.vocab; j += blockDim.x) {
		float l = kvk_dld(x, j);

		if (kvk_sample_key(l, j) < lo)
			continue;
		acc += by_weight ? kvk_sample_weight(l, r.m, r.t) : 1;
	}
	return kvk_block_sum(acc);
}

/* the largest cut >= floor whose mass (keys >= cut) still reaches need */
template <typename T>
__device__ kvk_u64 kvk_row_cut(const kvk_row &r, kvk_u64 floor, kvk_u64 need,
			       bool by_weight)
{
	int lbits = r.vocab > 1 ? 32 - __clz(r.vocab - 1) : 0;
	kvk_u64 cut = 0;

	for (int b = 63; b >= 0; b--) {
		kvk_u64 cand;

		if (b == 31) { /* index complements: bits 31..lbits all set */
			cut |= 0xffffffffull & ~((1ull << lbits) - 1);
			b = lbits;
			continue;
		}
		cand = cut | (1ull << b);
		if (kvk_row_mass<T>(r, cand > floor ? cand : floor,
				    by_weight) >= need)
			cut = cand;
	}
	return cut > floor ? cut : floor;
}

/*
 * Stage the tokens of weight > 0 in shared memory, up to KVK_SAMPLE_CANDS;
 * return how many there are (also beyond the capacity). Tokens of weight 0
 * are never drawn, and weight does not decrease with the key, so they are
 * the last in the order: the kept set's drawable part is the same whether
 * the cut is searched over the candidates or over the whole row.
 */
template <typename T>
__device__ int kvk_row_stage(const kvk_row &r, kvk_cand *cand)
{
	__shared__ int n;
	const T *x = (const T *)r.x;
	int lane = threadIdx.x % 32;

	if (threadIdx.x == 0)
		n = 0;
	__syncthreads();
	for (int j0 = 0; j0 < r.vocab; j0 += blockDim.x) {
		int j = j0 + threadIdx.x, slot = 0;
		float l = j < r.vocab ? kvk_dld(x, j) : NAN;
		bool keep = kvk_sample_weight(l, r.m, r.t) > 0;
		unsigned int mask = __ballot_sync(0xffffffffu, keep);

		if (!mask)
			continue;
		if (lane == __ffs(mask) - 1)
			slot = atomicAdd(&n, __popc(mask));
		slot = __shfl_sync(0xffffffffu, slot, __ffs(mask) - 1);
		slot += __popc(mask & ((1u << lane) - 1));
		if (keep && slot < KVK_SAMPLE_CANDS)
			cand[slot] = kvk_cand{l, j};
	}
	__syncthreads();
	return n;
}

template <typename T>
__global__ void kvk_sample_kernel(int32_t *ids, const T *logits, const float *u,
				  int vocab, float t, int top_k, float top_p)
{
	extern __shared__ kvk_cand kvk_sample_cands[];
	const T *x = logits + (size_t)blockIdx.x * vocab;
	kvk_row r = {x, vocab, -INFINITY, t, NULL, 0};
	kvk_u64 cut = 0, total, target, own = 0, before;
	int chunk, lo, hi;

	for (int j = threadIdx.x; j < vocab; j += blockDim.x)
		r.m = fmaxf(r.m, kvk_dld(x, j));
	r.m = kvk_block_max(r.m);
	r.ncand = kvk_row_stage<T>(r, kvk_sample_cands);
	if (!r.ncand) { /* every logit NaN: nothing weighs anything */
		if (threadIdx.x == 0)
			ids[blockIdx.x] = 0;
		return;
	}
	if (r.ncand <= KVK_SAMPLE_CANDS)
		r.cand = kvk_sample_cands;
	if (top_k > 0 && top_k < vocab)
		cut = kvk_row_cut<T>(r, 0, top_k, false);
	if (top_p < 1.0f) {
		total = kvk_row_mass<T>(r, cut, true);
		cut = kvk_row_cut<T>(r, cut, kvk_sample_top_p_thr(total, top_p),
				     true);
	}
	total = kvk_row_mass<T>(r, cut, true);
	target = kvk_sample_target(total, u[blockIdx.x]);

	/* the draw, in index order over the row */
	chunk = (vocab + blockDim.x - 1) / blockDim.x;
	lo = min(vocab, (int)threadIdx.x * chunk);
	hi = min(vocab, lo + chunk);
	for (int j = lo; j < hi; j++) {
		float l = kvk_dld(x, j);

		if (kvk_sample_key(l, j) >= cut)
			own += kvk_sample_weight(l, r.m, t);
	}
	before = kvk_block_excl_scan(own);
	if (!own || target < before || target >= before + own)
		return;
	for (int j = lo; j < hi; j++) {
		float l = kvk_dld(x, j);

		if (kvk_sample_key(l, j) < cut)
			continue;
		before += kvk_sample_weight(l, r.m, t);
		if (before > target) {
			ids[blockIdx.x] = j;
			return;
		}
	}
}

/**
 * kvk_sample_cuda() - draw one token per row on the device; see
 * kvk_sample_cpu(), whose token it picks for the same @u
 * @ids: out: [rows] token ids (device)
 * @logits: [rows][vocab] of @dt (device)
 * @u: [rows] uniform numbers in [0, 1) (device)
 * @rows: number of rows; 0 is a no-op
 * @vocab: row length; > 0
 * @cfg: temperature, top_k, top_p (host memory)
 * @dt: dtype of @logits
 * @stream: cudaStream_t, NULL for the default stream
 *
 * Return: 0, -EINVAL for bad arguments, or the launch error as -errno.
 */
extern "C" int kvk_sample_cuda(int32_t *ids, const void *logits, const float *u,
			       int rows, int vocab,
			       const struct kvk_sample_cfg *cfg,
			       enum kvk_dtype dt, void *stream)
{
	cudaStream_t s = (cudaStream_t)stream;
	size_t smem = KVK_SAMPLE_CANDS * sizeof(kvk_cand);
	int ret;

	ret = kvk_rows_check(ids, logits, rows, vocab, dt);
	if (!ret)
		ret = kvk_sample_cfg_check(cfg);
	if (!ret && rows && !u)
		ret = -EINVAL;
	if (ret)
		return ret;
	if (cfg->temperature <= 0.0f)
		return kvk_argmax_cuda(ids, logits, rows, vocab, dt, stream);
	if (!rows)
		return 0;
#define LAUNCH(T)                                                              \
	do {                                                                   \
		cudaError_t e = cudaFuncSetAttribute(                          \
			kvk_sample_kernel<T>,                                  \
			cudaFuncAttributeMaxDynamicSharedMemorySize,           \
			(int)smem);                                            \
		if (e != cudaSuccess)                                          \
			return kvk_cuda_errno(e);                              \
		kvk_sample_kernel<T><<<rows, KVK_SAMPLE_THREADS, smem, s>>>(   \
			ids, (const T *)logits, u, vocab, cfg->temperature,    \
			cfg->top_k, cfg->top_p);                               \
	} while (0)
	KVK_DISPATCH(dt, LAUNCH);
#undef LAUNCH
	return kvk_launch_errno();
}
