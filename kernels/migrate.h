/* SPDX-License-Identifier: MIT */
/*
 * migrate.h - the table rewrite of a batch of page migrations between
 * memory tiers (issue 16): every page table entry, reverse-map entry and
 * freed source of the batch in one pass, one thread per move on the GPU.
 *
 * Unlike compaction's rewrite (kva_rewrite_cpu()), a migration batch may
 * chain moves: a cold HBM page moves to the host and a hot host page takes
 * its place in the same batch, so a page can be the destination of one
 * move and the source of another. The owners (list, entry) of every
 * source are read by the planner before the batch, and a source that is
 * also a destination keeps the owner its incoming move writes, so no two
 * threads touch the same word. See Documentation/placement/index.rst.
 */
#ifndef KVK_MIGRATE_H
#define KVK_MIGRATE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* reverse-map position of a page no list holds */
#define KVK_MIGRATE_POS_NONE UINT32_MAX

/**
 * struct kvk_migrate_args - one batch of moves, src[i] -> dst[i]
 * @table: [lists][@width] page ids
 * @width: entries per list
 * @page_list: [pages] reverse map: owning list
 * @page_pos: [pages] reverse map: entry in the list
 * @nr_lists: lists of @table (for the check)
 * @nr_pages: entries of @page_list and @page_pos (for the check)
 * @n: moves
 * @src: [n] page moved from (its contents are already at @dst)
 * @dst: [n] page moved to, distinct
 * @list: [n] the list owning src[i] before the batch
 * @pos: [n] its entry in that list
 * @src_leaves: [n] 1 when src[i] is no destination of the batch: it takes
 *	@src_owner and KVK_MIGRATE_POS_NONE; 0 when it is (another move
 *	writes it)
 * @src_owner: reverse-map value freed sources get (the allocator's
 *	KVA_OWNER_FREE or KVA_OWNER_HELD)
 *
 * Owner: the caller; every array pointer is a device address on CUDA.
 */
struct kvk_migrate_args {
	uint32_t *table;
	uint32_t width;
	uint32_t *page_list;
	uint32_t *page_pos;
	uint32_t nr_lists;
	uint32_t nr_pages;
	uint32_t n;
	const uint32_t *src;
	const uint32_t *dst;
	const uint32_t *list;
	const uint32_t *pos;
	const uint8_t *src_leaves;
	uint32_t src_owner;
};

int kvk_migrate_check(const struct kvk_migrate_args *a);
int kvk_migrate_rewrite_cpu(const struct kvk_migrate_args *a, void *stream);
#ifdef KVMM_HAVE_CUDA
int kvk_migrate_rewrite_cuda(const struct kvk_migrate_args *a, void *stream);
#endif

#ifdef __cplusplus
}
#endif

#endif /* KVK_MIGRATE_H */
