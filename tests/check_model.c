// SPDX-License-Identifier: MIT
/*
 * check_model.c - hyperparameters and weight binding (model/load/config.c) on
 * tiny synthetic GGUF files (llama, qwen2, qwen3, and broken variants) and
 * on the default model when models/ has it.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "gguf.h"
#include "gguf_writer.h"
#include "kvtest.h"
#include "model.h"

static void gb_kv_u32(struct gbuf *b, const char *k, uint32_t v)
{
	gb_str(b, k);
	gb_u32(b, LLM_GGUF_U32);
	gb_u32(b, v);
}

static void gb_kv_f32(struct gbuf *b, const char *k, float v)
{
	gb_str(b, k);
	gb_u32(b, LLM_GGUF_F32);
	gb_put(b, &v, 4);
}

/* a tiny model: dim 8, 2 heads of 4, 1 kv head, ffn 16, vocab 10, 2 layers */
struct tiny {
	const char *arch;
	uint32_t n_kv;	       /* head_count_kv */
	int drop;	       /* index of a tensor to leave out, or -1 */
	int bad_shape;	       /* index of a tensor to give a wrong shape */
	bool untied;	       /* write output.weight */
	bool no_eps;	       /* leave out the RMS epsilon */
	float theta;	       /* rope.freq_base */
	uint32_t blocks;       /* block_count written, 0: T_LAYERS */
	uint32_t vocab_key;    /* vocab_size written, 0: T_VOCAB, ~0: 0 */
	bool bias;	       /* write attention biases, any arch */
	const char *extra;     /* one more 1-D tensor of T_DIM, or NULL */
};

#define T_DIM 8
#define T_HD 4
#define T_FFN 16
#define T_VOCAB 10
#define T_LAYERS 2

struct tname {
	char name[64];
	uint64_t ne0, ne1;
};

static size_t tiny_tensors(const struct tiny *o, struct tname *t)
{
	static const struct {
		const char *s;
		int ne0, ne1; /* 0 dim, 1 q, 2 kv, 3 ffn, 4 head, -1 none */
		int arch;     /* 0 all, 2 qwen2, 3 qwen3 */
	} blk[] = {
		{ "attn_norm.weight", 0, -1, 0 }, { "attn_q.weight", 0, 1, 0 },
		{ "attn_k.weight", 0, 2, 0 },	  { "attn_v.weight", 0, 2, 0 },
		{ "attn_output.weight", 1, 0, 0 }, { "ffn_norm.weight", 0, -1, 0 },
		{ "ffn_gate.weight", 0, 3, 0 },	  { "ffn_up.weight", 0, 3, 0 },
		{ "ffn_down.weight", 3, 0, 0 },	  { "attn_q.bias", 1, -1, 2 },
		{ "attn_k.bias", 2, -1, 2 },	  { "attn_v.bias", 2, -1, 2 },
		{ "attn_q_norm.weight", 4, -1, 3 },
		{ "attn_k_norm.weight", 4, -1, 3 },
	};
	uint64_t d[5] = { T_DIM, 2 * T_HD, (uint64_t)o->n_kv * T_HD, T_FFN,
			  T_HD };
	int arch = !strcmp(o->arch, "qwen2") ? 2 :
		   !strcmp(o->arch, "qwen3") ? 3 : 0;
	size_t n = 0;

	snprintf(t[n].name, 64, "token_embd.weight");
	t[n].ne0 = T_DIM, t[n++].ne1 = T_VOCAB;
	snprintf(t[n].name, 64, "output_norm.weight");
	t[n].ne0 = T_DIM, t[n++].ne1 = 0;
	if (o->untied) {
		snprintf(t[n].name, 64, "output.weight");
		t[n].ne0 = T_DIM, t[n++].ne1 = T_VOCAB;
	}
	for (int l = 0; l < T_LAYERS; l++) {
		for (size_t i = 0; i < ARRAY_SIZE(blk); i++) {
			if (blk[i].arch && blk[i].arch != arch &&
			    !(o->bias && blk[i].arch == 2))
				continue;
			snprintf(t[n].name, 64, "blk.%d.%s", l, blk[i].s);
			t[n].ne0 = d[blk[i].ne0];
			t[n++].ne1 = blk[i].ne1 < 0 ? 0 : d[blk[i].ne1];
		}
	}
	if (o->extra) {
		snprintf(t[n].name, 64, "%s", o->extra);
		t[n].ne0 = T_DIM, t[n++].ne1 = 0;
	}
	return n;
}

static void tiny_build(const struct tiny *o, struct gbuf *b)
{
	struct tname t[64];
	size_t n = tiny_tensors(o, t), nt = 0, i;
	uint64_t off = 0;
	char k[64];

	gb_u32(b, LLM_GGUF_MAGIC);
	gb_u32(b, 3);
	gb_u64(b, n - (o->drop >= 0));
	gb_u64(b, o->no_eps ? 9 : 10);
	gb_str(b, "general.architecture");
	gb_u32(b, LLM_GGUF_STRING);
	gb_str(b, o->arch);
#define KEY(s) (snprintf(k, sizeof(k), "%s." s, o->arch), k)
	gb_kv_u32(b, KEY("context_length"), 128);
	gb_kv_u32(b, KEY("embedding_length"), T_DIM);
	gb_kv_u32(b, KEY("block_count"), o->blocks ? o->blocks : T_LAYERS);
	gb_kv_u32(b, KEY("feed_forward_length"), T_FFN);
	gb_kv_u32(b, KEY("attention.head_count"), 2);
	gb_kv_u32(b, KEY("attention.head_count_kv"), o->n_kv);
	gb_kv_f32(b, KEY("rope.freq_base"), o->theta);
	gb_kv_u32(b, KEY("vocab_size"),
		  !o->vocab_key ? T_VOCAB :
		  o->vocab_key == UINT32_MAX ? 0 : o->vocab_key);
	if (!o->no_eps)
		gb_kv_f32(b, KEY("attention.layer_norm_rms_epsilon"), 1e-6f);
#undef KEY
	for (i = 0; i < n; i++) {
		uint64_t ne0 = t[i].ne0 + ((int)i == o->bad_shape ? 1 : 0);

		if ((int)i == o->drop)
			continue;
		gb_str(b, t[i].name);
		gb_u32(b, t[i].ne1 ? 2 : 1);
		gb_u64(b, ne0);
		if (t[i].ne1)
			gb_u64(b, t[i].ne1);
		gb_u32(b, LLM_GGML_F32);
		gb_u64(b, off);
		off += kvmm_round_up(ne0 * (t[i].ne1 ? t[i].ne1 : 1) * 4, 32);
		nt++;
	}
	gb_put(b, NULL, kvmm_round_up(b->len, 32) - b->len);
	gb_put(b, NULL, off);
}

static struct tiny tiny_default(const char *arch)
{
	return (struct tiny){ arch, 1, -1, -1, false, false, 10000.0f };
}

/* build, open, load the config and bind; returns the first error */
static int tiny_run(const struct tiny *o, struct llm_config *c,
		    struct llm_weights *w, char *err)
{
	struct gbuf b = { 0 };
	struct llm_gguf *g;
	int ret;

	tiny_build(o, &b);
	ret = llm_gguf_open_mem(b.p, b.len, &g, err, LLM_GGUF_ERR_MAX);
	ck_assert_msg(ret == 0, "%s", err);
	ret = llm_config_load(g, c, err, LLM_GGUF_ERR_MAX);
	if (!ret) {
		ret = llm_weights_bind(g, c, w, err, LLM_GGUF_ERR_MAX);
		if (!ret) {
			ck_assert_uint_eq(w->n_layers, c->n_layers);
			ck_assert_ptr_eq(w->layers[1].w_down,
					 llm_gguf_find_tensor(g,
						"blk.1.ffn_down.weight"));
			llm_weights_fini(w);
		}
	}
	llm_gguf_close(g);
	free(b.p);
	return ret;
}

START_TEST(test_config_tiny_llama)
{
	struct tiny o = tiny_default("llama");
	char err[LLM_GGUF_ERR_MAX];
	struct llm_config c;
	struct llm_weights w;

	ck_assert_int_eq(tiny_run(&o, &c, &w, err), 0);
	ck_assert_int_eq(c.arch, LLM_ARCH_LLAMA);
	ck_assert_str_eq(c.arch_name, "llama");
	ck_assert_uint_eq(c.n_ctx, 128);
	ck_assert_uint_eq(c.dim, T_DIM);
	ck_assert_uint_eq(c.n_layers, T_LAYERS);
	ck_assert_uint_eq(c.ffn_dim, T_FFN);
	ck_assert_uint_eq(c.n_heads, 2);
	ck_assert_uint_eq(c.n_kv_heads, 1);
	ck_assert_uint_eq(c.head_dim, T_HD);
	ck_assert_uint_eq(c.rope_dim, T_HD);
	ck_assert_float_eq(c.rope_theta, 10000.0f);
	ck_assert_float_eq(c.rms_eps, 1e-6f);
	ck_assert_uint_eq(c.n_vocab, T_VOCAB);
	ck_assert(!c.qkv_bias && !c.qk_norm);

	o.untied = true;
	ck_assert_int_eq(tiny_run(&o, &c, &w, err), 0);
	o.n_kv = 2;
	ck_assert_int_eq(tiny_run(&o, &c, &w, err), 0);
	ck_assert_uint_eq(c.n_kv_heads, 2);
}
END_TEST

START_TEST(test_config_tiny_qwen)
{
	struct tiny o = tiny_default("qwen2");
	char err[LLM_GGUF_ERR_MAX];
	struct llm_config c;
	struct llm_weights w;

	ck_assert_int_eq(tiny_run(&o, &c, &w, err), 0);
	ck_assert(c.qkv_bias && !c.qk_norm);
	o = tiny_default("qwen3");
	ck_assert_int_eq(tiny_run(&o, &c, &w, err), 0);
	ck_assert(!c.qkv_bias && c.qk_norm);
	/* a qwen2 file without its biases */
	o = tiny_default("qwen2");
	o.drop = 2 + 9; /* blk.0.attn_q.bias */
	ck_assert_int_eq(tiny_run(&o, &c, &w, err), -EBADMSG);
	ck_assert_str_eq(err, "model: missing tensor 'blk.0.attn_q.bias'");
}
END_TEST

START_TEST(test_config_refused)
{
	struct tiny o = tiny_default("gpt-neox");
	char err[LLM_GGUF_ERR_MAX];
	struct llm_config c;
	struct llm_weights w;

	ck_assert_int_eq(tiny_run(&o, &c, &w, err), -EOPNOTSUPP);
	ck_assert_str_eq(err, "model: unsupported architecture 'gpt-neox'");
	o = tiny_default("llama");
	o.n_kv = 3;
	ck_assert_int_eq(tiny_run(&o, &c, &w, err), -EBADMSG);
	ck_assert_ptr_nonnull(strstr(err, "not a multiple of head_count_kv"));
	o = tiny_default("llama");
	o.no_eps = true;
	ck_assert_int_eq(tiny_run(&o, &c, &w, err), -EBADMSG);
	ck_assert_str_eq(err, "model: missing key "
			      "llama.attention.layer_norm_rms_epsilon");
	o = tiny_default("llama");
	o.theta = -1.0f;
	ck_assert_int_eq(tiny_run(&o, &c, &w, err), -EBADMSG);
	ck_assert_ptr_nonnull(strstr(err, "llama.rope.freq_base"));
	o.theta = NAN;
	ck_assert_int_eq(tiny_run(&o, &c, &w, err), -EBADMSG);
	o = tiny_default("llama");
	o.drop = 2 + 9 + 7; /* blk.1.ffn_up.weight */
	ck_assert_int_eq(tiny_run(&o, &c, &w, err), -EBADMSG);
	ck_assert_str_eq(err, "model: missing tensor 'blk.1.ffn_up.weight'");
	o = tiny_default("llama");
	o.bad_shape = 2 + 1; /* blk.0.attn_q.weight */
	ck_assert_int_eq(tiny_run(&o, &c, &w, err), -EBADMSG);
	ck_assert_ptr_nonnull(strstr(err, "tensor 'blk.0.attn_q.weight' has "
					  "shape [9, 8, 1, 1]"));
	o = tiny_default("llama");
	o.bad_shape = 0; /* token_embd.weight */
	ck_assert_int_eq(tiny_run(&o, &c, &w, err), -EBADMSG);
	ck_assert_ptr_nonnull(strstr(err, "token_embd.weight"));
}
END_TEST

/* metadata that disagrees with the tensors, tensors nothing reads */
START_TEST(test_config_tensors_agree)
{
	struct tiny o = tiny_default("llama");
	char err[LLM_GGUF_ERR_MAX];
	struct llm_config c;
	struct llm_weights w;

	o.blocks = 1; /* two layers of tensors */
	ck_assert_int_eq(tiny_run(&o, &c, &w, err), -EBADMSG);
	ck_assert_msg(strstr(err, "'blk.1.") &&
		      strstr(err, "past block_count 1"), "%s", err);
	o = tiny_default("llama");
	o.blocks = 3;
	ck_assert_int_eq(tiny_run(&o, &c, &w, err), -EBADMSG);
	ck_assert_ptr_nonnull(strstr(err, "missing tensor 'blk.2."));
	o = tiny_default("llama");
	o.vocab_key = T_VOCAB + 2;
	ck_assert_int_eq(tiny_run(&o, &c, &w, err), -EBADMSG);
	ck_assert_ptr_nonnull(strstr(err, "token_embd.weight"));
	o.vocab_key = T_VOCAB - 2;
	ck_assert_int_eq(tiny_run(&o, &c, &w, err), -EBADMSG);
	ck_assert_ptr_nonnull(strstr(err, "token_embd.weight"));
	o = tiny_default("llama");
	o.vocab_key = UINT32_MAX;
	ck_assert_int_eq(tiny_run(&o, &c, &w, err), -EBADMSG);
	ck_assert_ptr_nonnull(strstr(err, "llama.vocab_size = 0 out of range"));
	/* llama reads no attention bias: not silently dropped */
	o = tiny_default("llama");
	o.bias = true;
	ck_assert_int_eq(tiny_run(&o, &c, &w, err), -EOPNOTSUPP);
	ck_assert_msg(strstr(err, "'blk.0.attn_q.bias': llama has no "
			      "attention bias"), "%s", err);
	o = tiny_default("qwen3");
	o.bias = true;
	ck_assert_int_eq(tiny_run(&o, &c, &w, err), -EOPNOTSUPP);
	o = tiny_default("llama");
	o.extra = "blk.0.attn_sinks.weight";
	ck_assert_int_eq(tiny_run(&o, &c, &w, err), -EBADMSG);
	ck_assert_str_eq(err, "model: unknown tensor "
			      "'blk.0.attn_sinks.weight'");
	o.extra = "pos_embd.weight";
	ck_assert_int_eq(tiny_run(&o, &c, &w, err), -EBADMSG);
	ck_assert_str_eq(err, "model: unknown tensor 'pos_embd.weight'");
	/* the optional ones still bind */
	o.extra = "rope_freqs.weight"; /* [rope_dim / 2] = 2, not T_DIM */
	ck_assert_int_eq(tiny_run(&o, &c, &w, err), -EBADMSG);
	ck_assert_ptr_nonnull(strstr(err, "rope_freqs.weight' has shape"));
}
END_TEST

START_TEST(test_config_model)
{
	char err[LLM_GGUF_ERR_MAX];
	struct llm_config c;
	struct llm_weights w;
	struct llm_gguf *g;
	int ret;

	if (access(model_path(), R_OK)) {
		kvtest_skip(__func__, "%s absent (make model fetches it)",
			    model_path());
		return;
	}
	ret = llm_gguf_open(model_path(), &g, err, sizeof(err));
	ck_assert_msg(ret == 0, "%s", err);
	ret = llm_config_load(g, &c, err, sizeof(err));
	ck_assert_msg(ret == 0, "%s", err);
	ck_assert_int_eq(c.arch, LLM_ARCH_LLAMA);
	ck_assert_uint_eq(c.n_ctx, 8192);
	ck_assert_uint_eq(c.dim, 576);
	ck_assert_uint_eq(c.n_layers, 30);
	ck_assert_uint_eq(c.ffn_dim, 1536);
	ck_assert_uint_eq(c.n_heads, 9);
	ck_assert_uint_eq(c.n_kv_heads, 3);
	ck_assert_uint_eq(c.head_dim, 64);
	ck_assert_uint_eq(c.rope_dim, 64);
	ck_assert_float_eq(c.rope_theta, 100000.0f);
	ck_assert_float_eq_tol(c.rms_eps, 1e-5f, 1e-12f);
	ck_assert_uint_eq(c.n_vocab, 49152);
	ret = llm_weights_bind(g, &c, &w, err, sizeof(err));
	ck_assert_msg(ret == 0, "%s", err);
	ck_assert(w.tied);
	ck_assert_ptr_eq(w.output, w.tok_embd);
	ck_assert_uint_eq(w.tok_embd->type, LLM_GGML_Q8_0);
	ck_assert_uint_eq(w.layers[29].wq->type, LLM_GGML_Q4_1);
	ck_assert_uint_eq(w.layers[29].wk->ne[1], 192);
	ck_assert_ptr_null(w.layers[0].bq);
	ck_assert_ptr_null(w.rope_freqs);
	/* every tensor of the file is bound exactly once */
	{
		uint64_t total = 0;

		for (uint64_t i = 0; i < g->n_tensors; i++)
			total += g->tensors[i].nbytes;
		ck_assert_uint_eq(w.bytes, total);
	}
	llm_weights_fini(&w);
	llm_gguf_close(g);
}
END_TEST

/* llm_qk_file_row(): a bijection per head, the inverse of the permutation */
START_TEST(test_qk_file_row)
{
	struct llm_config c = { .head_dim = 8, .qk_interleaved = true };
	uint8_t seen[24] = { 0 };

	/* HF row j * hd/2 + i of a head is file row 2i + j */
	ck_assert_uint_eq(llm_qk_file_row(&c, 0), 0);
	ck_assert_uint_eq(llm_qk_file_row(&c, 1), 2);
	ck_assert_uint_eq(llm_qk_file_row(&c, 4), 1);
	ck_assert_uint_eq(llm_qk_file_row(&c, 7), 7);
	ck_assert_uint_eq(llm_qk_file_row(&c, 8 + 5), 8 + 3);
	for (uint64_t r = 0; r < 24; r++) {
		uint64_t f = llm_qk_file_row(&c, r);

		ck_assert_uint_eq(f / 8, r / 8);
		ck_assert(!seen[f]);
		seen[f] = 1;
	}
	c.qk_interleaved = false;
	ck_assert_uint_eq(llm_qk_file_row(&c, 13), 13);
}
END_TEST

/* llm_model_open() on the default GGUF and on missing or broken paths */
START_TEST(test_model_open)
{
	char err[LLM_GGUF_ERR_MAX + 64], tmp[] = "/tmp/kvmm-mo-XXXXXX";
	char path[64];
	struct llm_model *m = NULL;
	FILE *in, *out;
	char buf[65536];
	size_t n, total = 0;

	ck_assert_int_eq(llm_model_open("/nonexistent.gguf", &m, err,
					sizeof(err)), -ENOENT);
	ck_assert_ptr_null(m);
	ck_assert_ptr_nonnull(strstr(err, "/nonexistent.gguf"));
	ck_assert_ptr_nonnull(mkdtemp(tmp));
	ck_assert_int_eq(llm_model_open(tmp, &m, err, sizeof(err)), -ENOENT);
	ck_assert_ptr_nonnull(strstr(err, "config.json"));
	if (access(model_path(), R_OK)) {
		rmdir(tmp);
		kvtest_skip(__func__, "%s absent (make model fetches it)",
			    model_path());
		return;
	}
	ck_assert_msg(!llm_model_open(model_path(), &m, err, sizeof(err)),
		      "%s", err);
	ck_assert_int_eq(m->format, LLM_FORMAT_GGUF);
	ck_assert(m->cfg.qk_interleaved);
	ck_assert_uint_eq(m->cfg.n_layers, 30);
	ck_assert(m->w.tied);
	ck_assert_uint_eq(m->tok->n_vocab, 49152);
	ck_assert_int_eq(m->gen.n_eos, 1);
	ck_assert_int_eq(m->gen.eos[0], m->tok->eos_id);
	ck_assert_ptr_eq(m->w.layers[3].wq,
			 llm_gguf_find_tensor(m->src, "blk.3.attn_q.weight"));
	llm_model_close(m);
	/* the first 8 MiB of the file: truncated, named */
	snprintf(path, sizeof(path), "%s/t.gguf", tmp);
	in = fopen(model_path(), "rb");
	out = fopen(path, "wb");
	ck_assert(in && out);
	while (total < (8 << 20) && (n = fread(buf, 1, sizeof(buf), in))) {
		fwrite(buf, 1, n, out);
		total += n;
	}
	fclose(in);
	fclose(out);
	m = NULL;
	ck_assert_int_eq(llm_model_open(path, &m, err, sizeof(err)), -EBADMSG);
	ck_assert_ptr_null(m);
	ck_assert_msg(strstr(err, "beyond end of file") && strstr(err, path),
		      "%s", err);
	unlink(path);
	rmdir(tmp);
}
END_TEST

Suite *suite_model(void)
{
	Suite *s = suite_create("model");
	TCase *tc = tcase_create("config");

	KV_ADD(tc, test_config_tiny_llama);
	KV_ADD(tc, test_config_tiny_qwen);
	KV_ADD(tc, test_config_refused);
	KV_ADD(tc, test_config_tensors_agree);
	KV_ADD(tc, test_config_model);
	KV_ADD(tc, test_qk_file_row);
	KV_ADD(tc, test_model_open);
	suite_add_tcase(s, tc);
	return s;
}
