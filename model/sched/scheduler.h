/* SPDX-License-Identifier: MIT */
/*
 * scheduler.h - the serving scheduler: continuous batching of requests over
 * one policy KV cache under a memory budget.
 *
 * The split is vLLM's: the scheduler decides who runs (waiting, running
 * and preempted requests, a token budget per step) and asks the cache's
 * space only whether pages fit, to admit, and to free (through the uapi:
 * KVMM_IOC_FENCE, SEQ_STATS, STATS, COMPACT, SET_BUDGET). It never sees
 * the model: a step is handed to an executor through a callback that turns
 * a batch into one greedy token per sequence, so the same scheduler drives
 * the CPU and the CUDA executor. See Documentation/serve/index.rst.
 */
#ifndef LLM_SCHED_H
#define LLM_SCHED_H

#include <stdbool.h>
#include <stdint.h>

#include "kvcache.h"

#define LLM_SCHED_MAX_CACHES 8	/* caches (policies) of one scheduler */

/**
 * typedef llm_sched_step_fn - an executor's step
 * @ctx: the executor (llm_sched_create()'s @ctx)
 * @kv: the cache
 * @b: the step: all prompts (whole prompts of sequences of length 0, and
 *	chunks of prompts declared with llm_kv_set_prompt(): sequences that
 *	are llm_kv_prefilling()) or all decode tokens
 * @next: out: [b->n_seq] the greedy token after each sequence's last one
 *	(ignored for a chunk that does not end its prompt)
 *
 * Runs and commits the step as llm_cpu_forward() does.
 *
 * Return: 0, or the executor's -errno: -ENOSPC when the cache refused
 * pages (nothing changed for the part that failed).
 */
typedef int (*llm_sched_step_fn)(void *ctx, struct llm_kv *kv,
				 const struct llm_batch *b, int32_t *next);

/**
 * enum llm_sched_preempt - what a preemption does with the victim's pages
 * @LLM_SCHED_PREEMPT_AUTO: per victim, swap when its swap is estimated to
 *	take less time than recomputing its tokens (measured in the run:
 *	the executor's prefill seconds per token, the swap file's seconds
 *	per byte out and in), else recompute; recompute in a cache that
 *	cannot swap (a device cache). The default.
 * @LLM_SCHED_PREEMPT_RECOMPUTE: release the pages; the request is
 *	prefilled again from its prompt and the tokens it generated
 * @LLM_SCHED_PREEMPT_SWAP: write the pages to a swap file
 *	(KVMM_IOC_SEQ_SWAP_OUT) and read them back when it runs again;
 *	a failed write falls back to recompute. Host caches only.
 */
enum llm_sched_preempt {
	LLM_SCHED_PREEMPT_AUTO = 0,
	LLM_SCHED_PREEMPT_RECOMPUTE,
	LLM_SCHED_PREEMPT_SWAP,
};

int llm_sched_parse_preempt(const char *s, enum llm_sched_preempt *out);
const char *llm_sched_preempt_name(enum llm_sched_preempt p);

/**
 * enum llm_sched_order - the order in which new requests wait
 * @LLM_SCHED_ORDER_FCFS: first come, first served. The default.
 * @LLM_SCHED_ORDER_LONGEST: longest output first: a new request waits
 *	ahead of those that ask for fewer tokens (ties: first come first),
 *	behind every preempted one. For offline throughput: the long
 *	requests start first and the short ones fill in at the end, so
 *	fewer sequences trail alone (LPT). Online it lets long requests
 *	pass short ones that came earlier.
 */
enum llm_sched_order {
	LLM_SCHED_ORDER_FCFS = 0,
	LLM_SCHED_ORDER_LONGEST,
};

int llm_sched_parse_order(const char *s, enum llm_sched_order *out);
const char *llm_sched_order_name(enum llm_sched_order o);

/**
 * struct llm_sched_opts - the scheduler's knobs. Plain value; zeros take
 * the defaults.
 * @max_step_tokens: tokens of one step, decode tokens and prompts (2048):
 *	a prompt longer than what is left of it comes in chunks, over
 *	several steps (chunked prefill), in a cache that takes chunks
 *	(llm_kv_chunks()); else the first prompt of a step may exceed it
 * @reserve: share of a request's remaining output whose pages are held
 *	back at admission, 0 .. 1 (default 1; negative means 0: admit on the
 *	prompt's pages alone and preempt when pages run out, as vLLM does)
 * @compact_ratio: physical compaction runs when the free bytes that no
 *	granule release can return pass this share of the bytes in use
 *	(default 0.25; negative: never)
 * @compact_bytes: most page bytes one compaction moves (0: no limit)
 * @no_chunk: prompts whole, never in chunks (the first prompt of a step
 *	may then exceed @max_step_tokens)
 * @preempt: what a preemption does (enum llm_sched_preempt)
 * @order: the order new requests wait in (enum llm_sched_order)
 * @swap_dir: where the caches' swap files are made (each unlinked at once:
 *	nothing stays behind); NULL: $TMPDIR, else /tmp
 */
struct llm_sched_opts {
	int max_step_tokens;
	float reserve;
	float compact_ratio;
	uint64_t compact_bytes;
	bool no_chunk;
	enum llm_sched_preempt preempt;
	enum llm_sched_order order;
	const char *swap_dir;
};

/**
 * struct llm_sched_req - one request. Read by llm_sched_submit(), which
 * copies the prompt.
 * @prompt: [n_prompt] token ids
 * @n_prompt: >= 1
 * @max_new: tokens to generate, >= 1 (EOS is not looked at)
 * @alpha_prune: diffkv threshold of this request, or negative: the cache's
 * @alpha_quant: likewise
 * @cache: the cache (policy) it runs in: 0, the one of llm_sched_create(),
 *	or an index from llm_sched_add_cache()
 */
struct llm_sched_req {
	const int32_t *prompt;
	int n_prompt;
	int max_new;
	float alpha_prune;
	float alpha_quant;
	int cache;
};

enum llm_sched_state {
	LLM_SCHED_WAITING = 0,	/* queued, or preempted and queued again */
	LLM_SCHED_RUNNING,	/* holds a slot and pages */
	LLM_SCHED_DONE,		/* generated max_new tokens */
	LLM_SCHED_FAILED,	/* gave up: see reason */
	LLM_SCHED_CANCELLED,	/* llm_sched_cancel(): its owner gave up */
};

/**
 * struct llm_sched_info - what became of a request
 * @state: where it is
 * @n_prompt: its prompt's tokens
 * @n_gen: tokens generated so far
 * @out: [n_gen] the generated tokens, valid until llm_sched_forget() or
 *	llm_sched_destroy()
 * @preemptions: times it was preempted (released and queued again)
 * @swaps: of those, times its pages went to the swap file and came back
 *	(or will: it waits swapped out)
 * @err: -errno of a failure, else 0
 * @reason: a failure in words (empty otherwise)
 * @t_submit: when it was submitted (CLOCK_MONOTONIC seconds)
 * @t_first: when its first token was produced (0: not yet)
 * @t_done: when it completed or failed (0: not yet)
 */
struct llm_sched_info {
	enum llm_sched_state state;
	int n_prompt;
	int n_gen;
	const int32_t *out;
	int preemptions;
	int swaps;
	int err;
	const char *reason;
	double t_submit;
	double t_first;
	double t_done;
};

/**
 * struct llm_sched_stats - counters since llm_sched_create()
 * @steps: steps that ran (a step: its prompts, then its decode tokens)
 * @prefill_tokens: prompt tokens prefilled (recomputed ones included)
 * @chunks: prompt chunks that did not end their prompt
 * @prefill_preemptions: requests preempted mid-prefill (of @preemptions)
 * @decode_tokens: decode tokens run
 * @generated: tokens generated (first tokens included)
 * @preemptions: requests released and queued again for lack of pages
 *	(swapped out or to be recomputed)
 * @swaps_out: preemptions whose pages went to the swap file
 * @swaps_in: swapped requests read back in
 * @swap_bytes_out: file bytes written by @swaps_out
 * @swap_bytes_in: file bytes read by @swaps_in
 * @swap_out_s: seconds spent in swap-outs
 * @swap_in_s: seconds spent in swap-ins
 * @swap_fallbacks: swap-outs that failed (a failed or short write: the
 *	pages stayed) and swap-ins refused for good, recomputed instead
 * @rollbacks: prompts of a refused step given back and queued again
 * @compactions: KVMM_IOC_COMPACT calls
 * @granules_released: granules the compactions gave back
 * @pages_moved: pages the compactions moved
 * @waiting: requests queued now
 * @running: requests holding a slot now
 * @peak_running: most sequences in one step (prompts and decode tokens)
 * @sum_running: sequences of each step, summed (mean = / @steps)
 * @done: requests completed
 * @failed: requests failed
 * @cancelled: requests cancelled (llm_sched_cancel())
 * @pages_used: pages in use after the last step (KVMM_IOC_FENCE), every
 *	cache's
 * @peak_pages: most pages in use after a step
 * @budget_pages: pages of cache 0 the budget can map
 * @page_size: bytes of one page of cache 0
 * @bytes_used: page bytes in use after the last step, every cache's
 * @peak_bytes: most page bytes in use after a step
 * @budget_bytes: page bytes the budget can map
 * @caches: caches (policies) of the scheduler
 * @held_bytes: page bytes of each request right after its prefill, summed
 * @full_bytes: what the full policy would have held for the same tokens
 *	(@full_bytes / @held_bytes: the compression the policy reached)
 */
struct llm_sched_stats {
	uint64_t steps;
	uint64_t prefill_tokens;
	uint64_t chunks;
	uint64_t prefill_preemptions;
	uint64_t decode_tokens;
	uint64_t generated;
	uint64_t preemptions;
	uint64_t swaps_out;
	uint64_t swaps_in;
	uint64_t swap_bytes_out;
	uint64_t swap_bytes_in;
	double swap_out_s;
	double swap_in_s;
	uint64_t swap_fallbacks;
	uint64_t rollbacks;
	uint64_t compactions;
	uint64_t granules_released;
	uint64_t pages_moved;
	int waiting;
	int running;
	int peak_running;
	uint64_t sum_running;
	int done;
	int failed;
	int cancelled;
	uint64_t pages_used;
	uint64_t peak_pages;
	uint64_t budget_pages;
	uint32_t page_size;
	uint64_t bytes_used;
	uint64_t peak_bytes;
	uint64_t budget_bytes;
	int caches;
	uint64_t held_bytes;
	uint64_t full_bytes;
};

struct llm_sched;

int llm_sched_create(struct llm_kv *kv, const struct llm_sched_opts *o,
		     llm_sched_step_fn fn, void *ctx, struct llm_sched **out);
int llm_sched_add_cache(struct llm_sched *s, struct llm_kv *kv, int *index);
void llm_sched_destroy(struct llm_sched *s);
int llm_sched_submit(struct llm_sched *s, const struct llm_sched_req *r,
		     int *id);
int llm_sched_step(struct llm_sched *s);
bool llm_sched_idle(const struct llm_sched *s);
int llm_sched_info(const struct llm_sched *s, int id,
		   struct llm_sched_info *info);
void llm_sched_stats(const struct llm_sched *s, struct llm_sched_stats *st);
int llm_sched_cancel(struct llm_sched *s, int id);
int llm_sched_forget(struct llm_sched *s, int id);
int llm_sched_slot_owner(const struct llm_sched *s, int slot);
int llm_sched_tier_pages(struct llm_sched *s, uint64_t pages[2]);
int llm_sched_set_budget(struct llm_sched *s, uint64_t bytes);
int llm_parse_bytes(const char *s, uint64_t *out);

#endif /* LLM_SCHED_H */
