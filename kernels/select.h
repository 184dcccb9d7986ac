/* SPDX-License-Identifier: MIT */
/*
 * select.h - sparse decode attention over a page selection (Quest-style,
 * issue 16): per (sequence, kv-head), the high-tier pages a query needs
 * are chosen by an upper bound of q . k computed from per-page key
 * summaries (the per-channel min and max of the page's keys); the first
 * (sink) pages and the recent window's pages are always kept. The choice
 * is written as a page table of the same layout as the input's, with token
 * counts to match, so kvk_attn_decode_cpu() / kvk_attn_decode_cuda() run
 * unchanged on it.
 *
 * Each kernel and its CPU reference share one signature: a struct of
 * arguments and a stream. Usable from C and CUDA. See
 * Documentation/kernels/select.rst.
 */
#ifndef KVK_SELECT_H
#define KVK_SELECT_H

#include <stddef.h>
#include <stdint.h>

#include "kvattn.h"
#include "kvk.h"

#ifdef __cplusplus
extern "C" {
#endif

/* high-tier table entries per list the selection handles (shared memory) */
#define KVK_SELECT_MAX_PAGES 8192

/*
 * Page summaries: one row per page id, [page][2][head_dim], the minimum of
 * each channel over the page's keys then the maximum, fp32 or fp16 (with
 * 16-bit keys both are exact). A separate array indexed by page id, owned
 * by whoever owns the pool; a page's row is meaningful once
 * kvk_page_summary_*() has seen its tokens.
 */
static inline size_t kvk_summary_row_bytes(uint32_t head_dim,
					   enum kvk_dtype dt)
{
	return 2 * (size_t)head_dim * kvk_dtype_size(dt);
}

/**
 * struct kvk_select_args - one page selection (one layer)
 * @attn: the dense decode-attention call the selection is made for: its
 *	@q, @group, @head_dim, @tables, @width, @ntokens, @list_base and
 *	@tier[].tokens are read; nothing is written through it
 * @summary: [pages][2][head_dim] min then max per channel, by page id
 * @sum_dtype: KVK_F32 or KVK_F16, of @summary
 * @topk: high-tier pages kept per list, the forced ones included (>= 1);
 *	when the forced pages alone exceed it, all of them are still kept
 * @window: tokens; the pages holding the last @window high-tier tokens are
 *	always kept, and the last (possibly partial) page always is
 * @sink: leading high-tier pages always kept (attention sinks), usually 1
 * @sel_tables: out, [lists][@attn.width]: per list of the batch, the kept
 *	high-tier page ids from the left in their original order, the
 *	low-tier entries copied at the right as they were
 * @sel_ntokens: out, [lists][2]: high-tier tokens of the kept pages
 *	(full pages, plus the last page's own count), low-tier count copied
 *
 * Owner: the caller; read-only for the call except the two outputs, of
 * which only the entries of lists of the batch are written (table entries
 * past a list's kept pages are left as they were). On CUDA every pointer
 * (those in @attn included) is a device address.
 *
 * The bound of page p for query head g is sum over channels e of
 * max(q[g][e] * min[p][e], q[g][e] * max[p][e]) >= q[g] . k for every key
 * k of the page; a page's score is the max of the bound over the group's
 * query heads, so a page is kept when any head may attend it strongly.
 * The non-forced pages are ranked by score, ties to the lower index; the
 * low tier is not selected from (always attended).
 */
struct kvk_select_args {
	struct kvk_attn_args attn;
	const void *summary;
	enum kvk_dtype sum_dtype;
	uint32_t topk;
	uint32_t window;
	uint32_t sink;
	uint32_t *sel_tables;
	uint32_t *sel_ntokens;
};

/**
 * struct kvk_summary_args - fold appended tokens into page summaries
 * @pool: as in struct kvk_attn_args
 * @page_size: bytes
 * @pages_per_granule: pages per 2 MiB
 * @head_dim: 64, 128 or 256
 * @tier: layout of the pages' tier; its keys must be 16-bit (kbits 16)
 * @nr: entries in @upd
 * @upd: [nr][3]: page id, first slot, slot count. First slot 0 resets the
 *	row (a page being filled from the start, or rebuilt); otherwise the
 *	slots are folded into the row's current min and max
 * @summary: in/out, rows as for struct kvk_select_args
 * @sum_dtype: KVK_F32 or KVK_F16
 *
 * Owner: the caller. Entries must name distinct pages (on CUDA they run
 * concurrently). Every pointer is a device address on CUDA.
 */
struct kvk_summary_args {
	uint64_t pool;
	uint32_t page_size;
	uint32_t pages_per_granule;
	uint32_t head_dim;
	struct kvk_attn_tier tier;
	uint32_t nr;
	const uint32_t *upd;
	void *summary;
	enum kvk_dtype sum_dtype;
};

int kvk_select_check(const struct kvk_select_args *s);
int kvk_select_pages_cpu(const struct kvk_select_args *s, void *stream);
int kvk_summary_check(const struct kvk_summary_args *u);
int kvk_page_summary_cpu(const struct kvk_summary_args *u, void *stream);
#ifdef KVMM_HAVE_CUDA
int kvk_select_pages_cuda(const struct kvk_select_args *s, void *stream);
int kvk_page_summary_cuda(const struct kvk_summary_args *u, void *stream);
#endif

#ifdef __cplusplus
}
#endif

#endif /* KVK_SELECT_H */
