/* SPDX-License-Identifier: MIT */
/*
 * kvk.h - the small kernels the executor needs: RMSNorm, RoPE, SiLU-mul,
 * residual add, embedding gather, greedy and top-k/top-p sampling.
 *
 * Every op has two launchers with one signature: kvk_<op>_cpu(), the
 * reference, and kvk_<op>_cuda(), built only with CUDA (KVMM_HAVE_CUDA).
 * Pointers live in the backend's memory: host memory for _cpu, device memory
 * for _cuda (configuration structs passed by pointer are always host memory).
 * @stream is a cudaStream_t passed as void * (NULL: the default stream); the
 * CPU launchers ignore it. The CUDA launchers are asynchronous: they return
 * after the launch, and a fault inside the kernel shows at the next
 * synchronisation.
 *
 * Activations are fp32, fp16 or bf16 (enum kvk_dtype), always accumulated in
 * fp32 and rounded once, to nearest even, on store. Both backends accept all
 * three; the CPU converts with kvk_f32_to_f16() and friends.
 *
 * Every launcher returns 0 or a negative errno: -EINVAL for a bad size,
 * dtype, pointer or option, and for CUDA the launch error translated
 * (-ENOMEM, -ENODEV, -EFAULT, -EIO). A count of zero rows or elements is a
 * valid no-op. See Documentation/kernels/index.rst.
 */
#ifndef KVK_H
#define KVK_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

enum kvk_dtype {
	KVK_F32 = 0,  /* IEEE binary32 */
	KVK_F16 = 1,  /* IEEE binary16 */
	KVK_BF16 = 2, /* bfloat16: the top half of a binary32 */
	KVK_DTYPE_NR,
};

/* Largest head_dim kvk_rope_*() accepts (any even value up to it). */
#define KVK_ROPE_MAX_HEAD_DIM 256

/**
 * struct kvk_rope_cfg - rotary embedding parameters (HF Llama "rope_theta"
 * and "rope_scaling" with rope_type "llama3")
 * @theta: base of the frequencies, e.g. 500000 for Llama 3; > 0
 * @factor: Llama-3 scaling factor (8 for Llama 3.1); 0 turns scaling off
 * @low_freq_factor: Llama-3 low_freq_factor (1 for Llama 3.1)
 * @high_freq_factor: Llama-3 high_freq_factor (4); > low_freq_factor
 * @orig_max_pos: original_max_position_embeddings (8192); > 0 when scaling
 */
struct kvk_rope_cfg {
	float theta;
	float factor;
	float low_freq_factor;
	float high_freq_factor;
	int orig_max_pos;
};

/**
 * struct kvk_sample_cfg - how kvk_sample_*() picks a token
 * @temperature: divides the logits; <= 0 means greedy (argmax)
 * @top_k: keep the k most likely tokens; 0 (or >= vocab) keeps all
 * @top_p: keep the smallest most-likely prefix whose probability reaches
 *	top_p; in (0, 1], 1 keeps all
 */
struct kvk_sample_cfg {
	float temperature;
	int top_k;
	float top_p;
};

/* bytes of one element of @dt, 0 for an unknown dtype */
static inline size_t kvk_dtype_size(enum kvk_dtype dt)
{
	switch (dt) {
	case KVK_F32:
		return 4;
	case KVK_F16:
	case KVK_BF16:
		return 2;
	default:
		return 0;
	}
}

const char *kvk_dtype_name(enum kvk_dtype dt);

/*
 * kvk_f16_to_f32() - widen an IEEE half to float (exact). Inline: the CPU
 * references of the paged kernels call it for every element they read.
 */
static inline float kvk_f16_to_f32(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000) << 16;
	uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff, u;
	float f;

	if (!exp)	/* zero or subnormal: mant * 2^-24, exact in float */
		return (sign ? -1.0f : 1.0f) *
		       ((float)mant * 5.9604644775390625e-8f);
	u = sign | (exp == 0x1f ? 0x7f800000 | (mant << 13)
				: ((exp + 112) << 23) | (mant << 13));
	memcpy(&f, &u, sizeof(f));
	return f;
}

/* dtype.c: conversions, round to nearest even; NaN stays NaN */
uint16_t kvk_f32_to_f16(float f);
uint16_t kvk_f32_to_bf16(float f);
float kvk_bf16_to_f32(uint16_t h);
int kvk_convert_from_f32(void *dst, const float *src, size_t n,
			 enum kvk_dtype dt);
int kvk_convert_to_f32(float *dst, const void *src, size_t n,
		       enum kvk_dtype dt);
float kvk_rand_uniform(uint64_t seed, uint64_t counter);
int kvk_convert_cpu(void *dst, enum kvk_dtype ddt, const void *src,
		    enum kvk_dtype sdt, size_t n, void *stream);
#ifdef KVMM_HAVE_CUDA
int kvk_convert_cuda(void *dst, enum kvk_dtype ddt, const void *src,
		     enum kvk_dtype sdt, size_t n, void *stream);
#endif

/* x[r] = H x[r] / sqrt(dim) in place (rotate.c): a KV rotation */
#define KVK_HADAMARD_MAX_DIM 256
int kvk_hadamard_cpu(void *x, enum kvk_dtype dt, size_t rows, uint32_t dim,
		     void *stream);
#ifdef KVMM_HAVE_CUDA
int kvk_hadamard_cuda(void *x, enum kvk_dtype dt, size_t rows, uint32_t dim,
		      void *stream);
#endif

/* out[r] = x[r] / sqrt(mean(x[r]^2) + eps) * w; out may be x */
int kvk_rmsnorm_cpu(void *out, const void *x, const void *w, int rows, int dim,
		    float eps, enum kvk_dtype dt, void *stream);
int kvk_rmsnorm_cuda(void *out, const void *x, const void *w, int rows, int dim,
		     float eps, enum kvk_dtype dt, void *stream);

/* rotate q [ntok][nq][hd] and k [ntok][nkv][hd] in place, NeoX layout */
int kvk_rope_inv_freq(float *inv_freq, int head_dim,
		      const struct kvk_rope_cfg *cfg);
int kvk_rope_cpu(void *q, void *k, const int32_t *pos, int ntok, int nq,
		 int nkv, int head_dim, const struct kvk_rope_cfg *cfg,
		 enum kvk_dtype dt, void *stream);
int kvk_rope_cuda(void *q, void *k, const int32_t *pos, int ntok, int nq,
		  int nkv, int head_dim, const struct kvk_rope_cfg *cfg,
		  enum kvk_dtype dt, void *stream);

/* out = silu(gate) * up, elementwise over n elements */
int kvk_silu_mul_cpu(void *out, const void *gate, const void *up, size_t n,
		     enum kvk_dtype dt, void *stream);
int kvk_silu_mul_cuda(void *out, const void *gate, const void *up, size_t n,
		      enum kvk_dtype dt, void *stream);

/* out = a + b, elementwise over n elements; out may be a or b */
int kvk_add_cpu(void *out, const void *a, const void *b, size_t n,
		enum kvk_dtype dt, void *stream);
int kvk_add_cuda(void *out, const void *a, const void *b, size_t n,
		 enum kvk_dtype dt, void *stream);

/* out[t] = table[ids[t]]; an id outside [0, vocab) gives a zero row */
int kvk_embed_cpu(void *out, const void *table, const int32_t *ids, int ntok,
		  int dim, int vocab, enum kvk_dtype dt, void *stream);
int kvk_embed_cuda(void *out, const void *table, const int32_t *ids, int ntok,
		   int dim, int vocab, enum kvk_dtype dt, void *stream);

/* ids[r] = argmax of logits[r]; ties to the lowest index, NaN never wins */
int kvk_argmax_cpu(int32_t *ids, const void *logits, int rows, int vocab,
		   enum kvk_dtype dt, void *stream);
int kvk_argmax_cuda(int32_t *ids, const void *logits, int rows, int vocab,
		    enum kvk_dtype dt, void *stream);

/* ids[r] drawn from softmax(logits[r] / T) cut by top-k and top-p, u[r] */
int kvk_sample_cpu(int32_t *ids, const void *logits, const float *u, int rows,
		   int vocab, const struct kvk_sample_cfg *cfg,
		   enum kvk_dtype dt, void *stream);
int kvk_sample_cuda(int32_t *ids, const void *logits, const float *u, int rows,
		    int vocab, const struct kvk_sample_cfg *cfg,
		    enum kvk_dtype dt, void *stream);

#ifdef __cplusplus
}
#endif

#endif /* KVK_H */
