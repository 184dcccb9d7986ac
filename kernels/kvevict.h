/* SPDX-License-Identifier: MIT */
/*
 * kvevict.h - KV-Compress style per-head eviction of whole pages.
 *
 * Each sequence owns one page list per (layer, kv-head). Its tokens carry a
 * metric in the page's score segment (for KV-Compress: squared attention
 * probabilities summed over the group's query heads and over time) and a
 * position in its position segment. One call frees, for every sequence of a
 * batch, a quota of whole pages chosen across all of its lists at once: the
 * least important tokens of the whole sequence go first, and a list gives up
 * a page each time tokens_per_page of its tokens are chosen, so unimportant
 * heads lose many pages and important heads few.
 *
 * The choice is a selection, not a sort: over the 64-bit token keys
 * (metric, then token identity) it finds the smallest key T such that the
 * lists' whole pages below T reach the quota (the CPU reference by binary
 * search, the CUDA kernel by radix select, eight 8-bit digits). Memory is
 * O(1) per sequence whatever its length (KV-Compress sorts every KV of the
 * batch twice and runs out of memory on long contexts). Keys are unique, so
 * the chosen set, and the result, do not depend on the order of evaluation:
 * the CPU reference and the CUDA kernel produce identical pages.
 *
 * After the choice each list is compacted in place: its surviving tokens at
 * or past its new length move into the holes below it (lowest hole first),
 * K, V, metadata, metric and position together. Token order is not kept
 * (positions travel with the tokens); the freed pages are the list's last
 * ones, for the allocator to take back (kva_shrink()).
 */
#ifndef KVEVICT_H
#define KVEVICT_H

#include <stddef.h>
#include <stdint.h>

#include "kvattn.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * struct kvk_evict_args - one eviction call over a batch of sequences.
 * Owner: the caller; ntokens, pages and @evicted are written, the rest read.
 * On CUDA every pointer and address is a device address.
 *
 * Sequence s owns lists list_base[s] .. list_base[s] + lists - 1 of
 * @tables. Only tier 0 (the left end of each row) is used: tokens
 * 0 .. ntokens[2 * list] - 1, token i in page tables[list][i / tokens] at
 * slot i % tokens. A token is protected (never evicted) when its position is
 * below @sinks or at least protect_from[s] (the recent window).
 *
 * @scratch is device memory of kvk_evict_scratch_bytes(nr_seqs, lists) bytes
 * that the CUDA kernel uses between its launches: each sequence's threshold
 * prefix, page totals per digit and block counter (struct kvk_evict_seq),
 * then each list's cut key (u64). Every call overwrites it, so one buffer
 * serves every call on one stream. The CPU reference ignores it (NULL is
 * fine there).
 */
struct kvk_evict_args {
	uint32_t nr_seqs;
	uint32_t lists;		/* lists per sequence: layers * kv-heads */
	uint32_t head_dim;	/* 64, 128 or 256 */
	struct kvk_attn_tier tier; /* formats and offsets of the pages */
	uint64_t pool;		/* address of granule slot 0 */
	uint32_t page_size;	/* bytes */
	uint32_t pages_per_granule;
	const uint32_t *tables;	/* [all lists][width] page ids */
	uint32_t width;		/* table entries per list */
	uint32_t *ntokens;	/* [all lists][2] tokens per tier; [0] updated */
	const uint32_t *list_base; /* [nr_seqs] */
	const uint32_t *quota;	/* [nr_seqs] pages to free */
	const int32_t *protect_from; /* [nr_seqs] first protected position */
	uint32_t sinks;		/* positions below this are protected */
	uint32_t *evicted;	/* [nr_seqs * lists] tokens evicted, out */
	void *scratch;		/* CUDA: kvk_evict_scratch_bytes() bytes */
};

/*
 * struct kvk_evict_seq - one sequence's state in @scratch between the
 * passes of the CUDA radix select. Owner: kvk_evict_cuda(); zeroed at the
 * start of each call, then written only by the last block of a sequence to
 * finish a pass (after a device-wide fence and an atomic count) and read by
 * the next launch.
 */
struct kvk_evict_seq {
	uint64_t prefix;	/* digits of the threshold decided so far */
	uint32_t done;		/* blocks of this pass finished */
	uint32_t all;		/* 1: the quota exceeds every eligible page */
	uint32_t total[256];	/* pages freed when the digit is <= b */
};

/**
 * kvk_evict_scratch_bytes() - bytes of struct kvk_evict_args.scratch
 * @nr_seqs: sequences of the calls that will use it
 * @lists: lists per sequence of those calls
 *
 * A buffer sized for (nr_seqs, lists) serves any call with no more of
 * either.
 *
 * Return: the size (8-byte alignment needed; cudaMalloc's is enough).
 */
static inline size_t kvk_evict_scratch_bytes(uint32_t nr_seqs, uint32_t lists)
{
	size_t n = nr_seqs ? nr_seqs : 1;

	return n * sizeof(struct kvk_evict_seq) + n * lists * sizeof(uint64_t);
}

int kvk_evict_check(const struct kvk_evict_args *a);
int kvk_evict_cpu(const struct kvk_evict_args *a, void *stream);
#ifdef KVMM_HAVE_CUDA
int kvk_evict_cuda(const struct kvk_evict_args *a, void *stream);
#endif

#ifdef __CUDACC__
#define KVK_EVICT_HD __host__ __device__
#else
#define KVK_EVICT_HD
#endif

/*
 * kvk_evict_key() - order key of a token: metric first (smaller evicted
 * first; NaN as +inf, -0 as +0), then the token's identity in its sequence.
 */
static inline KVK_EVICT_HD uint64_t kvk_evict_key(float metric, uint32_t id)
{
	union {
		float f;
		uint32_t u;
	} c;
	uint32_t k;

	c.f = metric;
	if (c.u == 0x80000000u)
		c.u = 0;
	if ((c.u & 0x7fffffffu) > 0x7f800000u)	/* NaN */
		k = 0xffffffffu;
	else
		k = c.u & 0x80000000u ? ~c.u : c.u | 0x80000000u;
	return (uint64_t)k << 32 | id;
}

/* identity of token @i of list @l (0-based in its sequence) */
static inline KVK_EVICT_HD uint32_t kvk_evict_id(uint32_t l, uint32_t cap,
						 uint32_t i)
{
	return l * cap + i;
}

#ifdef __cplusplus
}
#endif

#endif /* KVEVICT_H */
