/* SPDX-License-Identifier: MIT */
/*
 * hprefill.h - causal prefill attention of one query head over fp32 rows in
 * host memory, the way host KV caches (model/kv/kvpolicy.c) attend a prompt
 * or a prompt's chunk: a plain C reference and an AVX2 + FMA path, chosen
 * by cpuid.
 *
 * DOC: host prefill attention
 *
 * Query row t (position @off + t) attends over keys 0 .. @off + t:
 * s_j = scale q_t . k_j, p_j = exp(s_j - max) / sum, o_t = sum p_j v_j; the
 * probabilities of every query at a position >= @first are added (or their
 * squares, @sumsq) into @acc by key position. The reference is the loop
 * the host caches always ran (one query row at a time, three passes over
 * the keys). The AVX2 path takes 8 query rows at a time: their dot
 * products in tiles of 4 rows x 2 keys (each key read once for the 8
 * rows), a vector exp, and the weighted sum of V in tiles of 4 rows x 16
 * columns over blocks of 64 keys that stay in L1. Its results differ from
 * the reference only by rounding (sums in another order, an exp within 2
 * ulp, the 1/sum folded into p); tests/check_prefill.c compares them.
 */
#ifndef KVK_HPREFILL_H
#define KVK_HPREFILL_H

#include <stddef.h>
#include <stdint.h>

/* query rows the AVX2 path takes at a time: @p holds this many rows */
#define KVK_HPREFILL_ROWS 8

/**
 * struct kvk_hprefill_args - one query head's causal attention
 * @q: @n query rows, @ldq floats apart
 * @k: key rows of positions 0 .. @off + @n - 1, @ldk floats apart
 * @v: value rows, as @k
 * @o: out: @n rows, @ldo floats apart
 * @acc: [@off + @n] score sums by key position, added to
 * @p: scratch of KVK_HPREFILL_ROWS * (@off + @n) floats
 * @ldq: floats between query rows
 * @ldk: floats between key rows (and value rows)
 * @ldo: floats between output rows
 * @hd: head dimension: a multiple of 8, 8 .. 256
 * @n: query rows (0: nothing to do)
 * @off: position of query row 0 (the keys before the rows)
 * @first: queries at positions >= @first add to @acc
 * @scale: logit scale (1 / sqrt(hd) usually), > 0
 * @sumsq: add p^2 rather than p to @acc
 */
struct kvk_hprefill_args {
	const float *q, *k, *v;
	float *o, *acc, *p;
	size_t ldq, ldk, ldo;
	uint32_t hd, n, off, first;
	float scale;
	int sumsq;
};

/* instruction sets of kvk_hprefill() */
enum kvk_hprefill_isa {
	KVK_HPREFILL_C,
	KVK_HPREFILL_AVX2,
};

int kvk_hprefill_check(const struct kvk_hprefill_args *a);
int kvk_hprefill_ref(const struct kvk_hprefill_args *a);
int kvk_hprefill_isa(void);
int kvk_hprefill_run(const struct kvk_hprefill_args *a, int isa);
int kvk_hprefill(const struct kvk_hprefill_args *a);

#endif /* KVK_HPREFILL_H */
