/* SPDX-License-Identifier: MIT */
/*
 * qdot.h - dot products of GGUF-quantised weight rows with quantised
 * activations, on the CPU, as GGUF's formats are designed to be used.
 *
 * Weights stay in their file format (the block layouts of ggml, numbered
 * as GGUF numbers them): Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 (32-element blocks)
 * and the K-quants Q4_K, Q5_K, Q6_K (256-element super-blocks). Before a
 * product the activations are quantised per block to 8 bits:
 *
 *  - for the 32-element formats to struct kvk_qa8 (ggml's Q8_1 with an
 *    fp32 scale: d, d * sum(q), 32 x int8);
 *  - for the K-quants to struct kvk_q8k (ggml's Q8_K: d, 256 x int8, and
 *    the sums of each 16-element group).
 *
 * The products are then integer dot products of a weight block with an
 * activation block (int8 x int4/5/6/8 summed in int32), scaled once per
 * block (per sub-block for the K-quants) in fp32.
 *
 * Instruction sets: a portable C path (the reference), AVX2 and AVX-512
 * (AVX512BW/VL with VNNI's vpdpbusd); kvk_qdot_isa_best() reads the CPU's
 * features once (cpuid, __builtin_cpu_supports) and the caller passes the
 * ISA to every call, so that tests can run each path against the C one.
 *
 * Errors: -EINVAL for a bad size or pointer, -EOPNOTSUPP for a type or an
 * ISA this module (or this CPU) does not have. Nothing is written on error.
 */
#ifndef KVK_QDOT_H
#define KVK_QDOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* weight and activation formats, numbered as ggml and GGUF number them */
enum kvk_qtype {
	KVK_QT_F32 = 0,
	KVK_QT_F16 = 1,
	KVK_QT_Q4_0 = 2,
	KVK_QT_Q4_1 = 3,
	KVK_QT_Q5_0 = 6,
	KVK_QT_Q5_1 = 7,
	KVK_QT_Q8_0 = 8,
	KVK_QT_Q4_K = 12,
	KVK_QT_Q5_K = 13,
	KVK_QT_Q6_K = 14,
	KVK_QT_Q8_K = 15, /* activations of the K-quants only */
	KVK_QT_BF16 = 30,
};

#define KVK_QK 32	/* elements of a Q4_0 .. Q8_0 block */
#define KVK_QK_K 256	/* elements of a K-quant super-block */

/* instruction sets, in order of preference */
enum kvk_isa {
	KVK_ISA_C = 0,	    /* portable C: the reference */
	KVK_ISA_AVX2 = 1,   /* AVX2 + FMA + F16C */
	KVK_ISA_AVX512 = 2, /* + AVX512F/BW/VL and AVX512_VNNI */
	KVK_ISA_NR,
};

/**
 * struct kvk_qa8 - 32 activations quantised for the 32-element formats
 * @d: scale: x ~= q * d (fp32)
 * @s: d * sum(q), which the formats with an offset or a minimum need
 * @q: quantised values
 */
struct kvk_qa8 {
	float d;
	float s;
	int8_t q[KVK_QK];
};

/**
 * struct kvk_q8k - 256 activations quantised for the K-quants (ggml Q8_K)
 * @d: scale: x ~= q * d
 * @q: quantised values
 * @bsums: sum of q over each group of 16
 */
struct kvk_q8k {
	float d;
	int8_t q[KVK_QK_K];
	int16_t bsums[KVK_QK_K / 16];
};

const char *kvk_qtype_name(uint32_t type);
bool kvk_qdot_supported(uint32_t type);
int kvk_qtype_layout(uint32_t type, uint32_t *blck, uint32_t *bytes);
int kvk_qdot_dequant(uint32_t type, const void *src, float *dst, size_t n);
size_t kvk_qdot_act_bytes(uint32_t wtype, size_t k);
uint32_t kvk_qdot_act_type(uint32_t wtype);
int kvk_qdot_quantize(uint32_t wtype, const float *x, void *qa, size_t k);
int kvk_qdot_quantize_isa(int isa, uint32_t wtype, const float *x, void *qa,
			  size_t k);

int kvk_qdot_isa_best(void);
bool kvk_qdot_isa_ok(int isa);
const char *kvk_qdot_isa_name(int isa);

int kvk_qdot_gemm(int isa, uint32_t wtype, const void *w, size_t ldw,
		  int n, const void *qa, size_t lda, int t, float *y,
		  size_t ldy, size_t k);
int kvk_qdot_gemm_prefill(int isa, uint32_t wtype, const void *w,
			  size_t ldw, int n, const void *qa, size_t lda, int t,
			  float *y, size_t ldy, size_t k);

#ifdef __cplusplus
}
#endif

#endif /* KVK_QDOT_H */
