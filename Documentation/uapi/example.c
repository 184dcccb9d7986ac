// SPDX-License-Identifier: MIT
/*
 * example.c - the kvmm uapi from a C program, through the typed wrappers
 * of kvmm_lib.h: open, make a space, admit a batch of prompts, read the
 * statistics, release half, compact, read the page-table geometry, clean
 * up. Built and run by `make example` (CI runs it); exits non-zero on the
 * first error.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "kvmm_lib.h"

#define MIB (1ULL << 20)
#define NR_SEQS 8

#define TRY(call)                                                              \
	do {                                                                   \
		int __ret = (call);                                            \
		if (__ret < 0) {                                               \
			fprintf(stderr, "%s: %s\n", #call, strerror(-__ret));  \
			return 1;                                              \
		}                                                              \
	} while (0)

static void print_stats(const char *when, const struct kvmm_stats *st)
{
	printf("%-16s pages %5" PRIu64 " total, %5" PRIu64 " free, %5" PRIu64
	       " + %" PRIu64 " used (hi + lo); %6" PRIu64
	       " tokens; %2" PRIu64 " granules; %8" PRIu64
	       " bytes free but unusable\n",
	       when, (uint64_t)st->pages_total, (uint64_t)st->pages_free,
	       (uint64_t)st->pages_used[0], (uint64_t)st->pages_used[1],
	       (uint64_t)st->tokens[0],
	       (uint64_t)(st->granules_by_loc[0] + st->granules_by_loc[1]),
	       (uint64_t)st->free_unusable_bytes);
}

int main(void)
{
	/* a SmolLM2-135M-like shape: 30 layers, 3 kv heads of 64 */
	struct kvmm_space_create c = {
		.backend = KVMM_BACKEND_HOST,
		.nr_layers = 30,
		.nr_kv_heads = 3,
		.head_dim = 64,
		.nr_tiers = 2,
		.tiers = { { 8, 4, 1, 2 }, { 4, 2, 1, 1 } },
		.max_seqs = NR_SEQS,
		.max_tokens = 2048,
		.va_bytes = 256 * MIB,
		.budget_bytes = 128 * MIB,
	};
	struct kvmm_stats st = { 0 };
	struct kvmm_page_table_info pti = { 0 };
	struct kvmm_compact total;
	uint32_t tokens[NR_SEQS], slots[NR_SEQS], odd[NR_SEQS / 2];
	int fd;

	fd = kvmm_open(KVMM_FEAT_HOST | KVMM_FEAT_COMPACT);
	TRY(fd);
	TRY(kvmm_space_create(fd, &c));
	printf("space %u: %u-byte pages\n", c.space, c.page_size);

	for (int i = 0; i < NR_SEQS; i++)
		tokens[i] = 256 + 200 * i;
	TRY(kvmm_admit(fd, c.space, tokens, NR_SEQS, slots));
	st.space = c.space;
	TRY(kvmm_stats(fd, &st));
	print_stats("admitted 8:", &st);

	for (int i = 0; i < NR_SEQS / 2; i++)
		odd[i] = slots[2 * i + 1];
	TRY(kvmm_release(fd, c.space, odd, NR_SEQS / 2));
	TRY(kvmm_stats(fd, &st));
	print_stats("released 4:", &st);

	/* 1 MiB of page copies per increment, until nothing more to gain */
	TRY(kvmm_compact_all(fd, c.space, MIB, &total));
	TRY(kvmm_stats(fd, &st));
	print_stats("compacted:", &st);
	printf("compaction moved %" PRIu64 " pages (%" PRIu64
	       " bytes) and released %" PRIu64 " granules\n",
	       (uint64_t)total.pages_moved, (uint64_t)total.bytes_moved,
	       (uint64_t)total.granules_released);

	pti.space = c.space;
	TRY(kvmm_page_table_info(fd, &pti));
	printf("page tables: %u entries per list, %u / %u tokens per page "
	       "(hi / lo), %u pages per 2 MiB granule\n",
	       pti.table_width, pti.tokens_per_page[0],
	       pti.tokens_per_page[1], pti.pages_per_granule);

	/* a failing call returns -errno and changes nothing */
	if (kvmm_admit(fd, c.space, (uint32_t[]){ 4096 }, 1, slots) != -E2BIG)
		return 1;

	TRY(kvmm_destroy(fd, c.space));
	TRY(kvmm_close(fd));
	return 0;
}
