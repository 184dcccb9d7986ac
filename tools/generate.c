// SPDX-License-Identifier: MIT
/*
 * generate.c - `kvmm generate`: load a model (a GGUF file or a Hugging Face
 * directory), run prompts through the CPU or CUDA executor, stream the
 * answer, print a summary.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "config.h"
#include "forward.h"
#include "gguf.h"
#include "kvcache.h"
#include "kvk.h"
#include "kvmm.h"
#include "kvpolicy.h"
#include "model.h"
#include "policy.h"
#include "tokenizer.h"
#ifdef KVMM_HAVE_CUDA
#include "forward_cuda.h"
#endif

#define GEN_MAX_STOP 8

enum gen_device { GEN_DEV_AUTO, GEN_DEV_CPU, GEN_DEV_CUDA };

struct gen_opts {
	const char *model;
	const char *prompt;
	const char *batch_file; /* JSONL of {"prompt": ...}, or NULL */
	const char *system;
	bool chat;
	bool json;
	bool ignore_eos;  /* run to --max-tokens (benchmarks) */
	uint64_t max_tokens;
	uint64_t threads; /* 0: every CPU we may run on */
	int device;	  /* enum gen_device */
	uint64_t seed;
	struct kvk_sample_cfg sample;
	const char *stop[GEN_MAX_STOP];
	int n_stop;
	bool policy;	/* @pol set (--policy, else full) */
	struct llm_policy pol;
};

/*
 * struct gen_seq - one prompt and what was generated for it. Owned by its
 * struct gen_run.
 */
struct gen_seq {
	char *prompt;	  /* the user's text (owned) */
	char *policy;	  /* its "policy" of --batch-file, or NULL (owned) */
	int32_t *ids;	  /* prompt, then generated tokens */
	size_t n_prompt;  /* tokens */
	size_t n_gen;	  /* tokens generated (stop token included) */
	char *text;	  /* generated text, NUL-terminated */
	size_t text_len, text_cap; /* bytes */
	size_t shown;	  /* bytes of @text already printed */
	const char *stop_reason; /* NULL while running */
};

/*
 * struct gen_run - one generation: the loaded model and its sequences,
 * decoded together. Owned by cmd_generate(); single-threaded.
 */
struct gen_run {
	struct llm_config cfg;
	struct llm_tok *tok;
	struct llm_cpu *cpu;	/* the executor: this one ... */
	struct llm_cuda *gpu;	/* ... or this one */
	struct llm_kv *kv;
	struct gen_seq *seq;
	int n_seq;
	uint64_t max_new;   /* tokens each sequence may generate */
	int32_t stop_id[3 + LLM_MODEL_MAX_EOS]; /* eos, end-of-turn tokens,
						 * -1 unused */
	struct llm_gen_defaults gen; /* of the model */
	bool stream;	    /* print text as it comes (one sequence) */
	double load_us, prefill_us, decode_us; /* microseconds */
	uint64_t decode_tok; /* tokens produced by decode steps */
};

static const char gen_usage[] =
	"usage: kvmm generate --model PATH --prompt TEXT [options]\n"
	"       kvmm generate --model PATH --batch-file FILE [options]\n"
	"  --model PATH        a GGUF file or a Hugging Face model directory\n"
	"                      (config.json, tokenizer.json, safetensors)\n"
	"  --batch-file FILE   one JSON object a line, {\"prompt\": TEXT}:\n"
	"                      every prompt decoded together in one batch\n"
	"  --chat              wrap the prompt in the model's chat template\n"
	"  --system TEXT       system message (with --chat)\n"
	"  --max-tokens N      tokens to generate at most (256); fewer, with\n"
	"                      a notice, when the context has no room\n"
	"  --ignore-eos        go on past the end-of-sequence tokens, to\n"
	"                      --max-tokens (for benchmarks)\n"
	"  --device D          auto, cpu or cuda (auto: cuda when built\n"
	"                      with CUDA and a GPU answers, else cpu)\n"
	"  --threads N         CPU threads (all available)\n"
	"  --temperature T     0 is greedy (0)\n"
	"  --top-k K           keep the K most likely tokens, 0 all (0)\n"
	"  --top-p P           nucleus sampling, in (0, 1] (1)\n"
	"  --seed S            seed of the sampler (0)\n"
	"  --stop TEXT         stop when TEXT is generated (up to 8)\n"
	"  --json              JSON lines (one per prompt, then a summary)\n"
	"                      instead of streaming\n"
	"  --policy SPEC       the KV cache's memory policy: full (fp16, the\n"
	"                      default), uniform, diffkv or kvcompress,\n"
	"                      with knobs as in\n"
	"                      `kvmm eval` (e.g. diffkv:prune=0,quant=2);\n"
	"                      a --batch-file line's \"policy\" may change\n"
	"                      diffkv's prune and quant for its prompt\n";

static int parse_f32(const char *opt, const char *s, float lo, float hi,
		     float *out)
{
	char *end;
	float v;

	errno = 0;
	v = strtof(s, &end);
	if (errno || end == s || *end || !(v >= lo && v <= hi)) {
		fprintf(stderr, "kvmm: %s: '%s' is not a number in [%g, %g]\n",
			opt, s, lo, hi);
		return -EINVAL;
	}
	*out = v;
	return 0;
}

enum {
	OPT_MODEL = 256, OPT_PROMPT, OPT_CHAT, OPT_SYSTEM, OPT_MAX_TOKENS,
	OPT_DEVICE, OPT_THREADS, OPT_TEMP, OPT_TOP_K, OPT_TOP_P, OPT_SEED,
	OPT_STOP, OPT_JSON, OPT_BATCH_FILE, OPT_KV, OPT_POLICY, OPT_HELP,
	OPT_IGNORE_EOS,
};

static const struct option gen_longopts[] = {
	{ "model", required_argument, NULL, OPT_MODEL },
	{ "prompt", required_argument, NULL, OPT_PROMPT },
	{ "chat", no_argument, NULL, OPT_CHAT },
	{ "system", required_argument, NULL, OPT_SYSTEM },
	{ "max-tokens", required_argument, NULL, OPT_MAX_TOKENS },
	{ "device", required_argument, NULL, OPT_DEVICE },
	{ "threads", required_argument, NULL, OPT_THREADS },
	{ "temperature", required_argument, NULL, OPT_TEMP },
	{ "top-k", required_argument, NULL, OPT_TOP_K },
	{ "top-p", required_argument, NULL, OPT_TOP_P },
	{ "seed", required_argument, NULL, OPT_SEED },
	{ "stop", required_argument, NULL, OPT_STOP },
	{ "json", no_argument, NULL, OPT_JSON },
	{ "batch-file", required_argument, NULL, OPT_BATCH_FILE },
	{ "kv", required_argument, NULL, OPT_KV },
	{ "policy", required_argument, NULL, OPT_POLICY },
	{ "help", no_argument, NULL, OPT_HELP },
	{ "ignore-eos", no_argument, NULL, OPT_IGNORE_EOS },
	{ NULL, 0, NULL, 0 },
};

/* Return: 0, 1 for --help (exit 0), or -EINVAL (exit 2). */
static int gen_parse(int argc, char **argv, struct gen_opts *o)
{
	uint64_t v;
	int c;

	memset(o, 0, sizeof(*o));
	o->max_tokens = 256;
	o->sample.top_p = 1.0f;
	optind = 1;
	while ((c = getopt_long(argc, argv, "", gen_longopts, NULL)) != -1) {
		switch (c) {
		case OPT_MODEL:
			o->model = optarg;
			break;
		case OPT_PROMPT:
			o->prompt = optarg;
			break;
		case OPT_CHAT:
			o->chat = true;
			break;
		case OPT_SYSTEM:
			o->system = optarg;
			break;
		case OPT_MAX_TOKENS:
			if (kvmm_parse_u64("--max-tokens", optarg, 1,
					   LLM_MAX_CTX, &o->max_tokens))
				return -EINVAL;
			break;
		case OPT_DEVICE:
			if (!strcmp(optarg, "auto")) {
				o->device = GEN_DEV_AUTO;
			} else if (!strcmp(optarg, "cpu")) {
				o->device = GEN_DEV_CPU;
			} else if (!strcmp(optarg, "cuda")) {
#ifndef KVMM_HAVE_CUDA
				fprintf(stderr, "kvmm generate: --device cuda: "
					"no GPU: this kvmm was built without "
					"CUDA\n");
				return -EINVAL;
#endif
				o->device = GEN_DEV_CUDA;
			} else {
				fprintf(stderr, "kvmm generate: --device: '%s' "
					"is not auto, cpu or cuda\n", optarg);
				return -EINVAL;
			}
			break;
		case OPT_THREADS:
			if (kvmm_parse_u64("--threads", optarg, 1, 256,
					   &o->threads))
				return -EINVAL;
			break;
		case OPT_TEMP:
			if (parse_f32("--temperature", optarg, 0.0f, 100.0f,
				      &o->sample.temperature))
				return -EINVAL;
			break;
		case OPT_TOP_K:
			if (kvmm_parse_u64("--top-k", optarg, 0, LLM_MAX_VOCAB,
					   &v))
				return -EINVAL;
			o->sample.top_k = (int)v;
			break;
		case OPT_TOP_P:
			if (parse_f32("--top-p", optarg, 1e-6f, 1.0f,
				      &o->sample.top_p))
				return -EINVAL;
			break;
		case OPT_SEED:
			if (kvmm_parse_u64("--seed", optarg, 0, UINT64_MAX,
					   &o->seed))
				return -EINVAL;
			break;
		case OPT_STOP:
			if (o->n_stop == GEN_MAX_STOP || !*optarg) {
				fprintf(stderr, "kvmm generate: --stop: at most "
					"%d non-empty strings\n", GEN_MAX_STOP);
				return -EINVAL;
			}
			o->stop[o->n_stop++] = optarg;
			break;
		case OPT_JSON:
			o->json = true;
			break;
		case OPT_BATCH_FILE:
			o->batch_file = optarg;
			break;
		case OPT_KV:
			if (strcmp(optarg, "paged") && strcmp(optarg, "contig")) {
				fprintf(stderr, "kvmm generate: --kv: '%s' is "
					"not paged or contig\n", optarg);
				return -EINVAL;
			}
			fprintf(stderr, "kvmm generate: --kv is deprecated: "
				"there is one KV cache, the policy cache "
				"(--policy full, the default, is its fp16 "
				"policy)\n");
			break;
		case OPT_POLICY: {
			char err[200];

			if (llm_policy_parse(optarg, &o->pol, err,
					     sizeof(err))) {
				fprintf(stderr, "kvmm generate: --policy: %s\n",
					err);
				return -EINVAL;
			}
			o->policy = true;
			break;
		}
		case OPT_IGNORE_EOS:
			o->ignore_eos = true;
			break;
		case OPT_HELP:
			fputs(gen_usage, stdout);
			return 1;
		default:
			fputs(gen_usage, stderr);
			return -EINVAL;
		}
	}
	if (optind < argc || !o->model || !o->prompt == !o->batch_file) {
		fprintf(stderr, "kvmm generate: %s\n%s",
			optind < argc ? "unexpected argument" :
			"--model and one of --prompt, --batch-file are required",
			gen_usage);
		return -EINVAL;
	}
	if (o->system && !o->chat) {
		fprintf(stderr, "kvmm generate: --system needs --chat (the "
			"system message goes into the chat template)\n");
		return -EINVAL;
	}
	return 0;
}

static int gen_threads(const struct gen_opts *o)
{
	cpu_set_t set;

	if (o->threads)
		return (int)o->threads;
	if (!sched_getaffinity(0, sizeof(set), &set) && CPU_COUNT(&set) > 0)
		return CPU_COUNT(&set);
	return 1;
}

/*
 * open the model (GGUF file or Hugging Face directory), load the weights
 * for the CPU and keep the tokenizer; the files are closed after
 */
/* whether to run on the GPU: asked for, or auto and a device answers */
static bool gen_use_cuda(const struct gen_opts *o)
{
#ifdef KVMM_HAVE_CUDA
	char why[128];

	if (o->device == GEN_DEV_CUDA)
		return true;
	return o->device == GEN_DEV_AUTO && !kvrt_cuda_probe(why, sizeof(why));
#else
	(void)o;
	return false;
#endif
}

static int gen_load_cuda(struct gen_run *r, const struct llm_model *m,
			 char *err, size_t len)
{
#ifdef KVMM_HAVE_CUDA
	return llm_cuda_load(&m->cfg, &m->w, NULL, &r->gpu, err, len);
#else
	(void)r, (void)m, (void)err, (void)len;
	return -ENODEV;
#endif
}

static uint64_t gen_weight_bytes(const struct gen_run *r)
{
#ifdef KVMM_HAVE_CUDA
	if (r->gpu)
		return llm_cuda_weight_bytes(r->gpu);
#endif
	return llm_cpu_weight_bytes(r->cpu);
}

static int gen_threads_used(const struct gen_run *r)
{
	return r->cpu ? llm_cpu_threads(r->cpu) : 0;
}

static int gen_load(struct gen_run *r, const struct gen_opts *o)
{
	char err[LLM_GGUF_ERR_MAX + 64] = "";
	struct llm_model *m;
	double t0 = kvmm_now_us();
	int ret;

	ret = llm_model_open(o->model, &m, err, sizeof(err));
	if (ret) {
		/* the loader's message names the file already */
		fprintf(stderr, "kvmm generate: %s\n",
			*err ? err : strerror(-ret));
		return ret;
	}
	if (!m->tok) {
		fprintf(stderr, "kvmm generate: %s: no tokenizer.json\n",
			o->model);
		llm_model_close(m);
		return -ENOENT;
	}
	r->cfg = m->cfg;
	r->gen = m->gen;
#ifdef KVMM_HAVE_CUDA
	if (o->device == GEN_DEV_CUDA && kvrt_cuda_probe(err, sizeof(err))) {
		/* as kvmm bench says it */
		fprintf(stderr, "kvmm generate: --device cuda: no GPU: %s\n",
			err);
		llm_model_close(m);
		return -ENODEV;
	}
#endif
	if (gen_use_cuda(o))
		ret = gen_load_cuda(r, m, err, sizeof(err));
	else
		ret = llm_cpu_load(&m->cfg, &m->w, gen_threads(o), &r->cpu,
				   err, sizeof(err));
	if (!ret) {
		r->tok = m->tok;
		m->tok = NULL;
	}
	llm_model_close(m);
	if (ret) {
		fprintf(stderr, "kvmm generate: %s: %s\n", o->model,
			*err ? err : strerror(-ret));
		return ret;
	}
	r->load_us = kvmm_now_us() - t0;
	return 0;
}

/* the prompt of @q in the chat template or as is, into q->ids */
static int gen_encode(struct gen_run *r, const struct gen_opts *o,
		      struct gen_seq *q)
{
	const struct llm_tok *t = r->tok;
	unsigned int flags = 0;
	char *text = NULL;
	size_t len, n;
	int ret;

	if (o->chat) {
		struct llm_chat_msg msg[2];
		enum llm_chat_tmpl style;
		const char *sys = NULL;
		size_t sys_len = 0, nm = 0;

		if (!t->chat_template ||
		    llm_chat_detect(t->chat_template, &style, &sys, &sys_len)) {
			fprintf(stderr, "kvmm generate: --chat: the model has "
				"no ChatML or Llama-3 chat template\n");
			return -EOPNOTSUPP;
		}
		if (o->system)
			msg[nm++] = (struct llm_chat_msg){ "system", o->system };
		msg[nm++] = (struct llm_chat_msg){ "user", q->prompt };
		llm_chat_format(style, sys, sys_len, msg, nm, true, NULL, 0,
				&len);
		text = malloc(len + 1);
		if (!text)
			return -ENOMEM;
		llm_chat_format(style, sys, sys_len, msg, nm, true, text,
				len + 1, &len);
		flags = LLM_TOK_PARSE_SPECIAL;
	} else {
		len = strlen(q->prompt);
		if (t->add_bos)
			flags = LLM_TOK_ADD_BOS;
	}
	ret = llm_tok_encode(t, text ? text : q->prompt, len, flags, NULL, 0,
			     &n);
	if (ret && ret != -ENOSPC) {
		fprintf(stderr, "kvmm generate: the tokenizer refused the "
			"prompt: %s\n", strerror(-ret));
		goto out;
	}
	if (n == 0) {
		fprintf(stderr, "kvmm generate: the prompt is empty\n");
		ret = -EINVAL;
		goto out;
	}
	if (n >= r->cfg.n_ctx) {
		fprintf(stderr, "kvmm generate: the prompt is %zu tokens; the "
			"model's context is %u\n", n, r->cfg.n_ctx);
		ret = -E2BIG;
		goto out;
	}
	q->ids = malloc((n + o->max_tokens) * sizeof(int32_t));
	ret = -ENOMEM;
	if (!q->ids)
		goto out;
	ret = llm_tok_encode(t, text ? text : q->prompt, len, flags, q->ids,
			     n, &n);
	q->n_prompt = n;
out:
	free(text);
	return ret;
}

static void gen_show(struct gen_seq *q, size_t upto)
{
	upto = llm_utf8_whole(q->text, upto);
	if (upto > q->shown) {
		fwrite(q->text + q->shown, 1, upto - q->shown, stdout);
		fflush(stdout);
		q->shown = upto;
	}
}

static bool gen_is_stop(const struct gen_run *r, int32_t id)
{
	for (size_t i = 0; i < ARRAY_SIZE(r->stop_id); i++)
		if (r->stop_id[i] >= 0 && id == r->stop_id[i])
			return true;
	return false;
}

/* take token @id for sequence @q; Return: 0 or -ENOMEM */
static int gen_take(struct gen_run *r, const struct gen_opts *o,
		    struct gen_seq *q, int32_t id)
{
	size_t pl, hold;
	const char *p;
	int ret;

	q->ids[q->n_prompt + q->n_gen++] = id;
	if (gen_is_stop(r, id)) {
		q->stop_reason = "eos";
		return 0;
	}
	p = llm_tok_piece(r->tok, id, &pl);
	if (r->tok->type[id] != LLM_TOKTYPE_CONTROL) {
		ret = llm_text_append(&q->text, &q->text_len, &q->text_cap, p,
				      pl);
		if (ret)
			return ret;
	}
	if (llm_text_stop(q->text, &q->text_len, o->stop, o->n_stop, 0,
			  &hold))
		q->stop_reason = "stop-string";
	else if (q->n_gen == r->max_new)
		/* cut short by the context, not by --max-tokens */
		q->stop_reason = r->max_new < o->max_tokens ? "context" :
			"max-tokens";
	if (r->stream && q->text)
		gen_show(q, q->stop_reason ? q->text_len : q->text_len - hold);
	return 0;
}

/* sample one token per row of @logits for the sequences in @idx */
static int gen_sample(struct gen_run *r, const struct gen_opts *o,
		      const int *idx, int n, const float *logits, int32_t *id,
		      float *u)
{
	for (int i = 0; i < n; i++)
		u[i] = kvk_rand_uniform(o->seed, (uint64_t)idx[i] << 32 |
						 r->seq[idx[i]].n_gen);
	return kvk_sample_cpu(id, logits, u, n, r->cfg.n_vocab, &o->sample,
			      KVK_F32, NULL);
}

/*
 * one step on whichever executor was loaded, and the next token of each of
 * its sequences into @st->id: greedy on the GPU is the device's argmax (4
 * bytes a sequence come back, not the logits: copying and scanning them
 * on the host cost about 0.5 ms a sequence at Llama-3's vocabulary);
 * otherwise the logits come back and the host samples
 */
struct gen_step;
static int gen_next(struct gen_run *r, const struct gen_opts *o,
		    const struct llm_batch *b, struct gen_step *st);

/* arrays of one step: slots, token counts, tokens, sampled ids, uniforms */
struct gen_step {
	int *idx, *nt;
	int32_t *tok, *id;
	float *u, *logits;
};

static int gen_next(struct gen_run *r, const struct gen_opts *o,
		    const struct llm_batch *b, struct gen_step *st)
{
	int ret;

#ifdef KVMM_HAVE_CUDA
	if (r->gpu && o->sample.temperature <= 0.0f)
		return llm_cuda_forward_greedy(r->gpu, r->kv, b, st->id);
	if (r->gpu)
		ret = llm_cuda_forward(r->gpu, r->kv, b, st->logits);
	else
#endif
	ret = llm_cpu_forward(r->cpu, r->kv, b, st->logits);
	return ret ?: gen_sample(r, o, b->seq, b->n_seq, st->logits, st->id,
				 st->u);
}

/*
 * Prefill every prompt in one step, then decode the sequences still
 * running, all in one batch per step, until each has stopped.
 */
static int gen_loop(struct gen_run *r, const struct gen_opts *o,
		    struct gen_step *st)
{
	struct llm_batch b = { r->n_seq, st->idx, st->nt, st->tok };
	struct kvmm_progress pr;
	size_t off = 0;
	double t0;
	int n, ret;

	for (int i = 0; i < r->n_seq; i++) {
		st->idx[i] = i;
		st->nt[i] = (int)r->seq[i].n_prompt;
		memcpy(st->tok + off, r->seq[i].ids,
		       r->seq[i].n_prompt * sizeof(int32_t));
		off += r->seq[i].n_prompt;
	}
	t0 = kvmm_now_us();
	ret = gen_next(r, o, &b, st);
	r->prefill_us = kvmm_now_us() - t0;
	n = r->n_seq;
	/* a batch's decode: tokens at most, on a terminal, not streaming */
	kvmm_progress_start(&pr, "generate", "tokens",
			    (uint64_t)r->max_new * r->n_seq,
			    r->stream || o->json);
	t0 = kvmm_now_us();
	while (!ret && n) {
		int m = 0;

		for (int i = 0; !ret && i < n; i++) {
			struct gen_seq *q = &r->seq[st->idx[i]];

			ret = gen_take(r, o, q, st->id[i]);
			if (q->stop_reason)
				continue;
			st->idx[m] = st->idx[i];
			st->nt[m] = 1;
			st->tok[m++] = st->id[i];
		}
		n = m;
		if (ret || !n)
			break;
		b.n_seq = n;
		ret = gen_next(r, o, &b, st);
		r->decode_tok += n;
		kvmm_progress_add(&pr, (uint64_t)n);
	}
	kvmm_progress_end(&pr);
	r->decode_us = kvmm_now_us() - t0;
	if (ret)
		fprintf(stderr, "kvmm generate: %s\n", strerror(-ret));
	return ret;
}

static void json_str(FILE *f, const char *s, size_t n)
{
	fputc('"', f);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = s[i];

		if (c == '"' || c == '\\')
			fprintf(f, "\\%c", c);
		else if (c == '\n')
			fputs("\\n", f);
		else if (c < 0x20)
			fprintf(f, "\\u%04x", c);
		else
			fputc(c, f);
	}
	fputc('"', f);
}

static void gen_print(const struct gen_run *r, const struct gen_opts *o)
{
	for (int i = 0; i < r->n_seq; i++) {
		const struct gen_seq *q = &r->seq[i];

		if (o->json) {
			printf("{\"index\": %d, \"prompt\": ", i);
			json_str(stdout, q->prompt, strlen(q->prompt));
			printf(", \"text\": ");
			json_str(stdout, q->text ? q->text : "", q->text_len);
			printf(", \"stop\": \"%s\", \"prompt_tokens\": %zu, "
			       "\"generated_tokens\": %zu}\n", q->stop_reason,
			       q->n_prompt, q->n_gen);
		} else if (r->stream) {
			fputc('\n', stdout);
		} else {
			printf("--- [%d] %s\n%s\n", i, q->prompt,
			       q->text ? q->text : "");
		}
	}
	fflush(stdout);
}

static void gen_summary(const struct gen_run *r, const struct gen_opts *o)
{
	size_t n_prompt = 0, n_gen = 0;
	double pre_tps, dec_tps;
	struct llm_kv_stats ks;
	struct rusage ru;
	double rss_mb;
	char wfmt[256];
	char kvdesc[320], spec[LLM_POLICY_SPEC_MAX + 1] = "";

	if (llm_kv_stats(r->kv, &ks))
		memset(&ks, 0, sizeof(ks));
	llm_policy_format(&o->pol, spec, sizeof(spec));
	snprintf(kvdesc, sizeof(kvdesc), "%s, %llu tokens in %llu + %llu "
		 "pages of %llu B (hi + lo tier) holding %llu", spec,
		 (unsigned long long)(ks.tokens[0] + ks.tokens[1]),
		 (unsigned long long)ks.pages_used[0],
		 (unsigned long long)ks.pages_used[1],
		 (unsigned long long)ks.page_size,
		 (unsigned long long)ks.token_slots);
	for (int i = 0; i < r->n_seq; i++) {
		n_prompt += r->seq[i].n_prompt;
		n_gen += r->seq[i].n_gen;
	}
	/* the first token of each comes from prefill's logits */
	pre_tps = n_prompt / (r->prefill_us / 1e6);
	dec_tps = r->decode_tok ? r->decode_tok / (r->decode_us / 1e6) : 0.0;
	getrusage(RUSAGE_SELF, &ru);
	rss_mb = ru.ru_maxrss / 1024.0;
	if (r->gpu)
		snprintf(wfmt, sizeof(wfmt), "fp16/bf16");
	else
		llm_cpu_weight_info(r->cpu, wfmt, sizeof(wfmt));
	if (o->json) {
		printf("{\"summary\": true, \"model\": ");
		json_str(stdout, o->model, strlen(o->model));
		printf(", \"device\": \"%s\", \"threads\": %d, "
		       "\"sequences\": %d, \"prompt_tokens\": %zu, "
		       "\"generated_tokens\": %zu, \"load_s\": %.3f, "
		       "\"prefill_s\": %.3f, \"prefill_tok_s\": %.2f, "
		       "\"decode_s\": %.3f, \"decode_tok_s\": %.2f, "
		       "\"kv\": \"%s\", \"kv_bytes\": %llu, "
		       "\"kv_page_bytes\": %llu, \"kv_pages\": [%llu, %llu], "
		       "\"kv_tokens\": [%llu, %llu], \"kv_token_slots\": %llu, "
		       "\"weight_bytes\": %llu, \"weight_format\": \"%s\", "
		       "\"peak_rss_mb\": %.1f}\n",
		       r->gpu ? "cuda" : "cpu", gen_threads_used(r), r->n_seq,
		       n_prompt, n_gen,
		       r->load_us / 1e6, r->prefill_us / 1e6, pre_tps,
		       r->decode_us / 1e6, dec_tps,
		       spec,
		       (unsigned long long)ks.bytes,
		       (unsigned long long)ks.page_size,
		       (unsigned long long)ks.pages_used[0],
		       (unsigned long long)ks.pages_used[1],
		       (unsigned long long)ks.tokens[0],
		       (unsigned long long)ks.tokens[1],
		       (unsigned long long)ks.token_slots,
		       (unsigned long long)gen_weight_bytes(r), wfmt, rss_mb);
		return;
	}
	fprintf(stderr,
		"\n-- kvmm generate: %s, %d threads, %s, %d sequence%s%s%s\n"
		"   load          %8.2f s (weights %.1f MiB: %s)\n"
		"   prompt        %8zu tokens  %8.2f s  %8.1f tok/s (prefill)\n"
		"   generated     %8zu tokens  %8.2f s  %8.1f tok/s (decode)\n"
		"   KV cache      %8.1f MiB (%s)\n"
		"   peak RSS      %8.1f MiB\n",
		r->gpu ? "cuda" : "cpu", gen_threads_used(r),
		r->cfg.arch_name, r->n_seq,
		r->n_seq > 1 ? "s" : "", r->n_seq > 1 ? "" : ", stop: ",
		r->n_seq > 1 ? "" : r->seq[0].stop_reason, r->load_us / 1e6,
		gen_weight_bytes(r) / 1048576.0, wfmt,
		n_prompt,
		r->prefill_us / 1e6, pre_tps, n_gen, r->decode_us / 1e6,
		dec_tps, ks.bytes / 1048576.0, kvdesc, rss_mb);
}

static void gen_fini(struct gen_run *r)
{
	llm_kv_destroy(r->kv);	/* before the model it may refer to */
	llm_cpu_free(r->cpu);
#ifdef KVMM_HAVE_CUDA
	llm_cuda_free(r->gpu);
#endif
	llm_tok_free(r->tok);
	for (int i = 0; r->seq && i < r->n_seq; i++) {
		free(r->seq[i].prompt);
		free(r->seq[i].policy);
		free(r->seq[i].ids);
		free(r->seq[i].text);
	}
	free(r->seq);
}

/* ---- --batch-file: one JSON object per line, {"prompt": "..."} ---- */

static const char *js_ws(const char *p)
{
	while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
		p++;
	return p;
}

static void utf8_put(char **d, uint32_t cp)
{
	char *o = *d;

	if (cp < 0x80) {
		*o++ = (char)cp;
	} else if (cp < 0x800) {
		*o++ = (char)(0xc0 | cp >> 6);
		*o++ = (char)(0x80 | (cp & 0x3f));
	} else if (cp < 0x10000) {
		*o++ = (char)(0xe0 | cp >> 12);
		*o++ = (char)(0x80 | ((cp >> 6) & 0x3f));
		*o++ = (char)(0x80 | (cp & 0x3f));
	} else {
		*o++ = (char)(0xf0 | cp >> 18);
		*o++ = (char)(0x80 | ((cp >> 12) & 0x3f));
		*o++ = (char)(0x80 | ((cp >> 6) & 0x3f));
		*o++ = (char)(0x80 | (cp & 0x3f));
	}
	*d = o;
}

static int js_hex4(const char *p, uint32_t *v)
{
	*v = 0;
	for (int i = 0; i < 4; i++) {
		int c = p[i], x;

		if (c >= '0' && c <= '9')
			x = c - '0';
		else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
			x = (c | 0x20) - 'a' + 10;
		else
			return -EINVAL;
		*v = *v << 4 | x;
	}
	return 0;
}

/*
 * A JSON string at *pp (at its opening quote): decoded into a new buffer
 * in *out when @out is not NULL; *pp moves past it. Return: 0, -EINVAL
 * with *why set, -ENOMEM.
 */
static int js_string(const char **pp, char **out, const char **why)
{
	const char *p = *pp + 1;
	char *buf = out ? malloc(strlen(p) + 1) : NULL, *d = buf;
	uint32_t cp, lo;

	if (out && !buf)
		return -ENOMEM;
	*why = "a bad string (escape or control character)";
	for (; *p && *p != '"'; p++) {
		char c = *p;

		if ((unsigned char)c < 0x20)
			goto out_bad;
		if (c != '\\') {
			if (d)
				*d++ = c;
			continue;
		}
		c = *++p;
		switch (c) {
		case 'n': c = '\n'; break;
		case 't': c = '\t'; break;
		case 'r': c = '\r'; break;
		case 'b': c = '\b'; break;
		case 'f': c = '\f'; break;
		case '"': case '\\': case '/': break;
		case 'u':
			if (js_hex4(p + 1, &cp))
				goto out_bad;
			p += 4;
			if (cp >= 0xd800 && cp < 0xdc00 && p[1] == '\\' &&
			    p[2] == 'u' && !js_hex4(p + 3, &lo) &&
			    lo >= 0xdc00 && lo < 0xe000) {
				cp = 0x10000 + ((cp - 0xd800) << 10) +
				     (lo - 0xdc00);
				p += 6;
			} else if (cp >= 0xd800 && cp < 0xe000) {
				/* it would decode to invalid UTF-8 */
				*why = "a lone surrogate in a string";
				goto out_bad;
			}
			if (d)
				utf8_put(&d, cp);
			continue;
		default:
			goto out_bad;
		}
		if (d)
			*d++ = c;
	}
	if (*p != '"') {
		*why = "an unterminated string";
		goto out_bad;
	}
	*pp = p + 1;
	if (d)
		*d = 0;
	if (out)
		*out = buf;
	return 0;

out_bad:
	free(buf);
	return -EINVAL;
}

/* skip one JSON value that is not a string: number, literal, {..}, [..] */
static int js_skip(const char **pp, const char **why)
{
	const char *p = *pp;
	int depth = 0;

	do {
		if (*p == '"') {
			if (js_string(&p, NULL, why))
				return -EINVAL;
			continue;
		}
		if (!*p || *p == '\n') {
			*why = "a truncated value";
			return -EINVAL;
		}
		if (*p == '{' || *p == '[')
			depth++;
		else if (*p == '}' || *p == ']')
			depth--;
		else if (!depth && (*p == ',' || *p == ' '))
			break;
		p++;
	} while (depth > 0 || (*p && *p != ',' && *p != '}' && *p != ' '));
	*pp = p;
	return 0;
}

/* the first byte of @s that is not valid UTF-8, or -1 */
static long js_bad_utf8(const char *s)
{
	size_t n = strlen(s);

	for (size_t i = 0; i < n;) {
		uint32_t cp;
		size_t k = llm_utf8_decode((const uint8_t *)s + i, n - i, &cp);

		if (!k || cp > 0x10ffff)
			return (long)i;
		i += k;
	}
	return -1;
}

/* a string member @key ("prompt", "policy") into *dst, once */
static int js_member(const char **pp, const char *key, char **dst,
		     const char **why)
{
	static char msg[64];

	if (*dst) {
		snprintf(msg, sizeof(msg), "\"%s\" given twice", key);
		*why = msg;
		return -EINVAL;
	}
	if (**pp != '"') {
		snprintf(msg, sizeof(msg), "\"%s\" is not a string", key);
		*why = msg;
		return -EINVAL;
	}
	return js_string(pp, dst, why);
}

/*
 * the "prompt" member of the object on @line, and its "policy" member when
 * it has one (else NULL), in new buffers; -EINVAL with *why saying what is
 * wrong with the line
 */
static int js_prompt(const char *line, char **prompt, char **policy,
		     const char **why)
{
	static char msg[64];
	const char *p = js_ws(line);
	long bad = js_bad_utf8(line);
	char *key;
	int ret;

	*prompt = NULL;
	*policy = NULL;
	if (bad >= 0) {
		snprintf(msg, sizeof(msg), "invalid UTF-8 at byte %ld",
			 bad + 1);
		*why = msg;
		return -EINVAL;
	}
	*why = "not a JSON object";
	if (*p++ != '{')
		return -EINVAL;
	for (p = js_ws(p); *p == '"'; p = js_ws(p)) {
		ret = js_string(&p, &key, why);
		if (ret)
			goto out_bad;
		p = js_ws(p);
		if (*p++ != ':') {
			free(key);
			*why = "a member without ':'";
			ret = -EINVAL;
			goto out_bad;
		}
		p = js_ws(p);
		if (!strcmp(key, "prompt"))
			ret = js_member(&p, "prompt", prompt, why);
		else if (!strcmp(key, "policy"))
			ret = js_member(&p, "policy", policy, why);
		else
			ret = *p == '"' ? js_string(&p, NULL, why) :
					  js_skip(&p, why);
		free(key);
		if (ret)
			goto out_bad;
		p = js_ws(p);
		if (*p == ',')
			p = js_ws(p + 1);
		else
			break;
	}
	ret = -EINVAL;
	if (*p != '}') {
		*why = "not a JSON object of members";
		goto out_bad;
	}
	if (*js_ws(p + 1)) {
		*why = "text after the object";
		goto out_bad;
	}
	if (!*prompt) {
		*why = "no \"prompt\" string";
		goto out_bad;
	}
	return 0;

out_bad:
	free(*prompt);
	free(*policy);
	*prompt = NULL;
	*policy = NULL;
	return ret;
}

static int gen_add(struct gen_run *r, int *cap, char *prompt, char *policy)
{
	if (r->n_seq == *cap) {
		int nc = *cap ? 2 * *cap : 8;
		struct gen_seq *s = realloc(r->seq, nc * sizeof(*s));

		if (!s)
			return -ENOMEM;
		r->seq = s;
		*cap = nc;
	}
	memset(&r->seq[r->n_seq], 0, sizeof(r->seq[0]));
	r->seq[r->n_seq].policy = policy;
	r->seq[r->n_seq++].prompt = prompt;
	return 0;
}

/* the prompts: --prompt, or every line of --batch-file */
static int gen_prompts(struct gen_run *r, const struct gen_opts *o)
{
	char *line = NULL, *prompt, *policy;
	size_t lcap = 0;
	int cap = 0, ret = 0, lineno = 0;
	FILE *f;

	if (o->prompt) {
		prompt = strdup(o->prompt);
		ret = prompt ? gen_add(r, &cap, prompt, NULL) : -ENOMEM;
		if (ret)
			free(prompt);
		return ret;
	}
	ret = kvmm_open_regular("kvmm generate: --batch-file", o->batch_file,
				&f);
	if (ret)
		return ret;
	while (getline(&line, &lcap, f) > 0) {
		const char *why = "";

		lineno++;
		if (!*js_ws(line))
			continue;
		ret = js_prompt(line, &prompt, &policy, &why);
		if (ret == -EINVAL) {
			fprintf(stderr, "kvmm generate: %s:%d: %s (one JSON "
				"object a line, with a \"prompt\" string)\n",
				o->batch_file, lineno, why);
			break;
		}
		if (!ret && policy && !o->policy) {
			fprintf(stderr, "kvmm generate: %s:%d: a \"policy\" "
				"needs --policy\n", o->batch_file, lineno);
			ret = -EINVAL;
		}
		if (!ret && r->n_seq == 4096)
			ret = -E2BIG;
		if (!ret)
			ret = gen_add(r, &cap, prompt, policy);
		if (ret) {
			free(prompt);
			free(policy);
			break;
		}
	}
	free(line);
	fclose(f);
	if (!ret && !r->n_seq) {
		fprintf(stderr, "kvmm generate: %s: no prompts\n",
			o->batch_file);
		ret = -EINVAL;
	}
	if (ret == -E2BIG)
		fprintf(stderr, "kvmm generate: %s: more than 4096 prompts\n",
			o->batch_file);
	return ret;
}

static int gen_step_alloc(struct gen_step *st, const struct gen_run *r)
{
	size_t tot = 0, n = r->n_seq;

	for (int i = 0; i < r->n_seq; i++)
		tot += r->seq[i].n_prompt;
	st->idx = malloc(n * sizeof(int));
	st->nt = malloc(n * sizeof(int));
	st->tok = malloc((tot > n ? tot : n) * sizeof(int32_t));
	st->id = malloc(n * sizeof(int32_t));
	st->u = malloc(n * sizeof(float));
	st->logits = malloc(n * r->cfg.n_vocab * sizeof(float));
	if (!st->idx || !st->nt || !st->tok || !st->id || !st->u ||
	    !st->logits)
		return -ENOMEM;
	return 0;
}

static void gen_step_free(struct gen_step *st)
{
	free(st->idx);
	free(st->nt);
	free(st->tok);
	free(st->id);
	free(st->u);
	free(st->logits);
}

/*
 * a prompt's own "policy": the kernels take per-sequence thresholds, so it
 * may differ from --policy in diffkv's prune and quant only
 */
static int gen_seq_policy(struct gen_run *r, const struct gen_opts *o, int i)
{
	char a[LLM_POLICY_SPEC_MAX + 1], b[LLM_POLICY_SPEC_MAX + 1];
	struct llm_policy p, q;
	char err[200];

	if (llm_policy_parse(r->seq[i].policy, &p, err, sizeof(err))) {
		fprintf(stderr, "kvmm generate: prompt %d: policy: %s\n", i + 1,
			err);
		return -EINVAL;
	}
	/* the canonical forms, every knob written, must be equal */
	q = o->pol;
	if (p.kind == LLM_POLICY_DIFFKV && q.kind == LLM_POLICY_DIFFKV) {
		q.alpha_prune = p.alpha_prune;
		q.alpha_quant = p.alpha_quant;
	}
	llm_policy_format(&p, a, sizeof(a));
	llm_policy_format(&q, b, sizeof(b));
	if (strcmp(a, b)) {
		fprintf(stderr, "kvmm generate: prompt %d: policy '%s' differs "
			"from --policy in more than diffkv's prune and quant\n",
			i + 1, r->seq[i].policy);
		return -EINVAL;
	}
	if (p.kind != LLM_POLICY_DIFFKV)
		return 0;
	return llm_kv_policy_seq_alpha(r->kv, i, p.alpha_prune, p.alpha_quant);
}

/* --policy: a policy cache on the executor's side */
static int gen_kv_policy(struct gen_run *r, const struct gen_opts *o,
			 int need)
{
	char err[200] = "";
	int ret;

#ifdef KVMM_HAVE_CUDA
	if (r->gpu)
		ret = llm_kv_policy_create_cuda(&r->cfg, &o->pol, r->n_seq,
						need, 0, &r->kv, err,
						sizeof(err));
	else
#endif
	{
		/* the attention on the executor's threads */
		struct llm_kv_policy_opts ko = {
			.n_seq = r->n_seq, .max_tok = need, .device = -1,
			.pool = llm_cpu_pool(r->cpu),
		};

		ret = llm_kv_policy_open(&r->cfg, &o->pol, &ko, &r->kv, err,
					 sizeof(err));
	}
	if (ret) {
		fprintf(stderr, "kvmm generate: --policy %s: %s\n",
			llm_policy_name(o->pol.kind),
			*err ? err : strerror(-ret));
		return ret;
	}
	for (int i = 0; !ret && i < r->n_seq; i++)
		if (r->seq[i].policy)
			ret = gen_seq_policy(r, o, i);
	return ret;
}

/* the KV cache for every sequence, each up to the longest one's need */
static int gen_kv(struct gen_run *r, const struct gen_opts *o)
{
	size_t need = 0;

	for (int i = 0; i < r->n_seq; i++)
		if (r->seq[i].n_prompt > need)
			need = r->seq[i].n_prompt;
	if (r->max_new > r->cfg.n_ctx - need)
		r->max_new = r->cfg.n_ctx - need;
	need += r->max_new;
	return gen_kv_policy(r, o, (int)need);
}

/*
 * Say so when --max-tokens does not fit in the context after the longest
 * prompt: the cache is sized to what fits, and the sequences that reach
 * it stop with "context", not "max-tokens".
 */
static void gen_room(const struct gen_run *r, const struct gen_opts *o)
{
	size_t need = 0;

	for (int i = 0; i < r->n_seq; i++)
		if (r->seq[i].n_prompt > need)
			need = r->seq[i].n_prompt;
	if (o->max_tokens <= r->cfg.n_ctx - need)
		return;
	fprintf(stderr, "kvmm generate: --max-tokens %lu: the context of %u "
		"tokens leaves room for %zu after the%s prompt (%zu tokens); "
		"generating at most %zu\n", o->max_tokens, r->cfg.n_ctx,
		r->cfg.n_ctx - need, r->n_seq > 1 ? " longest" : "",
		need, r->cfg.n_ctx - need);
}

/**
 * cmd_generate() - `kvmm generate`
 * @argc: argument count
 * @argv: arguments, argv[0] = "generate"
 *
 * Return: exit status: 0, 1 when the model or the run failed, 2 for a bad
 * command line or --batch-file (--device cuda in a build without CUDA
 * included); every nonzero status comes with a message on stderr.
 */
int cmd_generate(int argc, char **argv)
{
	struct gen_step st = { 0 };
	struct gen_run r = { 0 };
	struct gen_opts o;
	int ret;

	ret = gen_parse(argc, argv, &o);
	if (ret)
		return ret > 0 ? 0 : 2;
	if (!o.policy) {
		llm_policy_default(LLM_POLICY_FULL, &o.pol);
		o.policy = true;
	}
	ret = gen_prompts(&r, &o);
	if (ret)
		goto out;
	ret = gen_load(&r, &o);
	if (ret)
		goto out;
	r.max_new = o.max_tokens;
	for (int i = 0; !ret && i < r.n_seq; i++)
		ret = gen_encode(&r, &o, &r.seq[i]);
	if (ret) {
		if (ret == -ENOMEM)
			fprintf(stderr, "kvmm generate: out of memory\n");
		goto out;
	}
	gen_room(&r, &o);
	r.stop_id[0] = r.tok->eos_id;
	r.stop_id[1] = llm_tok_lookup(r.tok, "<|im_end|>");
	r.stop_id[2] = llm_tok_lookup(r.tok, "<|eot_id|>");
	for (int i = 0; i < LLM_MODEL_MAX_EOS; i++)
		r.stop_id[3 + i] = i < r.gen.n_eos ? r.gen.eos[i] : -1;
	if (o.ignore_eos)
		for (size_t i = 0; i < ARRAY_SIZE(r.stop_id); i++)
			r.stop_id[i] = -1;
	r.stream = r.n_seq == 1 && !o.json;
	ret = gen_kv(&r, &o);
	if (ret)
		goto out;
	ret = gen_step_alloc(&st, &r);
	if (ret) {
		fprintf(stderr, "kvmm generate: out of memory\n");
		goto out;
	}
	ret = gen_loop(&r, &o, &st);
	if (!ret) {
		gen_print(&r, &o);
		gen_summary(&r, &o);
	}
out:
	gen_step_free(&st);
	gen_fini(&r);
	return ret == -EINVAL ? 2 : ret ? 1 : 0;
}
