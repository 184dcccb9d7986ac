/* SPDX-License-Identifier: MIT */
/*
 * pool_common.h - what the allocator's suites share: the invariant check
 * after every operation, and the FNV-1a step their pool digests ("a failed
 * call changes nothing") are built from.
 */
#ifndef POOL_COMMON_H
#define POOL_COMMON_H

#include <stddef.h>
#include <stdint.h>

#include <check.h>

#include "kva.h"

#define CHECK_POOL(pool)                                                       \
	do {                                                                   \
		char __why[256] = "";                                          \
		int __r = kva_check((pool), __why, sizeof(__why));             \
		ck_assert_msg(__r == 0, "kva_check: %d %s", __r, __why);       \
	} while (0)

/* FNV-1a over @n bytes at @p, from @h (14695981039346656037 to start) */
static inline uint64_t fnv(uint64_t h, const void *p, size_t n)
{
	const unsigned char *c = p;

	for (size_t i = 0; i < n; i++)
		h = (h ^ c[i]) * 1099511628211ULL;
	return h;
}

#endif /* POOL_COMMON_H */
