// SPDX-License-Identifier: MIT
/*
 * mem.c - CPU reference of the streaming-read kernel.
 */
#include <errno.h>
#include <string.h>

#include "kvk_mem.h"

/**
 * kvk_read_sum_cpu() - sum the 32-bit words of a buffer (CPU reference)
 * @p: buffer, 16-byte aligned
 * @bytes: length, a multiple of 16
 * @out: the sum modulo 2^64
 * @stream: ignored
 *
 * Return: 0, or -EINVAL for a misaligned buffer or length.
 */
int kvk_read_sum_cpu(const void *p, size_t bytes, uint64_t *out,
		     void *stream)
{
	const uint32_t *w = p;
	uint64_t s = 0;

	(void)stream;
	if (((uintptr_t)p | bytes) % 16 || !out)
		return -EINVAL;
	for (size_t i = 0; i < bytes / 4; i++)
		s += w[i];
	*out = s;
	return 0;
}
