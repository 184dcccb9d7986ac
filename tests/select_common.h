/* SPDX-License-Identifier: MIT */
/*
 * select_common.h - page summaries and selection arguments over a random
 * attention pool (attn_common.h), shared by the CPU and GPU suites of
 * page selection.
 */
#ifndef SELECT_COMMON_H
#define SELECT_COMMON_H

#include "attn_common.h"
#include "select.h"

/* pages the pool of @c can hold: the rows of a summary array */
size_t sel_pool_pages(const struct attn_case *c);
/* [nr][3] entries (page, 0, tokens) for every high-tier page; returns nr */
uint32_t sel_hi_updates(const struct attn_case *c, uint32_t **upd);
struct kvk_summary_args sel_summary_args(const struct attn_case *c,
					 void *summary, enum kvk_dtype dt,
					 const uint32_t *upd, uint32_t nr);

#endif /* SELECT_COMMON_H */
