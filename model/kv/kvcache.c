// SPDX-License-Identifier: MIT
/*
 * kvcache.c - the contiguous fp32 KV cache: for every (sequence, layer,
 * kv-head) one [max_tok][head_dim] array of keys and one of values.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "kvcache.h"

struct kv_contig {
	struct llm_kv kv;
	float *k; /* [n_seq][n_layers][n_kv_heads][max_tok][head_dim] */
	float *v; /* same shape */
};

static size_t kvc_off(const struct llm_kv *kv, int seq, int layer, int h,
		      int pos)
{
	size_t o = ((size_t)seq * kv->n_layers + layer) * kv->n_kv_heads + h;

	return (o * kv->max_tok + pos) * kv->head_dim;
}

static int kvc_append(struct llm_kv *kv, int seq, int layer, int pos,
		      int ntok, const float *k, const float *v, long ld)
{
	struct kv_contig *c = (struct kv_contig *)kv;
	size_t hb = (size_t)kv->head_dim * sizeof(float);

	if (seq < 0 || seq >= kv->n_seq || layer < 0 ||
	    layer >= kv->n_layers || pos < 0 || ntok < 0)
		return -EINVAL;
	if ((long)pos + ntok > kv->max_tok)
		return -ENOSPC;
	for (int t = 0; t < ntok; t++) {
		for (int h = 0; h < kv->n_kv_heads; h++) {
			size_t o = kvc_off(kv, seq, layer, h, pos + t);
			size_t s = (size_t)t * ld + (size_t)h * kv->head_dim;

			memcpy(c->k + o, k + s, hb);
			memcpy(c->v + o, v + s, hb);
		}
	}
	return 0;
}

static int kvc_view(struct llm_kv *kv, int seq, int layer, int h, int n,
		    const float **k, const float **v)
{
	struct kv_contig *c = (struct kv_contig *)kv;
	size_t o;

	if (seq < 0 || seq >= kv->n_seq || layer < 0 ||
	    layer >= kv->n_layers || h < 0 || h >= kv->n_kv_heads || n < 0 ||
	    n > kv->max_tok)
		return -EINVAL;
	o = kvc_off(kv, seq, layer, h, 0);
	*k = c->k + o;
	*v = c->v + o;
	return 0;
}

static void kvc_destroy(struct llm_kv *kv)
{
	struct kv_contig *c = (struct kv_contig *)kv;

	free(c->k);
	free(c->v);
	free(kv->len);
	free(c);
}

/**
 * llm_kv_stats() - memory a cache holds
 * @kv: the cache
 * @st: filled; a cache without a stats op reports kv->bytes, not paged
 *
 * Return: 0 or the error of the cache's stats op.
 */
int llm_kv_stats(struct llm_kv *kv, struct llm_kv_stats *st)
{
	if (kv->ops->stats)
		return kv->ops->stats(kv, st);
	memset(st, 0, sizeof(*st));
	st->bytes = kv->bytes;
	return 0;
}

static const struct llm_kv_ops kvc_ops = {
	.append = kvc_append,
	.view = kvc_view,
	.destroy = kvc_destroy,
};

/**
 * llm_kv_contig_create() - a contiguous fp32 KV cache
 * @c: the model's configuration (layers, kv heads, head_dim)
 * @n_seq: sequence slots; >= 1
 * @max_tok: tokens each sequence can hold; 1 .. c->n_ctx
 * @out: the cache, released with llm_kv_destroy()
 *
 * Memory: 2 * n_seq * n_layers * n_kv_heads * max_tok * head_dim floats,
 * allocated at once.
 *
 * Return: 0, -EINVAL for a bad count, -ENOMEM.
 */
int llm_kv_contig_create(const struct llm_config *c, int n_seq, int max_tok,
			 struct llm_kv **out)
{
	struct kv_contig *kc;
	size_t n;

	if (n_seq < 1 || n_seq > 4096 || max_tok < 1 ||
	    (uint32_t)max_tok > c->n_ctx)
		return -EINVAL;
	kc = calloc(1, sizeof(*kc));
	if (!kc)
		return -ENOMEM;
	kc->kv.ops = &kvc_ops;
	kc->kv.n_seq = n_seq;
	kc->kv.n_layers = c->n_layers;
	kc->kv.n_kv_heads = c->n_kv_heads;
	kc->kv.head_dim = c->head_dim;
	kc->kv.max_tok = max_tok;
	n = (size_t)n_seq * c->n_layers * c->n_kv_heads * max_tok *
	    c->head_dim;
	kc->kv.bytes = 2 * n * sizeof(float);
	kc->kv.len = calloc(n_seq, sizeof(int));
	kc->k = malloc(n * sizeof(float));
	kc->v = malloc(n * sizeof(float));
	if (!kc->kv.len || !kc->k || !kc->v) {
		kvc_destroy(&kc->kv);
		return -ENOMEM;
	}
	*out = &kc->kv;
	return 0;
}
