// SPDX-License-Identifier: MIT
/*
 * check_safetensors.c - Hugging Face model directories (model/load/hf.c) and the
 * JSON parser under them (model/load/json.c).
 *
 * The tiny models of tests/ref/tiny_ref.h (llama, qwen2, qwen3, weights from
 * a formula) are written as Hugging Face directories, with the Q and K rows
 * of llama in Hugging Face (rotate-half) order, i.e. un-permuted from the
 * GGUF order the reference used; the logits must match the reference. The
 * same model with the rows left in GGUF order must not (the test can tell).
 * Then every way a directory can be broken gives its one-line error.
 */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "forward.h"
#include "gguf_writer.h"
#include "json.h"
#include "kvcache.h"
#include "kvk.h"
#include "kvcontig.h"
#include "kvtest.h"
#include "model.h"

#include "../model/load/hf.h"
#include "ref/tiny_ref.h"

#define REF_TOL 1e-4

/* ---- JSON ---- */

static int jparse(const char *s, struct llm_json_doc **d)
{
	char err[160];

	return llm_json_parse(s, strlen(s), d, err, sizeof(err));
}

START_TEST(test_json_valid)
{
	const char *doc = " {\"a\": 7, \"s\": \"x\\u00e9\\ud83d\\ude00\\n"
			  "\\\"\\/\", \"o\": {\"k\": {}}, \"e\": [],"
			  " \"a\": [1, -2.5e3, 0, true, false, null]} ";
	const struct llm_json *r, *a, *s;
	struct llm_json_doc *d;
	int64_t x;

	ck_assert_int_eq(jparse(doc, &d), 0);
	r = llm_json_root(d);
	ck_assert_int_eq(r->type, LLM_JSON_OBJECT);
	ck_assert_uint_eq(r->n, 5);
	a = llm_json_get(r, "a"); /* the last of two, as Python's json */
	ck_assert_int_eq(a->type, LLM_JSON_ARRAY);
	ck_assert_uint_eq(a->n, 6);
	ck_assert_int_eq(llm_json_int(&a->kids[0], 0, 10, &x), 0);
	ck_assert_int_eq(x, 1);
	ck_assert_int_eq(llm_json_int(&a->kids[1], -5000, 0, &x), 0);
	ck_assert_int_eq(x, -2500);
	ck_assert_int_eq(llm_json_int(&a->kids[1], 0, 10, &x), -EINVAL);
	ck_assert_int_eq(llm_json_int(&a->kids[5], 0, 10, &x), -ENOENT);
	ck_assert(a->kids[3].type == LLM_JSON_BOOL && a->kids[3].b);
	s = llm_json_get(r, "s");
	ck_assert_uint_eq(s->n, 1 + 2 + 4 + 1 + 1 + 1);
	ck_assert(!memcmp(s->str, "x\xc3\xa9\xf0\x9f\x98\x80\n\"/", s->n));
	ck_assert_uint_eq(llm_json_get(r, "o")->n, 1);
	ck_assert_ptr_null(llm_json_get(r, "zz"));
	llm_json_free(d);
}
END_TEST

START_TEST(test_json_invalid)
{
	static const char *bad[] = {
		"", "{", "[1,]", "{\"a\" 1}", "{\"a\":1,}", "01", "1.", "-",
		"1e", "+1", "\"abc", "\"\\x\"", "\"\\ud800\"", "\"\\udc00\"",
		"\"\\ud800\\u0041\"", "\"\\u12\"", "\"a\tb\"", "tru", "nul",
		"[1] 2", "{} x", "\"\xff\"", "\"\xc3\"", "{1:2}",
		"[\"a\" \"b\"]",
		"1e999", "\"\xed\xa0\x80\"",
	};
	struct llm_json_doc *d;
	char deep[200];

	for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
		ck_assert_msg(jparse(bad[i], &d) == -EBADMSG, "accepted %s",
			      bad[i]);
	/* nesting: LLM_JSON_MAX_DEPTH levels pass, one more fails */
	memset(deep, '[', LLM_JSON_MAX_DEPTH);
	memset(deep + LLM_JSON_MAX_DEPTH, ']', LLM_JSON_MAX_DEPTH);
	deep[2 * LLM_JSON_MAX_DEPTH] = 0;
	ck_assert_int_eq(jparse(deep, &d), 0);
	llm_json_free(d);
	memset(deep, '[', LLM_JSON_MAX_DEPTH + 1);
	memset(deep + LLM_JSON_MAX_DEPTH + 1, ']', LLM_JSON_MAX_DEPTH + 1);
	deep[2 * LLM_JSON_MAX_DEPTH + 2] = 0;
	ck_assert_int_eq(jparse(deep, &d), -EBADMSG);
}
END_TEST

/* random byte mutations of a valid document: parse or -EBADMSG, no crash */
START_TEST(test_json_fuzz)
{
	const char *src = "{\"model\": {\"type\": \"BPE\", \"vocab\": "
			  "{\"a\": 0, \"\\u0120b\": 1}, \"merges\": [\"a b\", "
			  "[\"x\", \"y\"]]}, \"n\": [1.5e-3, -0, "
			  "12345678901234]}";
	size_t n = strlen(src);
	uint64_t s = kvtest_seed(__func__);
	char *buf = malloc(n);
	int ok = 0;

	for (int it = 0; it < 20000; it++) {
		struct llm_json_doc *d;
		size_t len = n - kvtest_rand(&s) % 4;
		int k = 1 + (int)(kvtest_rand(&s) % 3), ret;

		memcpy(buf, src, n);
		while (k--)
			buf[kvtest_rand(&s) % len] = (char)kvtest_rand(&s);
		ret = llm_json_parse(buf, len, &d, NULL, 0);
		ck_assert(ret == 0 || ret == -EBADMSG);
		if (!ret) {
			ok++;
			llm_json_free(d);
		}
	}
	printf("json fuzz: %d of 20000 mutations still parse\n", ok);
	free(buf);
}
END_TEST

/* ---- writing Hugging Face directories ---- */

static void put_file(const char *dir, const char *name, const void *p,
		     size_t n)
{
	char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "wb");
	ck_assert_ptr_nonnull(f);
	ck_assert_uint_eq(fwrite(p, 1, n, f), n);
	fclose(f);
}

static void put_str(const char *dir, const char *name, const char *s)
{
	put_file(dir, name, s, strlen(s));
}

static void rm_dir(const char *dir)
{
	char path[512];
	struct dirent *e;
	DIR *d = opendir(dir);

	if (!d)
		return;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		unlink(path);
	}
	closedir(d);
	rmdir(dir);
}

/* one tensor of a safetensors file being written */
struct st_t {
	char name[96];
	const char *dtype;
	uint64_t shape[2]; /* [rows, cols]; rows 0: a vector of cols */
	float *v;	   /* rows * cols floats */
};

static uint16_t f2bf(float f)
{
	uint32_t u;

	memcpy(&u, &f, 4);
	return (uint16_t)((u + 0x7fff + (u >> 16 & 1)) >> 16);
}

static uint16_t f2h(float f)
{
	return kvk_f32_to_f16(f);
}

/* the safetensors image of @t (@n tensors) into @b */
static void st_image(struct st_t *t, int n, struct gbuf *b)
{
	char *hdr = malloc(65536);
	size_t hl = 0;
	uint64_t off = 0, hlen;

	hl += (size_t)snprintf(hdr + hl, 65536 - hl,
			       "{\"__metadata__\":{\"format\":\"pt\"}");
	for (int i = 0; i < n; i++) {
		uint64_t ne = (t[i].shape[0] ? t[i].shape[0] : 1) *
			      t[i].shape[1];
		uint64_t es = strcmp(t[i].dtype, "F32") ? 2 : 4;

		if (t[i].shape[0])
			hl += (size_t)snprintf(hdr + hl, 65536 - hl,
				",\"%s\":{\"dtype\":\"%s\",\"shape\":"
				"[%llu,%llu],\"data_offsets\":[%llu,%llu]}",
				t[i].name,
				t[i].dtype, (unsigned long long)t[i].shape[0],
				(unsigned long long)t[i].shape[1],
				(unsigned long long)off,
				(unsigned long long)(off + ne * es));
		else
			hl += (size_t)snprintf(hdr + hl, 65536 - hl,
				",\"%s\":{\"dtype\":\"%s\",\"shape\":[%llu],"
				"\"data_offsets\":[%llu,%llu]}", t[i].name,
				t[i].dtype, (unsigned long long)t[i].shape[1],
				(unsigned long long)off,
				(unsigned long long)(off + ne * es));
		off += ne * es;
	}
	hl += (size_t)snprintf(hdr + hl, 65536 - hl, "}");
	while (hl % 8)
		hdr[hl++] = ' ';
	hlen = hl;
	gb_u64(b, hlen);
	gb_put(b, hdr, hl);
	for (int i = 0; i < n; i++) {
		uint64_t ne = (t[i].shape[0] ? t[i].shape[0] : 1) *
			      t[i].shape[1];

		for (uint64_t e = 0; e < ne; e++) {
			if (!strcmp(t[i].dtype, "F32")) {
				gb_put(b, &t[i].v[e], 4);
			} else {
				uint16_t h = strcmp(t[i].dtype, "BF16") ?
					     f2h(t[i].v[e]) : f2bf(t[i].v[e]);

				gb_put(b, &h, 2);
			}
		}
	}
	free(hdr);
}

/* element @i of tensor @name: tiny_value() of llama_ref.py */
static float tiny_value(const char *name, uint64_t ne0, uint64_t i)
{
	size_t len = strlen(name);
	long k = 0;
	double s;

	for (size_t j = 0; j < len; j++)
		k += (long)(j + 1) * (unsigned char)name[j];
	k %= 997;
	s = sin(0.37 * (double)i + 1.1 * (double)k + 0.5);
	if (len >= 11 && !strcmp(name + len - 11, "norm.weight"))
		s = 1.0 + 0.2 * s;
	else if (len >= 5 && !strcmp(name + len - 5, ".bias"))
		s = 0.1 * s;
	else if (strcmp(name, "token_embd.weight"))
		s = s * (1.5 / sqrt((double)ne0));
	return (float)s;
}

/*
 * The tensors of tiny model @r under Hugging Face names, values of the GGUF
 * tensor of the reference. @hf_order: llama Q/K rows moved to Hugging Face
 * order (what a real checkpoint holds); false leaves GGUF's pairwise order.
 */
static int tiny_hf_tensors(const struct tiny_ref *r, const char *dtype,
			   bool hf_order, struct st_t *t)
{
	static const struct {
		const char *gg, *hf;
		int ne0, ne1; /* 0 dim, 1 q, 2 kv, 3 ffn, 4 head_dim, 5 vec */
		const char *arch;
	} blk[] = {
		{ "attn_norm.weight", "input_layernorm.weight", 0, 5, NULL },
		{ "attn_q.weight", "self_attn.q_proj.weight", 0, 1, NULL },
		{ "attn_k.weight", "self_attn.k_proj.weight", 0, 2, NULL },
		{ "attn_v.weight", "self_attn.v_proj.weight", 0, 2, NULL },
		{ "attn_output.weight", "self_attn.o_proj.weight", 1, 0, NULL },
		{ "ffn_norm.weight", "post_attention_layernorm.weight", 0, 5,
		  NULL },
		{ "ffn_gate.weight", "mlp.gate_proj.weight", 0, 3, NULL },
		{ "ffn_up.weight", "mlp.up_proj.weight", 0, 3, NULL },
		{ "ffn_down.weight", "mlp.down_proj.weight", 3, 0, NULL },
		{ "attn_q.bias", "self_attn.q_proj.bias", 1, 5, "qwen2" },
		{ "attn_k.bias", "self_attn.k_proj.bias", 2, 5, "qwen2" },
		{ "attn_v.bias", "self_attn.v_proj.bias", 2, 5, "qwen2" },
		{ "attn_q_norm.weight", "self_attn.q_norm.weight", 4, 5,
		  "qwen3" },
		{ "attn_k_norm.weight", "self_attn.k_norm.weight", 4, 5,
		  "qwen3" },
	};
	uint64_t d[6] = { r->dim, r->n_heads * r->head_dim,
			  r->n_kv_heads * r->head_dim, r->ffn, r->head_dim, 1 };
	bool perm = hf_order && !strcmp(r->arch, "llama");
	char gg[96];
	int n = 0;

	struct {
		const char *gg, *hf;
		uint64_t ne0, ne1;
	} top[3] = {
		{ "token_embd.weight", "model.embed_tokens.weight", r->dim,
		  r->vocab },
		{ "output_norm.weight", "model.norm.weight", r->dim, 1 },
		{ "output.weight", "lm_head.weight", r->dim, r->vocab },
	};

	for (int i = 0; i < (r->tied ? 2 : 3); i++) {
		uint64_t ne = top[i].ne0 * top[i].ne1;

		snprintf(t[n].name, sizeof(t[n].name), "%s", top[i].hf);
		t[n].dtype = dtype;
		t[n].shape[0] = top[i].ne1 > 1 ? top[i].ne1 : 0;
		t[n].shape[1] = top[i].ne0;
		t[n].v = malloc(ne * sizeof(float));
		for (uint64_t e = 0; e < ne; e++)
			t[n].v[e] = tiny_value(top[i].gg, top[i].ne0, e);
		n++;
	}
	for (uint32_t l = 0; l < r->layers; l++) {
		for (size_t i = 0; i < ARRAY_SIZE(blk); i++) {
			uint64_t ne0 = d[blk[i].ne0], ne1 = d[blk[i].ne1];
			uint64_t hd = r->head_dim;
			bool qk = perm && blk[i].ne0 == 0 &&
				  (blk[i].ne1 == 1 || (blk[i].ne1 == 2 &&
				   !strcmp(blk[i].gg, "attn_k.weight")));

			if (blk[i].arch && strcmp(blk[i].arch, r->arch))
				continue;
			snprintf(gg, sizeof(gg), "blk.%u.%s", l, blk[i].gg);
			snprintf(t[n].name, sizeof(t[n].name),
				 "model.layers.%u.%s", l, blk[i].hf);
			t[n].dtype = dtype;
			t[n].shape[0] = ne1 > 1 ? ne1 : 0;
			t[n].shape[1] = ne0;
			t[n].v = malloc(ne0 * ne1 * sizeof(float));
			for (uint64_t fr = 0; fr < ne1; fr++) {
				/* file row 2i + j of a head: HF j*hd/2 + i */
				uint64_t hr = fr;

				if (qk)
					hr = fr / hd * hd + fr % 2 * (hd / 2) +
					     fr % hd / 2;
				for (uint64_t c = 0; c < ne0; c++)
					t[n].v[hr * ne0 + c] = tiny_value(gg,
						ne0, fr * ne0 + c);
			}
			n++;
		}
	}
	return n;
}

static void free_tensors(struct st_t *t, int n)
{
	for (int i = 0; i < n; i++)
		free(t[i].v);
}

/* 64 tokens: 0 special, 1..26 a-z, 27 'Ġ', then merges, then fillers */
static void tiny_tokenizer(const char *dir, bool array_merges)
{
	static const char *extra[] = { "th", "he", "the", "\xc4\xa0t",
				       "\xc4\xa0the", "at", "h" "at" };
	char *s = malloc(16384);
	size_t n = 0;
	int id = 1;

	n += (size_t)sprintf(s + n, "{\"version\":\"1.0\",\"added_tokens\":[{"
			     "\"id\":0,\"content\":\"<|endoftext|>\","
			     "\"special\":true}],\"pre_tokenizer\":{\"type\":"
			     "\"ByteLevel\",\"add_prefix_space\":false},"
			     "\"model\":{\"type\":\"BPE\",\"vocab\":{"
			     "\"<|endoftext|>\":0");
	for (char c = 'a'; c <= 'z'; c++)
		n += (size_t)sprintf(s + n, ",\"%c\":%d", c, id++);
	n += (size_t)sprintf(s + n, ",\"\\u0120\":%d", id++);
	for (size_t i = 0; i < ARRAY_SIZE(extra) - 1; i++)
		n += (size_t)sprintf(s + n, ",\"%s\":%d", extra[i], id++);
	for (const char *c = "0123456789ABCDEFGHIJKLMNOPQRST"; id < 64; c++)
		n += (size_t)sprintf(s + n, ",\"%c\":%d", *c, id++);
	if (array_merges)
		n += (size_t)sprintf(s + n, "},\"merges\":[[\"t\",\"h\"],"
				     "[\"h\",\"e\"],[\"th\",\"e\"],"
				     "[\"\\u0120\",\"t\"],[\"\\u0120t\","
				     "\"he\"],[\"a\",\"t\"]]}}");
	else
		n += (size_t)sprintf(s + n, "},\"merges\":[\"t h\",\"h e\","
				     "\"th e\",\"\\u0120 t\",\"\\u0120t he\","
				     "\"a t\"]}}");
	put_file(dir, "tokenizer.json", s, n);
	free(s);
}

static void tiny_config(const char *dir, const struct tiny_ref *r,
			const char *arch_override)
{
	static const struct {
		const char *a, *hf;
	} names[] = {
		{ "llama", "LlamaForCausalLM" },
		{ "qwen2", "Qwen2ForCausalLM" },
		{ "qwen3", "Qwen3ForCausalLM" },
	};
	const char *hf = arch_override;
	char s[1024];

	for (size_t i = 0; !hf && i < ARRAY_SIZE(names); i++)
		if (!strcmp(names[i].a, r->arch))
			hf = names[i].hf;
	snprintf(s, sizeof(s),
		 "{\"architectures\":[\"%s\"],\"hidden_size\":%u,"
		 "\"intermediate_size\":%u,\"num_hidden_layers\":%u,"
		 "\"num_attention_heads\":%u,\"num_key_value_heads\":%u,"
		 "\"head_dim\":%u,\"max_position_embeddings\":64,"
		 "\"rms_norm_eps\":1e-05,\"rope_theta\":10000.0,"
		 "\"vocab_size\":%u,\"tie_word_embeddings\":%s,"
		 "\"eos_token_id\":0,\"rope_scaling\":null}",
		 hf, r->dim, r->ffn, r->layers, r->n_heads, r->n_kv_heads,
		 r->head_dim, r->vocab, r->tied ? "true" : "false");
	put_str(dir, "config.json", s);
}

/* a complete tiny directory; returns its path in @dir */
static void tiny_dir(char *dir, const struct tiny_ref *r, const char *dtype,
		     bool hf_order, int shards)
{
	struct st_t t[64];
	int n;

	strcpy(dir, "/tmp/kvmm-st-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	tiny_config(dir, r, NULL);
	tiny_tokenizer(dir, shards > 1);
	put_str(dir, "generation_config.json", "{\"eos_token_id\":[0, 5]}");
	n = tiny_hf_tensors(r, dtype, hf_order, t);
	if (shards <= 1) {
		struct gbuf b = { 0 };

		st_image(t, n, &b);
		put_file(dir, "model.safetensors", b.p, b.len);
		free(b.p);
	} else {
		char idx[16384], fn[64];
		size_t il = 0;
		int per = (n + shards - 1) / shards;

		il += (size_t)sprintf(idx, "{\"metadata\":{},\"weight_map\":{");
		for (int s = 0; s < shards; s++) {
			struct gbuf b = { 0 };
			int lo = s * per, hi = lo + per > n ? n : lo + per;

			snprintf(fn, sizeof(fn), "model-%05d-of-%05d."
				 "safetensors", s + 1, shards);
			st_image(t + lo, hi - lo, &b);
			put_file(dir, fn, b.p, b.len);
			free(b.p);
			for (int i = lo; i < hi; i++)
				il += (size_t)sprintf(idx + il,
						      "%s\"%s\":\"%s\"",
						      il > 30 ? "," : "",
						      t[i].name, fn);
		}
		sprintf(idx + il, "}}");
		put_str(dir, "model.safetensors.index.json", idx);
	}
	free_tensors(t, n);
}

static double rel_l2(const float *a, const float *b, int n)
{
	double e = 0, s = 0;

	for (int i = 0; i < n; i++) {
		e += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
		s += (double)b[i] * b[i];
	}
	return sqrt(e / s);
}

/* prefill logits and greedy tokens of the tiny model in @dir */
static double tiny_run(const char *dir, const struct tiny_ref *r,
		       int *same_greedy)
{
	char err[LLM_GGUF_ERR_MAX + 64] = "";
	struct llm_model *m;
	struct llm_cpu *cpu;
	struct llm_kv *kv;
	float z[TINY_VOCAB];
	int seq = 0, nt = TINY_NPROMPT;
	struct llm_batch bt = { 1, &seq, &nt, tiny_prompt };
	double e;
	int32_t id;

	ck_assert_msg(!llm_model_open(dir, &m, err, sizeof(err)), "%s", err);
	ck_assert_int_eq(m->format, LLM_FORMAT_HF);
	ck_assert(!m->cfg.qk_interleaved);
	ck_assert_int_eq(m->w.tied, r->tied);
	ck_assert_msg(!llm_cpu_load(&m->cfg, &m->w, 2, &cpu, err,
				    sizeof(err)), "%s", err);
	ck_assert_int_eq(llm_kv_contig_create(&m->cfg, 1, 32, &kv), 0);
	llm_model_close(m);
	ck_assert_int_eq(llm_cpu_forward(cpu, kv, &bt, z), 0);
	e = rel_l2(z, r->prefill, TINY_VOCAB);
	*same_greedy = 1;
	for (int s = 0; s < TINY_STEPS; s++) {
		kvk_argmax_cpu(&id, z, 1, TINY_VOCAB, KVK_F32, NULL);
		*same_greedy &= id == r->greedy[s];
		if (s + 1 == TINY_STEPS)
			break;
		nt = 1;
		bt.tok = &id;
		ck_assert_int_eq(llm_cpu_forward(cpu, kv, &bt, z), 0);
	}
	llm_kv_destroy(kv);
	llm_cpu_free(cpu);
	return e;
}

/* every tiny architecture, F32, one file: the reference's logits */
START_TEST(test_hf_tiny_archs)
{
	const struct tiny_ref *r = &tiny_refs[_i];
	char dir[64];
	double e;
	int g;

	tiny_dir(dir, r, "F32", true, _i == 1 ? 2 : 1);
	e = tiny_run(dir, r, &g);
	printf("hf tiny %s: prefill rel L2 %.3g\n", r->arch, e);
	ck_assert_msg(e < REF_TOL, "%s: rel L2 %.3g", r->arch, e);
	ck_assert_msg(g, "%s: greedy tokens differ", r->arch);
	rm_dir(dir);
}
END_TEST

/* rope_scaling "llama3" reaches the configuration and the CPU RoPE */
START_TEST(test_hf_rope_llama3)
{
	const struct tiny_ref *r = &tiny_refs[0];
	char dir[64], s[1024];
	double e;
	int g;

	tiny_dir(dir, r, "F32", true, 1);
	snprintf(s, sizeof(s),
		 "{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":%u,"
		 "\"intermediate_size\":%u,\"num_hidden_layers\":%u,"
		 "\"num_attention_heads\":%u,\"num_key_value_heads\":%u,"
		 "\"max_position_embeddings\":64,\"rms_norm_eps\":1e-05,"
		 "\"rope_theta\":10000.0,\"vocab_size\":%u,"
		 "\"tie_word_embeddings\":true,\"rope_scaling\":{"
		 "\"rope_type\":\"llama3\",\"factor\":8.0,"
		 "\"low_freq_factor\":1.0,\"high_freq_factor\":4.0,"
		 "\"original_max_position_embeddings\":8192}}",
		 r->dim, r->ffn, r->layers, r->n_heads, r->n_kv_heads,
		 r->vocab);
	put_str(dir, "config.json", s);
	{
		char err[LLM_GGUF_ERR_MAX + 64];
		struct llm_model *m;

		ck_assert_msg(!llm_model_open(dir, &m, err, sizeof(err)), "%s",
			      err);
		ck_assert_float_eq(m->cfg.rope_factor, 8.0f);
		ck_assert_float_eq(m->cfg.rope_low_freq, 1.0f);
		ck_assert_float_eq(m->cfg.rope_high_freq, 4.0f);
		ck_assert_uint_eq(m->cfg.rope_orig_ctx, 8192);
		llm_model_close(m);
	}
	/* the scaled low frequencies move the logits off the reference */
	e = tiny_run(dir, r, &g);
	printf("hf tiny llama, llama3 rope scaling: rel L2 %.3g from the "
	       "unscaled reference\n", e);
	ck_assert(e > 1e-4);
	rm_dir(dir);
}
END_TEST

/* llama Q/K rows left in GGUF (pairwise) order give other logits */
START_TEST(test_hf_permutation_matters)
{
	const struct tiny_ref *r = &tiny_refs[0];
	char dir[64];
	double e;
	int g;

	ck_assert_str_eq(r->arch, "llama");
	tiny_dir(dir, r, "F32", false, 1);
	e = tiny_run(dir, r, &g);
	printf("hf tiny llama, GGUF row order: rel L2 %.3g\n", e);
	ck_assert_msg(e > 1e-2, "unpermuted rows give the same logits");
	rm_dir(dir);
}
END_TEST

/* F16 and BF16 weights: the reference within their rounding */
START_TEST(test_hf_half_dtypes)
{
	static const char *dt[] = { "F16", "BF16" };
	static const double tol[] = { 5e-3, 3e-2 };
	const struct tiny_ref *r = &tiny_refs[_i % 3];
	char dir[64];
	double e;
	int g;

	tiny_dir(dir, r, dt[_i / 3], true, 1);
	e = tiny_run(dir, r, &g);
	printf("hf tiny %s %s: prefill rel L2 %.3g\n", r->arch, dt[_i / 3], e);
	ck_assert_msg(e < tol[_i / 3], "%s %s: rel L2 %.3g", r->arch,
		      dt[_i / 3], e);
	rm_dir(dir);
}
END_TEST

/* tokenizer.json (both merge spellings), generation_config eos list */
START_TEST(test_hf_tokenizer)
{
	char dir[64], err[LLM_GGUF_ERR_MAX + 64] = "";
	int32_t ids[16];
	struct llm_model *m;
	size_t n;

	tiny_dir(dir, &tiny_refs[_i], "F32", true, _i == 1 ? 2 : 1);
	ck_assert_msg(!llm_model_open(dir, &m, err, sizeof(err)), "%s", err);
	ck_assert_int_eq(llm_tok_encode(m->tok, "the hat<|endoftext|>", 20,
					LLM_TOK_PARSE_SPECIAL, ids, 16, &n), 0);
	/* "the" 30, " " + "h" + "at"... : Ġ h at -> 27 8 33 (no Ġh merge) */
	ck_assert_uint_eq(n, 5);
	ck_assert_int_eq(ids[0], 30);
	ck_assert_int_eq(ids[1], 27);
	ck_assert_int_eq(ids[2], 8);
	ck_assert_int_eq(ids[3], 33);
	ck_assert_int_eq(ids[4], 0);
	ck_assert_int_eq(m->tok->type[0], LLM_TOKTYPE_CONTROL);
	ck_assert_int_eq(m->gen.n_eos, 2);
	ck_assert_int_eq(m->gen.eos[1], 5);
	llm_model_close(m);
	rm_dir(dir);
}
END_TEST

/* the pre_tokenizer of tokenizer.json picks the split pattern */
START_TEST(test_hf_pre_tokenizers)
{
	static const char *re_l3 = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|"
		"[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}{1,3}| ?"
		"[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n]*|\\\\s*[\\\\r\\\\n]+|"
		"\\\\s+(?!\\\\S)|\\\\s+";
	static const char *re_q2 = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|"
		"[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}| ?"
		"[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n]*|\\\\s*[\\\\r\\\\n]+|"
		"\\\\s+(?!\\\\S)|\\\\s+";
	static const struct {
		const char *re; /* NULL: ByteLevel alone, "": Digits first */
		int ret;
		enum llm_tok_pre pre;
	} cases[] = {
		{ NULL, 0, LLM_TOK_PRE_GPT2 },
		{ "", 0, LLM_TOK_PRE_GPT2_DIGITS },
		{ "l3", 0, LLM_TOK_PRE_LLAMA3 },
		{ "q2", 0, LLM_TOK_PRE_QWEN2 },
		{ "\\\\w+", -EOPNOTSUPP, 0 },
	};
	char path[] = "/tmp/kvmm-pt-XXXXXX", file[64], js[2048];
	char err[LLM_GGUF_ERR_MAX + 64];

	ck_assert_ptr_nonnull(mkdtemp(path));
	snprintf(file, sizeof(file), "%s/tokenizer.json", path);
	for (size_t c = 0; c < ARRAY_SIZE(cases); c++) {
		const char *re = cases[c].re;
		struct llm_tok *t = NULL;
		char pre[1024];
		int ret;

		if (!re)
			snprintf(pre, sizeof(pre), "{\"type\":\"ByteLevel\"}");
		else if (!*re)
			snprintf(pre, sizeof(pre), "{\"type\":\"Sequence\","
				 "\"pretokenizers\":[{\"type\":\"Digits\","
				 "\"individual_digits\":true},{\"type\":"
				 "\"ByteLevel\"}]}");
		else
			snprintf(pre, sizeof(pre), "{\"type\":\"Sequence\","
				 "\"pretokenizers\":[{\"type\":\"Split\","
				 "\"pattern\":{\"Regex\":\"%s\"},\"behavior\":"
				 "\"Isolated\"},{\"type\":\"ByteLevel\","
				 "\"use_regex\":false}]}",
				 !strcmp(re, "l3") ? re_l3 :
				 !strcmp(re, "q2") ? re_q2 : re);
		snprintf(js, sizeof(js), "{\"pre_tokenizer\":%s,\"model\":{"
			 "\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,"
			 "\"ab\":2},\"merges\":[\"a b\"]}}", pre);
		put_str(path, "tokenizer.json", js);
		ret = llm_hf_tokenizer(file, &t, err, sizeof(err));
		ck_assert_msg(ret == cases[c].ret, "case %zu: %d (%s)", c, ret,
			      err);
		if (ret) {
			ck_assert_ptr_nonnull(strstr(err, "pre_tokenizer"));
			continue;
		}
		ck_assert_int_eq(t->pre, cases[c].pre);
		llm_tok_free(t);
	}
	rm_dir(path);
}
END_TEST

/* ---- broken directories ---- */

static void expect_fail(const char *dir, int want, const char *needle)
{
	char err[LLM_GGUF_ERR_MAX + 64] = "";
	struct llm_model *m = NULL;
	int ret = llm_model_open(dir, &m, err, sizeof(err));

	ck_assert_msg(ret == want, "want %d, got %d (%s)", want, ret, err);
	ck_assert_ptr_null(m);
	ck_assert_msg(strstr(err, needle), "message '%s' lacks '%s'", err,
		      needle);
	ck_assert_ptr_null(strchr(err, '\n'));
}

START_TEST(test_hf_missing_files)
{
	const struct tiny_ref *r = &tiny_refs[0];
	char dir[64], path[128];
	int fds = kvtest_open_fds();

	tiny_dir(dir, r, "F32", true, 1);
	snprintf(path, sizeof(path), "%s/model.safetensors", dir);
	ck_assert_int_eq(rename(path, "/tmp/kvmm-st-moved"), 0);
	expect_fail(dir, -ENOENT, "no model.safetensors");
	ck_assert_int_eq(rename("/tmp/kvmm-st-moved", path), 0);
	snprintf(path, sizeof(path), "%s/tokenizer.json", dir);
	unlink(path);
	{
		/* weights only: opens, without a tokenizer */
		char err[LLM_GGUF_ERR_MAX + 64];
		struct llm_model *m;

		ck_assert_msg(!llm_model_open(dir, &m, err, sizeof(err)), "%s",
			      err);
		ck_assert_ptr_null(m->tok);
		ck_assert_uint_eq(m->cfg.n_vocab, r->vocab);
		llm_model_close(m);
	}
	put_str(dir, "tokenizer.json", "{\"model\": {\"type\": \"Unigram\"}}");
	expect_fail(dir, -EOPNOTSUPP, "tokenizer.json: unsupported tokenizer");
	unlink(path);
	snprintf(path, sizeof(path), "%s/config.json", dir);
	unlink(path);
	expect_fail(dir, -ENOENT, "config.json");
	expect_fail("/nonexistent/kvmm", -ENOENT, "/nonexistent/kvmm");
	rm_dir(dir);
	ck_assert_int_eq(kvtest_open_fds(), fds);
}
END_TEST

/* config.json problems */
START_TEST(test_hf_bad_config)
{
	const struct tiny_ref *r = &tiny_refs[0];
	char dir[64];

	tiny_dir(dir, r, "F32", true, 1);
	tiny_config(dir, r, "GPT2LMHeadModel");
	expect_fail(dir, -EOPNOTSUPP, "unsupported architecture 'GPT2LM");
	put_str(dir, "config.json", "{\"architectures\":[\"LlamaForCausal"
		"LM\"],\"hidden_size\":32,");
	expect_fail(dir, -EBADMSG, "config.json: json: truncated");
	put_str(dir, "config.json", "{\"architectures\":[\"LlamaForCausal"
		"LM\"],\"hidden_size\":32}");
	expect_fail(dir, -EBADMSG, "missing max_position_embeddings");
	put_str(dir, "config.json", "{\"architectures\":[\"LlamaForCausalLM"
		"\"],\"hidden_size\":32.5,\"max_position_embeddings\":64}");
	expect_fail(dir, -EBADMSG, "hidden_size is not an integer");
	/* a shape the tensors do not have */
	put_str(dir, "config.json",
		"{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":32,"
		"\"intermediate_size\":40,\"num_hidden_layers\":2,"
		"\"num_attention_heads\":4,\"num_key_value_heads\":2,"
		"\"max_position_embeddings\":64,\"rms_norm_eps\":1e-5,"
		"\"vocab_size\":64,\"tie_word_embeddings\":true}");
	expect_fail(dir, -EBADMSG, "blk.0.ffn_gate.weight' has shape");
	put_str(dir, "config.json",
		"{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":32,"
		"\"intermediate_size\":48,\"num_hidden_layers\":3,"
		"\"num_attention_heads\":4,\"num_key_value_heads\":2,"
		"\"max_position_embeddings\":64,\"rms_norm_eps\":1e-5,"
		"\"vocab_size\":64,\"tie_word_embeddings\":true}");
	expect_fail(dir, -EBADMSG, "missing tensor 'blk.2.attn_norm.weight'");
	put_str(dir, "config.json",
		"{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":32,"
		"\"intermediate_size\":48,\"num_hidden_layers\":2,"
		"\"num_attention_heads\":4,\"num_key_value_heads\":2,"
		"\"max_position_embeddings\":64,\"rms_norm_eps\":1e-5,"
		"\"vocab_size\":64,\"tie_word_embeddings\":false}");
	expect_fail(dir, -EBADMSG, "missing tensor 'lm_head.weight'");
	put_str(dir, "config.json",
		"{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":32,"
		"\"intermediate_size\":48,\"num_hidden_layers\":2,"
		"\"num_attention_heads\":4,\"num_key_value_heads\":2,"
		"\"max_position_embeddings\":64,\"rms_norm_eps\":1e-5,"
		"\"vocab_size\":64,\"rope_scaling\":{\"rope_type\":\"yarn\","
		"\"factor\":4}}");
	expect_fail(dir, -EOPNOTSUPP, "unsupported rope_scaling type 'yarn'");
	rm_dir(dir);
}
END_TEST

#define CFG_HEAD "{\"architectures\":[\"%s\"],\"hidden_size\":32," \
	"\"intermediate_size\":48,\"num_attention_heads\":4," \
	"\"num_key_value_heads\":2,\"max_position_embeddings\":64," \
	"\"rms_norm_eps\":1e-5,\"tie_word_embeddings\":true,"

/* config.json values that used to be accepted and give a wrong model */
START_TEST(test_hf_config_values)
{
	const struct tiny_ref *r = &tiny_refs[0];
	char dir[64], cfg[1024], err[LLM_GGUF_ERR_MAX + 64];
	struct llm_model *m;

	tiny_dir(dir, r, "F32", true, 1);
	/* a key given twice means its last value, as in Python */
	snprintf(cfg, sizeof(cfg), CFG_HEAD "\"num_hidden_layers\":5,"
		 "\"vocab_size\":64,\"num_hidden_layers\":2}",
		 "LlamaForCausalLM");
	put_str(dir, "config.json", cfg);
	ck_assert_msg(!llm_model_open(dir, &m, err, sizeof(err)), "%s", err);
	ck_assert_uint_eq(m->cfg.n_layers, 2);
	llm_model_close(m);
	snprintf(cfg, sizeof(cfg), CFG_HEAD "\"num_hidden_layers\":2,"
		 "\"vocab_size\":64,\"num_hidden_layers\":3}",
		 "LlamaForCausalLM");
	put_str(dir, "config.json", cfg);
	expect_fail(dir, -EBADMSG, "missing tensor 'blk.2.attn_norm.weight'");
	/* fewer layers than the tensors hold */
	snprintf(cfg, sizeof(cfg), CFG_HEAD "\"num_hidden_layers\":1,"
		 "\"vocab_size\":64}", "LlamaForCausalLM");
	put_str(dir, "config.json", cfg);
	expect_fail(dir, -EBADMSG, "'blk.1.attn_norm.weight' is past "
		    "block_count 1");
	snprintf(cfg, sizeof(cfg), CFG_HEAD "\"num_hidden_layers\":2,"
		 "\"vocab_size\":0}", "LlamaForCausalLM");
	put_str(dir, "config.json", cfg);
	expect_fail(dir, -EBADMSG, "config.json: vocab_size is 0");
	{
		static const char *const bad[] = { "0", "-4096", "\"4096\"",
						   "1.5" };

		for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
			snprintf(cfg, sizeof(cfg), CFG_HEAD
				 "\"num_hidden_layers\":2,\"vocab_size\":64,"
				 "\"sliding_window\":%s}", "MistralForCausalLM",
				 bad[i]);
			put_str(dir, "config.json", cfg);
			expect_fail(dir, -EBADMSG, "config.json: "
				    "sliding_window is not null");
		}
	}
	snprintf(cfg, sizeof(cfg), CFG_HEAD "\"num_hidden_layers\":2,"
		 "\"vocab_size\":64,\"sliding_window\":null}",
		 "MistralForCausalLM");
	put_str(dir, "config.json", cfg);
	ck_assert_msg(!llm_model_open(dir, &m, err, sizeof(err)), "%s", err);
	ck_assert_uint_eq(m->cfg.n_ctx, 64);
	llm_model_close(m);
	snprintf(cfg, sizeof(cfg), CFG_HEAD "\"num_hidden_layers\":2,"
		 "\"vocab_size\":64,\"sliding_window\":16}",
		 "MistralForCausalLM");
	put_str(dir, "config.json", cfg);
	ck_assert_msg(!llm_model_open(dir, &m, err, sizeof(err)), "%s", err);
	ck_assert_uint_eq(m->cfg.n_ctx, 16);
	llm_model_close(m);
	rm_dir(dir);
}
END_TEST

/*
 * tokenizer_config.json and generation_config.json: mistyped or
 * out-of-range values are refused with the file and the key named
 */
START_TEST(test_hf_side_files)
{
	static const struct {
		const char *file, *text, *msg;
	} bad[] = {
		{ "tokenizer_config.json", "[1, 2]",
		  "tokenizer_config.json: not a JSON object" },
		{ "tokenizer_config.json", "{\"bos_token\": \"<s>\"}",
		  "tokenizer_config.json: bos_token '<s>' is not in the "
		  "vocabulary" },
		{ "tokenizer_config.json",
		  "{\"bos_token\": {\"content\": \"<bos>\"}}",
		  "bos_token '<bos>' is not in" },
		{ "tokenizer_config.json", "{\"bos_token\": 1}",
		  "bos_token is not a string" },
		{ "generation_config.json", "{\"temperature\": -1}",
		  "generation_config.json: temperature is not a number" },
		{ "generation_config.json", "{\"temperature\": \"0.7\"}",
		  "temperature is not a number" },
		{ "generation_config.json", "{\"top_k\": 2.5}",
		  "top_k is not an integer" },
		{ "generation_config.json", "{\"top_p\": 1.5}",
		  "top_p is not a number in [0, 1]" },
		{ "generation_config.json", "{\"top_p\": 0}", "top_p is 0" },
		{ "generation_config.json", "{\"bos_token_id\": \"1\"}",
		  "bos_token_id is not an integer" },
		{ "generation_config.json", "{\"eos_token_id\": [0, \"1\"]}",
		  "eos_token_id is not a token id" },
		{ "generation_config.json", "{\"eos_token_id\": -3}",
		  "eos_token_id is not a token id" },
		{ "generation_config.json", "{\"eos_token_id\": 64}",
		  "eos_token_id 64 is past the vocabulary (64)" },
		{ "generation_config.json",
		  "{\"eos_token_id\": [1,2,3,4,5,6,7,8,9]}",
		  "eos_token_id lists 9 ids (at most 8)" },
		{ "generation_config.json", "7",
		  "generation_config.json: not a JSON object" },
		{ "tokenizer.json", NULL, "merges[0] 't hh': the second "
		  "token not in the vocabulary" },
	};
	const struct tiny_ref *r = &tiny_refs[0];
	char dir[64], path[128], err[LLM_GGUF_ERR_MAX + 64];
	struct llm_model *m;

	tiny_dir(dir, r, "F32", true, 1);
	put_str(dir, "tokenizer_config.json", "{\"bos_token\": {\"content\":"
		" \"<|endoftext|>\"}, \"eos_token\": null}");
	put_str(dir, "generation_config.json", "{\"eos_token_id\": [0, 5], "
		"\"temperature\": 0.5, \"top_k\": 20, \"top_p\": 0.9, "
		"\"bos_token_id\": null}");
	ck_assert_msg(!llm_model_open(dir, &m, err, sizeof(err)), "%s", err);
	ck_assert_int_eq(m->gen.n_eos, 2);
	ck_assert_int_eq(m->gen.top_k, 20);
	ck_assert_float_eq(m->gen.temperature, 0.5f);
	llm_model_close(m);
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		char keep[160];

		snprintf(path, sizeof(path), "%s/%s", dir, bad[i].file);
		snprintf(keep, sizeof(keep), "%s.keep", path);
		ck_assert_int_eq(rename(path, keep), 0);
		if (bad[i].text) {
			put_str(dir, bad[i].file, bad[i].text);
		} else {
			/* tokenizer.json with a merge out of the vocab */
			FILE *f = fopen(keep, "rb");
			char buf[16384], *p;
			size_t n = fread(buf, 1, sizeof(buf) - 1, f);

			fclose(f);
			buf[n] = 0;
			p = strstr(buf, "\"t h\"");
			ck_assert_ptr_nonnull(p);
			memmove(p + 5, p + 4, strlen(p + 4) + 1);
			p[4] = 'h';
			put_str(dir, bad[i].file, buf);
		}
		expect_fail(dir, -EBADMSG, bad[i].msg);
		ck_assert_int_eq(rename(keep, path), 0);
	}
	rm_dir(dir);
}
END_TEST

/* a tiny safetensors image with one F32 [2, 3] tensor, header padded */
static void st_one(struct gbuf *b, const char *hdr)
{
	size_t hl = strlen(hdr);
	float v[6] = { 1, 2, 3, 4, 5, 6 };

	gb_u64(b, hl);
	gb_put(b, hdr, hl);
	gb_put(b, v, sizeof(v));
}

START_TEST(test_st_header_checks)
{
	static const struct {
		const char *hdr;
		int ret;
		const char *msg;
	} cases[] = {
		{ "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":"
		  "[0,24]}}", 0, "" },
		{ "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":"
		  "[0,28]}}", -EBADMSG, "beyond end of file" },
		{ "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":"
		  "[4,24]}}", -EBADMSG, "20 bytes for 6 elements" },
		{ "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":"
		  "[8,4]}}", -EBADMSG, "data_offsets [8, 4] begin after end" },
		{ "{\"w\":{\"dtype\":\"F7\",\"shape\":[2,3],\"data_offsets\":"
		  "[0,24]}}", -EOPNOTSUPP, "unknown dtype 'F7'" },
		{ "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,-3],\"data_offsets\":"
		  "[0,24]}}", -EBADMSG, "bad shape" },
		{ "{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,2,3],"
		  "\"data_offsets\":[0,24]}}", -EOPNOTSUPP, "5 dimensions" },
		{ "{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,"
		  "4294967296],\"data_offsets\":[0,24]}}", -EBADMSG,
		  "overflows" },
		{ "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":"
		  "[0,12]},\"b\":{\"dtype\":\"F32\",\"shape\":[3],"
		  "\"data_offsets\":[8,20]}}", -EBADMSG, "overlap" },
		{ "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3]}}", -EBADMSG,
		  "needs dtype" },
		{ "[1,2]", -EBADMSG, "not an object" },
		{ "{\"w\":", -EBADMSG, "truncated" },
	};
	char err[LLM_GGUF_ERR_MAX + 64];
	size_t n;

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct gbuf b = { 0 };
		int ret;

		st_one(&b, cases[i].hdr);
		err[0] = 0;
		ret = llm_st_check(b.p, b.len, &n, err, sizeof(err));
		ck_assert_msg(ret == cases[i].ret, "case %zu: %d (%s)", i, ret,
			      err);
		ck_assert_msg(strstr(err, cases[i].msg), "case %zu: '%s'", i,
			      err);
		free(b.p);
	}
}
END_TEST

/* every truncation of a real model file is refused, with its file named */
START_TEST(test_hf_truncations)
{
	const struct tiny_ref *r = &tiny_refs[2];
	char dir[64], path[128];
	struct gbuf b = { 0 };
	struct st_t t[64];
	int n = tiny_hf_tensors(r, "F32", true, t);
	size_t ntens, len;

	st_image(t, n, &b);
	free_tensors(t, n);
	ck_assert_int_eq(llm_st_check(b.p, b.len, &ntens, NULL, 0), 0);
	ck_assert_int_eq(ntens, n);
	for (len = 0; len < b.len; len += len < 2048 ? 1 : 997) {
		int ret = llm_st_check(b.p, len, &ntens, NULL, 0);

		ck_assert_msg(ret == -EBADMSG, "length %zu: %d", len, ret);
	}
	/* and through the loader, with the path in the message */
	tiny_dir(dir, r, "F32", true, 1);
	snprintf(path, sizeof(path), "%s/model.safetensors", dir);
	ck_assert_int_eq(truncate(path, (off_t)(b.len - 5)), 0);
	expect_fail(dir, -EBADMSG, "model.safetensors: tensor");
	ck_assert_int_eq(truncate(path, 4), 0);
	expect_fail(dir, -EBADMSG, "truncated safetensors file");
	free(b.p);
	rm_dir(dir);
}
END_TEST

/*
 * Every file of a directory that is a FIFO is refused at once (open() on a
 * FIFO blocks until a writer comes: the test would time out), a shard that
 * is a directory is named as one, not as "truncated".
 */
START_TEST(test_hf_not_regular)
{
	static const char *const files[] = {
		"config.json", "tokenizer.json", "tokenizer_config.json",
		"generation_config.json", "model.safetensors",
	};
	const struct tiny_ref *r = &tiny_refs[0];
	char dir[64], path[128], keep[160];
	int fds = kvtest_open_fds();

	tiny_dir(dir, r, "F32", true, 1);
	for (size_t i = 0; i < ARRAY_SIZE(files); i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, files[i]);
		snprintf(keep, sizeof(keep), "%s.keep", path);
		rename(path, keep);
		ck_assert_int_eq(mkfifo(path, 0600), 0);
		expect_fail(dir, -EBADMSG, "a FIFO, not a regular file");
		unlink(path);
		ck_assert_int_eq(mkdir(path, 0700), 0);
		expect_fail(dir, -EBADMSG, "a directory, not a regular file");
		rmdir(path);
		rename(keep, path);
	}
	/* the model path itself, as a GGUF file */
	snprintf(path, sizeof(path), "%s/m.gguf", dir);
	ck_assert_int_eq(mkfifo(path, 0600), 0);
	expect_fail(path, -EBADMSG, "a FIFO, not a regular file");
	unlink(path);
	/* and a tokenizer.json alone */
	snprintf(path, sizeof(path), "%s/tokenizer.json", dir);
	snprintf(keep, sizeof(keep), "%s.keep", path);
	rename(path, keep);
	ck_assert_int_eq(mkfifo(path, 0600), 0);
	{
		char err[LLM_GGUF_ERR_MAX + 64] = "";
		struct llm_tok *t = NULL;

		ck_assert_int_eq(llm_hf_tokenizer(path, &t, err, sizeof(err)),
				 -EBADMSG);
		ck_assert_msg(strstr(err, "a FIFO"), "%s", err);
	}
	unlink(path);
	rename(keep, path);
	rm_dir(dir);
	ck_assert_int_eq(kvtest_open_fds(), fds);
}
END_TEST

/* a weight of a dtype we cannot bind; sharded index problems */
START_TEST(test_hf_bad_tensors)
{
	const struct tiny_ref *r = &tiny_refs[0];
	char dir[64], path[128];
	struct gbuf b = { 0 };
	float v[32] = { 0 };

	tiny_dir(dir, r, "F32", true, 1);
	snprintf(path, sizeof(path), "%s/model.safetensors", dir);
	st_one(&b, "{\"model.norm.weight\":{\"dtype\":\"I64\",\"shape\":[3],"
		   "\"data_offsets\":[0,24]}}");
	put_file(dir, "model.safetensors", b.p, b.len);
	free(b.p);
	expect_fail(dir, -EOPNOTSUPP, "has dtype I64");
	rm_dir(dir);

	tiny_dir(dir, r, "F32", true, 2);
	/* a shard named by the index is missing */
	snprintf(path, sizeof(path), "%s/model-00002-of-00002.safetensors",
		 dir);
	ck_assert_int_eq(rename(path, "/tmp/kvmm-st-moved"), 0);
	expect_fail(dir, -ENOENT, "model-00002-of-00002.safetensors");
	/* the shard lacks a tensor the index places there */
	b = (struct gbuf){ 0 };
	gb_u64(&b, 8);
	gb_put(&b, "{}      ", 8);
	gb_put(&b, v, sizeof(v));
	put_file(dir, "model-00002-of-00002.safetensors", b.p, b.len);
	free(b.p);
	expect_fail(dir, -EBADMSG, "named by the index is missing");
	unlink("/tmp/kvmm-st-moved");
	/* an index that escapes the directory */
	put_str(dir, "model.safetensors.index.json",
		"{\"weight_map\":{\"lm_head.weight\":\"../x.safetensors\"}}");
	expect_fail(dir, -EBADMSG, "bad shard name");
	rm_dir(dir);
}
END_TEST

/* the default model converted by tests/ref/gguf_to_hf.py, if present */
START_TEST(test_hf_gguf_same_tokens)
{
	const char *dir = getenv("KVMM_HF_MODEL");

	if (!dir) {
		kvtest_skip(__func__, "KVMM_HF_MODEL unset (a directory from "
			    "tests/ref/gguf_to_hf.py)");
		return;
	}
	{
		const char *paths[2] = { model_path(), dir };
		char err[LLM_GGUF_ERR_MAX + 64] = "";
		float *z[2];
		int32_t prompt[4] = { 504, 3575, 282, 4649 }, ids[2][8];

		for (int k = 0; k < 2; k++) {
			struct llm_model *m;
			struct llm_cpu *cpu;
			struct llm_kv *kv;
			int seq = 0, nt = 4;
			struct llm_batch bt = { 1, &seq, &nt, prompt };

			ck_assert_msg(!llm_model_open(paths[k], &m, err,
						      sizeof(err)), "%s", err);
			ck_assert_msg(!llm_cpu_load(&m->cfg, &m->w, 2, &cpu,
						    err, sizeof(err)), "%s",
				      err);
			ck_assert_int_eq(llm_kv_contig_create(&m->cfg, 1, 16,
							      &kv), 0);
			z[k] = malloc(m->cfg.n_vocab * sizeof(float));
			for (int s = 0; s < 8; s++) {
				ck_assert_int_eq(llm_cpu_forward(cpu, kv, &bt,
								 z[k]), 0);
				kvk_argmax_cpu(&ids[k][s], z[k], 1,
					       m->cfg.n_vocab, KVK_F32, NULL);
				nt = 1;
				bt.tok = &ids[k][s];
			}
			llm_kv_destroy(kv);
			llm_cpu_free(cpu);
			llm_model_close(m);
		}
		ck_assert(!memcmp(ids[0], ids[1], sizeof(ids[0])));
		printf("gguf vs hf: last logits rel L2 %.3g\n",
		       rel_l2(z[1], z[0], 49152));
		free(z[0]);
		free(z[1]);
	}
}
END_TEST

Suite *suite_safetensors(void)
{
	Suite *s = suite_create("safetensors");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, 120);
	KV_ADD(tc, test_json_valid);
	KV_ADD(tc, test_json_invalid);
	KV_ADD(tc, test_json_fuzz);
	KV_ADD_LOOP(tc, test_hf_tiny_archs, 0, (int)ARRAY_SIZE(tiny_refs));
	KV_ADD(tc, test_hf_permutation_matters);
	KV_ADD(tc, test_hf_rope_llama3);
	KV_ADD_LOOP(tc, test_hf_half_dtypes, 0, 6);
	KV_ADD_LOOP(tc, test_hf_tokenizer, 0, 2);
	KV_ADD(tc, test_hf_pre_tokenizers);
	KV_ADD(tc, test_hf_missing_files);
	KV_ADD(tc, test_hf_bad_config);
	KV_ADD(tc, test_hf_config_values);
	KV_ADD(tc, test_hf_side_files);
	KV_ADD(tc, test_st_header_checks);
	KV_ADD(tc, test_hf_truncations);
	KV_ADD(tc, test_hf_bad_tensors);
	KV_ADD(tc, test_hf_not_regular);
	KV_ADD(tc, test_hf_gguf_same_tokens);
	suite_add_tcase(s, tc);
	return s;
}
