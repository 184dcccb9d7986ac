// SPDX-License-Identifier: MIT
/*
 * evict.cu - per-head page eviction on the device (kvevict.h).
 *
 * One block per sequence. Phase 1: a binary search over the 64-bit keys;
 * each step, warp w counts the eligible keys <= mid of lists w, w + W, ...
 * (one lane per token), turns its counts into whole pages, and the block
 * sums them. Phase 2: each warp takes lists in turn, finds its own cut (the
 * e-th smallest key) the same way over one list, then pairs holes below the
 * new length with survivors past it 32 at a time (ballots into two small
 * shared buffers) and copies each pair's segments with 4-byte words. Same
 * keys, same pairing rule as the CPU reference: identical pages.
 */
#include <cuda_runtime.h>
#include <errno.h>

#include "kvevict.h"
#include "kvq.h"
#include "kvk_cuda.cuh"

#define EVICT_WARPS 16
#define EVICT_GRANULE (2ULL << 20)

struct evict_geo {
	uint32_t kr, km, vr, vm;	/* bytes of one token's segments */
	uint32_t cap;			/* most tokens of a list */
};

static __device__ uint8_t *tok_page(const struct kvk_evict_args &a,
				    uint32_t row, uint32_t i)
{
	uint32_t p = a.tables[(size_t)row * a.width + i / a.tier.tokens];

	return (uint8_t *)(uintptr_t)(a.pool +
				      (uint64_t)(p / a.pages_per_granule) *
					      EVICT_GRANULE +
				      (uint64_t)(p % a.pages_per_granule) *
					      a.page_size);
}

/* key of token @i of list @l of sequence @s, UINT64_MAX when protected */
static __device__ uint64_t tok_key(const struct kvk_evict_args &a,
				   uint32_t s, uint32_t l, uint32_t i,
				   uint32_t cap)
{
	uint32_t row = a.list_base[s] + l, slot = i % a.tier.tokens;
	const uint8_t *pg = tok_page(a, row, i);
	int32_t pos = *(const int32_t *)(pg + a.tier.pos_off + 4 * slot);
	float m = *(const float *)(pg + a.tier.score_off + 4 * slot);

	if (pos < (int64_t)a.sinks || pos >= a.protect_from[s])
		return UINT64_MAX;
	return kvk_evict_key(m, kvk_evict_id(l, cap, i));
}

/* eligible keys <= @t of list @l (whole warp; every lane gets the sum) */
static __device__ uint32_t warp_count_le(const struct kvk_evict_args &a,
					 uint32_t s, uint32_t l, uint64_t t,
					 uint32_t cap)
{
	uint32_t n = a.ntokens[2 * (a.list_base[s] + l)], c = 0;

	for (uint32_t i = threadIdx.x % 32; i < n; i += 32) {
		uint64_t k = tok_key(a, s, l, i, cap);

		c += k != UINT64_MAX && k <= t;
	}
	for (int o = 16; o; o >>= 1)
		c += __shfl_xor_sync(0xffffffffu, c, o);
	return c;
}

/* whole pages of the sequence below @t (every thread of the block) */
static __device__ uint64_t block_pages_le(const struct kvk_evict_args &a,
					  uint32_t s, uint64_t t, uint32_t cap,
					  unsigned long long *red)
{
	uint32_t w = threadIdx.x / 32;
	uint64_t pages = 0;

	for (uint32_t l = w; l < a.lists; l += EVICT_WARPS)
		pages += warp_count_le(a, s, l, t, cap) / a.tier.tokens;
	__syncthreads();		/* red[] free from the last step */
	if (threadIdx.x % 32 == 0)
		red[w] = pages;
	__syncthreads();
	pages = 0;
	for (uint32_t i = 0; i < EVICT_WARPS; i++)
		pages += red[i];
	return pages;
}

static __device__ void seg_copy(uint8_t *dst, const uint8_t *src,
				uint32_t bytes)
{
	for (uint32_t b = 4 * (threadIdx.x % 32); b < bytes; b += 128)
		*(uint32_t *)(dst + b) = *(const uint32_t *)(src + b);
}

static __device__ void tok_move(const struct kvk_evict_args &a,
				const struct evict_geo &g, uint32_t row,
				uint32_t from, uint32_t to)
{
	const struct kvk_attn_tier &t = a.tier;
	const uint8_t *src = tok_page(a, row, from);
	uint8_t *dst = tok_page(a, row, to);
	uint32_t fs = from % t.tokens, ts = to % t.tokens;

	seg_copy(dst + t.k_off + ts * g.kr, src + t.k_off + fs * g.kr, g.kr);
	seg_copy(dst + t.km_off + ts * g.km, src + t.km_off + fs * g.km, g.km);
	seg_copy(dst + t.v_off + ts * g.vr, src + t.v_off + fs * g.vr, g.vr);
	seg_copy(dst + t.vm_off + ts * g.vm, src + t.vm_off + fs * g.vm, g.vm);
	seg_copy(dst + t.score_off + 4 * ts, src + t.score_off + 4 * fs, 4);
	seg_copy(dst + t.pos_off + 4 * ts, src + t.pos_off + 4 * fs, 4);
}

/* append the positions in [*scan, end) where take(i) holds, up to 32 more */
template <typename F>
static __device__ void fill(uint32_t *buf, uint32_t *nbuf, uint32_t *scan,
			    uint32_t end, F take)
{
	uint32_t lane = threadIdx.x % 32;

	while (*nbuf < 32 && *scan < end) {
		uint32_t i = *scan + lane;
		bool f = i < end && take(i);
		uint32_t ball = __ballot_sync(0xffffffffu, f);

		if (f)
			buf[*nbuf + __popc(ball & ((1u << lane) - 1))] = i;
		__syncwarp();
		*nbuf += __popc(ball);
		*scan += 32;
	}
}

static __device__ void shift(uint32_t *buf, uint32_t n, uint32_t k)
{
	uint32_t lane = threadIdx.x % 32, v = 0;

	for (uint32_t base = k; base < n; base += 32) {
		if (base + lane < n)
			v = buf[base + lane];
		__syncwarp();
		if (base + lane < n)
			buf[base + lane - k] = v;
		__syncwarp();
	}
}

/* evict @e tokens (keys <= @t) of list @l and compact it (one warp) */
static __device__ void warp_evict_list(const struct kvk_evict_args &a,
				       const struct evict_geo &g, uint32_t s,
				       uint32_t l, uint64_t t, uint32_t e,
				       uint32_t *hb, uint32_t *mb)
{
	uint32_t row = a.list_base[s] + l, n = a.ntokens[2 * row];
	uint32_t m = n - e, nh = 0, nm = 0, hs = 0, ms = m;
	uint64_t lo = 0, hi = t;

	if (e) {
		while (lo < hi) {
			uint64_t mid = lo + (hi - lo) / 2;

			if (warp_count_le(a, s, l, mid, g.cap) >= e)
				hi = mid;
			else
				lo = mid + 1;
		}
		auto gone = [&](uint32_t i) {
			uint64_t k = tok_key(a, s, l, i, g.cap);

			return k != UINT64_MAX && k <= lo;
		};
		for (;;) {
			fill(hb, &nh, &hs, m, gone);
			fill(mb, &nm, &ms, n,
			     [&](uint32_t i) { return !gone(i); });
			uint32_t k = min(nh, nm);

			if (!k)
				break;
			for (uint32_t p = 0; p < k; p++)
				tok_move(a, g, row, mb[p], hb[p]);
			__syncwarp();
			shift(hb, nh, k);
			shift(mb, nm, k);
			nh -= k;
			nm -= k;
		}
	}
	__syncwarp();
	if (threadIdx.x % 32 == 0) {
		a.evicted[(size_t)s * a.lists + l] = e;
		a.ntokens[2 * row] = m;
	}
}

static __global__ void __launch_bounds__(EVICT_WARPS * 32)
	kvk_evict_kernel(struct kvk_evict_args a, struct evict_geo g)
{
	__shared__ unsigned long long red[EVICT_WARPS];
	__shared__ uint32_t hbuf[EVICT_WARPS][64], mbuf[EVICT_WARPS][64];
	uint32_t s = blockIdx.x, w = threadIdx.x / 32, q = a.quota[s];
	uint64_t lo = 0, hi = UINT64_MAX - 1;

	if (!q) {
		lo = 0;
	} else if (block_pages_le(a, s, hi, g.cap, red) < q) {
		lo = hi;
	} else {
		while (lo < hi) {
			uint64_t mid = lo + (hi - lo) / 2;

			if (block_pages_le(a, s, mid, g.cap, red) >= q)
				hi = mid;
			else
				lo = mid + 1;
		}
	}
	for (uint32_t l = w; l < a.lists; l += EVICT_WARPS) {
		uint32_t c = q ? warp_count_le(a, s, l, lo, g.cap) : 0;

		warp_evict_list(a, g, s, l, lo, c / a.tier.tokens *
				a.tier.tokens, hbuf[w], mbuf[w]);
	}
}

/**
 * kvk_evict_cuda() - free each sequence's quota of whole pages (device)
 * @a: arguments (kvk_evict_check()); device addresses
 * @stream: cudaStream_t
 *
 * Return: 0, -EINVAL (nothing enqueued) or the launch's -errno.
 */
int kvk_evict_cuda(const struct kvk_evict_args *a, void *stream)
{
	struct evict_geo g;
	int ret = kvk_evict_check(a);

	if (ret)
		return ret;
	if (!a->nr_seqs)
		return 0;
	g.kr = kvq_row_bytes(a->head_dim, a->tier.kbits);
	g.km = kvq_meta_bytes(a->tier.kbits, a->tier.kgroups);
	g.vr = kvq_row_bytes(a->head_dim, a->tier.vbits);
	g.vm = kvq_meta_bytes(a->tier.vbits, a->tier.vgroups);
	g.cap = a->width * a->tier.tokens;
	kvk_evict_kernel<<<a->nr_seqs, EVICT_WARPS * 32, 0,
			   (cudaStream_t)stream>>>(*a, g);
	return kvk_launch_errno();
}
