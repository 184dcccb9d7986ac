// SPDX-License-Identifier: MIT
/*
 * quant.c - CPU reference of the KV quantization formats (see kvq.h).
 */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stddef.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "cpu.h"
#include "kvattn.h"
#include "kvq.h"

#define KVQ_F16_MAX 65504.0f

#if defined(__x86_64__)
/* fp16 to fp32 eight at a time (exact, as kvk_f16_to_f32()) */
__attribute__((target("f16c,avx"))) static void
f16_row_f16c(const uint16_t *h, uint32_t n, float *x)
{
	for (uint32_t i = 0; i + 8 <= n; i += 8)
		_mm256_storeu_ps(x + i, _mm256_cvtph_ps(_mm_loadu_si128(
						(const __m128i *)(h + i))));
}
#endif

/**
 * kvq_format_valid() - whether (head_dim, bits, groups) is in the table
 * @head_dim: 64, 80, 96, 128 or 256
 * @bits: 16, 8, 4, 2 or 1
 * @groups: 1, 2 or 4 (1 for 16 bits)
 *
 * Return: 0 or -EINVAL.
 */
int kvq_format_valid(uint32_t head_dim, uint32_t bits, uint32_t groups)
{
	int known = 0;

	if (head_dim != 64 && head_dim != 80 && head_dim != 96 &&
	    head_dim != 128 && head_dim != 256)
		return -EINVAL;
#define X(b, g) known |= bits == (b) && groups == (g);
	KVQ_FORMATS(X)
#undef X
	return known ? 0 : -EINVAL;
}

static float clamp_f16(float x)
{
	return x > KVQ_F16_MAX ? KVQ_F16_MAX : x < -KVQ_F16_MAX ? -KVQ_F16_MAX : x;
}

static void put_bits(uint8_t *row, uint32_t i, uint32_t bits, uint32_t q)
{
	uint32_t bit = i * bits;

	row[bit / 8] |= (uint8_t)(q << (bit % 8));
}

static uint32_t get_bits(const uint8_t *row, uint32_t i, uint32_t bits)
{
	uint32_t bit = i * bits;

	return (row[bit / 8] >> (bit % 8)) & ((1U << bits) - 1);
}

/**
 * kvq_quantize_row() - quantize one head vector
 * @x: head_dim values
 * @head_dim: dimension
 * @bits: format bits
 * @groups: metadata groups
 * @row: out: kvq_row_bytes() bytes
 * @meta: out: 2 * @groups fp16 (scale, zero per group); unused for 16 bits
 *
 * Return: 0, or -EINVAL for a format outside the table.
 */
int kvq_quantize_row(const float *x, uint32_t head_dim, uint32_t bits,
		     uint32_t groups, uint8_t *row, uint16_t *meta)
{
	uint32_t gsize, qmax;

	if (kvq_format_valid(head_dim, bits, groups))
		return -EINVAL;
	if (bits == 16) {
		uint16_t *h = (uint16_t *)row;

		for (uint32_t i = 0; i < head_dim; i++)
			h[i] = kvk_f32_to_f16(x[i]);
		return 0;
	}
	gsize = head_dim / groups;
	qmax = (1U << bits) - 1;
	memset(row, 0, kvq_row_bytes(head_dim, bits));
	for (uint32_t g = 0; g < groups; g++) {
		const float *v = x + g * gsize;
		float mn = clamp_f16(v[0]), mx = mn, s, z;

		for (uint32_t i = 1; i < gsize; i++) {
			float c = clamp_f16(v[i]);

			mn = c < mn ? c : mn;
			mx = c > mx ? c : mx;
		}
		meta[2 * g] = kvk_f32_to_f16(clamp_f16((mx - mn) / (float)qmax));
		meta[2 * g + 1] = kvk_f32_to_f16(mn);
		s = kvk_f16_to_f32(meta[2 * g]);
		z = kvk_f16_to_f32(meta[2 * g + 1]);
		for (uint32_t i = 0; i < gsize; i++) {
			float q = 0.0f;

			if (s > 0.0f) {
				q = rintf((clamp_f16(v[i]) - z) / s);
				q = q < 0.0f ? 0.0f : q > qmax ? (float)qmax : q;
			}
			put_bits(row, g * gsize + i, bits, (uint32_t)q);
		}
	}
	return 0;
}

/**
 * kvq_dequantize_row() - expand one quantized head vector to fp32
 * @row: kvq_row_bytes() bytes
 * @meta: 2 * @groups fp16; unused for 16 bits
 * @head_dim: dimension
 * @bits: format bits
 * @groups: metadata groups
 * @x: out: head_dim values
 *
 * Return: 0, or -EINVAL for a format outside the table.
 */
int kvq_dequantize_row(const uint8_t *row, const uint16_t *meta,
		       uint32_t head_dim, uint32_t bits, uint32_t groups,
		       float *x)
{
	uint32_t gsize;

	if (kvq_format_valid(head_dim, bits, groups))
		return -EINVAL;
	if (bits == 16) {
		const uint16_t *h = (const uint16_t *)row;

#if defined(__x86_64__)
		if (head_dim % 8 == 0 && kvk_cpu_f16c()) {
			f16_row_f16c(h, head_dim, x);
			return 0;
		}
#endif
		for (uint32_t i = 0; i < head_dim; i++)
			x[i] = kvk_f16_to_f32(h[i]);
		return 0;
	}
	gsize = head_dim / groups;
	for (uint32_t i = 0; i < head_dim; i++) {
		uint32_t g = i / gsize;

		x[i] = fmaf((float)get_bits(row, i, bits),
			    kvk_f16_to_f32(meta[2 * g]),
			    kvk_f16_to_f32(meta[2 * g + 1]));
	}
	return 0;
}

/**
 * kvk_quantize_rows_cpu() - quantize @rows head vectors (CPU reference)
 * @x: [rows][head_dim] fp32
 * @rows: number of vectors
 * @head_dim: dimension
 * @bits: format bits
 * @groups: metadata groups
 * @data: out: [rows][kvq_row_bytes()]
 * @meta: out: [rows][2 * groups] fp16; unused for 16 bits
 * @stream: ignored
 *
 * Return: 0, or -EINVAL for a format outside the table.
 */
int kvk_quantize_rows_cpu(const float *x, uint32_t rows, uint32_t head_dim,
			  uint32_t bits, uint32_t groups, uint8_t *data,
			  uint16_t *meta, void *stream)
{
	uint32_t rb = kvq_row_bytes(head_dim, bits);

	(void)stream;
	if (kvq_format_valid(head_dim, bits, groups))
		return -EINVAL;
	for (uint32_t r = 0; r < rows; r++)
		kvq_quantize_row(x + (size_t)r * head_dim, head_dim, bits,
				 groups, data + (size_t)r * rb,
				 meta ? meta + (size_t)r * 2 * groups : NULL);
	return 0;
}

/**
 * kvk_dequantize_rows_cpu() - expand @rows quantized vectors (CPU reference)
 * @data: [rows][kvq_row_bytes()]
 * @meta: [rows][2 * groups] fp16
 * @rows: number of vectors
 * @head_dim: dimension
 * @bits: format bits
 * @groups: metadata groups
 * @x: out: [rows][head_dim] fp32
 * @stream: ignored
 *
 * Return: 0, or -EINVAL for a format outside the table.
 */
int kvk_dequantize_rows_cpu(const uint8_t *data, const uint16_t *meta,
			    uint32_t rows, uint32_t head_dim, uint32_t bits,
			    uint32_t groups, float *x, void *stream)
{
	uint32_t rb = kvq_row_bytes(head_dim, bits);

	(void)stream;
	if (kvq_format_valid(head_dim, bits, groups))
		return -EINVAL;
	for (uint32_t r = 0; r < rows; r++)
		kvq_dequantize_row(data + (size_t)r * rb,
				   meta ? meta + (size_t)r * 2 * groups : NULL,
				   head_dim,
				   bits, groups, x + (size_t)r * head_dim);
	return 0;
}

/**
 * kvq_page_put() - quantize and store token @t of a page
 * @page: host-visible page
 * @tier: the tier's formats and segment offsets (kva_attn_tier() builds
 *	it from the allocator's layout)
 * @head_dim: dimension
 * @t: token index in the page, below tier->tokens
 * @k: head_dim key values
 * @v: head_dim value values
 * @score: importance score
 * @pos: position
 *
 * Return: 0, or -EINVAL for a token outside the page or a bad format.
 */
int kvq_page_put(void *page, const struct kvk_attn_tier *tier,
		 uint32_t head_dim, uint32_t t, const float *k, const float *v,
		 float score, int32_t pos)
{
	uint8_t *p = page;
	int ret;

	if (t >= tier->tokens)
		return -EINVAL;
	ret = kvq_quantize_row(k, head_dim, tier->kbits, tier->kgroups,
			       p + tier->k_off +
				       t * kvq_row_bytes(head_dim, tier->kbits),
			       (uint16_t *)(p + tier->km_off +
					    t * kvq_meta_bytes(tier->kbits,
							       tier->kgroups)));
	if (!ret)
		ret = kvq_quantize_row(
			v, head_dim, tier->vbits, tier->vgroups,
			p + tier->v_off +
				t * kvq_row_bytes(head_dim, tier->vbits),
			(uint16_t *)(p + tier->vm_off +
				     t * kvq_meta_bytes(tier->vbits,
							tier->vgroups)));
	if (ret)
		return ret;
	memcpy(p + tier->score_off + 4 * t, &score, 4);
	memcpy(p + tier->pos_off + 4 * t, &pos, 4);
	return 0;
}

/**
 * kvq_page_get() - load and dequantize token @t of a page
 * @page: host-visible page
 * @tier: the tier's formats and segment offsets
 * @head_dim: dimension
 * @t: token index in the page
 * @k: out: head_dim key values
 * @v: out: head_dim value values
 * @score: out
 * @pos: out
 *
 * Return: 0, or -EINVAL for a token outside the page or a bad format.
 */
int kvq_page_get(const void *page, const struct kvk_attn_tier *tier,
		 uint32_t head_dim, uint32_t t, float *k, float *v,
		 float *score, int32_t *pos)
{
	const uint8_t *p = page;
	int ret;

	if (t >= tier->tokens)
		return -EINVAL;
	ret = kvq_dequantize_row(
		p + tier->k_off + t * kvq_row_bytes(head_dim, tier->kbits),
		(const uint16_t *)(p + tier->km_off +
				   t * kvq_meta_bytes(tier->kbits,
						      tier->kgroups)),
		head_dim, tier->kbits, tier->kgroups, k);
	if (!ret)
		ret = kvq_dequantize_row(
			p + tier->v_off + t * kvq_row_bytes(head_dim, tier->vbits),
			(const uint16_t *)(p + tier->vm_off +
					   t * kvq_meta_bytes(tier->vbits,
							      tier->vgroups)),
			head_dim, tier->vbits, tier->vgroups, v);
	if (ret)
		return ret;
	memcpy(score, p + tier->score_off + 4 * t, 4);
	memcpy(pos, p + tier->pos_off + 4 * t, 4);
	return 0;
}
