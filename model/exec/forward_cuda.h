/* SPDX-License-Identifier: MIT */
/*
 * forward_cuda.h - the LLaMA-family forward pass on one CUDA device, with
 * the signature of the CPU executor (forward.h): load from a config and
 * bound weights, free, forward(batch) -> logits.
 *
 * Weights live on the device in fp16 or bf16 (GGUF Q4_0/Q4_1/Q8_0 and F32
 * tensors are dequantised on the host, then converted; F16 and BF16 are
 * copied as they are). GEMMs are cuBLAS with fp32 accumulation (and
 * llm_gemv_cuda() for a decode step of one sequence); RMSNorm, SiLU-mul,
 * embedding, RoPE and argmax are the kvk_*_cuda() kernels. The KV cache is
 * a device policy cache (kvpolicy.h): its pages sit in a kvmm device
 * space, and it stores, compresses and attends for every sequence of a
 * step in one call per layer. See Documentation/model/cuda.rst.
 *
 * Built only with CUDA (KVMM_HAVE_CUDA); a CPU-only build has none of
 * these symbols.
 */
#ifndef LLM_FORWARD_CUDA_H
#define LLM_FORWARD_CUDA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "forward.h"
#include "kvcache.h"
#include "kvk.h"

#ifdef __cplusplus
extern "C" {
#endif

/**
 * struct llm_cuda_opts - how to load a model on the device
 * @device: CUDA device ordinal
 * @dtype: weight dtype, KVK_F16 or KVK_BF16; KVK_F32 picks: bf16 when the
 *	file's matrices are BF16 or F32, else fp16
 * @no_graphs: do not capture decode steps into CUDA graphs
 * @wbits: 0: the layers' matrices (and an untied output matrix) in
 *	@dtype; 8 or 4: kept at 8 or 4 bits on the device (qweight.h), read
 *	directly by one-token decode steps and expanded to @dtype one matrix
 *	at a time for longer steps
 *
 * Plain value, copied by llm_cuda_load(). A NULL pointer means all zeros.
 */
struct llm_cuda_opts {
	int device;
	enum kvk_dtype dtype;
	bool no_graphs;
	int wbits;
};

struct llm_cuda;

int llm_cuda_load(const struct llm_config *c, const struct llm_weights *w,
		  const struct llm_cuda_opts *o, struct llm_cuda **out,
		  char *err, size_t errlen);
void llm_cuda_free(struct llm_cuda *m);
uint64_t llm_cuda_weight_bytes(const struct llm_cuda *m);
uint64_t llm_cuda_step_bytes(const struct llm_cuda *m);
int llm_cuda_weight_bits(const struct llm_cuda *m);
const struct llm_config *llm_cuda_config(const struct llm_cuda *m);
enum kvk_dtype llm_cuda_dtype(const struct llm_cuda *m);
int llm_cuda_forward(struct llm_cuda *m, struct llm_kv *kv,
		     const struct llm_batch *b, float *logits);
int llm_cuda_forward_greedy(struct llm_cuda *m, struct llm_kv *kv,
			    const struct llm_batch *b, int32_t *ids);
int llm_cuda_decode_async(struct llm_cuda *m, struct llm_kv *kv,
			  const struct llm_batch *b, bool feed);
int llm_cuda_wait(struct llm_cuda *m, struct llm_kv *kv, int32_t *ids, int n);
void llm_cuda_counters(const struct llm_cuda *m, unsigned long *waits,
		       uint32_t *graph_kernels, int n);
void *llm_cuda_stream(const struct llm_cuda *m);
void llm_cuda_trim(struct llm_cuda *m);
int llm_cuda_read_weights(struct llm_cuda *m, double *gbs);

/*
 * The executor's own kernels (forward_cuda.cu), each with its CPU reference
 * (forward_ref_cuda.c) of the same signature. Pointers are device memory
 * for _cuda, host memory for _cpu.
 */

#define LLM_GEMV_MAX_TOK 4 /* tokens llm_gemv_*() takes at once */
#define LLM_GEMV_MAX_SEG 3

/**
 * struct llm_gemv_out - where the rows of a GEMV's result go: rows
 * [end[s - 1], end[s]) of W (end[-1] = 0) to @y[s], token t's row at
 * y[s] + t * ld[s]
 * @n_seg: segments, 1..LLM_GEMV_MAX_SEG; end[n_seg - 1] is N (N / 2 with
 *	@glu)
 * @end: one past the last row of each segment, increasing
 * @y: fp32 outputs, one per segment
 * @ld: floats between two tokens' outputs, per segment
 * @glu: rows [0, N/2) are gates, [N/2, N) ups: output i is
 *	silu(row i) * row (N/2 + i), as kvk_silu_mul_cuda() computes it;
 *	one segment
 */
struct llm_gemv_out {
	int n_seg;
	int end[LLM_GEMV_MAX_SEG];
	float *y[LLM_GEMV_MAX_SEG];
	long ld[LLM_GEMV_MAX_SEG];
	bool glu;
};

/**
 * llm_gemv_args_check() - the arguments every GEMV (llm_gemv_*(),
 * llm_qgemv_*()) shares: activations, tokens, shape and output segments
 * @x: activations
 * @xdt: KVK_F32 or KVK_F16
 * @ldx: >= @k, a multiple of 4 (fp32) or 8 (fp16)
 * @ntok: 0..LLM_GEMV_MAX_TOK
 * @n: rows, >= 1 (even with GLU)
 * @k: columns, a positive multiple of @kmul
 * @kmul: the weight format's column multiple
 * @o: increasing segments ending at @n (@n / 2 with GLU, then one)
 *
 * Return: 0 or -EINVAL.
 */
static inline int llm_gemv_args_check(const void *x, enum kvk_dtype xdt,
				      long ldx, int ntok, int n, int k,
				      int kmul, const struct llm_gemv_out *o)
{
	int prev = 0;

	if (!x || !o || (xdt != KVK_F32 && xdt != KVK_F16) || ntok < 0 ||
	    ntok > LLM_GEMV_MAX_TOK || n < 1 || k < kmul || k % kmul ||
	    ldx < k || ldx % (xdt == KVK_F32 ? 4 : 8) || o->n_seg < 1 ||
	    o->n_seg > LLM_GEMV_MAX_SEG ||
	    o->end[o->n_seg - 1] != (o->glu ? n / 2 : n) ||
	    (o->glu && (n % 2 || o->n_seg != 1)))
		return -EINVAL;
	for (int s = 0; s < o->n_seg; s++) {
		if (!o->y[s] || o->end[s] <= prev ||
		    o->ld[s] < o->end[s] - prev)
			return -EINVAL;
		prev = o->end[s];
	}
	return 0;
}

int llm_gemv_cpu(const void *w, enum kvk_dtype wdt, const void *x,
		 enum kvk_dtype xdt, long ldx, int ntok, int n, int k,
		 const float *nw, float eps, const struct llm_gemv_out *o,
		 float beta, void *stream);
int llm_gemv_cuda(const void *w, enum kvk_dtype wdt, const void *x,
		  enum kvk_dtype xdt, long ldx, int ntok, int n, int k,
		  const float *nw, float eps, const struct llm_gemv_out *o,
		  float beta, void *stream);
int llm_split_cpu(void *hi, void *lo, enum kvk_dtype dt, const float *src,
		  size_t n, void *stream);
int llm_split_cuda(void *hi, void *lo, enum kvk_dtype dt, const float *src,
		   size_t n, void *stream);
int llm_bias_add_cpu(float *y, const float *b, int rows, int n,
		     void *stream);
int llm_bias_add_cuda(float *y, const float *b, int rows, int n,
		      void *stream);

#ifdef __cplusplus
}
#endif

#endif /* LLM_FORWARD_CUDA_H */
