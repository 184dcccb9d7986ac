/* SPDX-License-Identifier: MIT WITH Linux-syscall-note */
/*
 * kvmm.h - the kvmm uapi: ioctl numbers and structures.
 *
 * Written as a kernel driver's uapi would be (after kvm.h and drm.h, and
 * Documentation/process/botching-up-ioctls.rst): one magic; numbers never
 * reused; fixed-size fields only; pointers carried as __u64; explicit
 * padding; every structure a multiple of 8 bytes; reserved fields and unknown
 * flags must be zero or the call fails with -EINVAL; growth by appending
 * fields (the size encoded in the ioctl number tells the driver which
 * version of a structure the caller knows).
 *
 * Status: KVMM_API_VERSION 6, every command below served by the userspace
 * driver kvshim_ioctl() (ioctl-shim/kvshim.h); see
 * Documentation/uapi/kvmm.rst. Version 2 adds the data path (SPACE_MAP,
 * STEP_SUBMIT, FENCE) and SEQ_STATS; version 3 the memory tiers
 * (TIER_BUDGET, MIGRATE); version 4 swap to file (SWAP_SETUP, SEQ_SWAP_OUT,
 * SEQ_SWAP_IN); version 5 MIGRATE's KVMM_MIGRATE_GROW_HOST; version 6
 * MIGRATE's KVMM_MIGRATE_KEEP_COPIES and TIER_BUDGET's pages_copies.
 */
#ifndef _UAPI_KVMM_H
#define _UAPI_KVMM_H

#include <linux/ioctl.h>
#include <linux/types.h>

#define KVMM_API_VERSION 6

#define KVMMIO 0xB7

/* va_bytes and budget_bytes are multiples of the granule */
#define KVMM_GRANULE_SIZE (2ULL << 20)

/* features reported by KVMM_IOC_VERSION */
#define KVMM_FEAT_DEVICE	(1ULL << 0) /* device (CUDA) backend present */
#define KVMM_FEAT_HOST		(1ULL << 1) /* host backend */
#define KVMM_FEAT_HOST_NUMA	(1ULL << 2) /* host NUMA granules */
#define KVMM_FEAT_COMPACT	(1ULL << 3) /* physical compaction */
#define KVMM_FEAT_TIERS		(1ULL << 4) /* two precision tiers */
#define KVMM_FEAT_STEP		(1ULL << 5) /* SPACE_MAP, STEP_SUBMIT, FENCE,
					     * SEQ_STATS */
#define KVMM_FEAT_PLACEMENT	(1ULL << 6) /* TIER_BUDGET, MIGRATE: pages in
					     * HBM and host granules */
#define KVMM_FEAT_SWAP		(1ULL << 7) /* SWAP_SETUP, SEQ_SWAP_OUT,
					     * SEQ_SWAP_IN: host spaces */

/**
 * struct kvmm_version - KVMM_IOC_VERSION
 * @api: out: KVMM_API_VERSION served
 * @pad: must be zero
 * @features: out: KVMM_FEAT_* bits
 * @reserved: must be zero
 */
struct kvmm_version {
	__u32 api;
	__u32 pad;
	__u64 features;
	__u64 reserved[4];
};

/* one precision tier: bits in {16, 8, 4, 2, 1}; 16 means fp16, no groups */
struct kvmm_tier {
	__u8 kbits;
	__u8 vbits;
	__u8 kgroups;		/* metadata groups per head vector: 1, 2, 4 */
	__u8 vgroups;
};

#define KVMM_BACKEND_DEVICE	0
#define KVMM_BACKEND_HOST	1

/**
 * struct kvmm_space_create - KVMM_IOC_SPACE_CREATE
 * @space: out: handle of the new space, valid on this file only
 * @backend: KVMM_BACKEND_*
 * @nr_layers: model layers
 * @nr_kv_heads: kv heads per layer
 * @head_dim: 64, 80, 96, 128 or 256
 * @nr_tiers: 1 or 2 entries of @tiers used (high, then low)
 * @tiers: precision tiers
 * @max_seqs: sequence slots
 * @max_tokens: most tokens one sequence may hold
 * @va_bytes: address space to reserve (bytes, multiple of 2 MiB)
 * @budget_bytes: physical memory the space may use (bytes, multiple of 2 MiB)
 * @page_size: out: bytes per page, from the tiers
 * @flags: must be zero
 * @reserved: must be zero
 */
struct kvmm_space_create {
	__u32 space;
	__u32 backend;
	__u32 nr_layers;
	__u32 nr_kv_heads;
	__u32 head_dim;
	__u32 nr_tiers;
	struct kvmm_tier tiers[2];
	__u32 max_seqs;
	__u32 max_tokens;
	__u64 va_bytes;
	__u64 budget_bytes;
	__u32 page_size;
	__u32 flags;
	__u64 reserved[4];
};

/**
 * struct kvmm_space_destroy - KVMM_IOC_SPACE_DESTROY
 * @space: handle
 * @flags: must be zero
 * @reserved: must be zero
 */
struct kvmm_space_destroy {
	__u32 space;
	__u32 flags;
	__u64 reserved[2];
};

/* one sequence of a batched admission */
struct kvmm_seq {
	__u32 slot;		/* out: sequence slot */
	__u32 tokens;		/* in: tokens to reserve for (the prompt) */
	__u64 reserved;
};

/**
 * struct kvmm_seq_admit - KVMM_IOC_SEQ_ADMIT: admit @count sequences, all
 * or none
 * @space: handle
 * @count: entries at @seqs
 * @seqs: user pointer to struct kvmm_seq[@count]
 * @flags: must be zero
 * @pad: must be zero
 * @reserved: must be zero
 */
struct kvmm_seq_admit {
	__u32 space;
	__u32 count;
	__u64 seqs;
	__u32 flags;
	__u32 pad;
	__u64 reserved[2];
};

/**
 * struct kvmm_seq_release - KVMM_IOC_SEQ_RELEASE: free the pages of
 * @count slots, all or none
 * @space: handle
 * @count: entries at @slots
 * @slots: user pointer to __u32[@count]
 * @flags: must be zero
 * @pad: must be zero
 * @reserved: must be zero
 */
struct kvmm_seq_release {
	__u32 space;
	__u32 count;
	__u64 slots;
	__u32 flags;
	__u32 pad;
	__u64 reserved[2];
};

/**
 * struct kvmm_set_budget - KVMM_IOC_SET_BUDGET
 * @space: handle
 * @flags: must be zero
 * @budget_bytes: new physical budget; not below what is in use (-EBUSY).
 *	One over the largest so far grows the space's arrays (and may widen
 *	its tables: map again, Documentation/uapi/kvmm.rst)
 * @reserved: must be zero
 */
struct kvmm_set_budget {
	__u32 space;
	__u32 flags;
	__u64 budget_bytes;
	__u64 reserved[2];
};

/**
 * struct kvmm_compact - KVMM_IOC_COMPACT
 * @space: handle
 * @flags: must be zero
 * @byte_budget: most page bytes to move in this call (0: no limit)
 * @pages_moved: out
 * @bytes_moved: out
 * @granules_released: out
 * @reason: out: why compaction stopped (KVMM_COMPACT_*)
 * @pad: must be zero
 * @reserved: must be zero
 */
struct kvmm_compact {
	__u32 space;
	__u32 flags;
	__u64 byte_budget;
	__u64 pages_moved;
	__u64 bytes_moved;
	__u64 granules_released;
	__u32 reason;
	__u32 pad;
	__u64 reserved[2];
};

#define KVMM_COMPACT_DONE	0 /* cursors met: nothing more to gain */
#define KVMM_COMPACT_BUDGET	1 /* byte budget spent */
#define KVMM_COMPACT_NO_SPACE	2 /* no free page to move into */

/* statistics of one tier at one (layer, head) */
struct kvmm_head_stats {
	__u64 tokens[2];	/* per tier */
	__u64 pages[2];
};

/**
 * struct kvmm_stats - KVMM_IOC_STATS
 * @space: handle
 * @flags: must be zero
 * @page_size: out: bytes
 * @pages_total: out: pages in mapped granules
 * @pages_free: out
 * @pages_used: out: per tier
 * @tokens: out: per tier
 * @granules_by_loc: out: [0] device, [1] host
 * @free_unusable_bytes: out: free bytes in granules that cannot be released
 * @heads: in: user pointer to struct kvmm_head_stats[nr_layers * nr_kv_heads]
 *	or 0 to skip per-head figures
 * @nr_heads: in: entries at @heads (must match the space, or 0)
 * @pad: must be zero
 * @reserved: must be zero
 */
struct kvmm_stats {
	__u32 space;
	__u32 flags;
	__u32 page_size;
	__u32 pad;
	__u64 pages_total;
	__u64 pages_free;
	__u64 pages_used[2];
	__u64 tokens[2];
	__u64 granules_by_loc[2];
	__u64 free_unusable_bytes;
	__u64 heads;
	__u32 nr_heads;
	__u32 pad2;
	__u64 reserved[4];
};

/**
 * struct kvmm_page_table_info - KVMM_IOC_PAGE_TABLE_INFO: what the
 * data-plane kernels need to reach the pages
 * @space: handle
 * @flags: must be zero
 * @pool_base: out: device address of page 0's granule slot
 * @tables: out: device address of the page tables
 * @counts: out: device address of the per-list token counts
 * @page_size: out: bytes
 * @pages_per_granule: out
 * @table_width: out: entries per list
 * @tokens_per_page: out: per tier
 * @reserved: must be zero
 */
struct kvmm_page_table_info {
	__u32 space;
	__u32 flags;
	__u64 pool_base;
	__u64 tables;
	__u64 counts;
	__u32 page_size;
	__u32 pages_per_granule;
	__u32 table_width;
	__u32 tokens_per_page[2];
	__u32 pad;
	__u64 reserved[4];
};

/**
 * struct kvmm_tier_layout - where one tier's tokens sit in a page
 * @kbits: key bits per element (16: fp16, no metadata; 8, 4, 2, 1)
 * @vbits: value bits per element
 * @kgroups: key quantization groups per head vector
 * @vgroups: value quantization groups per head vector
 * @tokens: tokens per page
 * @k_off: key data, [tokens][head_dim * kbits / 8] bytes
 * @km_off: key metadata, fp16 scale and zero per group and token
 * @v_off: value data (token count padded to 2)
 * @vm_off: value metadata
 * @score_off: fp32 score per token
 * @pos_off: int32 position per token
 * @pad: zero
 *
 * Offsets are bytes from the start of a page, multiples of 32.
 */
struct kvmm_tier_layout {
	__u8 kbits;
	__u8 vbits;
	__u8 kgroups;
	__u8 vgroups;
	__u32 tokens;
	__u32 k_off;
	__u32 km_off;
	__u32 v_off;
	__u32 vm_off;
	__u32 score_off;
	__u32 pos_off;
	__u32 pad;
	__u32 pad2;
};

/**
 * struct kvmm_space_map - KVMM_IOC_SPACE_MAP: map a space's page tables for
 * the data-plane kernels, and bind the stream its device work runs on
 * @space: handle
 * @flags: must be zero
 * @stream: in: a cudaStream_t (device spaces) on which every later call's
 *	device work for this space is enqueued, in call order, so that it is
 *	ordered with the caller's kernels without host synchronisation; 0
 *	keeps the space's own stream. Ignored (must be 0) on a host space.
 * @pool_base: out: address of granule slot 0; page p lives at pool_base +
 *	(p / pages_per_granule) * 2 MiB + (p % pages_per_granule) * page_size
 * @tables: out: [lists][table_width] __u32 page ids. List (slot, layer,
 *	head) = (slot * nr_layers + layer) * nr_kv_heads + head; the high
 *	tier's pages from the left of its row, the low tier's from the right
 * @npages: out: [lists][2] __u32 pages per tier
 * @ntokens: out: [lists][2] __u32 tokens per tier; the data-plane kernels
 *	write them as they store, demote, prune and evict tokens
 * @page_size: out: bytes
 * @pages_per_granule: out
 * @table_width: out: entries per list
 * @lists_per_slot: out: nr_layers * nr_kv_heads
 * @nr_layers: out
 * @nr_kv_heads: out
 * @head_dim: out
 * @nr_tiers: out: 1 or 2
 * @max_seqs: out: sequence slots
 * @max_tokens: out: most tokens one sequence may hold
 * @tiers: out: [0] the high tier, [1] the low tier (the high one again
 *	in a one-tier space)
 * @reserved: must be zero
 *
 * Addresses are device addresses on a device space, host addresses on a
 * host space, valid until the space is destroyed (tables and table_width:
 * until a SET_BUDGET widens the tables). The arrays are the
 * subsystem's own: a kernel may write ntokens and the pages' contents;
 * tables and npages change only through the ioctls.
 */
struct kvmm_space_map {
	__u32 space;
	__u32 flags;
	__u64 stream;
	__u64 pool_base;
	__u64 tables;
	__u64 npages;
	__u64 ntokens;
	__u32 page_size;
	__u32 pages_per_granule;
	__u32 table_width;
	__u32 lists_per_slot;
	__u32 nr_layers;
	__u32 nr_kv_heads;
	__u32 head_dim;
	__u32 nr_tiers;
	__u32 max_seqs;
	__u32 max_tokens;
	struct kvmm_tier_layout tiers[2];
	__u64 reserved[4];
};

/* struct kvmm_step_op.op */
#define KVMM_OP_APPEND	1 /* before a decode token: a page for every tier
			   * of each slot's lists whose last page is full */
#define KVMM_OP_TRIM	2 /* after a prompt: each list keeps the pages its
			   * token counts need, the low ones moved to the
			   * right of its row; the rest is freed and the slot
			   * decodes from now on */
#define KVMM_OP_EVICT	3 /* KV-Compress: free whole pages of the lowest
			   * scored tokens of each slot, across all its
			   * lists, down to arg0 pages; then as SHRINK */
#define KVMM_OP_SHRINK	4 /* give back the pages the token counts no
			   * longer need */
#define KVMM_OP_MAX	4

/**
 * struct kvmm_step_slot - one slot of a step op
 * @slot: sequence slot
 * @arg0: KVMM_OP_EVICT: pages the slot may keep, summed over its lists
 *	(ceil(tokens / tokens per page) per list); else zero
 * @arg1: KVMM_OP_EVICT: first protected position (the recent window);
 *	else zero
 * @pad: zero
 */
struct kvmm_step_slot {
	__u32 slot;
	__u32 arg0;
	__u32 arg1;
	__u32 pad;
};

/**
 * struct kvmm_step_op - one batched operation of a step
 * @op: KVMM_OP_*
 * @count: entries at @slots, each slot at most once per op
 * @slots: user pointer to struct kvmm_step_slot[@count]
 * @sinks: KVMM_OP_EVICT: positions below this are never evicted; else 0
 * @flags: must be zero
 * @reserved: must be zero
 */
struct kvmm_step_op {
	__u32 op;
	__u32 count;
	__u64 slots;
	__u32 sinks;
	__u32 flags;
	__u64 reserved;
};

/**
 * struct kvmm_step_submit - KVMM_IOC_STEP_SUBMIT: enqueue a step's page
 * work and return at once with a fence (after DRM's execbuffer)
 * @space: handle
 * @nr_ops: entries at @ops, at most KVMM_STEP_MAX_OPS
 * @ops: user pointer to struct kvmm_step_op[@nr_ops], run in order
 * @fence: out: sequence number of this submission (KVMM_IOC_FENCE)
 * @flags: must be zero
 * @pad: must be zero
 * @reserved: must be zero
 *
 * Every op of the call is validated (slots in range and in the state the
 * op needs, arguments) and the pages it may take are accounted before any
 * is enqueued: the call fails whole, having changed nothing, or enqueues
 * all. On a device space the work is enqueued on the bound stream and no
 * call waits for the device: a refusal only the device can see (a list
 * that outgrew its table) is reported by the next KVMM_IOC_FENCE. On a
 * host space the ops run before the call returns.
 */
struct kvmm_step_submit {
	__u32 space;
	__u32 nr_ops;
	__u64 ops;
	__u64 fence;
	__u32 flags;
	__u32 pad;
	__u64 reserved[2];
};

#define KVMM_STEP_MAX_OPS 16

/* struct kvmm_fence.flags */
#define KVMM_FENCE_WAIT	(1U << 0) /* block until @seqno has completed */

/**
 * struct kvmm_fence - KVMM_IOC_FENCE: whether a submission has completed,
 * and the space's page counts as of the latest completed one
 * @space: handle
 * @flags: KVMM_FENCE_WAIT or 0 (query, never blocks)
 * @seqno: a fence of KVMM_IOC_STEP_SUBMIT; 0 means the latest
 * @signalled: out: 1 when @seqno has completed
 * @error: out: the first refusal the device made since the last FENCE
 *	(-ENOSPC, -E2BIG; the op refused changed nothing), or 0
 * @completed: out: the latest completed sequence number
 * @pages_free: out: free pages as of @completed
 * @pages_used: out: pages owned by slots as of @completed
 * @reserved: must be zero
 */
struct kvmm_fence {
	__u32 space;
	__u32 flags;
	__u64 seqno;
	__u32 signalled;
	__s32 error;
	__u64 completed;
	__u64 pages_free;
	__u64 pages_used;
	__u64 reserved[2];
};

/* struct kvmm_seq_info.state */
#define KVMM_SEQ_FREE		0
#define KVMM_SEQ_PREFILL	1 /* admitted, not trimmed */
#define KVMM_SEQ_DECODE		2

/**
 * struct kvmm_seq_info - one slot of KVMM_IOC_SEQ_STATS
 * @slot: in: sequence slot
 * @state: out: KVMM_SEQ_*
 * @pages: out: pages per tier, summed over the slot's lists
 * @tokens: out: tokens per tier, summed over the slot's lists
 */
struct kvmm_seq_info {
	__u32 slot;
	__u32 state;
	__u64 pages[2];
	__u64 tokens[2];
};

/**
 * struct kvmm_seq_stats - KVMM_IOC_SEQ_STATS: what some slots hold
 * @space: handle
 * @count: entries at @seqs
 * @seqs: user pointer to struct kvmm_seq_info[@count]
 * @flags: must be zero
 * @pad: must be zero
 * @reserved: must be zero
 *
 * Control plane: on a device space it waits for the space's device work.
 */
struct kvmm_seq_stats {
	__u32 space;
	__u32 count;
	__u64 seqs;
	__u32 flags;
	__u32 pad;
	__u64 reserved[2];
};

/* memory tiers of a page (struct kvmm_tier_budget arrays) */
#define KVMM_MEM_HBM		0 /* device memory */
#define KVMM_MEM_HOST		1 /* host memory (host-NUMA granules) */

/* struct kvmm_tier_budget.flags */
#define KVMM_TIER_SET_HBM	(1U << 0) /* set the HBM cap from @hbm_bytes */
#define KVMM_TIER_SET_HOST	(1U << 1) /* set the host cap from @host_bytes */
#define KVMM_TIER_UNCAPPED	(~0ULL)	  /* a cap value: none of its own */

/**
 * struct kvmm_tier_budget - KVMM_IOC_TIER_BUDGET: cap the memory each
 * tier of a space may map, and read what each tier holds
 * @space: handle
 * @flags: KVMM_TIER_SET_* (0: only read)
 * @hbm_bytes: in/out: the HBM cap (multiple of 2 MiB, at most the device's
 *	memory), or KVMM_TIER_UNCAPPED (the default)
 * @host_bytes: in/out: the host cap (at most the host tier the backend
 *	offers), or KVMM_TIER_UNCAPPED
 * @granules: out: [KVMM_MEM_*] granules mapped per tier
 * @pages_used: out: [KVMM_MEM_*] pages owned by slots per tier
 * @pages_free: out: [KVMM_MEM_*] free pages per tier
 * @pages_held: out: pages a migration keeps until readers are done
 * @pages_copies: out (version 6): host pages holding clean copies of HBM
 *	pages (KVMM_MIGRATE_KEEP_COPIES); ignored in
 * @reserved: must be zero
 *
 * The space budget (SET_BUDGET) still bounds both tiers together; a space
 * grows HBM granules up to the HBM cap, then host granules. A cap below
 * what its tier holds now is -EBUSY; one over the tier's memory -E2BIG.
 * Both caps are set, or neither.
 */
struct kvmm_tier_budget {
	__u32 space;
	__u32 flags;
	__u64 hbm_bytes;
	__u64 host_bytes;
	__u64 granules[2];
	__u64 pages_used[2];
	__u64 pages_free[2];
	__u64 pages_held;
	__u64 pages_copies;
	__u64 reserved[2];
};

/* struct kvmm_migrate.flags */
#define KVMM_MIGRATE_GROW_HOST	(1U << 0) /* map host granules (within the
					   * host and space budgets) so the
					   * call's demotions have room */
#define KVMM_MIGRATE_KEEP_COPIES (1U << 1) /* a promoted full page keeps its
					    * host page as a clean copy; a
					    * page with one is demoted
					    * without a copy (version 6) */

/* struct kvmm_migrate.reason */
#define KVMM_MIGRATE_DONE	0 /* every request served */
#define KVMM_MIGRATE_BUDGET	1 /* byte budget spent */
#define KVMM_MIGRATE_NO_ROOM	2 /* no page free in the tier to move to */

/**
 * struct kvmm_migrate - KVMM_IOC_MIGRATE: move pages between the tiers
 * @space: handle
 * @flags: KVMM_MIGRATE_GROW_HOST (version 5): first map as many host
 *	granules as the call's demotions may need (at most one a page of
 *	@nr_promote + @nr_demote, or of @byte_budget), within the host tier's
 *	and the space's budgets; a failed call gives them back.
 *	KVMM_MIGRATE_KEEP_COPIES (version 6): keep clean host copies (above)
 * @byte_budget: most page bytes to copy in this call (0: no limit)
 * @promote: user pointer to __u32[@nr_promote]: page ids (as the tables
 *	hold them) of host pages wanted in HBM, most wanted first
 * @demote: user pointer to __u32[@nr_demote]: HBM page ids that may go to
 *	the host, coldest first: victims for the promotions, then for
 *	@hbm_reserve
 * @nr_promote: entries at @promote
 * @nr_demote: entries at @demote
 * @hbm_reserve: free HBM pages to keep: further victims are demoted
 *	while fewer are free
 * @reason: out: why it stopped (KVMM_MIGRATE_*)
 * @pages_promoted: out
 * @pages_demoted: out
 * @bytes_moved: out
 * @reserved: must be zero
 *
 * A page's contents move with it and its table entry is rewritten; page
 * ids of other pages do not change. Every id must be owned by a slot, of
 * the tier it leaves, and listed once, or the call fails with -EINVAL
 * having changed nothing. A device-resident space answers -EOPNOTSUPP.
 */
struct kvmm_migrate {
	__u32 space;
	__u32 flags;
	__u64 byte_budget;
	__u64 promote;
	__u64 demote;
	__u32 nr_promote;
	__u32 nr_demote;
	__u32 hbm_reserve;
	__u32 reason;
	__u64 pages_promoted;
	__u64 pages_demoted;
	__u64 bytes_moved;
	__u64 reserved[2];
};

/* swap to file */
#define KVMM_SWAP_PATH_MAX	4096	/* bytes of a directory, NUL included */
#define KVMM_SWAP_MAX_SEQS	4096	/* sequences one space holds swapped */

/**
 * struct kvmm_swap_setup - KVMM_IOC_SWAP_SETUP: give a space its swap file,
 * or take it away
 * @space: handle
 * @flags: must be zero
 * @dir: user pointer to a NUL-terminated directory path (fewer than
 *	KVMM_SWAP_PATH_MAX bytes) where the file is made; 0 closes the file
 * @chunk_bytes: bytes of one I/O request, a multiple of 4096, at most
 *	64 MiB (0: 1 MiB)
 * @depth: requests in flight, at most 64 (0: 8)
 * @direct: out: 1 when the file is written with O_DIRECT (0: the file
 *	system refused it, as tmpfs does)
 * @reserved: must be zero
 *
 * The file is created under @dir and unlinked at once: it lives as long as
 * the space holds it and leaves nothing behind, even if the process dies.
 * A space that has a file gets another only after closing it; closing it
 * (or destroying the space) forgets every sequence swapped out. -EBUSY: a
 * file already open, or a close while sequences are swapped out;
 * -EOPNOTSUPP: a device space (its tables are on the device).
 */
struct kvmm_swap_setup {
	__u32 space;
	__u32 flags;
	__u64 dir;
	__u32 chunk_bytes;
	__u32 depth;
	__u32 direct;
	__u32 pad;
	__u64 reserved[2];
};

/* struct kvmm_seq_swap.flags */
#define KVMM_SWAP_DISCARD	(1U << 0) /* SEQ_SWAP_IN: forget @handle,
					   * read nothing */

/**
 * struct kvmm_seq_swap - KVMM_IOC_SEQ_SWAP_OUT and KVMM_IOC_SEQ_SWAP_IN:
 * a decoding sequence's pages to the space's swap file, and back
 * @space: handle
 * @slot: SWAP_OUT: in: a slot in the decode state; SWAP_IN: out: the free
 *	slot the sequence came back in
 * @handle: SWAP_OUT: out: names the swapped sequence (never reused);
 *	SWAP_IN: in
 * @flags: SWAP_OUT: must be zero; SWAP_IN: KVMM_SWAP_DISCARD or 0
 * @pad: must be zero
 * @bytes: out: file bytes written (SWAP_OUT) or read (SWAP_IN)
 * @pages: out: pages freed (SWAP_OUT) or taken (SWAP_IN)
 * @reserved: must be zero
 *
 * SWAP_OUT writes every page of the slot (io_uring, registered buffers,
 * several requests in flight) and frees them only once the write has
 * completed in full: a failed or short write returns its error (-EIO)
 * with the slot, its pages and their contents as they were. SWAP_IN takes
 * a free slot, pages for the recorded token counts (growing the space
 * within its budget), reads the file and fills them: the same tokens at
 * the same table positions, new page ids; the handle is then gone. It
 * fails with -ENOSPC (no room in the budget) or -EBUSY (no free slot)
 * having changed nothing: try later, or discard. -ENOENT: no swap file, or
 * no such handle; -EOPNOTSUPP: a device space.
 */
struct kvmm_seq_swap {
	__u32 space;
	__u32 slot;
	__u64 handle;
	__u32 flags;
	__u32 pad;
	__u64 bytes;
	__u64 pages;
	__u64 reserved[2];
};

#define KVMM_IOC_VERSION	_IOR(KVMMIO, 0x00, struct kvmm_version)
#define KVMM_IOC_SPACE_CREATE	_IOWR(KVMMIO, 0x01, struct kvmm_space_create)
#define KVMM_IOC_SPACE_DESTROY	_IOW(KVMMIO, 0x02, struct kvmm_space_destroy)
#define KVMM_IOC_SEQ_ADMIT	_IOWR(KVMMIO, 0x03, struct kvmm_seq_admit)
#define KVMM_IOC_SEQ_RELEASE	_IOW(KVMMIO, 0x04, struct kvmm_seq_release)
#define KVMM_IOC_SET_BUDGET	_IOW(KVMMIO, 0x05, struct kvmm_set_budget)
#define KVMM_IOC_COMPACT	_IOWR(KVMMIO, 0x06, struct kvmm_compact)
#define KVMM_IOC_STATS		_IOWR(KVMMIO, 0x07, struct kvmm_stats)
#define KVMM_IOC_PAGE_TABLE_INFO _IOWR(KVMMIO, 0x08, struct kvmm_page_table_info)
#define KVMM_IOC_SPACE_MAP	_IOWR(KVMMIO, 0x09, struct kvmm_space_map)
#define KVMM_IOC_STEP_SUBMIT	_IOWR(KVMMIO, 0x0a, struct kvmm_step_submit)
#define KVMM_IOC_FENCE		_IOWR(KVMMIO, 0x0b, struct kvmm_fence)
#define KVMM_IOC_SEQ_STATS	_IOWR(KVMMIO, 0x0c, struct kvmm_seq_stats)
#define KVMM_IOC_TIER_BUDGET	_IOWR(KVMMIO, 0x10, struct kvmm_tier_budget)
#define KVMM_IOC_MIGRATE	_IOWR(KVMMIO, 0x11, struct kvmm_migrate)
#define KVMM_IOC_SWAP_SETUP	_IOWR(KVMMIO, 0x12, struct kvmm_swap_setup)
#define KVMM_IOC_SEQ_SWAP_OUT	_IOWR(KVMMIO, 0x13, struct kvmm_seq_swap)
#define KVMM_IOC_SEQ_SWAP_IN	_IOWR(KVMMIO, 0x14, struct kvmm_seq_swap)
/* 0x15 - 0x1f: reserved for placement */

#endif /* _UAPI_KVMM_H */
