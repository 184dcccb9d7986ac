// SPDX-License-Identifier: MIT
/*
 * check_swap.c - swap to file (issue 16): the runtime's swap file
 * (O_DIRECT where the file system allows, io_uring with registered
 * buffers, several chunks in flight) round-trips data and fails whole on
 * an injected error or short write; a sequence's pages go to the file and
 * come back into new pages with the same contents, and a write killed
 * midway leaves the sequence intact (fault injection).
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kva.h"
#include "kvtest.h"
#include "pool_common.h"

#define G KVRT_GRANULE_SIZE

static struct kvrt_swapfile *swap_open(char *path, uint32_t chunk,
				       uint32_t depth)
{
	struct kvrt_swapfile *sf;
	const char *dir = getenv("KVMM_SWAP_DIR");
	int fd;

	snprintf(path, 256, "%s/kvmm-swap-XXXXXX", dir ? dir : "/tmp");
	fd = mkstemp(path);
	ck_assert_int_ge(fd, 0);
	close(fd);
	ck_assert_int_eq(kvrt_swapfile_open(path, chunk, depth, &sf), 0);
	unlink(path);
	printf("# swap file: %s, %s\n", kvrt_swapfile_engine(sf),
	       kvrt_swapfile_direct(sf) ? "O_DIRECT" :
					  "buffered (no O_DIRECT here)");
	return sf;
}

/* the paths the tests take: staged, zero-copy, either on pwritev/preadv */
static const unsigned int flags[] = {
	0, KVRT_SWAP_ZEROCOPY, KVRT_SWAP_SYNC,
	KVRT_SWAP_ZEROCOPY | KVRT_SWAP_SYNC,
};

/*
 * Host buffers round-trip on every path: an aligned buffer goes zero-copy
 * where asked, an unaligned one is staged always; an error or a
 * short transfer that stays short, on a write or a read, fails the call
 * whole, and the file works again after.
 */
START_TEST(test_swapfile_roundtrip)
{
	uint64_t seed = kvtest_seed("swapfile_roundtrip");
	size_t len = 5 * SZ_1M + 3 * KVRT_SWAP_ALIGN;
	unsigned int f = flags[_i];
	unsigned char *src, *dst, *abuf = NULL, *bbuf = NULL;
	struct kvrt_swapfile *sf;
	char path[256];

	ck_assert_int_eq(posix_memalign((void **)&abuf, KVRT_SWAP_ALIGN,
					len + KVRT_SWAP_ALIGN), 0);
	ck_assert_int_eq(posix_memalign((void **)&bbuf, KVRT_SWAP_ALIGN,
					len + KVRT_SWAP_ALIGN), 0);
	sf = swap_open(path, 256 * 1024, 4);
	ck_assert_int_eq(kvrt_swapfile_set_flags(sf, 1U << 7), -EINVAL);
	ck_assert_int_eq(kvrt_swapfile_set_flags(sf, f), 0);
	ck_assert_str_eq(kvrt_swapfile_path(sf), "none");
	printf("# flags %#x: engine %s\n", f, kvrt_swapfile_engine(sf));
	for (int al = 1; al >= 0; al--) {
		/* aligned, then off by 64 bytes: staged */
		src = abuf + (al ? 0 : 64);
		dst = bbuf + (al ? 0 : 64);
		for (size_t i = 0; i < len; i++)
			src[i] = kvtest_rand(&seed) >> 56;
		ck_assert_int_eq(kvrt_swapfile_write(sf, KVRT_SWAP_ALIGN, src,
						     len), 0);
		ck_assert_str_eq(kvrt_swapfile_path(sf),
				 al && (f & KVRT_SWAP_ZEROCOPY) ?
					 "zero-copy" : "staged");
		ck_assert_int_eq(kvrt_swapfile_sync(sf), 0);
		memset(dst, 0, len);
		ck_assert_int_eq(kvrt_swapfile_read(sf, KVRT_SWAP_ALIGN, dst,
						    len), 0);
		ck_assert_int_eq(memcmp(src, dst, len), 0);
		/* unaligned offset or length */
		ck_assert_int_eq(kvrt_swapfile_write(sf, 1, src,
						     KVRT_SWAP_ALIGN),
				 -EINVAL);
		ck_assert_int_eq(kvrt_swapfile_write(sf, 0, src, 100),
				 -EINVAL);
		/* an error, then a short write that stays short: both fail */
		kvrt_swapfile_fault(sf, 3, KVRT_SWAP_FAULT_EIO);
		ck_assert_int_eq(kvrt_swapfile_write(sf, 0, src, len), -EIO);
		kvrt_swapfile_fault(sf, 2, KVRT_SWAP_FAULT_SHORT);
		ck_assert_int_eq(kvrt_swapfile_write(sf, 0, src, len), -EIO);
		kvrt_swapfile_fault(sf, 0, 0);
		/* and it works again */
		ck_assert_int_eq(kvrt_swapfile_write(sf, 0, src, len), 0);
		/* reads fail the same way; a write fault does not count them */
		kvrt_swapfile_fault(sf, 1, KVRT_SWAP_FAULT_EIO);
		ck_assert_int_eq(kvrt_swapfile_read(sf, 0, dst, len), 0);
		kvrt_swapfile_fault(sf, 4,
				    KVRT_SWAP_FAULT_EIO | KVRT_SWAP_FAULT_READ);
		ck_assert_int_eq(kvrt_swapfile_read(sf, 0, dst, len), -EIO);
		kvrt_swapfile_fault(sf, 2,
				    KVRT_SWAP_FAULT_SHORT | KVRT_SWAP_FAULT_READ);
		ck_assert_int_eq(kvrt_swapfile_read(sf, 0, dst, len),
				 -ENODATA);
		kvrt_swapfile_fault(sf, 0, 0);
		memset(dst, 0, len);
		ck_assert_int_eq(kvrt_swapfile_read(sf, 0, dst, len), 0);
		ck_assert_int_eq(memcmp(src, dst, len), 0);
		/* past the end */
		ck_assert_int_ne(kvrt_swapfile_read(sf, 64 * SZ_1M, dst,
						    KVRT_SWAP_ALIGN), 0);
	}
	kvrt_swapfile_close(sf);
	free(abuf);
	free(bbuf);
}
END_TEST

/*
 * DiffKV tiers, so that lists have low-tier pages at their right end; page
 * sizes (head_dim 128): 6784 bytes, no 512 multiple: staged where
 * O_DIRECT is; 4096: zero-copy on any file; 7680: zero-copy where the
 * file's O_DIRECT alignment is at most 512 bytes
 */
static const struct kva_tier tiers_6784[] = { { 8, 4, 1, 2 }, { 4, 2, 1, 1 } };
static const struct kva_tier tiers_4096[] = { { 16, 8, 1, 1 },
					      { 16, 4, 1, 1 } };
static const struct kva_tier tiers_7680[] = { { 8, 8, 1, 1 }, { 4, 4, 1, 1 } };

static void open_pool(struct kvrt_ctx **ctx, struct kva_pool **pool,
		      const struct kva_tier *tiers)
{
	struct kvrt_ctx_opts o = { .backend = KVRT_BACKEND_HOST,
				   .host_mem_bytes = 64 * G };
	struct kva_pool_params p = {
		.va_bytes = 32 * G,
		.budget_bytes = 16 * G,
		.head_dim = 128,
		.nr_tiers = 2,
		.nr_slots = 4,
		.nr_layers = 2,
		.nr_heads = 4,
		.max_tokens = 4096,
		.wmark_low = 1,
		.wmark_high = 1,
	};

	memcpy(p.tiers, tiers, 2 * sizeof(*tiers));
	ck_assert_int_eq(kvrt_ctx_create(&o, ctx), 0);
	p.ctx = *ctx;
	ck_assert_int_eq(kva_pool_create(&p, pool), 0);
	ck_assert_int_eq(kva_pool_grow(*pool, 16), 0);
}

/* the pattern of page k (swap order) of list j of a slot: slot-free */
static uint32_t word(uint32_t j, uint32_t k, uint32_t i)
{
	return j * 2654435761U ^ k * 40503U ^ i * 7U;
}

static uint32_t *page_of(struct kva_pool *pool, uint32_t l, uint32_t k)
{
	uint32_t nh = pool->npages[2 * l];
	uint32_t e = k < nh ? k : pool->width - 1 - (k - nh);

	return (uint32_t *)(uintptr_t)kva_page_addr(
		pool, pool->table[(size_t)l * pool->width + e]);
}

/* tag (or check) every token-holding page of @slot */
static void tags(struct kva_pool *pool, uint32_t slot, int check)
{
	for (uint32_t j = 0; j < pool->lists_per_slot; j++) {
		uint32_t l = slot * pool->lists_per_slot + j;
		uint32_t nh = kvmm_div_round_up(pool->ntokens[2 * l],
						pool->layout[KVA_HI].tokens);
		uint32_t nl = kvmm_div_round_up(pool->ntokens[2 * l + 1],
						pool->layout[KVA_LO].tokens);

		for (uint32_t k = 0; k < pool->npages[2 * l] +
					 pool->npages[2 * l + 1]; k++) {
			uint32_t *w = page_of(pool, l, k);
			int used = k < pool->npages[2 * l] ?
					   k < nh :
					   k - pool->npages[2 * l] < nl;

			/* high pages by index, low ones from 1000 */
			uint32_t tag = k < pool->npages[2 * l] ?
					       k :
					       1000 + k - pool->npages[2 * l];

			if (!used)
				continue;
			for (uint32_t i = 0; i < pool->page_size / 4; i++) {
				if (!check)
					w[i] = word(j, tag, i);
				else if (w[i] != word(j, tag, i))
					/* (one assertion per word is slow) */
					ck_abort_msg("slot %u list %u page %u "
						     "word %u", slot, j, k, i);
			}
		}
	}
}

static uint64_t state(const struct kva_pool *pool)
{
	uint64_t h = 1469598103934665603ULL;
	const unsigned char *c;
	size_t n;

#define MIX(p, len)                                                            \
	for (c = (const unsigned char *)(p), n = (len); n--; c++)              \
		h = (h ^ *c) * 1099511628211ULL;
	MIX(&pool->head, 8);
	MIX(&pool->tail, 8);
	MIX(pool->ring, pool->nr_page_ids * 4);
	MIX(pool->page_list, pool->nr_page_ids * 4);
	MIX(pool->table, (size_t)pool->nr_lists * pool->width * 4);
	MIX(pool->npages, (size_t)pool->nr_lists * 8);
	MIX(pool->ntokens, (size_t)pool->nr_lists * 8);
	MIX(pool->slot_state, pool->nr_slots);
#undef MIX
	return h;
}

/* which path a pool's pages take under @f */
static const char *want_path(const struct kva_pool *pool,
			     const struct kvrt_swapfile *sf, unsigned int f)
{
	return pool->page_size % kvrt_swapfile_dio_align(sf) ||
			       !(f & KVRT_SWAP_ZEROCOPY) ?
		       "staged" :
		       "zero-copy";
}

/*
 * A sequence goes out and comes back, on the path @f asks for (staged
 * through the registered buffers, the default and the path of device
 * pages; zero-copy from the pages; either on pwritev/preadv), with pages
 * of @tiers (head_dim 128): a killed write
 * (an error on the 2nd chunk, then one cut short midway) leaves it intact,
 * pages and contents; a confirmed one frees its pages; others reuse and
 * scribble on them; a killed read (an error, then a short read) leaves
 * the pool's arrays exactly as they were; swap-in restores every
 * token-holding page's contents.
 */
static void swap_sequence(uint64_t seed, const struct kva_tier *tiers,
			  unsigned int f)
{
	struct kvrt_ctx *ctx;
	struct kva_pool *pool;
	struct kvrt_swapfile *sf;
	struct kva_swap_rec rec;
	uint32_t slots[2] = { 0, 1 }, prompt[2] = { 1500, 900 };
	uint32_t hi[16], lo[16], s3 = 3, s2 = 2, p2 = 3000;
	uint64_t before, used_before;
	char path[256];

	open_pool(&ctx, &pool, tiers);
	sf = swap_open(path, 64 * 1024, 4);
	ck_assert_int_eq(kvrt_swapfile_set_flags(sf, f), 0);
	printf("# page %u bytes, O_DIRECT alignment %u, flags %#x: %s "
	       "expected\n", pool->page_size, kvrt_swapfile_dio_align(sf), f,
	       want_path(pool, sf, f));
	ck_assert_int_eq(kva_admit(pool, slots, prompt, 2), 0);
	for (uint32_t k = 0; k < 16; k++) {
		uint32_t p = prompt[k / 8], l = kvtest_rand(&seed) % (p + 1);

		lo[k] = l;
		hi[k] = p - l;
	}
	ck_assert_int_eq(kva_trim(pool, slots, 2, hi, lo), 0);
	ck_assert_int_eq(kva_append(pool, slots, 2), 0);
	tags(pool, 0, 0);
	tags(pool, 1, 0);
	CHECK_POOL(pool);
	ck_assert_uint_gt(kva_swap_bytes(pool, 1), 4 * 64 * 1024);

	/* killed midway: nothing lost */
	before = state(pool);
	kvrt_swapfile_fault(sf, 2, KVRT_SWAP_FAULT_EIO);
	ck_assert_int_eq(kva_swap_out(pool, sf, 1, 0, &rec), -EIO);
	ck_assert_str_eq(kvrt_swapfile_path(sf), want_path(pool, sf, f));
	ck_assert_uint_eq(state(pool), before);
	tags(pool, 1, 1);
	kvrt_swapfile_fault(sf, 3, KVRT_SWAP_FAULT_SHORT);
	ck_assert_int_eq(kva_swap_out(pool, sf, 1, 0, &rec), -EIO);
	kvrt_swapfile_fault(sf, 0, 0);
	ck_assert_uint_eq(state(pool), before);
	ck_assert_int_eq(pool->slot_state[1], KVA_SLOT_DECODE);
	tags(pool, 1, 1);
	CHECK_POOL(pool);
	/* refusals */
	ck_assert_int_eq(kva_swap_out(pool, sf, 3, 0, &rec), -ENOENT);
	ck_assert_int_eq(kva_swap_out(pool, sf, 1, 7, &rec), -EINVAL);
	ck_assert_uint_eq(state(pool), before);

	/* confirmed: the pages go */
	used_before = pool->nr_used;
	ck_assert_int_eq(kva_swap_out(pool, sf, 1, KVRT_SWAP_ALIGN, &rec), 0);
	ck_assert_str_eq(kvrt_swapfile_path(sf), want_path(pool, sf, f));
	ck_assert_int_eq(pool->slot_state[1], KVA_SLOT_FREE);
	ck_assert_uint_lt(pool->nr_used, used_before);
	CHECK_POOL(pool);
	/* another sequence takes the pages and scribbles on them */
	ck_assert_int_eq(kva_admit(pool, &s2, &p2, 1), 0);
	for (uint32_t l = 2 * pool->lists_per_slot;
	     l < 3 * pool->lists_per_slot; l++)
		for (uint32_t e = 0; e < pool->npages[2 * l]; e++)
			memset((void *)(uintptr_t)kva_page_addr(
				       pool,
				       pool->table[(size_t)l * pool->width + e]),
			       0xee, pool->page_size);
	/* a read killed midway, then one cut short: the arrays as before */
	before = state(pool);
	kvrt_swapfile_fault(sf, 2, KVRT_SWAP_FAULT_EIO | KVRT_SWAP_FAULT_READ);
	ck_assert_int_eq(kva_swap_in(pool, sf, 1, &rec), -EIO);
	ck_assert_uint_eq(state(pool), before);
	CHECK_POOL(pool);
	kvrt_swapfile_fault(sf, 3,
			    KVRT_SWAP_FAULT_SHORT | KVRT_SWAP_FAULT_READ);
	ck_assert_int_eq(kva_swap_in(pool, sf, 1, &rec), -ENODATA);
	kvrt_swapfile_fault(sf, 0, 0);
	ck_assert_uint_eq(state(pool), before);
	ck_assert_int_eq(pool->slot_state[1], KVA_SLOT_FREE);
	CHECK_POOL(pool);
	tags(pool, 0, 1);
	/* a record of another shape */
	rec.bytes += KVRT_SWAP_ALIGN;
	ck_assert_int_eq(kva_swap_in(pool, sf, 1, &rec), -EINVAL);
	rec.bytes -= KVRT_SWAP_ALIGN;
	ck_assert_uint_eq(state(pool), before);
	/* back into its slot: same counts, same contents */
	ck_assert_int_eq(kva_swap_in(pool, sf, 1, &rec), 0);
	ck_assert_str_eq(kvrt_swapfile_path(sf), want_path(pool, sf, f));
	CHECK_POOL(pool);
	tags(pool, 1, 1);
	tags(pool, 0, 1);
	{
		struct kva_swap_rec r2;

		ck_assert_int_eq(kva_swap_out(pool, sf, 1, 0, &r2), 0);
		ck_assert_int_eq(kva_swap_in(pool, sf, s3, &r2), 0);
		for (uint32_t j = 0; j < pool->lists_per_slot; j++) {
			uint32_t l = 3 * pool->lists_per_slot + j;

			ck_assert_uint_eq(pool->ntokens[2 * l], hi[8 + j]);
			ck_assert_uint_eq(pool->ntokens[2 * l + 1], lo[8 + j]);
		}
		tags(pool, 3, 1);
	}
	CHECK_POOL(pool);
	kvrt_swapfile_close(sf);
	ck_assert_int_eq(kva_pool_destroy(pool), 0);
	kvrt_ctx_destroy(ctx);
}

/* 4 KiB pages: zero-copy on every file where asked */
START_TEST(test_swap_sequence)
{
	uint64_t seed = kvtest_seed("swap_sequence");

	swap_sequence(seed, tiers_4096, flags[_i]);
}
END_TEST

/* 7680-byte pages (15 x 512): zero-copy where asked and the file allows */
START_TEST(test_swap_sequence_7680)
{
	uint64_t seed = kvtest_seed("swap_sequence_7680");

	swap_sequence(seed, tiers_7680, flags[_i]);
}
END_TEST

/* 6784-byte pages: no O_DIRECT alignment fits, zero-copy refused */
START_TEST(test_swap_sequence_unaligned)
{
	uint64_t seed = kvtest_seed("swap_sequence_unaligned");

	swap_sequence(seed, tiers_6784, flags[_i]);
}
END_TEST

Suite *suite_swap(void)
{
	Suite *s = suite_create("swap");
	TCase *tc = tcase_create("file");

	tcase_set_timeout(tc, 60);
	KV_ADD_LOOP(tc, test_swapfile_roundtrip, 0, 4);
	KV_ADD_LOOP(tc, test_swap_sequence, 0, 4);
	KV_ADD_LOOP(tc, test_swap_sequence_7680, 0, 2);
	KV_ADD_LOOP(tc, test_swap_sequence_unaligned, 0, 2);
	suite_add_tcase(s, tc);
	return s;
}
