// SPDX-License-Identifier: MIT
/*
 * select_common.c - page summaries over random attention pools, for the
 * page-selection suites.
 */
#include <check.h>
#include <stdlib.h>

#include "select_common.h"

size_t sel_pool_pages(const struct attn_case *c)
{
	return c->pool_bytes / (2 << 20) * c->a.pages_per_granule;
}

uint32_t sel_hi_updates(const struct attn_case *c, uint32_t **upd)
{
	uint32_t T = c->a.tier[0].tokens, nr = 0;

	*upd = malloc((c->nr_lists * c->a.width + 1) * 12);
	ck_assert_ptr_nonnull(*upd);
	for (size_t li = 0; li < c->nr_lists; li++) {
		uint32_t n = c->ntokens[2 * li];

		for (uint32_t i = 0; i * T < n; i++, nr++) {
			(*upd)[3 * nr] = c->tables[li * c->a.width + i];
			(*upd)[3 * nr + 1] = 0;
			(*upd)[3 * nr + 2] = n - i * T < T ? n - i * T : T;
		}
	}
	return nr;
}

struct kvk_summary_args sel_summary_args(const struct attn_case *c,
					 void *summary, enum kvk_dtype dt,
					 const uint32_t *upd, uint32_t nr)
{
	return (struct kvk_summary_args){
		.pool = c->a.pool,
		.page_size = c->a.page_size,
		.pages_per_granule = c->a.pages_per_granule,
		.head_dim = c->a.head_dim,
		.tier = c->a.tier[0],
		.nr = nr,
		.upd = upd,
		.summary = summary,
		.sum_dtype = dt,
	};
}
