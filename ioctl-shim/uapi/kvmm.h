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
 * Status: KVMM_API_VERSION 1, every command below served by the userspace
 * driver kvshim_ioctl() (ioctl-shim/kvshim.h); see
 * Documentation/uapi/kvmm.rst.
 */
#ifndef _UAPI_KVMM_H
#define _UAPI_KVMM_H

#include <linux/ioctl.h>
#include <linux/types.h>

#define KVMM_API_VERSION 1

#define KVMMIO 0xB7

/* features reported by KVMM_IOC_VERSION */
#define KVMM_FEAT_DEVICE	(1ULL << 0) /* device (CUDA) backend present */
#define KVMM_FEAT_HOST		(1ULL << 1) /* host backend */
#define KVMM_FEAT_HOST_NUMA	(1ULL << 2) /* host NUMA granules */
#define KVMM_FEAT_COMPACT	(1ULL << 3) /* physical compaction */
#define KVMM_FEAT_TIERS		(1ULL << 4) /* two precision tiers */

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
 * @budget_bytes: new physical budget; not below what is in use (-EBUSY)
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

#define KVMM_IOC_VERSION	_IOR(KVMMIO, 0x00, struct kvmm_version)
#define KVMM_IOC_SPACE_CREATE	_IOWR(KVMMIO, 0x01, struct kvmm_space_create)
#define KVMM_IOC_SPACE_DESTROY	_IOW(KVMMIO, 0x02, struct kvmm_space_destroy)
#define KVMM_IOC_SEQ_ADMIT	_IOWR(KVMMIO, 0x03, struct kvmm_seq_admit)
#define KVMM_IOC_SEQ_RELEASE	_IOW(KVMMIO, 0x04, struct kvmm_seq_release)
#define KVMM_IOC_SET_BUDGET	_IOW(KVMMIO, 0x05, struct kvmm_set_budget)
#define KVMM_IOC_COMPACT	_IOWR(KVMMIO, 0x06, struct kvmm_compact)
#define KVMM_IOC_STATS		_IOWR(KVMMIO, 0x07, struct kvmm_stats)
#define KVMM_IOC_PAGE_TABLE_INFO _IOWR(KVMMIO, 0x08, struct kvmm_page_table_info)
/* 0x10 - 0x1f: reserved for swap and placement (a later issue) */

#endif /* _UAPI_KVMM_H */
