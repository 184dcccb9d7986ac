/* SPDX-License-Identifier: MIT */
/*
 * policy.h - KV memory policies: what a KV cache stores of each token, at
 * which precision, and what it drops.
 *
 *   full        every token in fp16 pages (the PagedAttention baseline)
 *   uniform     every token at one quantized tier (KIVI-style baseline)
 *   diffkv      high tier (K8V4), low tier (K4V2) and pruned, by the mean
 *               attention a token receives against alpha_quant / len and
 *               alpha_prune / len; the newest @window tokens protected
 *   kvcompress  fp16 pages; whole pages of the least attended tokens of
 *               each (layer, kv-head) evicted, chosen across every head and
 *               layer of a sequence, down to 1 / @rate of the pages
 *
 * A policy is written as NAME[:KEY=VALUE,...] on command lines and in JSON
 * output (llm_policy_parse(), llm_policy_format()); diffkv:profile=FILE
 * takes its thresholds from a profile (profile.c). See
 * Documentation/policies/index.rst.
 */
#ifndef LLM_POLICY_H
#define LLM_POLICY_H

#include <stddef.h>
#include <stdint.h>

#include "kvmm.h"

enum llm_policy_kind {
	LLM_POLICY_FULL = 0,
	LLM_POLICY_UNIFORM,
	LLM_POLICY_DIFFKV,
	LLM_POLICY_KVCOMPRESS,
	LLM_POLICY_NR,
};

#define LLM_POLICY_SPEC_MAX 160

/**
 * struct llm_policy - one policy with its knobs. Plain value.
 * @kind: which policy
 * @hi: the tier new tokens are stored at (fp16 for full and kvcompress)
 * @lo: diffkv's low tier; equal to @hi for the others
 * @alpha_prune: diffkv: pruned when mean score < alpha_prune / len, [0, 1]
 * @alpha_quant: diffkv: low tier when mean score < alpha_quant / len,
 *	>= @alpha_prune
 * @window: newest tokens never demoted, pruned or evicted (64)
 * @score_window: last prompt queries whose attention seeds the scores
 *	(diffkv 64, kvcompress 32)
 * @rate: kvcompress: target compression rate of a sequence's pages, >= 1
 * @interval: kvcompress: decode steps between two evictions, >= 1
 * @sinks: kvcompress: first positions never evicted; diffkv: first
 *	positions stored at the high tier and never demoted or pruned
 *	(protected attention sinks); 0 by default
 * @topk: full: 0 (dense), or the pages each (sequence, kv-head) attends at
 *	decode: sparse attention over a Quest-style page selection
 *	(kernels/select.h) keeping the first page and the pages of the last
 *	@window tokens; host caches only
 * @dense: full:topk: the first @dense layers attend densely (Quest keeps
 *	its first two: their attention is spread, and every later layer
 *	builds on them); 0 by default
 * @hadamard: uniform and diffkv: 1 to store each head's keys and values
 *	rotated by the normalised Hadamard matrix (kvk_hadamard_cpu()), the
 *	queries rotated alike and the attention output rotated back; 0 (the
 *	default) to store them as they are
 * @knorm: uniform and diffkv: 1 to store each (sequence, kv-head)'s keys
 *	normalized per channel by their prompt's mean and spread, queries
 *	scaled alike (kvk_chnorm_cpu(), per-channel key normalization); 0
 *	(the default) to store them as they are
 */
struct llm_policy {
	enum llm_policy_kind kind;
	struct kvmm_tier hi;
	struct kvmm_tier lo;
	float alpha_prune;
	float alpha_quant;
	uint32_t window;
	uint32_t score_window;
	float rate;
	uint32_t interval;
	uint32_t sinks;
	uint32_t topk;
	uint32_t hadamard;
	uint32_t knorm;
	uint32_t dense;
};

int llm_policy_default(enum llm_policy_kind kind, struct llm_policy *out);
int llm_policy_parse(const char *spec, struct llm_policy *out, char *err,
		     size_t errlen);
int llm_policy_format(const struct llm_policy *p, char *buf, size_t len);
const char *llm_policy_name(enum llm_policy_kind kind);
int llm_tier_parse(const char *s, struct kvmm_tier *out);
int llm_tier_format(const struct kvmm_tier *t, char *buf, size_t len);
int llm_profile_read(const char *path, struct llm_policy *out, char *err,
		     size_t errlen);
int llm_profile_write(const char *path, const struct llm_policy *p,
		      const char *calibration, char *err, size_t errlen);

/**
 * struct llm_kv_usage - what a cache holds, and what the full policy would
 * hold for the same tokens. Filled by the cache; summed over lists.
 * @tokens: [2] tokens stored per tier ([0] high, [1] low)
 * @pruned: tokens dropped (pruned or evicted)
 * @pages: [2] pages in use per tier
 * @page_size: bytes of one page of this cache
 * @bits: bits of the stored tokens' K, V and quantization metadata
 * @full_pages: pages the full policy would use for every token seen (each
 *	list's tokens in fp16 pages of its own page size)
 * @full_page_size: bytes of one such page
 * @full_bits: bits of every token seen in fp16 K and V
 */
struct llm_kv_usage {
	uint64_t tokens[2];
	uint64_t pruned;
	uint64_t pages[2];
	uint64_t page_size;
	uint64_t bits;
	uint64_t full_pages;
	uint64_t full_page_size;
	uint64_t full_bits;
};

/* full bits / stored bits: the logical compression ratio */
static inline double llm_kv_logical_ratio(const struct llm_kv_usage *u)
{
	return u->bits ? (double)u->full_bits / (double)u->bits : 0.0;
}

/* full policy's bytes / this cache's bytes: the physical ratio */
static inline double llm_kv_physical_ratio(const struct llm_kv_usage *u)
{
	uint64_t b = (u->pages[0] + u->pages[1]) * u->page_size;

	return b ? (double)(u->full_pages * u->full_page_size) / (double)b
		 : 0.0;
}

#endif /* LLM_POLICY_H */
