/* SPDX-License-Identifier: MIT */
/*
 * kvq.h - KV quantization formats: per-token asymmetric min/max quantization
 * of key and value vectors, and their packing into the page layout that
 * allocator/geometry.c computes.
 *
 * A format is one side (K or V) of a tier: bits in {16, 8, 4, 2, 1} and 1, 2
 * or 4 metadata groups per head vector. 16 bits is fp16, uncompressed, with
 * no metadata. Every (bits, groups) pair comes from one table (KVQ_FORMATS),
 * and a tier is any pair of formats, so any (high, low) tier pair works.
 *
 * Usable from C and CUDA.
 */
#ifndef KVQ_H
#define KVQ_H

#include <stdint.h>
#include <string.h>

#include "kvk.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * The table: X(bits, groups) for every supported format. The CUDA kernels
 * are instantiated from it, the CPU code validates against it.
 */
#define KVQ_FORMATS(X)                                                         \
	X(16, 1)                                                               \
	X(8, 1) X(8, 2) X(8, 4)                                                \
	X(4, 1) X(4, 2) X(4, 4)                                                \
	X(2, 1) X(2, 2) X(2, 4)                                                \
	X(1, 1) X(1, 2) X(1, 4)

#define KVQ_MAX_GROUPS 4
#define KVQ_MAX_HEAD_DIM 256

/**
 * DOC: bit layout
 *
 * One token's vector of head_dim values is one row of head_dim * bits / 8
 * bytes. Value i sits at bit i * bits of the row, little-endian: in a byte,
 * the lowest bits hold the lowest index. For 4 bits, byte j holds values
 * 2j (bits 0-3) and 2j+1 (bits 4-7); for 1 bit, byte j holds 8j..8j+7.
 * A 16-bit row is head_dim fp16 values.
 *
 * Group g covers values [g * head_dim / groups, (g + 1) * head_dim / groups).
 * Its metadata is two fp16: scale then zero point; a row's metadata is
 * groups * 4 bytes, group 0 first.
 *
 * Quantization of a group with minimum mn and maximum mx (inputs clamped to
 * the fp16 range first): scale = fp16((mx - mn) / (2^bits - 1)), zero =
 * fp16(mn), q = clamp(rint((x - zero) / scale), 0, 2^bits - 1), or q = 0
 * when scale is 0 (a constant group: no inf, no NaN). Dequantization is
 * fma(q, scale, zero). The CPU and CUDA code run the same operations
 * (IEEE division, explicit fma, round-to-nearest-even conversions), so their
 * bytes are identical.
 *
 * Within a page (struct kvk_attn_tier), token t of a tier has its K row at
 * k_off + t * row_bytes(kbits), its K metadata at km_off + t * meta_bytes,
 * likewise V at v_off and vm_off, its score (fp32) at score_off + 4t and
 * its position (int32) at pos_off + 4t.
 */

static inline uint32_t kvq_row_bytes(uint32_t head_dim, uint32_t bits)
{
	return head_dim * bits / 8;
}

static inline uint32_t kvq_meta_bytes(uint32_t bits, uint32_t groups)
{
	return bits == 16 ? 0 : 4 * groups;
}

int kvq_format_valid(uint32_t head_dim, uint32_t bits, uint32_t groups);

/* fp16 conversions: kvk_f32_to_f16() and kvk_f16_to_f32() of kvk.h */

/* one row (CPU) */
int kvq_quantize_row(const float *x, uint32_t head_dim, uint32_t bits,
		     uint32_t groups, uint8_t *row, uint16_t *meta);
int kvq_dequantize_row(const uint8_t *row, const uint16_t *meta,
		       uint32_t head_dim, uint32_t bits, uint32_t groups,
		       float *x);

/* one token of a page, on a host-visible page (CPU reference, tests) */
struct kvk_attn_tier;
int kvq_page_put(void *page, const struct kvk_attn_tier *tier,
		 uint32_t head_dim, uint32_t t, const float *k, const float *v,
		 float score, int32_t pos);
int kvq_page_get(const void *page, const struct kvk_attn_tier *tier,
		 uint32_t head_dim, uint32_t t, float *k, float *v,
		 float *score, int32_t *pos);

/*
 * Batched rows: the kernel and its CPU reference share this signature.
 * @x: [rows][head_dim] fp32; @data: [rows][row_bytes]; @meta: [rows][2 *
 * groups] fp16 (unused for 16 bits); @stream: a CUstream (NULL on the CPU).
 * On CUDA every pointer is a device address.
 */
int kvk_quantize_rows_cpu(const float *x, uint32_t rows, uint32_t head_dim,
			  uint32_t bits, uint32_t groups, uint8_t *data,
			  uint16_t *meta, void *stream);
int kvk_dequantize_rows_cpu(const uint8_t *data, const uint16_t *meta,
			    uint32_t rows, uint32_t head_dim, uint32_t bits,
			    uint32_t groups, float *x, void *stream);
#ifdef KVMM_HAVE_CUDA
int kvk_quantize_rows_cuda(const float *x, uint32_t rows, uint32_t head_dim,
			   uint32_t bits, uint32_t groups, uint8_t *data,
			   uint16_t *meta, void *stream);
int kvk_dequantize_rows_cuda(const uint8_t *data, const uint16_t *meta,
			     uint32_t rows, uint32_t head_dim, uint32_t bits,
			     uint32_t groups, float *x, void *stream);
#endif

#ifdef __cplusplus
}
#endif

#endif /* KVQ_H */
