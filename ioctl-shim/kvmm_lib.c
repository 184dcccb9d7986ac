// SPDX-License-Identifier: MIT
/*
 * kvmm_lib.c - typed wrappers of the kvmm uapi (kvmm_lib.h).
 *
 * Each wrapper passes its structure to kvshim_ioctl() with the one command
 * number that matches the structure's type, so the compiler, not the
 * caller, pairs them. A kernel driver would replace kvshim_ioctl() with
 * ioctl(2) and errno; nothing else here would change.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "kva.h"
#include "kvmm_lib.h"
#include "kvshim.h"

/**
 * kvmm_version() - KVMM_IOC_VERSION
 * @fd: handle from kvmm_open() or kvshim_open()
 * @arg: pad and reserved zero; out: api and features
 *
 * Return: 0 or -errno, as the ioctl (Documentation/uapi/kvmm.rst).
 */
int kvmm_version(int fd, struct kvmm_version *arg)
{
	return kvshim_ioctl(fd, KVMM_IOC_VERSION, arg);
}

/**
 * kvmm_space_create() - KVMM_IOC_SPACE_CREATE
 * @fd: handle
 * @arg: the space's shape, tiers and memory; out: space and page_size
 *
 * Return: 0 or -errno, as the ioctl.
 */
int kvmm_space_create(int fd, struct kvmm_space_create *arg)
{
	return kvshim_ioctl(fd, KVMM_IOC_SPACE_CREATE, arg);
}

/**
 * kvmm_space_destroy() - KVMM_IOC_SPACE_DESTROY
 * @fd: handle
 * @arg: the space
 *
 * Return: 0 or -errno, as the ioctl.
 */
int kvmm_space_destroy(int fd, struct kvmm_space_destroy *arg)
{
	return kvshim_ioctl(fd, KVMM_IOC_SPACE_DESTROY, arg);
}

/**
 * kvmm_seq_admit() - KVMM_IOC_SEQ_ADMIT
 * @fd: handle
 * @arg: the space and a struct kvmm_seq array; out: each entry's slot
 *
 * Return: 0 or -errno, as the ioctl.
 */
int kvmm_seq_admit(int fd, struct kvmm_seq_admit *arg)
{
	return kvshim_ioctl(fd, KVMM_IOC_SEQ_ADMIT, arg);
}

/**
 * kvmm_seq_release() - KVMM_IOC_SEQ_RELEASE
 * @fd: handle
 * @arg: the space and a slot array
 *
 * Return: 0 or -errno, as the ioctl.
 */
int kvmm_seq_release(int fd, struct kvmm_seq_release *arg)
{
	return kvshim_ioctl(fd, KVMM_IOC_SEQ_RELEASE, arg);
}

/**
 * kvmm_set_budget() - KVMM_IOC_SET_BUDGET
 * @fd: handle
 * @arg: the space and its new budget
 *
 * Return: 0 or -errno, as the ioctl.
 */
int kvmm_set_budget(int fd, struct kvmm_set_budget *arg)
{
	return kvshim_ioctl(fd, KVMM_IOC_SET_BUDGET, arg);
}

/**
 * kvmm_compact() - KVMM_IOC_COMPACT
 * @fd: handle
 * @arg: the space and a byte budget; out: what moved and why it stopped
 *
 * Return: 0 or -errno, as the ioctl.
 */
int kvmm_compact(int fd, struct kvmm_compact *arg)
{
	return kvshim_ioctl(fd, KVMM_IOC_COMPACT, arg);
}

/**
 * kvmm_stats() - KVMM_IOC_STATS
 * @fd: handle
 * @arg: the space, optionally a per-head array; out: the figures
 *
 * Return: 0 or -errno, as the ioctl.
 */
int kvmm_stats(int fd, struct kvmm_stats *arg)
{
	return kvshim_ioctl(fd, KVMM_IOC_STATS, arg);
}

/**
 * kvmm_page_table_info() - KVMM_IOC_PAGE_TABLE_INFO
 * @fd: handle
 * @arg: the space; out: addresses and geometry of its page tables
 *
 * Return: 0 or -errno, as the ioctl.
 */
int kvmm_page_table_info(int fd, struct kvmm_page_table_info *arg)
{
	return kvshim_ioctl(fd, KVMM_IOC_PAGE_TABLE_INFO, arg);
}

/**
 * kvmm_space_map() - KVMM_IOC_SPACE_MAP
 * @fd: handle
 * @arg: the space and, on a device space, the stream to bind (or 0); out:
 *	the arrays' addresses, the geometry and the tiers' page layouts
 *
 * Return: 0 or -errno, as the ioctl.
 */
int kvmm_space_map(int fd, struct kvmm_space_map *arg)
{
	return kvshim_ioctl(fd, KVMM_IOC_SPACE_MAP, arg);
}

/**
 * kvmm_step_submit() - KVMM_IOC_STEP_SUBMIT
 * @fd: handle
 * @arg: the space and an array of struct kvmm_step_op; out: the fence
 *
 * Return: 0 or -errno, as the ioctl.
 */
int kvmm_step_submit(int fd, struct kvmm_step_submit *arg)
{
	return kvshim_ioctl(fd, KVMM_IOC_STEP_SUBMIT, arg);
}

/**
 * kvmm_fence() - KVMM_IOC_FENCE
 * @fd: handle
 * @arg: the space, a fence (0: the last) and KVMM_FENCE_WAIT or 0; out:
 *	whether it completed, the latest completed one, its page counts and
 *	the device's first refusal since the last FENCE
 *
 * Return: 0 or -errno, as the ioctl.
 */
int kvmm_fence(int fd, struct kvmm_fence *arg)
{
	return kvshim_ioctl(fd, KVMM_IOC_FENCE, arg);
}

/**
 * kvmm_seq_stats() - KVMM_IOC_SEQ_STATS
 * @fd: handle
 * @arg: the space and an array of struct kvmm_seq_info with the slots;
 *	out (in that array): each slot's state, pages and tokens per tier
 *
 * Return: 0 or -errno, as the ioctl.
 */
int kvmm_seq_stats(int fd, struct kvmm_seq_stats *arg)
{
	return kvshim_ioctl(fd, KVMM_IOC_SEQ_STATS, arg);
}

/**
 * kvmm_open() - open a handle and check the API version and features
 * @features: KVMM_FEAT_* bits the caller needs (0: none)
 *
 * Return: a handle (>= 0); -EMFILE; -EPROTO when the driver serves another
 * KVMM_API_VERSION; -EOPNOTSUPP when a bit of @features is missing. The
 * handle is closed again on every failure.
 */
int kvmm_open(uint64_t features)
{
	struct kvmm_version v = { 0 };
	int fd, ret;

	fd = kvshim_open();
	if (fd < 0)
		return fd;
	ret = kvmm_version(fd, &v);
	if (ret)
		goto out_close;
	if (v.api != KVMM_API_VERSION) {
		ret = -EPROTO;
		goto out_close;
	}
	if ((v.features & features) != features) {
		ret = -EOPNOTSUPP;
		goto out_close;
	}
	return fd;

out_close:
	kvshim_close(fd);
	return ret;
}

/**
 * kvmm_close() - close a handle, destroying every space it owns
 * @fd: handle
 *
 * Return: 0 or -errno, as kvshim_close().
 */
int kvmm_close(int fd)
{
	return kvshim_close(fd);
}

/**
 * kvmm_destroy() - destroy one space by handle
 * @fd: handle
 * @space: a space of @fd
 *
 * Return: 0 or -errno, as KVMM_IOC_SPACE_DESTROY.
 */
int kvmm_destroy(int fd, uint32_t space)
{
	struct kvmm_space_destroy d = { .space = space };

	return kvmm_space_destroy(fd, &d);
}

/**
 * kvmm_admit() - admit @n sequences given as plain arrays, all or none
 * @fd: handle
 * @space: a space of @fd
 * @tokens: [@n] prompt lengths
 * @n: sequences (0 succeeds and does nothing)
 * @slots: [@n] out: the slot of each, written only on success
 *
 * Return: 0 or -errno, as KVMM_IOC_SEQ_ADMIT; -EINVAL for NULL arrays
 * with @n > 0; -ENOMEM.
 */
int kvmm_admit(int fd, uint32_t space, const uint32_t *tokens, uint32_t n,
	       uint32_t *slots)
{
	struct kvmm_seq_admit a = { .space = space, .count = n };
	struct kvmm_seq *q = NULL;
	int ret;

	if (n && (!tokens || !slots))
		return -EINVAL;
	if (n) {
		q = calloc(n, sizeof(*q));
		if (!q)
			return -ENOMEM;
		for (uint32_t i = 0; i < n; i++)
			q[i].tokens = tokens[i];
	}
	a.seqs = (uint64_t)(uintptr_t)q;
	ret = kvmm_seq_admit(fd, &a);
	for (uint32_t i = 0; !ret && i < n; i++)
		slots[i] = q[i].slot;
	free(q);
	return ret;
}

/**
 * kvmm_release() - release @n slots, all or none
 * @fd: handle
 * @space: a space of @fd
 * @slots: [@n] admitted slots
 * @n: slots (0 succeeds and does nothing)
 *
 * Return: 0 or -errno, as KVMM_IOC_SEQ_RELEASE.
 */
int kvmm_release(int fd, uint32_t space, const uint32_t *slots, uint32_t n)
{
	struct kvmm_seq_release r = {
		.space = space,
		.count = n,
		.slots = (uint64_t)(uintptr_t)slots,
	};

	return kvmm_seq_release(fd, &r);
}

/**
 * kvmm_compact_all() - compact in increments until nothing more is gained
 * @fd: handle
 * @space: a space of @fd
 * @byte_budget: bytes per increment (0: no limit, one increment)
 * @total: out (may be NULL): the sums over the increments, and the reason
 *	the last one stopped (never KVMM_COMPACT_BUDGET on success)
 *
 * Each increment is one KVMM_IOC_COMPACT, so other calls may come between
 * two increments of a caller that loops itself; this helper does not.
 * An increment that moves nothing and releases nothing ends the loop.
 *
 * Return: 0, or the first failing increment's -errno (the increments
 * before it stay done, @total is not written).
 */
int kvmm_compact_all(int fd, uint32_t space, uint64_t byte_budget,
		     struct kvmm_compact *total)
{
	struct kvmm_compact sum = { .space = space,
				    .byte_budget = byte_budget };
	int ret;

	for (;;) {
		struct kvmm_compact c = { .space = space,
					  .byte_budget = byte_budget };

		ret = kvmm_compact(fd, &c);
		if (ret)
			return ret;
		sum.pages_moved += c.pages_moved;
		sum.bytes_moved += c.bytes_moved;
		sum.granules_released += c.granules_released;
		sum.reason = c.reason;
		if (c.reason != KVMM_COMPACT_BUDGET)
			break;
		if (!c.pages_moved && !c.granules_released) {
			sum.reason = KVMM_COMPACT_DONE;
			break;
		}
	}
	if (total)
		*total = sum;
	return 0;
}

/**
 * kvmm_tier_valid() - whether KVMM_IOC_SPACE_CREATE accepts a tier
 * @t: tier
 *
 * Return: 0, or -EINVAL (bits not in {16, 8, 4, 2, 1}, groups not in
 * {1, 2, 4}).
 */
int kvmm_tier_valid(const struct kvmm_tier *t)
{
	struct kva_tier k;

	if (!t)
		return -EINVAL;
	k = (struct kva_tier){ t->kbits, t->vbits, t->kgroups, t->vgroups };
	return kva_tier_valid(&k);
}

/**
 * kvmm_geometry() - the page a space of these tiers would get
 * @head_dim: head dimension (64, 80, 96, 128 or 256)
 * @tiers: [@nr_tiers] high tier first
 * @nr_tiers: 1 or 2
 * @page_size: out: bytes (KVMM_IOC_SPACE_CREATE's page_size)
 * @tokens: out: [@nr_tiers] tokens per page of each tier
 *
 * Return: 0, or -EINVAL for what KVMM_IOC_SPACE_CREATE would refuse.
 */
int kvmm_geometry(uint32_t head_dim, const struct kvmm_tier *tiers,
		  uint32_t nr_tiers, uint32_t *page_size, uint32_t *tokens)
{
	struct kva_tier k[2];
	struct kva_layout l;
	int ps;

	if (!tiers || nr_tiers < 1 || nr_tiers > 2 || !page_size || !tokens)
		return -EINVAL;
	for (uint32_t i = 0; i < nr_tiers; i++) {
		if (kvmm_tier_valid(&tiers[i]))
			return -EINVAL;
		k[i] = (struct kva_tier){ tiers[i].kbits, tiers[i].vbits,
					  tiers[i].kgroups, tiers[i].vgroups };
	}
	ps = kva_page_size(head_dim, k, nr_tiers);
	if (ps < 0)
		return ps;
	for (uint32_t i = 0; i < nr_tiers; i++) {
		if (kva_page_layout(head_dim, (uint32_t)ps, &k[i], &l))
			return -EINVAL;
		tokens[i] = l.tokens;
	}
	*page_size = (uint32_t)ps;
	return 0;
}
