/* SPDX-License-Identifier: MIT */
/*
 * qdot_int.h - private to kernels/qdot*.c: ggml's block layouts and the
 * per-ISA kernel tables.
 *
 * Element order inside a block is ggml's:
 *  - Q4_0/Q4_1: element j < 16 is the low nibble of qs[j], element j + 16
 *    the high nibble; Q5_0/Q5_1 add bit j of the 32-bit qh as bit 4.
 *  - Q4_K/Q5_K: four groups of 64; group g holds sub-blocks 2g (low
 *    nibbles of qs[32g .. 32g+31]) and 2g+1 (high nibbles); Q5_K's fifth
 *    bit of sub-block s is bit s of qh[l]. Six-bit scales and mins of the
 *    eight sub-blocks are packed in scales[12] (qdot_k4_scales()).
 *  - Q6_K: two halves of 128; in half h, quarter c holds elements
 *    128h + 32c + l whose low four bits are ql[64h + 32(c&1) + l] (low
 *    nibble for c < 2, high for c >= 2) and top two bits are bits 2c..2c+1
 *    of qh[32h + l]; scales[s] is the int8 scale of elements 16s..16s+15.
 */
#ifndef KVK_QDOT_INT_H
#define KVK_QDOT_INT_H

#include <stdint.h>
#include <string.h>

#include "qdot.h"

struct qd_q4_0 {
	uint16_t d;
	uint8_t qs[KVK_QK / 2];
};

struct qd_q4_1 {
	uint16_t d, m;
	uint8_t qs[KVK_QK / 2];
};

struct qd_q5_0 {
	uint16_t d;
	uint8_t qh[4];
	uint8_t qs[KVK_QK / 2];
};

struct qd_q5_1 {
	uint16_t d, m;
	uint8_t qh[4];
	uint8_t qs[KVK_QK / 2];
};

struct qd_q8_0 {
	uint16_t d;
	int8_t qs[KVK_QK];
};

struct qd_q4_k {
	uint16_t d, dmin;
	uint8_t scales[12];
	uint8_t qs[KVK_QK_K / 2];
};

struct qd_q5_k {
	uint16_t d, dmin;
	uint8_t scales[12];
	uint8_t qh[KVK_QK_K / 8];
	uint8_t qs[KVK_QK_K / 2];
};

struct qd_q6_k {
	uint8_t ql[KVK_QK_K / 2];
	uint8_t qh[KVK_QK_K / 4];
	int8_t scales[KVK_QK_K / 16];
	uint16_t d;
};

_Static_assert(sizeof(struct qd_q4_0) == 18, "Q4_0 block");
_Static_assert(sizeof(struct qd_q4_1) == 20, "Q4_1 block");
_Static_assert(sizeof(struct qd_q5_0) == 22, "Q5_0 block");
_Static_assert(sizeof(struct qd_q5_1) == 24, "Q5_1 block");
_Static_assert(sizeof(struct qd_q8_0) == 34, "Q8_0 block");
_Static_assert(sizeof(struct qd_q4_k) == 144, "Q4_K block");
_Static_assert(sizeof(struct qd_q5_k) == 176, "Q5_K block");
_Static_assert(sizeof(struct qd_q6_k) == 210, "Q6_K block");
_Static_assert(sizeof(struct kvk_qa8) == 40, "activation block");
_Static_assert(sizeof(struct kvk_q8k) == 292, "Q8_K block");

/*
 * The eight 6-bit scales (bytes 0..7) and mins (bytes 8..15) of a Q4_K or
 * Q5_K super-block, unpacked from its scales[12].
 */
static inline void qdot_k4_scales(const uint8_t *s12, uint8_t out[16])
{
	const uint32_t m1 = 0x3f3f3f3f, m2 = 0x0f0f0f0f, m3 = 0x03030303;
	uint32_t u[4];

	memcpy(u, s12, 12);
	u[3] = ((u[2] >> 4) & m2) | (((u[1] >> 6) & m3) << 4);
	{
		uint32_t mins_lo = u[1] & m1;

		u[1] = (u[2] & m2) | (((u[0] >> 6) & m3) << 4);
		u[2] = mins_lo;
	}
	u[0] &= m1;
	memcpy(out, u, 16);
}

/*
 * y[t * ldy + r] = dot(row r of w, activation row t), for r < n, t < nt;
 * @nb blocks per row; rows @ldw bytes apart, activation rows @lda bytes.
 */
typedef void (*qdot_gemm_fn)(const uint8_t *w, size_t ldw, int n,
			     const uint8_t *qa, size_t lda, int nt, float *y,
			     size_t ldy, size_t nb);

qdot_gemm_fn qdot_tab_c(uint32_t wtype);
qdot_gemm_fn qdot_tab_avx2(uint32_t wtype);
qdot_gemm_fn qdot_tab_avx512(uint32_t wtype);
/* the AVX-512 path's prefill panels (32-element formats); NULL: none */
qdot_gemm_fn qdot_ptab_avx512(uint32_t wtype);

/* kvk_qdot_quantize() for @k a whole number of blocks; @k8: Q8_K */
void qdot_quant_avx2(const float *x, void *qa, size_t k, bool k8);
void qdot_quant_avx512(const float *x, void *qa, size_t k, bool k8);

#endif /* KVK_QDOT_INT_H */
