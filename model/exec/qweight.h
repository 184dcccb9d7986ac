/* SPDX-License-Identifier: MIT */
/*
 * qweight.h - weight matrices kept at 8 or 4 bits on the device
 *
 * The CUDA executor keeps its matrices in the weight dtype (fp16/bf16), or,
 * with llm_cuda_opts.wbits, at 8 or 4 bits in groups of LLM_QW_GROUP
 * consecutive columns of a row:
 *
 *   LLM_QW8: q int8 [n][k]; meta fp16 [n][k / 32], the group's scale d;
 *	    w = d * q. The bytes of GGUF's Q8_0 (an fp16 d and 32 int8
 *	    per block), split into two arrays.
 *   LLM_QW4: q uint8 [n][k / 2]: byte j of group g holds column 32 g + j
 *	    in its low nibble and 32 g + j + 16 in its high one (GGUF's Q4_0
 *	    and Q4_1 order); meta fp16 pairs [n][k / 32] (d, m); w = d * q + m.
 *	    Q4_1 exactly, Q4_0 with m = -8 d.
 *
 * Other sources (bf16, fp16, K-quants, ...) are quantized at load by
 * llm_qw_quantize_rows(): Q8 by each group's absolute maximum, Q4 by its
 * minimum and maximum (as Q4_1).
 *
 * A decode step of one token reads them directly (llm_qgemv_cuda());
 * steps of more tokens expand one matrix at a time to the weight dtype in
 * a scratch buffer (llm_qw_dequant_cuda()) and run cuBLAS on it.
 */
#ifndef LLM_QWEIGHT_H
#define LLM_QWEIGHT_H

#include <stddef.h>
#include <stdint.h>

#include "forward_cuda.h"
#include "kvk.h"

#ifdef __cplusplus
extern "C" {
#endif

#define LLM_QW_GROUP 32

#ifdef __CUDACC__
#define LLM_QW_HD __host__ __device__
#else
#define LLM_QW_HD
#endif

enum llm_qw_fmt {
	LLM_QW8 = 8,
	LLM_QW4 = 4,
};

/**
 * struct llm_qw - a quantized matrix of @n rows and @k columns
 * @fmt: LLM_QW8 or LLM_QW4
 * @q: the quantized values, llm_qw_row_bytes() per row, 16-byte aligned
 * @meta: per group: fp16 d (Q8) or fp16 (d, m) (Q4), 4-byte aligned
 */
struct llm_qw {
	enum llm_qw_fmt fmt;
	const void *q;
	const void *meta;
};

/* bytes of one row's values, and of one row's group metadata */
LLM_QW_HD static inline size_t llm_qw_row_bytes(enum llm_qw_fmt f, size_t k)
{
	return f == LLM_QW8 ? k : k / 2;
}

LLM_QW_HD static inline size_t llm_qw_meta_bytes(enum llm_qw_fmt f, size_t k)
{
	return k / LLM_QW_GROUP * (f == LLM_QW8 ? 2 : 4);
}

/* the matrix's rows from @r0 on, as a matrix of their own */
static inline struct llm_qw llm_qw_rows(const struct llm_qw *w, size_t r0,
					size_t k)
{
	struct llm_qw s = *w;

	s.q = (const uint8_t *)w->q + r0 * llm_qw_row_bytes(w->fmt, k);
	s.meta = (const uint8_t *)w->meta + r0 * llm_qw_meta_bytes(w->fmt, k);
	return s;
}

int llm_qw_quantize_rows(enum llm_qw_fmt f, const float *src, size_t n,
			 size_t k, void *q, void *meta);
int llm_qw_dequant_cpu(void *dst, enum kvk_dtype dt, const struct llm_qw *w,
		       int n, int k, void *stream);
int llm_qw_dequant_cuda(void *dst, enum kvk_dtype dt,
			const struct llm_qw *w, int n, int k, void *stream);
int llm_qgemv_cpu(const struct llm_qw *w, const void *x, enum kvk_dtype xdt,
		  long ldx, int ntok, int n, int k, const float *nw, float eps,
		  const struct llm_gemv_out *o, float beta, void *stream);
int llm_qgemv_cuda(const struct llm_qw *w, const void *x,
		   enum kvk_dtype xdt, long ldx, int ntok, int n, int k,
		   const float *nw, float eps, const struct llm_gemv_out *o,
		   float beta, void *stream);

#ifdef __cplusplus
}
#endif

#endif /* LLM_QWEIGHT_H */
