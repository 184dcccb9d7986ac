// SPDX-License-Identifier: MIT
/*
 * swap.c - a sequence's pages to a swap file and back (issue 16): the
 * scheduler's preemption can free a decoding sequence's pages once they
 * are safely in the file, and bring them back later into new pages.
 */
#include <stdlib.h>
#include <string.h>

#include "kva_dev.h"

/**
 * DOC: swap
 *
 * kva_swap_out() gathers every page of one decoding slot (each list's
 * high-tier pages in table order, then its low-tier ones) into a staging
 * buffer through the runtime (so device pages work too), writes it with
 * kvrt_swapfile_write() (O_DIRECT, registered buffers, several chunks in
 * flight) and only when the write has completed in full frees the slot's
 * pages. A failed or short write returns the error with the slot as it was:
 * nothing is lost. kva_swap_in() admits the slot again for its token
 * counts, trims it to them, reads the file and copies the pages into the
 * new table entries: the same tokens at the same table positions, new page
 * ids. Host pools only for the allocator steps (a device pool's tables are
 * on the device): -EOPNOTSUPP there.
 */

/**
 * kva_swap_bytes() - file bytes kva_swap_out() would write for @slot
 * @pool: pool
 * @slot: a slot in range
 *
 * Return: bytes, rounded up to KVRT_SWAP_ALIGN (0 for a bad slot).
 */
uint64_t kva_swap_bytes(const struct kva_pool *pool, uint32_t slot)
{
	uint64_t pages = 0;

	if (slot >= pool->nr_slots)
		return 0;
	for (uint32_t j = 0; j < pool->lists_per_slot; j++) {
		uint32_t l = slot * pool->lists_per_slot + j;

		pages += pool->npages[2 * l] + pool->npages[2 * l + 1];
	}
	return kvmm_round_up(pages * pool->page_size, KVRT_SWAP_ALIGN);
}

/**
 * kva_swap_rec_fini() - free a record's arrays
 * @rec: record
 */
void kva_swap_rec_fini(struct kva_swap_rec *rec)
{
	free(rec->npages);
	free(rec->ntokens);
	memset(rec, 0, sizeof(*rec));
}

/* the page at list @l's entry of the @k-th page of the swap order */
static uint32_t nth_page(const struct kva_pool *pool, uint32_t l, uint32_t k)
{
	uint32_t nh = pool->npages[2 * l];

	return pool->table[(size_t)l * pool->width +
			   (k < nh ? k : pool->width - 1 - (k - nh))];
}

static void *stage_alloc(uint64_t bytes)
{
	void *p = NULL;

	if (posix_memalign(&p, KVRT_SWAP_ALIGN, bytes ? bytes : 1))
		return NULL;
	return p;
}

/**
 * kva_swap_out() - write a decoding slot's pages to a swap file, then free
 * @pool: host pool
 * @sf: swap file
 * @slot: a slot in KVA_SLOT_DECODE
 * @off: file offset, a multiple of KVRT_SWAP_ALIGN; the caller owns the
 *	range [@off, @off + kva_swap_bytes())
 * @rec: out: what kva_swap_in() needs
 *
 * Return: 0 with the slot free; -EINVAL for a bad slot or offset; -ENOENT
 * for a free slot; -EBUSY for one still in prefill; -EOPNOTSUPP on a
 * device pool; -ENOMEM; the runtime's copy error or the file's write
 * error (-EIO for a short write). On error the slot, its pages and their
 * contents are as they were.
 */
int kva_swap_out(struct kva_pool *pool, struct kvrt_swapfile *sf,
		 uint32_t slot, uint64_t off, struct kva_swap_rec *rec)
{
	uint32_t lps = pool->lists_per_slot;
	uint64_t bytes, at = 0;
	char *buf;
	int ret;

	memset(rec, 0, sizeof(*rec));
	if (pool->dev)
		return -EOPNOTSUPP;
	if (!sf || off % KVRT_SWAP_ALIGN)
		return -EINVAL;
	ret = kva_validate_slots(pool, &slot, 1, BIT(KVA_SLOT_DECODE));
	if (ret)
		return ret;
	bytes = kva_swap_bytes(pool, slot);
	buf = stage_alloc(bytes);
	rec->npages = malloc(lps * 2 * sizeof(uint32_t));
	rec->ntokens = malloc(lps * 2 * sizeof(uint32_t));
	if (!buf || !rec->npages || !rec->ntokens) {
		ret = -ENOMEM;
		goto out_err;
	}
	for (uint32_t j = 0; j < lps && !ret; j++) {
		uint32_t l = slot * lps + j;
		uint32_t n = pool->npages[2 * l] + pool->npages[2 * l + 1];

		memcpy(&rec->npages[2 * j], &pool->npages[2 * l], 8);
		memcpy(&rec->ntokens[2 * j], &pool->ntokens[2 * l], 8);
		for (uint32_t k = 0; k < n && !ret; k++) {
			ret = kvrt_memcpy_from(pool->ctx, buf + at,
					       kva_page_addr(pool,
							     nth_page(pool, l, k)),
					       pool->page_size);
			at += pool->page_size;
		}
	}
	memset(buf + at, 0, bytes - at);	/* the pad to the alignment */
	if (!ret)
		ret = kvrt_swapfile_write(sf, off, buf, bytes);
	if (ret)
		goto out_err;
	/* confirmed: only now do the pages go */
	ret = kva_free(pool, &slot, 1);
	if (ret)
		goto out_err;
	free(buf);
	rec->off = off;
	rec->bytes = bytes;
	rec->lists = lps;
	return 0;

out_err:
	free(buf);
	kva_swap_rec_fini(rec);
	return ret;
}

/**
 * kva_swap_in() - bring a swapped sequence back into a free slot
 * @pool: host pool
 * @sf: the swap file kva_swap_out() wrote
 * @slot: a free slot
 * @rec: from kva_swap_out(); freed on success
 *
 * Admits @slot for the longest of its lists, trims each list to its
 * recorded counts (the pages they need), reads the file and fills the
 * pages. The tables' entries hold the same tokens as before the swap.
 *
 * Return: 0; -EINVAL for a record of another shape; -EBUSY for a slot in
 * use; -ENOSPC when the pool has too few free pages (grow first);
 * -EOPNOTSUPP on a device pool; -ENOMEM; the file's error. On error the
 * slot is free again and @rec still valid: retry later.
 */
int kva_swap_in(struct kva_pool *pool, struct kvrt_swapfile *sf,
		uint32_t slot, struct kva_swap_rec *rec)
{
	uint32_t lps = pool->lists_per_slot, prompt = 0, *hi, *lo;
	uint64_t at = 0;
	char *buf;
	int ret;

	if (pool->dev)
		return -EOPNOTSUPP;
	if (!sf || !rec || !rec->npages || rec->lists != lps)
		return -EINVAL;
	ret = kva_validate_slots(pool, &slot, 1, BIT(KVA_SLOT_FREE));
	if (ret)
		return ret == -ENOENT ? -EINVAL : ret;
	for (uint32_t j = 0; j < lps; j++) {
		uint32_t t = rec->ntokens[2 * j] + rec->ntokens[2 * j + 1];

		prompt = t > prompt ? t : prompt;
	}
	buf = stage_alloc(rec->bytes);
	hi = malloc(lps * sizeof(*hi));
	lo = malloc(lps * sizeof(*lo));
	if (!buf || !hi || !lo) {
		ret = -ENOMEM;
		goto out_free;
	}
	ret = kvrt_swapfile_read(sf, rec->off, buf, rec->bytes);
	if (ret)
		goto out_free;
	for (uint32_t j = 0; j < lps; j++) {
		hi[j] = rec->ntokens[2 * j];
		lo[j] = rec->ntokens[2 * j + 1];
	}
	ret = kva_admit(pool, &slot, &prompt, 1);
	if (ret)
		goto out_free;
	ret = kva_trim(pool, &slot, 1, hi, lo);
	if (ret)
		goto out_release;
	for (uint32_t j = 0; j < lps && !ret; j++) {
		uint32_t l = slot * lps + j;
		uint32_t oh = rec->npages[2 * j], ol = rec->npages[2 * j + 1];

		/* page k of the file's order; spare empty pages are skipped */
		for (uint32_t k = 0; k < oh + ol && !ret; k++) {
			uint32_t e = k < oh ? k : k - oh;
			uint32_t have = k < oh ? pool->npages[2 * l]
					       : pool->npages[2 * l + 1];

			if (e < have)
				ret = kvrt_memcpy_to(
					pool->ctx,
					kva_page_addr(pool,
						      nth_page(pool, l,
							       k < oh ? e :
							       pool->npages[2 * l] +
								       e)),
					buf + at, pool->page_size);
			at += pool->page_size;
		}
	}
	if (ret)
		goto out_release;
	kva_swap_rec_fini(rec);
	goto out_free;

out_release:
	kva_free(pool, &slot, 1);
out_free:
	free(buf);
	free(hi);
	free(lo);
	return ret;
}
