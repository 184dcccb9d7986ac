// SPDX-License-Identifier: MIT
/*
 * evict.cu - per-head page eviction on the device (kvevict.h).
 *
 * Threshold: a radix select over the 64-bit keys, eight passes of 8-bit
 * digits, most significant first, one launch each. Pass d, grid (sequence,
 * list chunk), one or more warps per list: they count c0, the eligible keys
 * of the list below the sequence's decided prefix, and a 256-bin shared
 * histogram h of the eligible keys that share the prefix; one of them adds
 * floor((c0 + h[0] + .. + h[b]) / tokens) to its block's bucket b. Blocks
 * add their buckets to the sequence's totals in the scratch (struct
 * kvk_evict_seq); the last block to finish (fence, atomic count) picks the
 * smallest digit b whose total reaches the quota, appends it to the prefix
 * and clears the totals for the next pass. After pass 7 the prefix is T, the
 * smallest key with pages(T) >= quota. At pass 0 the total of bucket 255 is
 * every eligible page: below the quota, T is UINT64_MAX - 1 (all), as in the
 * CPU reference.
 *
 * Passes split each list over up to EVICT_WARPS warps (sharing its
 * histogram) while the grid has fewer than EVICT_PASS_BLOCKS blocks.
 *
 * Cuts: one launch, the passes' grid and warps. A list's cut, its e-th
 * smallest key (e = floor(count(<= T) / tokens) * tokens), comes from the
 * same radix select within its block (the first pass also counts), which
 * stops as soon as the chosen bucket holds at most EVICT_CAND keys: those are
 * gathered in shared memory and ranked there (three scans of the list for
 * random metrics, at most eight plus one). The cut goes to the scratch, e to
 * evicted[].
 *
 * Compaction: one launch, one warp per list. Holes below the new length pair
 * with survivors past it, the k-th with the k-th, found EVICT_UNROLL x 32
 * tokens at a time with ballots into two shared buffers; up to EVICT_PAIRS
 * pairs move at once over a flattened (pair, word) index, EVICT_ROUND words
 * per lane loaded before they are stored, 16-byte words where the segment's
 * offset and size allow, 4-byte words elsewhere. Scans load EVICT_UNROLL
 * tokens per lane before using them; divisions by the page's token count,
 * pages per granule and words per token are multiplies (struct evict_div).
 * Same keys, same pairing rule as the CPU reference: identical pages.
 */
#include <cuda_runtime.h>
#include <errno.h>

#include "kvevict.h"
#include "kvq.h"
#include "kvk_cuda.cuh"

#define EVICT_WARPS 8		/* warps per block; 256 threads, one per bin */
#define EVICT_UNROLL 8		/* tokens per lane loaded before use */
#define EVICT_BUF (32 + 32 * EVICT_UNROLL) /* pairing buffer entries */
#define EVICT_CAND 128		/* cut candidates ranked in shared memory */
#define EVICT_ROUND 12		/* words per lane loaded before the stores */
#define EVICT_PAIRS 128		/* token pairs moved per batch */
#define EVICT_PASS_BLOCKS 1024	/* blocks a pass aims at (8 per SM) */
#define EVICT_SEGS 6		/* K, K meta, V, V meta, metric, position */
#define EVICT_GRANULE (2ULL << 20)
#define FULL 0xffffffffu

static_assert(EVICT_WARPS * 32 == 256, "one thread per digit bin");
static_assert(EVICT_CAND * 8 == 256 * 4, "candidates reuse the histogram");

/* struct evict_div - n / d as a multiply and two shifts, exact for any n */
struct evict_div {
	uint32_t m, s1, s2;
};

/* struct evict_geo - what every token's copy needs; segments may be empty */
struct evict_geo {
	uint32_t cap;			/* most tokens of a list */
	struct evict_div tok;		/* by tier.tokens */
	struct evict_div ppg;		/* by pages_per_granule */
	struct evict_div wpt;		/* by words per token */
	uint32_t off[EVICT_SEGS];	/* segment offset in the page, bytes */
	uint32_t size[EVICT_SEGS];	/* bytes of one token's segment */
	uint32_t wshift[EVICT_SEGS];	/* log2 of its copy word: 4 or 2 */
	uint32_t wend[EVICT_SEGS];	/* words of segments 0 .. j */
};

/* struct evict_list - one list as a warp sees it */
struct evict_list {
	const uint32_t *tab;	/* its row of the tables */
	uint32_t row;		/* that row's index */
	uint32_t id0;		/* identity of its token 0 */
	uint32_t n;		/* tokens */
	int32_t from;		/* the sequence's first protected position */
};

/* Granlund-Montgomery: l = ceil(log2 d), m = 2^32 (2^l - d) / d + 1 */
static void div_make(struct evict_div *v, uint32_t d)
{
	uint32_t l = 0;

	while (l < 32 && (1ULL << l) < d)
		l++;
	v->m = (uint32_t)(((1ULL << 32) * ((1ULL << l) - d)) / d + 1);
	v->s1 = l < 1 ? l : 1;
	v->s2 = l ? l - 1 : 0;
}

static __device__ uint32_t div_q(const struct evict_div &v, uint32_t n)
{
	uint32_t t = __umulhi(n, v.m);

	return (t + ((n - t) >> v.s1)) >> v.s2;
}

/* page of token @i of @L; *slot its slot there */
static __device__ uint8_t *tok_page(const struct kvk_evict_args &a,
				    const struct evict_geo &g,
				    const struct evict_list &L, uint32_t i,
				    uint32_t *slot)
{
	uint32_t pi = div_q(g.tok, i), p = L.tab[pi], gi = div_q(g.ppg, p);

	*slot = i - pi * a.tier.tokens;
	return (uint8_t *)(uintptr_t)(a.pool + (uint64_t)gi * EVICT_GRANULE +
				      (uint64_t)(p - gi * a.pages_per_granule) *
					      a.page_size);
}

static __device__ struct evict_list list_of(const struct kvk_evict_args &a,
					    const struct evict_geo &g,
					    uint32_t s, uint32_t l)
{
	struct evict_list L;

	L.row = a.list_base[s] + l;
	L.tab = a.tables + (size_t)L.row * a.width;
	L.id0 = kvk_evict_id(l, g.cap, 0);
	L.n = a.ntokens[2 * L.row];
	L.from = a.protect_from[s];
	return L;
}

/* key of token @i of @L, UINT64_MAX when protected */
static __device__ uint64_t tok_key(const struct kvk_evict_args &a,
				   const struct evict_geo &g,
				   const struct evict_list &L, uint32_t i)
{
	uint32_t slot;
	const uint8_t *pg = tok_page(a, g, L, i, &slot);
	int32_t pos = *(const int32_t *)(pg + a.tier.pos_off + 4 * slot);
	float m = *(const float *)(pg + a.tier.score_off + 4 * slot);

	if (pos < (int64_t)a.sinks || pos >= L.from)
		return UINT64_MAX;
	return kvk_evict_key(m, L.id0 + i);
}

/*
 * warp_scan_step() - f(i, key) for the tokens of @L from @begin below @end,
 * 32 * EVICT_UNROLL of them every @step, every lane every time (key
 * UINT64_MAX past @end), EVICT_UNROLL loads per lane before any use
 */
template <typename F>
static __device__ void warp_scan_step(const struct kvk_evict_args &a,
				      const struct evict_geo &g,
				      const struct evict_list &L,
				      uint32_t begin, uint32_t end,
				      uint32_t step, F f)
{
	uint32_t lane = threadIdx.x % 32;

	for (uint32_t b = begin; b < end; b += step) {
		uint64_t k[EVICT_UNROLL];

#pragma unroll
		for (int u = 0; u < EVICT_UNROLL; u++) {
			uint32_t i = b + 32 * u + lane;

			k[u] = i < end ? tok_key(a, g, L, i) : UINT64_MAX;
		}
#pragma unroll
		for (int u = 0; u < EVICT_UNROLL; u++)
			f(b + 32 * u + lane, k[u]);
	}
}

/* warp_scan() - warp_scan_step() over every token of @begin .. @end - 1 */
template <typename F>
static __device__ void warp_scan(const struct kvk_evict_args &a,
				 const struct evict_geo &g,
				 const struct evict_list &L, uint32_t begin,
				 uint32_t end, F f)
{
	warp_scan_step(a, g, L, begin, end, 32 * EVICT_UNROLL, f);
}

static __device__ uint32_t warp_sum(uint32_t v)
{
	for (int o = 16; o; o >>= 1)
		v += __shfl_xor_sync(FULL, v, o);
	return v;
}

static __device__ uint32_t warp_incl_scan(uint32_t v)
{
	uint32_t lane = threadIdx.x % 32;

	for (int o = 1; o < 32; o <<= 1) {
		uint32_t x = __shfl_up_sync(FULL, v, o);

		if (lane >= (uint32_t)o)
			v += x;
	}
	return v;
}

/* digit @d of @k, 0 the most significant */
static __device__ uint32_t digit_of(uint64_t k, uint32_t d)
{
	return (uint32_t)(k >> (56 - 8 * d)) & 255;
}

/* bits of @k above digit @d (0 for d = 0) */
static __device__ uint64_t above(uint64_t k, uint32_t d)
{
	return d ? k >> (64 - 8 * d) : 0;
}

/* h[digit]++ for the lanes with @in, one shared atomic per distinct digit */
static __device__ void hist_add(uint32_t *h, bool in, uint32_t digit)
{
	uint32_t act = __ballot_sync(FULL, in);

	if (in) {
		uint32_t peers = __match_any_sync(act, digit);

		if (threadIdx.x % 32 == (uint32_t)__ffs(peers) - 1)
			atomicAdd(&h[digit], __popc(peers));
	}
}

/*
 * warp_pages() - tot[b] += floor((c0 + h[0] + .. + h[b]) / tokens) for
 * every bin b: the pages one list frees at each candidate digit
 */
static __device__ void warp_pages(const uint32_t *h, uint32_t c0,
				  const struct evict_div &tokens, uint32_t *tot)
{
	uint32_t lane = threadIdx.x % 32, v[8], sum = 0, excl;

#pragma unroll
	for (int j = 0; j < 8; j++) {
		sum += h[8 * lane + j];
		v[j] = sum;
	}
	excl = c0 + warp_incl_scan(sum) - sum;
#pragma unroll
	for (int j = 0; j < 8; j++)
		atomicAdd(&tot[8 * lane + j], div_q(tokens, excl + v[j]));
}

/*
 * warp_pass_part() - pass @d over part @part of @wpl of list @l of @s:
 * shared histogram @h and count @c0 of the list
 */
static __device__ void warp_pass_part(const struct kvk_evict_args &a,
				      const struct evict_geo &g, uint32_t s,
				      uint32_t l, uint64_t prefix, uint32_t d,
				      uint32_t part, uint32_t wpl, uint32_t *h,
				      uint32_t *c0)
{
	struct evict_list L = list_of(a, g, s, l);
	uint64_t ph = above(prefix, d);
	uint32_t n = 0;

	warp_scan_step(a, g, L, part * 32 * EVICT_UNROLL, L.n,
		       wpl * 32 * EVICT_UNROLL, [&](uint32_t i, uint64_t k) {
		bool ok = k != UINT64_MAX;

		(void)i;
		n += ok && above(k, d) < ph;
		hist_add(h, ok && above(k, d) == ph, digit_of(k, d));
	});
	n = warp_sum(n);
	if (threadIdx.x % 32 == 0 && n)
		atomicAdd(c0, n);
}

/*
 * pick_digit() - the last block of a pass: the smallest digit whose total
 * reaches @q joins the prefix (none at pass 0: the quota exceeds every
 * eligible page); the totals and the count cleared for the next pass
 */
static __device__ void pick_digit(struct kvk_evict_seq *sq, uint32_t q,
				  uint32_t d)
{
	__shared__ uint32_t best;
	uint32_t b = threadIdx.x, t = __ldcg(&sq->total[b]);

	if (!b)
		best = 256;
	__syncthreads();
	if (t >= q)
		atomicMin(&best, b);
	__syncthreads();
	sq->total[b] = 0;
	if (!b) {
		if (best == 256)
			sq->all = 1;
		else
			sq->prefix |= (uint64_t)best << (56 - 8 * d);
		sq->done = 0;
	}
}

/*
 * one radix pass @d of the threshold; grid (nr_seqs, list chunks), @wpl
 * warps per list, EVICT_WARPS / @wpl lists per block
 */
static __global__ void __launch_bounds__(EVICT_WARPS * 32)
	kvk_evict_pass_kernel(struct kvk_evict_args a, struct evict_geo g,
			      uint32_t d, uint32_t wpl)
{
	__shared__ uint32_t hist[EVICT_WARPS][256], tot[256], c0[EVICT_WARPS];
	__shared__ bool last;
	struct kvk_evict_seq *sq = (struct kvk_evict_seq *)a.scratch +
				   blockIdx.x;
	uint32_t s = blockIdx.x, w = threadIdx.x / 32, q = a.quota[s];
	uint32_t j = w / wpl, l = blockIdx.y * (EVICT_WARPS / wpl) + j;

	if (!q || sq->all)
		return;
	tot[threadIdx.x] = 0;
	for (uint32_t i = threadIdx.x; i < EVICT_WARPS * 256; i += 256)
		hist[i / 256][i % 256] = 0;
	if (threadIdx.x < EVICT_WARPS)
		c0[threadIdx.x] = 0;
	__syncthreads();
	if (l < a.lists)
		warp_pass_part(a, g, s, l, sq->prefix, d, w % wpl, wpl,
			       hist[j], &c0[j]);
	__syncthreads();
	if (l < a.lists && w % wpl == 0)
		warp_pages(hist[j], c0[j], g.tok, tot);
	__syncthreads();
	if (tot[threadIdx.x])
		atomicAdd(&sq->total[threadIdx.x], tot[threadIdx.x]);
	__threadfence();
	__syncthreads();
	if (!threadIdx.x)
		last = atomicAdd(&sq->done, 1) == gridDim.y - 1;
	__syncthreads();
	if (last) {
		__threadfence();
		pick_digit(sq, q, d);
	}
}

/*
 * warp_pick() - the smallest bin b with h[0] + .. + h[b] >= @rank (one
 * exists); @below gets h[0] + .. + h[b - 1]
 */
static __device__ uint32_t warp_pick(const uint32_t *h, uint32_t rank,
				     uint32_t *below)
{
	uint32_t lane = threadIdx.x % 32, v[8], sum = 0, x, excl, first;
	uint32_t b = 0, bl = 0;

#pragma unroll
	for (int j = 0; j < 8; j++) {
		sum += h[8 * lane + j];
		v[j] = sum;
	}
	x = warp_incl_scan(sum);
	excl = x - sum;
	first = __ffs(__ballot_sync(FULL, x >= rank)) - 1;
	if (lane == first) {
#pragma unroll
		for (int j = 7; j >= 0; j--)
			if (excl + v[j] >= rank) {
				b = 8 * lane + j;
				bl = excl + (j ? v[j - 1] : 0);
			}
	}
	*below = __shfl_sync(FULL, bl, first);
	return __shfl_sync(FULL, b, first);
}

/* states of a list's cut in kvk_evict_cut_kernel() */
enum { CUT_SCAN, CUT_GATHER, CUT_DONE };

/* struct evict_cut - one list's radix select for its cut; block-shared */
struct evict_cut {
	unsigned long long prefix; /* digits decided; the cut when done */
	uint32_t rank;		/* the cut's rank among keys of that prefix */
	uint32_t n;		/* keys counted (pass 0) or gathered */
	uint32_t e;		/* tokens the list loses */
	uint32_t state;		/* CUT_* */
};

/* part @part of @wpl of pass @d: keys <= @t under @c's prefix into @h */
static __device__ void cut_scan(const struct kvk_evict_args &a,
				const struct evict_geo &g,
				const struct evict_list &L, uint64_t t,
				uint32_t d, uint32_t part, uint32_t wpl,
				struct evict_cut *c, uint32_t *h)
{
	uint64_t ph = above(c->prefix, d);
	uint32_t n = 0;

	warp_scan_step(a, g, L, part * 32 * EVICT_UNROLL, L.n,
		       wpl * 32 * EVICT_UNROLL, [&](uint32_t i, uint64_t k) {
		bool in = k <= t && above(k, d) == ph;

		(void)i;
		n += in;
		hist_add(h, in, digit_of(k, d));
	});
	n = warp_sum(n);
	if (threadIdx.x % 32 == 0 && n)
		atomicAdd(&c->n, n);
}

/*
 * cut_pick() - after pass @d (one warp): the digit of the cut; done at the
 * last digit or with nothing to evict, gathering when the bucket is small
 */
static __device__ void cut_pick(struct evict_cut *c, const uint32_t *h,
				uint32_t d, uint32_t tokens)
{
	unsigned long long prefix = c->prefix;
	uint32_t rank = c->rank, e = c->e, state = CUT_DONE, below, b;

	if (!d) {
		e = c->n / tokens * tokens;
		rank = e;
	}
	if (e) {
		b = warp_pick(h, rank, &below);
		rank -= below;
		prefix |= (unsigned long long)b << (56 - 8 * d);
		state = d == 7 ? CUT_DONE :
			h[b] <= EVICT_CAND ? CUT_GATHER : CUT_SCAN;
	}
	__syncwarp();
	if (threadIdx.x % 32 == 0) {
		c->prefix = prefix;
		c->rank = rank;
		c->e = e;
		c->n = 0;
		c->state = state;
	}
}

/* part @part of @wpl: the keys <= @t with @c's digits 0 .. @d into @buf */
static __device__ void cut_gather(const struct kvk_evict_args &a,
				  const struct evict_geo &g,
				  const struct evict_list &L, uint64_t t,
				  uint32_t d, uint32_t part, uint32_t wpl,
				  struct evict_cut *c, uint64_t *buf)
{
	uint32_t lane = threadIdx.x % 32;
	uint64_t pk = above(c->prefix, d + 1);

	warp_scan_step(a, g, L, part * 32 * EVICT_UNROLL, L.n,
		       wpl * 32 * EVICT_UNROLL, [&](uint32_t i, uint64_t k) {
		bool in = k <= t && above(k, d + 1) == pk;
		uint32_t ball = __ballot_sync(FULL, in), base = 0;

		(void)i;
		if (ball && !lane)
			base = atomicAdd(&c->n, __popc(ball));
		base = __shfl_sync(FULL, base, 0);
		if (in)
			buf[base + __popc(ball & ((1u << lane) - 1))] = k;
	});
}

/* cut_rank() - one warp: the cut is the rank-th smallest gathered key */
static __device__ void cut_rank(struct evict_cut *c, const uint64_t *buf)
{
	uint32_t lane = threadIdx.x % 32, nb = c->n, rank = c->rank, src;
	unsigned long long res = 0;
	bool got = false;

	for (uint32_t j = lane; j < nb; j += 32) {
		uint64_t kj = buf[j];
		uint32_t lt = 0;

		for (uint32_t x = 0; x < nb; x++)
			lt += buf[x] < kj;
		if (lt == rank - 1) {
			res = kj;
			got = true;
		}
	}
	src = __ffs(__ballot_sync(FULL, got)) - 1;
	res = __shfl_sync(FULL, res, src);
	if (!lane) {
		c->prefix = res;
		c->state = CUT_DONE;
	}
}

/* the cuts of the lists of @s in list chunk @y, @wpl warps per list */
static __device__ void block_cuts(const struct kvk_evict_args &a,
				  const struct evict_geo &g, uint32_t s,
				  uint32_t y, uint32_t wpl, uint64_t t,
				  struct evict_cut *cs,
				  uint64_t (*buf)[EVICT_CAND])
{
	uint32_t w = threadIdx.x / 32, j = w / wpl, part = w % wpl;
	uint32_t l = y * (EVICT_WARPS / wpl) + j, lane = threadIdx.x % 32;
	struct evict_cut *c = &cs[j];
	uint32_t *h = (uint32_t *)buf[j];
	struct evict_list L = { NULL, 0, 0, 0, 0 };

	if (l < a.lists)
		L = list_of(a, g, s, l);
	for (uint32_t d = 0; d < 8; d++) {
		bool scan = c->state == CUT_SCAN;

		for (uint32_t b = part * 32 + lane; scan && b < 256;
		     b += wpl * 32)
			h[b] = 0;
		__syncthreads();
		if (scan)
			cut_scan(a, g, L, t, d, part, wpl, c, h);
		__syncthreads();
		if (scan && !part)
			cut_pick(c, h, d, a.tier.tokens);
		__syncthreads();
		if (c->state == CUT_GATHER)
			cut_gather(a, g, L, t, d, part, wpl, c, buf[j]);
		__syncthreads();
		if (c->state == CUT_GATHER && !part)
			cut_rank(c, buf[j]);
		__syncthreads();
		if (__syncthreads_and(c->state == CUT_DONE))
			break;
	}
}

/*
 * each list's cut (scratch) and eviction count (evicted[]): grid and warps
 * as the passes'
 */
static __global__ void __launch_bounds__(EVICT_WARPS * 32)
	kvk_evict_cut_kernel(struct kvk_evict_args a, struct evict_geo g,
			     uint32_t wpl)
{
	__shared__ uint64_t buf[EVICT_WARPS][EVICT_CAND];
	__shared__ struct evict_cut cs[EVICT_WARPS];
	const struct kvk_evict_seq *sq =
		(const struct kvk_evict_seq *)a.scratch + blockIdx.x;
	uint64_t *cuts = (uint64_t *)((struct kvk_evict_seq *)a.scratch +
				      gridDim.x);
	uint32_t s = blockIdx.x, lpb = EVICT_WARPS / wpl, l;

	if (threadIdx.x < lpb) {
		l = blockIdx.y * lpb + threadIdx.x;
		cs[threadIdx.x] = { 0, 0, 0, 0, CUT_DONE };
		if (l < a.lists && a.quota[s])
			cs[threadIdx.x].state = CUT_SCAN;
	}
	__syncthreads();
	block_cuts(a, g, s, blockIdx.y, wpl,
		   sq->all ? UINT64_MAX - 1 : sq->prefix, cs, buf);
	if (threadIdx.x < lpb) {
		l = blockIdx.y * lpb + threadIdx.x;
		if (l < a.lists) {
			a.evicted[(size_t)s * a.lists + l] = cs[threadIdx.x].e;
			cuts[(size_t)s * a.lists + l] = cs[threadIdx.x].prefix;
		}
	}
}

/* append the positions in [*scan, end) that @gone says, 32 or more */
static __device__ void fill(const struct kvk_evict_args &a,
			    const struct evict_geo &g,
			    const struct evict_list &L, uint32_t *buf,
			    uint32_t *nbuf, uint32_t *scan, uint32_t end,
			    uint64_t cut, bool gone)
{
	uint32_t lane = threadIdx.x % 32;

	while (*nbuf < 32 && *scan < end) {
		uint32_t stop = min(end, *scan + 32 * EVICT_UNROLL);

		warp_scan(a, g, L, *scan, stop, [&](uint32_t i, uint64_t k) {
			bool f = i < stop && (k <= cut) == gone;
			uint32_t ball = __ballot_sync(FULL, f);

			if (f)
				buf[*nbuf + __popc(ball & ((1u << lane) - 1))] =
					i;
			*nbuf += __popc(ball);
		});
		*scan = stop;
	}
	__syncwarp();
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

/* offset of word @w of a token in slot @slot of its page; *ws its log2 */
static __device__ uint32_t word_off(const struct evict_geo &g, uint32_t slot,
				    uint32_t w, uint32_t *ws)
{
	uint32_t start = 0, off = 0;

#pragma unroll
	for (int j = 0; j < EVICT_SEGS; j++) {
		if (w >= start && w < g.wend[j]) {
			off = g.off[j] + slot * g.size[j] +
			      ((w - start) << g.wshift[j]);
			*ws = g.wshift[j];
		}
		start = g.wend[j];
	}
	return off;
}

/*
 * move_pairs() - token mb[p] onto token hb[p] for p < @k <= EVICT_PAIRS:
 * the pages of every pair first (@sp, @dp), then the flattened (pair, word)
 * index, every load of a round before its stores
 */
static __device__ void move_pairs(const struct kvk_evict_args &a,
				  const struct evict_geo &g,
				  const struct evict_list &L,
				  const uint32_t *hb, const uint32_t *mb,
				  uint32_t k, unsigned long long *sp,
				  unsigned long long *dp)
{
	uint32_t lane = threadIdx.x % 32, wpt = g.wend[EVICT_SEGS - 1];
	uint32_t total = k * wpt, slot;

	for (uint32_t p = lane; p < k; p += 32) {
		sp[p] = (uintptr_t)tok_page(a, g, L, mb[p], &slot);
		dp[p] = (uintptr_t)tok_page(a, g, L, hb[p], &slot);
	}
	__syncwarp();
	for (uint32_t base = 0; base < total; base += 32 * EVICT_ROUND) {
		uint4 v[EVICT_ROUND];
		uint8_t *dst[EVICT_ROUND];
		uint32_t wide = 0;	/* bit r: word r is 16 bytes */

#pragma unroll
		for (int r = 0; r < EVICT_ROUND; r++) {
			uint32_t x = base + 32 * r + lane;
			uint32_t p = div_q(g.wpt, x), w = x - p * wpt, f, t, ws;
			const uint8_t *src;

			dst[r] = NULL;
			if (x >= total)
				continue;
			f = mb[p] - div_q(g.tok, mb[p]) * a.tier.tokens;
			t = hb[p] - div_q(g.tok, hb[p]) * a.tier.tokens;
			src = (const uint8_t *)(uintptr_t)sp[p] +
			      word_off(g, f, w, &ws);
			dst[r] = (uint8_t *)(uintptr_t)dp[p] +
				 word_off(g, t, w, &ws);
			if (ws == 4) {
				v[r] = *(const uint4 *)src;
				wide |= 1u << r;
			} else {
				v[r].x = *(const uint32_t *)src;
			}
		}
#pragma unroll
		for (int r = 0; r < EVICT_ROUND; r++) {
			if (!dst[r])
				continue;
			if (wide & 1u << r)
				*(uint4 *)dst[r] = v[r];
			else
				*(uint32_t *)dst[r] = v[r].x;
		}
	}
}

/* fill the holes (keys <= @cut) below n - @e with the survivors past it */
static __device__ void warp_compact(const struct kvk_evict_args &a,
				    const struct evict_geo &g,
				    const struct evict_list &L, uint64_t cut,
				    uint32_t e, uint32_t *hb, uint32_t *mb,
				    unsigned long long *sp,
				    unsigned long long *dp)
{
	uint32_t m = L.n - e, nh = 0, nm = 0, hs = 0, ms = m;

	for (;;) {
		uint32_t k;

		fill(a, g, L, hb, &nh, &hs, m, cut, true);
		fill(a, g, L, mb, &nm, &ms, L.n, cut, false);
		k = min(min(nh, nm), EVICT_PAIRS);
		if (!k)
			break;
		move_pairs(a, g, L, hb, mb, k, sp, dp);
		__syncwarp();
		shift(hb, nh, k);
		shift(mb, nm, k);
		nh -= k;
		nm -= k;
	}
}

/* every list's compaction, one warp each, by the cut kernel's results */
static __global__ void __launch_bounds__(EVICT_WARPS * 32, 2)
	kvk_evict_list_kernel(struct kvk_evict_args a, struct evict_geo g)
{
	__shared__ uint32_t hbuf[EVICT_WARPS][EVICT_BUF];
	__shared__ uint32_t mbuf[EVICT_WARPS][EVICT_BUF];
	__shared__ unsigned long long sp[EVICT_WARPS][EVICT_PAIRS];
	__shared__ unsigned long long dp[EVICT_WARPS][EVICT_PAIRS];
	const uint64_t *cuts = (const uint64_t *)((struct kvk_evict_seq *)
						  a.scratch + gridDim.x);
	uint32_t s = blockIdx.x, w = threadIdx.x / 32, e;
	uint32_t l = blockIdx.y * EVICT_WARPS + w;
	size_t sl = (size_t)s * a.lists + l;
	struct evict_list L;

	if (l >= a.lists)
		return;
	L = list_of(a, g, s, l);
	e = a.evicted[sl];
	if (e)
		warp_compact(a, g, L, cuts[sl], e, hbuf[w], mbuf[w], sp[w],
			     dp[w]);
	if (threadIdx.x % 32 == 0)
		a.ntokens[2 * L.row] = L.n - e;
}

/* segments of one token: 16-byte words where offset and size allow */
static void geo_make(const struct kvk_evict_args *a, struct evict_geo *g)
{
	const struct kvk_attn_tier *t = &a->tier;
	uint32_t hd = a->head_dim, words = 0;
	uint32_t off[EVICT_SEGS] = { t->k_off, t->km_off, t->v_off, t->vm_off,
				     t->score_off, t->pos_off };
	uint32_t size[EVICT_SEGS] = {
		kvq_row_bytes(hd, t->kbits),
		kvq_meta_bytes(t->kbits, t->kgroups),
		kvq_row_bytes(hd, t->vbits),
		kvq_meta_bytes(t->vbits, t->vgroups),
		4, 4,
	};
	bool base16 = !((a->pool | a->page_size) % 16);

	g->cap = a->width * t->tokens;
	div_make(&g->tok, t->tokens);
	div_make(&g->ppg, a->pages_per_granule);
	for (int j = 0; j < EVICT_SEGS; j++) {
		g->off[j] = off[j];
		g->size[j] = size[j];
		g->wshift[j] = base16 && !((off[j] | size[j]) % 16) ? 4 : 2;
		words += size[j] >> g->wshift[j];
		g->wend[j] = words;
	}
	div_make(&g->wpt, words);
}

/**
 * kvk_evict_cuda() - free each sequence's quota of whole pages (device)
 * @a: arguments (kvk_evict_check()); device addresses, @a->scratch of
 *     kvk_evict_scratch_bytes(@a->nr_seqs, @a->lists) bytes
 * @stream: cudaStream_t
 *
 * Eleven operations on @stream: a clear of the scratch, eight radix passes,
 * the cuts, the compaction.
 *
 * Return: 0, -EINVAL (no scratch, too many lists, or kvk_evict_check();
 * nothing enqueued) or the launch's -errno.
 */
int kvk_evict_cuda(const struct kvk_evict_args *a, void *stream)
{
	cudaStream_t st = (cudaStream_t)stream;
	struct evict_geo g;
	uint32_t wpl = EVICT_WARPS;
	dim3 grid, pgrid;
	int ret = kvk_evict_check(a);

	if (ret)
		return ret;
	if (!a->scratch ||
	    (a->lists + EVICT_WARPS - 1) / EVICT_WARPS > 65535)
		return -EINVAL;
	if (!a->nr_seqs)
		return 0;
	geo_make(a, &g);
	grid = dim3(a->nr_seqs, (a->lists + EVICT_WARPS - 1) / EVICT_WARPS);
	/* the passes split each list over more warps while blocks are few */
	while (wpl > 1 && (uint64_t)a->nr_seqs * a->lists * wpl >
				  EVICT_WARPS * EVICT_PASS_BLOCKS)
		wpl /= 2;
	pgrid = dim3(a->nr_seqs, (a->lists + EVICT_WARPS / wpl - 1) /
					 (EVICT_WARPS / wpl));
	ret = kvk_cuda_errno(cudaMemsetAsync(a->scratch, 0,
					     kvk_evict_scratch_bytes(a->nr_seqs,
								     a->lists),
					     st));
	for (uint32_t d = 0; !ret && d < 8; d++) {
		kvk_evict_pass_kernel<<<pgrid, EVICT_WARPS * 32, 0, st>>>(
			*a, g, d, wpl);
		ret = kvk_launch_errno();
	}
	if (ret)
		return ret;
	kvk_evict_cut_kernel<<<pgrid, EVICT_WARPS * 32, 0, st>>>(*a, g, wpl);
	ret = kvk_launch_errno();
	if (ret)
		return ret;
	kvk_evict_list_kernel<<<grid, EVICT_WARPS * 32, 0, st>>>(*a, g);
	return kvk_launch_errno();
}
