/* SPDX-License-Identifier: MIT */
/*
 * kvpolicy_int.h - the policy cache's insides, shared by its host part
 * (kvpolicy.c: the uapi calls and the CPU kernels) and its device part
 * (kvpolicy_cuda.c: the CUDA kernels). Not an interface.
 */
#ifndef LLM_KVPOLICY_INT_H
#define LLM_KVPOLICY_INT_H

#include <errno.h>
#include <stdint.h>

#include "compress.h"
#include "kvattn.h"
#include "kvcache.h"
#include "kvevict.h"
#include "kvmm.h"
#include "policy.h"

/* struct kvp_seq - one sequence of the cache */
struct kvp_seq {
	uint32_t slot;		/* the space's slot while @live */
	int live;		/* admitted in the space */
	int decoding;		/* trimmed: decode steps may run */
	uint32_t len;		/* positions seen */
	uint32_t steps;		/* decode steps since the last eviction */
};

/*
 * struct kvp_stage - host cache: a prompt arriving in chunks
 * (llm_kv_set_prompt()), held in fp32 until its last chunk lands; then it
 * is classified and written to pages as a whole prompt would be
 */
struct kvp_stage {
	uint32_t n;		/* the prompt's tokens; 0: nothing staged */
	float *k, *v;		/* [nl][n][nkv][hd] the chunks' keys, values */
	float *acc;		/* [nl][nh][n] score sums of the prompt's last
				 * score_window queries */
};

/* struct kvp.sflag: an entry of a prefill step */
#define KVP_FIN		1	/* the prompt ends in this step: admitted */
#define KVP_CHUNK	2	/* a chunk of a staged prompt */

struct kvp_dev;
struct llm_pool;

/*
 * struct kvp - the policy cache. Owned by its creator; one forward pass at
 * a time (not locked). Its pages are a kvmm space (@fd, @space), reached
 * through the uapi only; @map holds the space's tables, in host memory for
 * a host cache and device memory for a device cache (@dev).
 *
 * The step in progress is described in batch order (sequence i of the
 * batch is entry i): @slots, @ss, @lb, @pos, @salpha and @sstart are
 * written by begin() and read by layer() and end().
 */
struct kvp {
	struct llm_kv kv;
	struct llm_policy pol;
	uint32_t nh, nkv, hd, group, nl, lps;
	float scale;
	int fd;
	uint32_t space;
	struct kvmm_space_map map;
	struct kvk_attn_tier at[2];
	uint32_t full_tpp, full_page_size;
	struct kvp_seq *seq;	/* [n_seq] */
	float (*alpha)[2];	/* [n_seq] (prune, quant) of each sequence */

	/* the step in progress */
	int kind;		/* LLM_KV_PREFILL or LLM_KV_DECODE */
	int n;			/* sequences in it */
	uint32_t ntok;		/* tokens in it */
	uint32_t max_len;	/* longest prompt (prefill) */
	uint32_t *slots;	/* [n_seq] */
	struct kvmm_step_slot *ss; /* [n_seq] */
	struct kvmm_seq *adm;	/* [n_seq] */
	uint32_t *lb;		/* [n_layers][n]: list of kv-head 0 */
	int32_t *pos;		/* [n_seq] decode position */
	float *salpha;		/* [n_seq][2] */
	uint32_t *sstart;	/* [n_seq + 1] prompt starts */
	uint8_t *sflag;		/* [n_seq] KVP_FIN, KVP_CHUNK of a prefill */
	int staged;		/* a prefill step with a KVP_CHUNK entry */

	struct kvp_dev *dev;	/* NULL: a host cache */
	/*
	 * knorm: [n_seq * n_layers * n_kv_heads lists][2][head_dim] each
	 * list's key means and scales (kvk_chnorm_*()), indexed by list id;
	 * host memory for a host cache, device memory for a device cache
	 */
	float *chn;

	/* host cache: workers and scratch, grown with the step's tokens */
	struct llm_pool *threads;
	size_t cap;		/* tokens the scratch holds */
	float *k, *v;		/* [cap][nkv][hd] */
	float *q, *o;		/* [cap][nh][hd] */
	float *scores;		/* [cap][nkv] */
	float *p;		/* [threads][max_tok] probabilities */
	float *acc;		/* [threads][max_tok] score sums */
	uint32_t *counts;	/* [n_seq][nkv][KVK_TOK_NR] */
	struct kvk_compress_action *act; /* [n_seq][nkv] */

	/* host cache: prompts in chunks, and the whole prompts ending in a
	 * step with chunks, packed for one compress call */
	struct kvp_stage *stage; /* [n_seq] */
	float *pk, *pv, *ps;	/* [pcap][nkv][hd], scores [pcap][nkv] */
	size_t pcap;		/* tokens they hold */
	uint32_t *pstart;	/* [n_seq + 1] */
	uint32_t *plb;		/* [n_seq] list bases of a layer */
	float *palpha;		/* [n_seq][2] */

	/* host cache, full:topk (kernels/select.h), grown as pages appear */
	void *sel_sum;		/* [sel_rows][2][hd] fp16 by page id */
	size_t sel_rows;
	uint32_t *sel_tab;	/* [sel_lists][table_width] selected pages */
	size_t sel_lists;
	uint32_t *sel_ntok;	/* [sel_nlists][2] their tokens */
	size_t sel_nlists;
	uint32_t *sel_upd;	/* [sel_nupd][3] summary updates of a layer */
	size_t sel_nupd;
};

/*
 * The kernels' arguments as the policy sets them, for the step in
 * progress; @lb, @pos, @seq_alpha are arrays in the kernels' memory (host
 * for a host cache, device for a device cache). The callers add the rest:
 * the activations, scores, counts, actions, error words, the scratch.
 */
struct kvk_compress_prompt kvp_prompt_args(const struct kvp *c,
					   const uint32_t *lb,
					   const float *seq_alpha);
struct kvk_compress_decode kvp_decode_args(const struct kvp *c,
					   const uint32_t *lb,
					   const int32_t *pos,
					   const float *seq_alpha);
struct kvk_attn_args kvp_attn_args(const struct kvp *c, uint32_t nr_seqs,
				   const uint32_t *lb);

int kvp_score_mode(const struct kvp *c);

#ifdef KVMM_HAVE_CUDA
int kvp_dev_init(struct kvp *c, int device, char *err, size_t errlen);
void kvp_dev_free(struct kvp *c);
int kvp_dev_bind(struct kvp *c, void *stream);
int kvp_dev_begin(struct kvp *c, void *stream);
int kvp_dev_layer(struct kvp *c, int layer, const struct llm_kv_io *io,
		  void *stream);
int kvp_dev_end(struct kvp *c, void *stream);
int kvp_dev_status(struct kvp *c);
#else
static inline void kvp_dev_free(struct kvp *c)
{
	(void)c;
}
#endif

#endif /* LLM_KVPOLICY_INT_H */
