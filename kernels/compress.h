/* SPDX-License-Identifier: MIT */
/*
 * compress.h - compress-and-append: DiffKV's token tiers written into the
 * per-head paged KV cache, in the prompt phase (classify every prompt token
 * high / low / pruned, quantize the kept ones into the head's pages) and in
 * the decode phase (append the new token at the high tier, demote or prune
 * at most what the policy selects).
 *
 * Every op has a CUDA kernel and a CPU reference with one signature: a
 * struct of arguments and a stream. The CPU and CUDA results are identical
 * to the byte (same IEEE operations, same order of tokens). Usable from C
 * and CUDA. See Documentation/kernels/compress.rst.
 */
#ifndef KVK_COMPRESS_H
#define KVK_COMPRESS_H

#include <stddef.h>
#include <stdint.h>

#include "kvattn.h"
#include "kvk.h"

#ifdef __cplusplus
extern "C" {
#endif

#ifdef __CUDACC__
#define KVC_HD __host__ __device__
#else
#define KVC_HD
#endif

/**
 * struct kvk_fastdiv - unsigned 32-bit division by an invariant divisor as
 * a multiply and a shift (Granlund and Montgomery, 1994): exact for every
 * dividend. The decode scan divides every token's index by the tokens of a
 * page and every page id by the pages of a granule; as hardware divisions
 * those made the scan instruction-bound.
 * @d: divisor, at least 1
 * @m: magic multiplier
 * @s: shift, ceil(log2(d))
 */
struct kvk_fastdiv {
	uint32_t d, m, s;
};

static inline KVC_HD struct kvk_fastdiv kvk_fastdiv_make(uint32_t d)
{
	struct kvk_fastdiv f;
	uint32_t s = 0;

	while (s < 32 && (1ULL << s) < d)
		s++;
	f.d = d;
	f.s = s;
	f.m = (uint32_t)((((1ULL << s) - d) << 32) / d + 1);
	return f;
}

static inline KVC_HD uint32_t kvk_fastdiv_q(const struct kvk_fastdiv *f,
					    uint32_t n)
{
	uint64_t t = ((uint64_t)n * f->m) >> 32;

	return (uint32_t)((t + n) >> f->s);
}

/* DiffKV's defaults: protected recent tokens, scored prompt queries */
#define KVK_COMPRESS_WINDOW 64
#define KVK_COMPRESS_SCORE_WINDOW 64

/* classes of a prompt token */
enum kvk_tok_class {
	KVK_TOK_HIGH = 0,
	KVK_TOK_LOW = 1,
	KVK_TOK_PRUNED = 2,
	KVK_TOK_NR,
};

/**
 * struct kvk_compress_pages - the paged cache both phases write
 * @pool: address of granule 0; page p at pool + (p / pages_per_granule) *
 *	2 MiB + (p % pages_per_granule) * page_size
 * @page_size: bytes
 * @pages_per_granule: pages in one 2 MiB granule
 * @tables: [lists][width] page ids (the allocator's table)
 * @width: entries per list
 * @list_base: [nr_seqs]: list of (sequence s, kv-head h) is list_base[s] + h
 * @tier: [0] high, [1] low: formats and segment offsets (struct kva_layout)
 *
 * Same conventions as struct kvk_attn_args. On CUDA every pointer and
 * address is a device address.
 */
struct kvk_compress_pages {
	uint64_t pool;
	uint32_t page_size;
	uint32_t pages_per_granule;
	const uint32_t *tables;
	uint32_t width;
	const uint32_t *list_base;
	struct kvk_attn_tier tier[2];
};

/**
 * struct kvk_compress_prompt - one prompt-phase call (one layer)
 * @nr_seqs: sequences
 * @nr_kv_heads: kv-heads per layer
 * @head_dim: 64, 80, 96, 128 or 256
 * @dtype: of @k and @v (fp32, fp16, bf16)
 * @k: [total][nr_kv_heads][head_dim], RoPE applied
 * @v: [total][nr_kv_heads][head_dim]
 * @seq_start: [nr_seqs + 1] first token of each sequence in @k, @v,
 *	@scores (prompt length = seq_start[s + 1] - seq_start[s])
 * @max_len: host value, at least every prompt length (sizes the grid)
 * @scores: [total][nr_kv_heads] fp32: sum of the attention probabilities
 *	the last @score_window queries gave the token, max over the query
 *	heads of its kv-head (kvk_prefill_*() writes it)
 * @score_window: W, the number of last queries summed (>= 1)
 * @window: protected recent tokens, always high (DiffKV: 64)
 * @alpha_prune: token pruned when mean score < alpha_prune / len
 * @alpha_quant: token low when mean score < alpha_quant / len
 * @seq_alpha: NULL, or [nr_seqs][2] (alpha_prune, alpha_quant) per sequence
 * @pg: the cache; the lists of the batch were admitted (kva_admit()):
 *	pages reserved from the left of each row
 * @npages: NULL, or [lists][2]: pages reserved per list ([2 * list]); a list
 *	whose kept tokens need more fails the call with -ENOSPC
 * @counts: out, [nr_seqs][nr_kv_heads][KVK_TOK_NR] tokens per class
 * @ntokens: NULL, or out [lists][2]: high and low tokens stored
 * @err: out, one int32: 0, or -ENOSPC / -E2BIG and nothing else written
 *	but @counts
 * @real_pos: store each token's own position in the position field
 *	instead of its score's origin: for policies that do not divide
 *	scores by the queries counted, whose eviction protects by position
 *	(KV-Compress)
 * @sinks: the first @sinks tokens of each prompt are high whatever their
 *	score (protected attention sinks, StreamingLLM); they are the first
 *	high-tier indices of their lists, where struct kvk_compress_decode's
 *	@sinks keeps them
 *
 * High tokens go to pages tables[row][0 ..], in position order; low tokens
 * to the pages right after the high ones, tables[row][ceil(hi / tpp_hi) ..],
 * in position order: the layout kva_trim() expects (it then moves the low
 * pages to the right end of the row). Each stored token carries its score
 * and, in the position field, the first query counted in its score
 * (max(len - W, t)), so that a later step p divides the score by p - field.
 */
struct kvk_compress_prompt {
	uint32_t nr_seqs;
	uint32_t nr_kv_heads;
	uint32_t head_dim;
	enum kvk_dtype dtype;
	const void *k;
	const void *v;
	const uint32_t *seq_start;
	uint32_t max_len;
	const float *scores;
	uint32_t score_window;
	uint32_t window;
	float alpha_prune;
	float alpha_quant;
	const float *seq_alpha;
	struct kvk_compress_pages pg;
	const uint32_t *npages;
	uint32_t *counts;
	uint32_t *ntokens;
	int32_t *err;
	int real_pos;
	uint32_t sinks;
};

/* what the decode phase did to one head */
enum kvk_compress_op {
	KVK_OP_APPEND = 0,	/* new token at high slot n_hi; n_hi + 1 */
	KVK_OP_PRUNE_HI = 1,	/* high victim pruned, new token in its slot */
	KVK_OP_DEMOTE_SWAP = 2, /* high victim requantized into the low
				 * victim's slot (low victim pruned), new token
				 * in the high victim's slot */
	KVK_OP_DEMOTE = 3,	/* high victim requantized to low slot n_lo;
				 * n_lo + 1; new token in its high slot */
	KVK_OP_NO_ROOM = 4,	/* the chosen op needs a slot the list lacks */
};

/**
 * struct kvk_compress_action - the decision of one head in one step
 * @op: enum kvk_compress_op
 * @hi: high-tier index of the high victim (or of the appended token)
 * @lo: low-tier index written (KVK_OP_DEMOTE*), else UINT32_MAX
 * @need: for KVK_OP_NO_ROOM, the tier that needs a page (0 high, 1 low)
 */
struct kvk_compress_action {
	uint32_t op;
	uint32_t hi;
	uint32_t lo;
	uint32_t need;
};

/**
 * struct kvk_compress_decode - one decode-phase call (one layer)
 * @nr_seqs: sequences
 * @nr_kv_heads: kv-heads per layer
 * @head_dim: 64, 80, 96, 128 or 256
 * @dtype: of @k and @v
 * @k: [nr_seqs][nr_kv_heads][head_dim] the new token's keys (RoPE applied)
 * @v: [nr_seqs][nr_kv_heads][head_dim]
 * @pos: [nr_seqs] position of the new token (tokens seen so far, >= 1)
 * @window: protected recent tokens: a token is a candidate only once
 *	pos - field >= max(window, 1) queries have been summed into its score
 * @alpha_prune: see struct kvk_compress_prompt; thresholds are alpha / pos
 * @alpha_quant: idem
 * @seq_alpha: NULL or [nr_seqs][2]
 * @pg: the cache, in decode layout (low pages from the right end)
 * @npages: [lists][2] pages per tier (the allocator's)
 * @ntokens: [lists][2] tokens per tier, updated
 * @actions: out [nr_seqs][nr_kv_heads]
 * @err: out: 0, or -ENOSPC when some list lacks the slot its op needs;
 *	then only @actions and @err are written
 * @sinks: high-tier indices below @sinks are never victims (never
 *	demoted or pruned): the prompt's first @sinks tokens, which the
 *	prompt phase stored there, or, while a sequence is shorter than
 *	@sinks, every token so far (each appended at the next index, since
 *	no index below @sinks is ever freed)
 */
struct kvk_compress_decode {
	uint32_t nr_seqs;
	uint32_t nr_kv_heads;
	uint32_t head_dim;
	enum kvk_dtype dtype;
	const void *k;
	const void *v;
	const int32_t *pos;
	uint32_t window;
	float alpha_prune;
	float alpha_quant;
	const float *seq_alpha;
	struct kvk_compress_pages pg;
	const uint32_t *npages;
	uint32_t *ntokens;
	struct kvk_compress_action *actions;
	int32_t *err;
	uint32_t sinks;
};

/*
 * kvk_tok_classify() - DiffKV's prompt rule for token @t of a prompt of
 * @len tokens, the first @sinks and the last @window protected; shared by
 * both backends so they agree bit for bit.
 */
static inline KVC_HD int kvk_tok_classify(float score, uint32_t t, uint32_t len,
					  uint32_t w, uint32_t window,
					  uint32_t sinks, float ap, float aq)
{
	uint32_t nq = len - t < w ? len - t : w;
	float mean;

	if (len - t <= window || t < sinks)
		return KVK_TOK_HIGH;
	mean = score / (float)nq;
	if (mean < ap / (float)len)
		return KVK_TOK_PRUNED;
	if (mean < aq / (float)len)
		return KVK_TOK_LOW;
	return KVK_TOK_HIGH;
}

/*
 * the position field of prompt token @t: the first query in its score, or
 * with @real its own position
 */
static inline KVC_HD int32_t kvk_tok_field(uint32_t t, uint32_t len,
					   uint32_t w, int real)
{
	if (real)
		return (int32_t)t;
	return (int32_t)(len - (len - t < w ? len - t : w));
}

/* the position field of prompt token @t: the first query in its score */
static inline KVC_HD int32_t kvk_tok_origin(uint32_t t, uint32_t len,
					    uint32_t w)
{
	return (int32_t)(len - (len - t < w ? len - t : w));
}

/*
 * kvk_decode_choose() - DiffKV's decode rule from the two victims' means
 * (+inf when a tier has no candidate)
 */
static inline KVC_HD uint32_t kvk_decode_choose(float hmin, float lmin,
						float pthr, float qthr)
{
	if (hmin < pthr && hmin < lmin)
		return KVK_OP_PRUNE_HI;
	if (hmin < qthr && lmin < pthr)
		return KVK_OP_DEMOTE_SWAP;
	if (hmin < qthr)
		return KVK_OP_DEMOTE;
	return KVK_OP_APPEND;
}

/*
 * kvk_decode_may_move() - whether thresholds @ap, @aq can pick a victim at
 * all: scores and means are >= 0, so with both at 0 (full, kvcompress) the
 * rule always appends and the victim scans can be skipped.
 */
static inline KVC_HD int kvk_decode_may_move(float ap, float aq)
{
	return ap > 0.0f || aq > 0.0f;
}

int kvk_compress_prompt_check(const struct kvk_compress_prompt *a);
int kvk_compress_decode_check(const struct kvk_compress_decode *a);
int kvk_compress_prompt_cpu(const struct kvk_compress_prompt *a, void *stream);
int kvk_compress_decode_cpu(const struct kvk_compress_decode *a, void *stream);
#ifdef KVMM_HAVE_CUDA
int kvk_compress_prompt_cuda(const struct kvk_compress_prompt *a, void *stream);
int kvk_compress_decode_cuda(const struct kvk_compress_decode *a, void *stream);
#endif

#ifdef __cplusplus
}
#endif

#endif /* KVK_COMPRESS_H */
