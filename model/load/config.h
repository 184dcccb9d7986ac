/* SPDX-License-Identifier: MIT */
/*
 * config.h - LLaMA-family hyperparameters from GGUF metadata, and the
 * binding of weight tensors by name with shape checks.
 *
 * Architectures (general.architecture): "llama" (Llama 2/3, SmolLM2,
 * Mistral converted as llama), "mistral", "qwen2" (q/k/v bias), "qwen3"
 * (q/k RMSNorm). Keys are read under the architecture's prefix, e.g.
 * "llama.block_count".
 */
#ifndef LLM_CONFIG_H
#define LLM_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "gguf.h"

/* limits that keep every size computed from a config inside 64 bits */
#define LLM_MAX_DIM 65536
#define LLM_MAX_LAYERS 1024
#define LLM_MAX_HEADS 1024
#define LLM_MAX_FFN (1U << 20)
#define LLM_MAX_VOCAB (1U << 22)
#define LLM_MAX_CTX (1U << 24)

enum llm_arch {
	LLM_ARCH_LLAMA,
	LLM_ARCH_MISTRAL,
	LLM_ARCH_QWEN2,
	LLM_ARCH_QWEN3,
};

/*
 * Model hyperparameters. Filled by llm_config_load(), owned by the caller,
 * plain data (no pointers into the file).
 */
struct llm_config {
	enum llm_arch arch;
	char arch_name[16];  /* general.architecture */
	uint32_t n_ctx;	     /* context_length, tokens */
	uint32_t dim;	     /* embedding_length */
	uint32_t n_layers;   /* block_count */
	uint32_t ffn_dim;    /* feed_forward_length */
	uint32_t n_heads;    /* attention.head_count */
	uint32_t n_kv_heads; /* attention.head_count_kv (default n_heads) */
	uint32_t head_dim;   /* attention.key_length, default dim / n_heads */
	uint32_t rope_dim;   /* rope.dimension_count, default head_dim */
	float rope_theta;    /* rope.freq_base, default 10000 */
	float rms_eps;	     /* attention.layer_norm_rms_epsilon */
	uint32_t n_vocab;    /* vocab_size, else tokens, else token_embd */
	bool qkv_bias;	     /* qwen2: attn_{q,k,v}.bias */
	bool qk_norm;	     /* qwen3: attn_{q,k}_norm.weight */
	bool qk_interleaved; /* wq/wk rows in pairwise-RoPE order (llama and
			      * mistral GGUF); see llm_qk_file_row() */
	/* Llama-3 RoPE scaling (rope_scaling.rope_type "llama3"); 0: off */
	float rope_factor;
	float rope_low_freq;   /* low_freq_factor */
	float rope_high_freq;  /* high_freq_factor */
	uint32_t rope_orig_ctx; /* original_max_position_embeddings */
};

/* one transformer block's tensors; pointers into the struct llm_gguf */
struct llm_layer_weights {
	const struct llm_gguf_tensor *attn_norm; /* [dim] */
	const struct llm_gguf_tensor *wq;	 /* [dim, n_heads * head_dim] */
	const struct llm_gguf_tensor *wk;	 /* [dim, n_kv * head_dim] */
	const struct llm_gguf_tensor *wv;	 /* [dim, n_kv * head_dim] */
	const struct llm_gguf_tensor *wo;	 /* [n_heads * head_dim, dim] */
	const struct llm_gguf_tensor *bq, *bk, *bv; /* qwen2 only, else NULL */
	const struct llm_gguf_tensor *q_norm, *k_norm; /* qwen3: [head_dim] */
	const struct llm_gguf_tensor *ffn_norm;	 /* [dim] */
	const struct llm_gguf_tensor *w_gate;	 /* [dim, ffn_dim] */
	const struct llm_gguf_tensor *w_up;	 /* [dim, ffn_dim] */
	const struct llm_gguf_tensor *w_down;	 /* [ffn_dim, dim] */
};

/*
 * All weights of a model. Owned by the caller; the tensors belong to the
 * struct llm_gguf, which must stay open while these are used. Released with
 * llm_weights_fini().
 */
struct llm_weights {
	const struct llm_gguf_tensor *tok_embd;	   /* [dim, n_vocab] */
	const struct llm_gguf_tensor *output_norm; /* [dim] */
	const struct llm_gguf_tensor *output; /* [dim, n_vocab]; == tok_embd
					       * when tied */
	const struct llm_gguf_tensor *rope_freqs; /* [rope_dim / 2] or NULL */
	bool tied;			   /* output is tok_embd */
	uint32_t n_layers;
	struct llm_layer_weights *layers; /* n_layers entries */
	uint64_t bytes;			  /* total bytes of bound tensors */
	const struct llm_gguf *src;	  /* the table they were bound from */
};

int llm_config_load(const struct llm_gguf *g, struct llm_config *c,
		    char *err, size_t errlen);
int llm_weights_bind(const struct llm_gguf *g, const struct llm_config *c,
		     struct llm_weights *w, char *err, size_t errlen);
void llm_weights_fini(struct llm_weights *w);

#endif /* LLM_CONFIG_H */
