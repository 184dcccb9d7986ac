/* SPDX-License-Identifier: MIT */
/*
 * kvmm_base.h - small helpers shared by every kvmm module: error pointers,
 * bit flags, integer helpers. Kernel idioms, userspace definitions.
 */
#ifndef KVMM_BASE_H
#define KVMM_BASE_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BIT(n) (1U << (n))
#define BIT_ULL(n) (1ULL << (n))
/* GENMASK(h, l): bits l..h set, for 32-bit fields. */
#define GENMASK(h, l) ((~0U << (l)) & (~0U >> (31 - (h))))

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define SZ_1K 0x400ULL
#define SZ_1M 0x100000ULL
#define SZ_2M 0x200000ULL
#define SZ_1G 0x40000000ULL

#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

#define MAX_ERRNO 4095

static inline void *ERR_PTR(long err)
{
	return (void *)err;
}

static inline long PTR_ERR(const void *ptr)
{
	return (long)ptr;
}

static inline bool IS_ERR(const void *ptr)
{
	return (uintptr_t)ptr >= (uintptr_t)-MAX_ERRNO;
}

static inline bool IS_ERR_OR_NULL(const void *ptr)
{
	return !ptr || IS_ERR(ptr);
}

static inline uint64_t kvmm_div_round_up(uint64_t n, uint64_t d)
{
	return (n + d - 1) / d;
}

static inline uint64_t kvmm_round_up(uint64_t n, uint64_t a)
{
	return kvmm_div_round_up(n, a) * a;
}

static inline bool kvmm_is_aligned(uint64_t n, uint64_t a)
{
	return a && n % a == 0;
}

#endif /* KVMM_BASE_H */
