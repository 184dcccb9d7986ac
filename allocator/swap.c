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
 * kva_swap_out() lists every page of one decoding slot in file order (each
 * list's high-tier pages in table order, then its low-tier ones) and hands
 * the addresses to kvrt_swapfile_write_pages(): each chunk gathered into a
 * registered buffer as it is submitted (one copy, pipelined with the I/O;
 * through the runtime for device pages), or with KVRT_SWAP_ZEROCOPY on the
 * file straight from the pages where the CPU maps them and their size
 * fits the file's O_DIRECT alignment (io_uring writev, no copy); O_DIRECT,
 * several chunks in flight. Only when every chunk has completed in full
 * does it free the slot's pages. A failed or short write returns the error
 * with the slot as it was: nothing is lost, nothing moved.
 *
 * kva_swap_in() admits the slot again for its token counts, trims it to
 * them and reads the file into the new pages (kvrt_swapfile_read_pages(),
 * the same two paths; spare pages of the record that the trimmed
 * lists do not need are read into nothing): the same tokens at the same
 * table positions, new page ids. The pages are committed only on success:
 * a failed read (or trim) frees the slot and puts the free ring back
 * exactly as it was (its entries, head and tail), so the pool's arrays are
 * as before the call; only bytes of free pages changed. Host pools only
 * for the allocator steps (a device pool's tables are on the device):
 * -EOPNOTSUPP there.
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

/* the pages of @slot in file order (kva_swap_bytes()'s count), or NULL */
static uint64_t *slot_pages(const struct kva_pool *pool, uint32_t slot,
			    uint64_t *n)
{
	uint32_t lps = pool->lists_per_slot;
	uint64_t *addr, k = 0;

	*n = 0;
	for (uint32_t j = 0; j < lps; j++)
		*n += pool->npages[2 * (slot * lps + j)] +
		      pool->npages[2 * (slot * lps + j) + 1];
	addr = malloc((*n ? *n : 1) * sizeof(*addr));
	if (!addr)
		return NULL;
	for (uint32_t j = 0; j < lps; j++) {
		uint32_t l = slot * lps + j;

		for (uint32_t i = 0;
		     i < pool->npages[2 * l] + pool->npages[2 * l + 1]; i++)
			addr[k++] = kva_page_addr(pool, nth_page(pool, l, i));
	}
	return addr;
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
	uint64_t *addr = NULL, n;
	int ret;

	memset(rec, 0, sizeof(*rec));
	if (pool->dev)
		return -EOPNOTSUPP;
	if (!sf || off % KVRT_SWAP_ALIGN)
		return -EINVAL;
	ret = kva_validate_slots(pool, &slot, 1, BIT(KVA_SLOT_DECODE));
	if (ret)
		return ret;
	addr = slot_pages(pool, slot, &n);
	rec->npages = malloc(lps * 2 * sizeof(uint32_t));
	rec->ntokens = malloc(lps * 2 * sizeof(uint32_t));
	if (!addr || !rec->npages || !rec->ntokens) {
		ret = -ENOMEM;
		goto out_err;
	}
	memcpy(rec->npages, &pool->npages[2 * slot * lps],
	       lps * 2 * sizeof(uint32_t));
	memcpy(rec->ntokens, &pool->ntokens[2 * slot * lps],
	       lps * 2 * sizeof(uint32_t));
	ret = kvrt_swapfile_write_pages(sf, pool->ctx, off, addr, n,
					pool->page_size);
	if (ret)
		goto out_err;
	/* confirmed: only now do the pages go */
	ret = kva_free(pool, &slot, 1);
	if (ret)
		goto out_err;
	free(addr);
	rec->off = off;
	rec->bytes = kvmm_round_up(n * pool->page_size, KVRT_SWAP_ALIGN);
	rec->lists = lps;
	return 0;

out_err:
	free(addr);
	kva_swap_rec_fini(rec);
	return ret;
}

/*
 * Put the free ring back as it was before kva_admit() took @taken pages
 * from @head0 (@tail0 the tail then; @saved: the ring entries at
 * [@tail0, @tail0 + @taken) then, which the trim and the free overwrote)
 * once the slot has been freed again: the admitted pages are free, their
 * owner and position entries FREE / NONE as before, the slot's rows empty.
 */
static void ring_restore(struct kva_pool *pool, uint64_t head0, uint64_t tail0,
			 const uint32_t *saved, uint64_t taken)
{
	for (uint64_t i = 0; i < taken; i++)
		pool->ring[(tail0 + i) % pool->nr_page_ids] = saved[i];
	pool->head = head0;
	pool->tail = tail0;
}

/**
 * kva_swap_in() - bring a swapped sequence back into a free slot
 * @pool: host pool
 * @sf: the swap file kva_swap_out() wrote
 * @slot: a free slot
 * @rec: from kva_swap_out(); freed on success
 *
 * Admits @slot for the longest of its lists, trims each list to its
 * recorded counts (the pages they need) and reads the file straight into
 * the pages (kvrt_swapfile_read_pages()). The tables' entries hold the
 * same tokens as before the swap.
 *
 * Return: 0; -EINVAL for a record of another shape; -EBUSY for a slot in
 * use; -ENOSPC when the pool has too few free pages (grow first);
 * -EOPNOTSUPP on a device pool; -ENOMEM; the runtime's copy error; the
 * file's error. On error the pool's arrays are as they were (the slot
 * free, the free ring's entries, head and tail included; free pages may
 * hold other bytes) and @rec still valid: retry later.
 */
int kva_swap_in(struct kva_pool *pool, struct kvrt_swapfile *sf,
		uint32_t slot, struct kva_swap_rec *rec)
{
	uint32_t lps = pool->lists_per_slot, prompt = 0, *hi, *lo;
	uint32_t *saved = NULL;
	uint64_t n = 0, k = 0, *addr = NULL, head0, tail0, taken;
	int ret;

	if (pool->dev)
		return -EOPNOTSUPP;
	if (!sf || !rec || !rec->npages || !rec->ntokens || rec->lists != lps)
		return -EINVAL;
	ret = kva_validate_slots(pool, &slot, 1, BIT(KVA_SLOT_FREE));
	if (ret)
		return ret == -ENOENT ? -EINVAL : ret;
	for (uint32_t j = 0; j < lps; j++) {
		uint32_t t = rec->ntokens[2 * j] + rec->ntokens[2 * j + 1];

		prompt = t > prompt ? t : prompt;
		n += rec->npages[2 * j] + rec->npages[2 * j + 1];
	}
	if (rec->bytes != kvmm_round_up(n * pool->page_size, KVRT_SWAP_ALIGN))
		return -EINVAL;
	addr = malloc((n ? n : 1) * sizeof(*addr));
	hi = malloc(lps * sizeof(*hi));
	lo = malloc(lps * sizeof(*lo));
	/* what kva_admit() can take: its worst case */
	saved = malloc(((uint64_t)kva_admit_pages(pool, prompt) * lps + 1) *
		       sizeof(*saved));
	if (!addr || !hi || !lo || !saved) {
		ret = -ENOMEM;
		goto out_free;
	}
	for (uint32_t j = 0; j < lps; j++) {
		hi[j] = rec->ntokens[2 * j];
		lo[j] = rec->ntokens[2 * j + 1];
	}
	head0 = pool->head;
	tail0 = pool->tail;
	ret = kva_admit(pool, &slot, &prompt, 1);
	if (ret)
		goto out_free;
	taken = pool->head - head0;
	for (uint64_t i = 0; i < taken; i++)
		saved[i] = pool->ring[(tail0 + i) % pool->nr_page_ids];
	ret = kva_trim(pool, &slot, 1, hi, lo);
	if (ret)
		goto out_release;
	/* page i of the file's order; spare empty pages are read into nothing */
	for (uint32_t j = 0; j < lps; j++) {
		uint32_t l = slot * lps + j;
		uint32_t oh = rec->npages[2 * j], ol = rec->npages[2 * j + 1];

		for (uint32_t i = 0; i < oh + ol; i++) {
			uint32_t e = i < oh ? i : i - oh;
			uint32_t have = i < oh ? pool->npages[2 * l]
					       : pool->npages[2 * l + 1];

			addr[k++] = e >= have ? 0 :
				    kva_page_addr(pool,
						  nth_page(pool, l,
							   i < oh ? e :
							   pool->npages[2 * l] +
								   e));
		}
	}
	ret = kvrt_swapfile_read_pages(sf, pool->ctx, rec->off, addr, n,
				       pool->page_size);
	if (ret)
		goto out_release;
	kva_swap_rec_fini(rec);
	goto out_free;

out_release:
	kva_free(pool, &slot, 1);
	ring_restore(pool, head0, tail0, saved, taken);
out_free:
	free(saved);
	free(addr);
	free(hi);
	free(lo);
	return ret;
}
