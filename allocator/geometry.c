// SPDX-License-Identifier: MIT
/*
 * geometry.c - the one place that decides how big a page is and where each
 * segment of a page lives.
 */
#include "kva.h"
#include "kvattn.h"

/**
 * DOC: page geometry
 *
 * A page holds tokens of one tier of one (sequence, layer, kv-head). Its
 * segments, in order, each starting at a multiple of KVA_SEG_ALIGN:
 *
 *  K data (tokens * head_dim * kbits / 8), K metadata (4 bytes per group per
 *  token: fp16 scale and zero point); the K part is rounded up to
 *  KVA_PAGE_ALIGN so V starts on a 128-byte line; V data (token count padded
 *  to KVA_V_TOKEN_PAD, for the token-pair vector layout), V metadata,
 *  score (fp32 per token), position (int32 per token). The whole is rounded
 *  up to KVA_PAGE_ALIGN. fp16 (16 bits) carries no metadata.
 *
 * The page size is DiffKV's rule over these segments: among sizes from
 * KVA_PAGE_MIN to KVA_PAGE_MAX in KVA_PAGE_STEP steps, the smallest that
 * minimises the worst internal fragmentation over the configured tiers,
 * where a tier's fragmentation is 1 - tokens * token_bytes / page_size.
 * For head_dim 128 over (8,4,1,2), (8,4,1,1), (4,2,2,4), (4,2,1,1) this
 * gives 6784 bytes holding 32, 32, 52 and 60 tokens.
 */

static uint32_t round_up32(uint32_t n, uint32_t a)
{
	return (n + a - 1) / a * a;
}

static int head_dim_valid(uint32_t head_dim)
{
	return head_dim == 64 || head_dim == 80 || head_dim == 96 ||
	       head_dim == 128 || head_dim == 256;
}

static int bits_valid(uint32_t b)
{
	return b == 16 || b == 8 || b == 4 || b == 2 || b == 1;
}

static int groups_valid(uint32_t g)
{
	return g == 1 || g == 2 || g == 4;
}

/**
 * kva_tier_valid() - whether a tier configuration is one we support
 * @tier: configuration
 *
 * Return: 0, or -EINVAL for bits outside {16,8,4,2,1} or groups outside
 * {1,2,4}.
 */
int kva_tier_valid(const struct kva_tier *tier)
{
	if (!tier || !bits_valid(tier->kbits) || !bits_valid(tier->vbits) ||
	    !groups_valid(tier->kgroups) || !groups_valid(tier->vgroups))
		return -EINVAL;
	return 0;
}

static uint32_t meta_bytes(uint32_t bits, uint32_t groups)
{
	return bits == KVA_BITS_FP16 ? 0 : 4 * groups;
}

/**
 * kva_tier_token_bytes() - payload bytes of one token, without padding
 * @head_dim: head dimension
 * @tier: a valid configuration
 *
 * Return: K and V data, their metadata, score and position, in bytes.
 */
uint32_t kva_tier_token_bytes(uint32_t head_dim, const struct kva_tier *tier)
{
	return head_dim * tier->kbits / 8 + head_dim * tier->vbits / 8 +
	       meta_bytes(tier->kbits, tier->kgroups) +
	       meta_bytes(tier->vbits, tier->vgroups) + 8;
}

/* Lay out @tokens tokens; returns the padded page bytes they need. */
static uint32_t lay(uint32_t head_dim, const struct kva_tier *t,
		    uint32_t tokens, struct kva_layout *l)
{
	uint32_t vtok = round_up32(tokens, KVA_V_TOKEN_PAD);
	uint32_t o = 0;

	l->tokens = tokens;
	l->k_off = o;
	o += round_up32(tokens * head_dim * t->kbits / 8, KVA_SEG_ALIGN);
	l->km_off = o;
	o += round_up32(tokens * meta_bytes(t->kbits, t->kgroups),
			KVA_SEG_ALIGN);
	o = round_up32(o, KVA_PAGE_ALIGN);
	l->v_off = o;
	o += round_up32(vtok * head_dim * t->vbits / 8, KVA_SEG_ALIGN);
	l->vm_off = o;
	o += round_up32(tokens * meta_bytes(t->vbits, t->vgroups),
			KVA_SEG_ALIGN);
	l->score_off = o;
	o += round_up32(tokens * 4, KVA_SEG_ALIGN);
	l->pos_off = o;
	o += round_up32(tokens * 4, KVA_SEG_ALIGN);
	l->used = o;
	return round_up32(o, KVA_PAGE_ALIGN);
}

/* Most tokens of @t a page of @page_size holds (0 if none). */
static uint32_t fit(uint32_t head_dim, uint32_t page_size,
		    const struct kva_tier *t, struct kva_layout *l)
{
	uint32_t n = page_size / kva_tier_token_bytes(head_dim, t);

	while (n && lay(head_dim, t, n, l) > page_size)
		n--;
	if (n)
		lay(head_dim, t, n, l);
	return n;
}

/**
 * kva_page_layout() - tokens per page and segment offsets of one tier
 * @head_dim: 64, 80, 96, 128 or 256
 * @page_size: page bytes, as kva_page_size() returned
 * @tier: configuration
 * @out: filled in
 *
 * Return: 0; -EINVAL for a bad head_dim, tier or a page size that is not a
 * multiple of KVA_PAGE_ALIGN; -ENOSPC when not one token fits.
 */
int kva_page_layout(uint32_t head_dim, uint32_t page_size,
		    const struct kva_tier *tier, struct kva_layout *out)
{
	struct kva_layout l = {0};

	if (!head_dim_valid(head_dim) || kva_tier_valid(tier) || !out ||
	    !page_size || page_size % KVA_PAGE_ALIGN)
		return -EINVAL;
	if (!fit(head_dim, page_size, tier, &l))
		return -ENOSPC;
	l.page_size = page_size;
	*out = l;
	return 0;
}

/**
 * kva_page_size() - the unified page size for a set of tiers
 * @head_dim: 64, 80, 96, 128 or 256
 * @tiers: configurations the pool must serve
 * @n: number of configurations, 1..KVA_TIERS_MAX
 *
 * DiffKV's rule (see DOC: page geometry): the smallest size in the search
 * window that minimises the worst internal fragmentation over @tiers. The
 * comparison is exact (cross-multiplied integers), so ties do not depend on
 * floating-point rounding.
 *
 * Return: the page size in bytes (> 0); -EINVAL for a bad argument;
 * -ENOSPC when no size in the window holds one token of every tier.
 */
int kva_page_size(uint32_t head_dim, const struct kva_tier *tiers, uint32_t n)
{
	uint64_t best_num = 1, best_den = 0; /* worst waste, as a fraction */
	uint32_t best = 0;
	struct kva_layout l;

	if (!head_dim_valid(head_dim) || !tiers || !n || n > KVA_TIERS_MAX)
		return -EINVAL;
	for (uint32_t i = 0; i < n; i++)
		if (kva_tier_valid(&tiers[i]))
			return -EINVAL;

	for (uint32_t size = KVA_PAGE_MIN; size <= KVA_PAGE_MAX;
	     size += KVA_PAGE_STEP) {
		/* worst waste = max over tiers of (size - payload) / size */
		uint64_t worst = 0;
		int ok = size % KVA_PAGE_ALIGN == 0;

		for (uint32_t i = 0; ok && i < n; i++) {
			uint32_t t = fit(head_dim, size, &tiers[i], &l);
			uint64_t pay =
				(uint64_t)t *
				kva_tier_token_bytes(head_dim, &tiers[i]);

			if (!t)
				ok = 0;
			else if (size - pay > worst)
				worst = size - pay;
		}
		if (!ok)
			continue;
		/* worst / size < best_num / best_den */
		if (!best_den || worst * best_den < best_num * size) {
			best_num = worst;
			best_den = size;
			best = size;
		}
	}
	return best ? (int)best : -ENOSPC;
}

/**
 * kva_attn_tier() - a tier as the paged kernels read it
 * @t: the tier's formats
 * @l: its segment offsets in the pool's pages (kva_page_layout())
 *
 * The kernels (kernels/) take struct kvk_attn_tier and know nothing of the
 * allocator; this is the one place that converts.
 *
 * Return: the formats and offsets in one struct kvk_attn_tier.
 */
struct kvk_attn_tier kva_attn_tier(const struct kva_tier *t,
				   const struct kva_layout *l)
{
	return (struct kvk_attn_tier){
		.kbits = t->kbits, .vbits = t->vbits, .kgroups = t->kgroups,
		.vgroups = t->vgroups, .tokens = l->tokens, .k_off = l->k_off,
		.km_off = l->km_off, .v_off = l->v_off, .vm_off = l->vm_off,
		.score_off = l->score_off, .pos_off = l->pos_off,
	};
}
