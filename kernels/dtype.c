// SPDX-License-Identifier: MIT
/*
 * dtype.c - fp16 and bf16 conversions for the CPU side of kernels/, and the
 * seeded uniform numbers the sampler takes.
 *
 * The conversions round to nearest, ties to even, as the CUDA intrinsics
 * __float2half_rn() and __float2bfloat16_rn() do, so that a CPU reference
 * and a kernel that compute the same fp32 value store the same bits.
 */
#include <string.h>

#include "kvk_internal.h"

static uint32_t f32_bits(float f)
{
	uint32_t u;

	memcpy(&u, &f, sizeof(u));
	return u;
}

static float bits_f32(uint32_t u)
{
	float f;

	memcpy(&f, &u, sizeof(f));
	return f;
}

/**
 * kvk_dtype_name() - printable name of a dtype
 * @dt: the dtype
 *
 * Return: "f32", "f16", "bf16", or "?" for an unknown value.
 */
const char *kvk_dtype_name(enum kvk_dtype dt)
{
	switch (dt) {
	case KVK_F32:
		return "f32";
	case KVK_F16:
		return "f16";
	case KVK_BF16:
		return "bf16";
	default:
		return "?";
	}
}

/**
 * kvk_f32_to_f16() - round a float to IEEE half, to nearest even
 * @f: the value
 *
 * Overflow gives infinity, underflow a subnormal or signed zero, NaN a quiet
 * NaN of the same sign.
 *
 * Return: the half's bits.
 */
uint16_t kvk_f32_to_f16(float f)
{
	uint32_t u = f32_bits(f);
	uint16_t sign = (u >> 16) & 0x8000;
	uint32_t a = u & 0x7fffffff;
	uint32_t mant, rest, half;
	int shift;

	if (a > 0x7f800000) /* NaN: keep the top payload bits, make it quiet */
		return sign | 0x7e00 | ((a >> 13) & 0x3ff);
	if (a >= 0x477ff000) /* >= 65520 rounds to infinity */
		return sign | 0x7c00;
	if (a >= 0x38800000) { /* normal half: exponent >= -14 */
		uint32_t h = ((a - 0x38000000) >> 13);

		rest = a & 0x1fff;
		if (rest > 0x1000 || (rest == 0x1000 && (h & 1)))
			h++; /* a carry into the exponent is still right */
		return sign | (uint16_t)h;
	}
	if (a < 0x33000000) /* below 2^-25: rounds to zero */
		return sign;
	/* subnormal half: value = mant * 2^-24 */
	mant = (a & 0x7fffff) | 0x800000;
	shift = 126 - (int)(a >> 23); /* 14..24 */
	half = mant >> shift;
	rest = mant & ((1u << shift) - 1);
	if (rest > (1u << (shift - 1)) ||
	    (rest == (1u << (shift - 1)) && (half & 1)))
		half++;
	return sign | (uint16_t)half;
}

/**
 * kvk_f32_to_bf16() - round a float to bfloat16, to nearest even
 * @f: the value
 *
 * Return: the bfloat16's bits; NaN stays a quiet NaN.
 */
uint16_t kvk_f32_to_bf16(float f)
{
	uint32_t u = f32_bits(f);

	if ((u & 0x7fffffff) > 0x7f800000)
		return (uint16_t)((u >> 16) | 0x40);
	u += 0x7fff + ((u >> 16) & 1);
	return (uint16_t)(u >> 16);
}

/**
 * kvk_bf16_to_f32() - widen a bfloat16 to float (exact)
 * @h: the bfloat16's bits
 *
 * Return: the value.
 */
float kvk_bf16_to_f32(uint16_t h)
{
	return bits_f32((uint32_t)h << 16);
}

/**
 * kvk_convert_from_f32() - store @n floats as @dt, rounding to nearest even
 * @dst: n elements of @dt
 * @src: n floats
 * @n: element count
 * @dt: destination dtype
 *
 * Return: 0, or -EINVAL for an unknown dtype.
 */
int kvk_convert_from_f32(void *dst, const float *src, size_t n,
			 enum kvk_dtype dt)
{
	uint16_t *d16 = dst;

	switch (dt) {
	case KVK_F32:
		if (n)
			memmove(dst, src, n * sizeof(float));
		return 0;
	case KVK_F16:
		for (size_t i = 0; i < n; i++)
			d16[i] = kvk_f32_to_f16(src[i]);
		return 0;
	case KVK_BF16:
		for (size_t i = 0; i < n; i++)
			d16[i] = kvk_f32_to_bf16(src[i]);
		return 0;
	default:
		return -EINVAL;
	}
}

/**
 * kvk_convert_to_f32() - widen @n elements of @dt to float (exact)
 * @dst: n floats
 * @src: n elements of @dt
 * @n: element count
 * @dt: source dtype
 *
 * Return: 0, or -EINVAL for an unknown dtype.
 */
int kvk_convert_to_f32(float *dst, const void *src, size_t n, enum kvk_dtype dt)
{
	const uint16_t *s16 = src;

	switch (dt) {
	case KVK_F32:
		if (n)
			memmove(dst, src, n * sizeof(float));
		return 0;
	case KVK_F16:
		for (size_t i = 0; i < n; i++)
			dst[i] = kvk_f16_to_f32(s16[i]);
		return 0;
	case KVK_BF16:
		for (size_t i = 0; i < n; i++)
			dst[i] = kvk_bf16_to_f32(s16[i]);
		return 0;
	default:
		return -EINVAL;
	}
}

/**
 * kvk_rand_uniform() - the uniform number for one draw of a seeded run
 * @seed: the run's seed
 * @counter: which draw (e.g. step * rows + row)
 *
 * SplitMix64 of (seed, counter), so every draw is reproducible on its own
 * and independent of how many came before. Pass the results to
 * kvk_sample_cpu() or kvk_sample_cuda() to pick the same tokens on both.
 *
 * Return: a float in [0, 1), a multiple of 2^-24.
 */
float kvk_rand_uniform(uint64_t seed, uint64_t counter)
{
	uint64_t z = seed + (counter + 1) * 0x9e3779b97f4a7c15ULL;

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	z ^= z >> 31;
	return (float)(z >> 40) * 5.9604644775390625e-8f;
}

/**
 * kvk_convert_cpu() - reference of kvk_convert_cuda()
 * @dst: @n elements of @ddt
 * @ddt: destination dtype
 * @src: @n elements of @sdt
 * @sdt: source dtype
 * @n: elements
 * @stream: ignored
 *
 * Return: 0 or -EINVAL.
 */
int kvk_convert_cpu(void *dst, enum kvk_dtype ddt, const void *src,
		    enum kvk_dtype sdt, size_t n, void *stream)
{
	float buf[256];
	size_t ds = kvk_dtype_size(ddt), ss = kvk_dtype_size(sdt);

	(void)stream;
	if (!dst || !src || !ds || !ss)
		return -EINVAL;
	for (size_t i = 0; i < n; i += 256) {
		size_t c = n - i < 256 ? n - i : 256;

		kvk_convert_to_f32(buf, (const uint8_t *)src + i * ss, c, sdt);
		kvk_convert_from_f32((uint8_t *)dst + i * ds, buf, c, ddt);
	}
	return 0;
}
