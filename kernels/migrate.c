// SPDX-License-Identifier: MIT
/*
 * migrate.c - CPU reference of the migration rewrite (migrate.h).
 */
#include <errno.h>

#include "migrate.h"

/**
 * kvk_migrate_check() - validate a migration batch's arguments (host side)
 * @a: arguments; on the CUDA path only the scalars are read
 *
 * Return: 0, or -EINVAL for a missing array, a zero width, or a batch
 * larger than the pages.
 */
int kvk_migrate_check(const struct kvk_migrate_args *a)
{
	if (!a || !a->width || !a->nr_lists || a->n > a->nr_pages)
		return -EINVAL;
	if (!a->n)
		return 0;
	if (!a->table || !a->page_list || !a->page_pos || !a->src ||
	    !a->dst || !a->list || !a->pos || !a->src_leaves)
		return -EINVAL;
	return 0;
}

/**
 * kvk_migrate_rewrite_cpu() - point the tables at a batch's destinations
 * @a: batch (host memory)
 * @stream: unused (the CUDA version's stream)
 *
 * For each move: table[list][pos] = dst, the reverse map of dst names
 * (list, pos), and a source that leaves takes @a->src_owner. Moves are
 * independent by construction (struct kvk_migrate_args), so their order
 * does not matter. Besides kvk_migrate_check(), each id is range-checked
 * first: nothing is written when one is out of range.
 *
 * Return: 0, or -EINVAL.
 */
int kvk_migrate_rewrite_cpu(const struct kvk_migrate_args *a, void *stream)
{
	int ret = kvk_migrate_check(a);

	(void)stream;
	if (ret)
		return ret;
	for (uint32_t i = 0; i < a->n; i++)
		if (a->src[i] >= a->nr_pages || a->dst[i] >= a->nr_pages ||
		    a->list[i] >= a->nr_lists || a->pos[i] >= a->width)
			return -EINVAL;
	for (uint32_t i = 0; i < a->n; i++) {
		uint32_t s = a->src[i], d = a->dst[i];

		a->table[(size_t)a->list[i] * a->width + a->pos[i]] = d;
		a->page_list[d] = a->list[i];
		a->page_pos[d] = a->pos[i];
		if (a->src_leaves[i]) {
			a->page_list[s] = a->src_owner;
			a->page_pos[s] = KVK_MIGRATE_POS_NONE;
		}
	}
	return 0;
}
