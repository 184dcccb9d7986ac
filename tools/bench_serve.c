// SPDX-License-Identifier: MIT
/*
 * bench_serve.c - `kvmm bench serve`: the seeds' throughput experiment.
 * The same requests served under each KV policy by the scheduler
 * (model/sched/) within one memory budget, on the CPU or the CUDA
 * executor.
 *
 * Offline: every request submitted at t = 0; generated tok/s, requests/s,
 * peak and mean concurrent sequences, KV pages in use over time,
 * preemptions, compactions, granules returned, prefill tok/s and its
 * GEMM FLOP/s. Online (--rate): Poisson arrivals at each rate; TTFT, TPOT
 * and end-to-end latency p50/p90/p99, throughput, and the first rate each
 * policy cannot keep up with (completed requests/s below 90 % of the
 * rate). Prompts are random token ids (or a trace's), decoding is greedy
 * and ignores EOS: every request generates its whole output length.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "forward.h"
#include "json.h"
#include "kvk.h"
#include "kvmm.h"
#include "kvpolicy.h"
#include "model.h"
#include "scheduler.h"
#include "tokenizer.h"
#ifdef KVMM_HAVE_CUDA
#include "forward_cuda.h"
#include "kvrt.h"
#endif

#define SRV_MAX_LIST 16
#define SRV_SAMPLES 32		/* points of the pages-over-time series */
#define SRV_H100_BF16_TFLOPS 989.4 /* H100 SXM dense bf16, the spec sheet */

static const char *const srv_default_pol[] = {
	"full", "diffkv", "kvcompress:rate=4",
};

static const char srv_usage[] =
	"usage: kvmm bench serve --model PATH [options]\n"
	"  --model PATH        GGUF file or Hugging Face directory\n"
	"  --device cpu|cuda   executor (cpu)\n"
	"  --policy SPEC       a KV policy, repeatable (full, diffkv,\n"
	"                      kvcompress:rate=4)\n"
	"  --requests N        requests (64)\n"
	"  --prompt-len A[-B]  prompt tokens, uniform in [A, B] (128-256)\n"
	"  --output-len A[-B]  generated tokens, uniform in [A, B] (64-128)\n"
	"  --trace FILE        JSONL requests instead: {\"prompt_len\",\n"
	"                      \"output_len\"} or {\"prompt\", \"max_tokens\"}\n"
	"  --rate R[,R...]     online: Poisson arrivals at R requests/s\n"
	"                      (default: offline, all at t = 0)\n"
	"  --kv-budget BYTES   KV memory budget, K/KiB/M/MiB/G/GiB (256MiB)\n"
	"  --max-seqs N        most sequences at once: the cache's slots (256)\n"
	"  --step-tokens N     token budget of a step (2048)\n"
	"  --reserve F         share of each request's remaining output held\n"
	"                      back at admission, 0..1 (1); 0 packs on\n"
	"                      prompts and preempts, as vLLM\n"
	"  --threads N         CPU executor threads (all cores)\n"
	"  --no-graphs         CUDA: no CUDA graphs for decode steps (a graph\n"
	"                      is captured per batch size otherwise)\n"
	"  --seed N            workload seed (1)\n"
	"  --json              one JSON line per policy (and rate)\n"
	"Greedy decoding that ignores EOS: every request generates its whole\n"
	"output length.\n";

struct srv_opts {
	const char *model, *trace;
	int cuda;
	const char *pol[SRV_MAX_LIST];
	int n_pol;
	uint64_t requests, p0, p1, o0, o1, budget, max_seqs, step_tokens;
	uint64_t threads, seed;
	double reserve;
	double rate[SRV_MAX_LIST];
	int n_rate;
	int json;
	int no_graphs;
};

/* struct srv_work - the requests, the same for every policy */
struct srv_work {
	int n;
	int *np, *no;
	int32_t **prompt;
	int max_tok;
};

/* "A" or "A-B" */
static int parse_range(const char *opt, const char *s, uint64_t *a,
		       uint64_t *b)
{
	char buf[64], *dash;

	if (strlen(s) >= sizeof(buf)) {
		fprintf(stderr, "kvmm bench serve: %s: too long\n", opt);
		return -EINVAL;
	}
	strcpy(buf, s);
	dash = strchr(buf, '-');
	if (dash)
		*dash = 0;
	if (kvmm_parse_u64(opt, buf, 1, 1 << 20, a))
		return -EINVAL;
	*b = *a;
	if (dash && kvmm_parse_u64(opt, dash + 1, *a, 1 << 20, b))
		return -EINVAL;
	return 0;
}

static int parse_rates(const char *s, struct srv_opts *o)
{
	char buf[256], *save = NULL, *tok, *end;

	if (strlen(s) >= sizeof(buf))
		return -EINVAL;
	strcpy(buf, s);
	o->n_rate = 0;
	for (tok = strtok_r(buf, ",", &save); tok;
	     tok = strtok_r(NULL, ",", &save)) {
		double r = strtod(tok, &end);

		if (*end || !(r > 0) || r > 1e6 || o->n_rate == SRV_MAX_LIST) {
			fprintf(stderr, "kvmm bench serve: --rate: '%s' is not "
				"a rate in (0, 1e6] (at most %d)\n", tok,
				SRV_MAX_LIST);
			return -EINVAL;
		}
		o->rate[o->n_rate++] = r;
	}
	return o->n_rate ? 0 : -EINVAL;
}

enum { OPT_MODEL = 256, OPT_DEVICE, OPT_POLICY, OPT_REQUESTS, OPT_PLEN,
       OPT_OLEN, OPT_TRACE, OPT_RATE, OPT_BUDGET, OPT_SEQS, OPT_STEPTOK,
       OPT_RESERVE, OPT_THREADS, OPT_SEED, OPT_JSON, OPT_NOGRAPHS,
       OPT_HELP };

static const struct option srv_longopts[] = {
	{ "model", required_argument, NULL, OPT_MODEL },
	{ "device", required_argument, NULL, OPT_DEVICE },
	{ "policy", required_argument, NULL, OPT_POLICY },
	{ "requests", required_argument, NULL, OPT_REQUESTS },
	{ "prompt-len", required_argument, NULL, OPT_PLEN },
	{ "output-len", required_argument, NULL, OPT_OLEN },
	{ "trace", required_argument, NULL, OPT_TRACE },
	{ "rate", required_argument, NULL, OPT_RATE },
	{ "kv-budget", required_argument, NULL, OPT_BUDGET },
	{ "max-seqs", required_argument, NULL, OPT_SEQS },
	{ "step-tokens", required_argument, NULL, OPT_STEPTOK },
	{ "reserve", required_argument, NULL, OPT_RESERVE },
	{ "threads", required_argument, NULL, OPT_THREADS },
	{ "seed", required_argument, NULL, OPT_SEED },
	{ "json", no_argument, NULL, OPT_JSON },
	{ "no-graphs", no_argument, NULL, OPT_NOGRAPHS },
	{ "help", no_argument, NULL, OPT_HELP },
	{ NULL, 0, NULL, 0 },
};

/* Return: 0, 1 for --help, -EINVAL */
static int srv_parse(int argc, char **argv, struct srv_opts *o)
{
	char *end;
	int c;

	memset(o, 0, sizeof(*o));
	o->requests = 64;
	o->p0 = 128;
	o->p1 = 256;
	o->o0 = 64;
	o->o1 = 128;
	o->budget = 256ULL << 20;
	o->max_seqs = 256;
	o->step_tokens = 2048;
	o->reserve = 1.0;
	o->seed = 1;
	optind = 1;
	while ((c = getopt_long(argc, argv, "", srv_longopts, NULL)) != -1) {
		switch (c) {
		case OPT_MODEL:
			o->model = optarg;
			break;
		case OPT_DEVICE:
			if (strcmp(optarg, "cpu") && strcmp(optarg, "cuda")) {
				fprintf(stderr, "kvmm bench serve: --device: "
					"'%s' is neither cpu nor cuda\n",
					optarg);
				return -EINVAL;
			}
			o->cuda = !strcmp(optarg, "cuda");
			break;
		case OPT_POLICY:
			if (o->n_pol == SRV_MAX_LIST) {
				fprintf(stderr, "kvmm bench serve: at most %d "
					"policies\n", SRV_MAX_LIST);
				return -EINVAL;
			}
			o->pol[o->n_pol++] = optarg;
			break;
		case OPT_REQUESTS:
			if (kvmm_parse_u64("--requests", optarg, 1, 1 << 20,
					   &o->requests))
				return -EINVAL;
			break;
		case OPT_PLEN:
			if (parse_range("--prompt-len", optarg, &o->p0, &o->p1))
				return -EINVAL;
			break;
		case OPT_OLEN:
			if (parse_range("--output-len", optarg, &o->o0, &o->o1))
				return -EINVAL;
			break;
		case OPT_TRACE:
			o->trace = optarg;
			break;
		case OPT_RATE:
			if (parse_rates(optarg, o))
				return -EINVAL;
			break;
		case OPT_BUDGET:
			if (llm_parse_bytes(optarg, &o->budget)) {
				fprintf(stderr, "kvmm bench serve: --kv-budget: "
					"'%s' is not a byte count (e.g. "
					"512MiB, 16GiB)\n", optarg);
				return -EINVAL;
			}
			break;
		case OPT_SEQS:
			if (kvmm_parse_u64("--max-seqs", optarg, 1, 65536,
					   &o->max_seqs))
				return -EINVAL;
			break;
		case OPT_STEPTOK:
			if (kvmm_parse_u64("--step-tokens", optarg, 1, 1 << 24,
					   &o->step_tokens))
				return -EINVAL;
			break;
		case OPT_RESERVE:
			o->reserve = strtod(optarg, &end);
			if (*end || !(o->reserve >= 0 && o->reserve <= 1)) {
				fprintf(stderr, "kvmm bench serve: --reserve: "
					"'%s' is not in [0, 1]\n", optarg);
				return -EINVAL;
			}
			break;
		case OPT_THREADS:
			if (kvmm_parse_u64("--threads", optarg, 1, 1024,
					   &o->threads))
				return -EINVAL;
			break;
		case OPT_SEED:
			if (kvmm_parse_u64("--seed", optarg, 1, UINT64_MAX,
					   &o->seed))
				return -EINVAL;
			break;
		case OPT_JSON:
			o->json = 1;
			break;
		case OPT_NOGRAPHS:
			o->no_graphs = 1;
			break;
		case OPT_HELP:
			fputs(srv_usage, stdout);
			return 1;
		default:
			fputs(srv_usage, stderr);
			return -EINVAL;
		}
	}
	if (optind < argc || !o->model) {
		fprintf(stderr, "kvmm bench serve: %s\n", optind < argc ?
			"unexpected argument" : "--model is required");
		fputs(srv_usage, stderr);
		return -EINVAL;
	}
	if (!o->n_pol) {
		for (size_t i = 0; i < ARRAY_SIZE(srv_default_pol); i++)
			o->pol[i] = srv_default_pol[i];
		o->n_pol = ARRAY_SIZE(srv_default_pol);
	}
	return 0;
}

/* ---- the workload ---- */

static void work_free(struct srv_work *w)
{
	for (int i = 0; w->prompt && i < w->n; i++)
		free(w->prompt[i]);
	free(w->prompt);
	free(w->np);
	free(w->no);
	memset(w, 0, sizeof(*w));
}

static int work_alloc(struct srv_work *w, int n)
{
	w->n = n;
	w->np = calloc(n, sizeof(int));
	w->no = calloc(n, sizeof(int));
	w->prompt = calloc(n, sizeof(*w->prompt));
	return w->np && w->no && w->prompt ? 0 : -ENOMEM;
}

static int random_prompt(struct srv_work *w, int i, uint32_t vocab,
			 uint64_t *seed)
{
	w->prompt[i] = malloc(w->np[i] * sizeof(int32_t));
	if (!w->prompt[i])
		return -ENOMEM;
	for (int t = 0; t < w->np[i]; t++)
		w->prompt[i][t] = (int32_t)(kvmm_rand(seed) % vocab);
	return 0;
}

/* one line of a trace into request @i */
static int trace_line(struct srv_work *w, int i, const char *line,
		      size_t len, const struct llm_model *mo, uint64_t *seed)
{
	const struct llm_json *root, *pl, *ol, *pr, *mt;
	struct llm_json_doc *d;
	char err[128];
	int64_t v;
	int ret;

	ret = llm_json_parse(line, len, &d, err, sizeof(err));
	if (ret) {
		fprintf(stderr, "kvmm bench serve: --trace: line %d: %s\n",
			i + 1, err);
		return ret;
	}
	root = llm_json_root(d);
	pl = llm_json_get(root, "prompt_len");
	ol = llm_json_get(root, "output_len");
	pr = llm_json_get(root, "prompt");
	mt = llm_json_get(root, "max_tokens");
	ret = -EINVAL;
	if (pl && ol && !llm_json_int(pl, 1, 1 << 20, &v)) {
		w->np[i] = (int)v;
		if (!llm_json_int(ol, 1, 1 << 20, &v)) {
			w->no[i] = (int)v;
			ret = random_prompt(w, i, mo->cfg.n_vocab, seed);
		}
	} else if (pr && mt && pr->type == LLM_JSON_STRING && mo->tok &&
		   !llm_json_int(mt, 1, 1 << 20, &v)) {
		size_t cap = pr->n + 16, n = 0;

		w->no[i] = (int)v;
		w->prompt[i] = malloc(cap * sizeof(int32_t));
		ret = w->prompt[i] ? llm_tok_encode(mo->tok, pr->str, pr->n,
						    0, w->prompt[i], cap, &n)
				   : -ENOMEM;
		w->np[i] = (int)n;
		if (!ret && !n)
			ret = -EINVAL;
	}
	if (ret)
		fprintf(stderr, "kvmm bench serve: --trace: line %d: want "
			"{\"prompt_len\": N, \"output_len\": M} or "
			"{\"prompt\": \"...\", \"max_tokens\": M}%s\n", i + 1,
			mo->tok ? "" : " (the model has no tokenizer)");
	llm_json_free(d);
	return ret;
}

static int trace_read(const char *path, struct srv_work *w,
		      const struct llm_model *mo, uint64_t *seed)
{
	FILE *f = fopen(path, "r");
	char *line = NULL;
	size_t cap = 0;
	ssize_t len;
	int n = 0, ret = 0;

	if (!f) {
		fprintf(stderr, "kvmm bench serve: --trace: %s: %s\n", path,
			strerror(errno));
		return -errno;
	}
	while ((len = getline(&line, &cap, f)) > 0)
		n += strspn(line, " \t\r\n") < (size_t)len;
	rewind(f);
	if (!n) {
		fprintf(stderr, "kvmm bench serve: --trace: %s: no requests\n",
			path);
		ret = -EINVAL;
		goto out;
	}
	ret = work_alloc(w, n);
	for (int i = 0; !ret && (len = getline(&line, &cap, f)) > 0;) {
		if (strspn(line, " \t\r\n") == (size_t)len)
			continue;
		ret = trace_line(w, i++, line, (size_t)len, mo, seed);
	}
out:
	free(line);
	fclose(f);
	return ret;
}

static int work_make(const struct srv_opts *o, const struct llm_model *mo,
		     struct srv_work *w)
{
	uint64_t seed = o->seed;
	int ret;

	if (o->trace)
		ret = trace_read(o->trace, w, mo, &seed);
	else
		ret = work_alloc(w, (int)o->requests);
	for (int i = 0; !ret && !o->trace && i < w->n; i++) {
		w->np[i] = (int)(o->p0 + kvmm_rand(&seed) % (o->p1 - o->p0 + 1));
		w->no[i] = (int)(o->o0 + kvmm_rand(&seed) % (o->o1 - o->o0 + 1));
		ret = random_prompt(w, i, mo->cfg.n_vocab, &seed);
	}
	w->max_tok = 0;
	for (int i = 0; !ret && i < w->n; i++)
		if (w->np[i] + w->no[i] > w->max_tok)
			w->max_tok = w->np[i] + w->no[i];
	return ret;
}

/* ---- the executor behind the scheduler's callback ---- */

/* --threads, else every CPU this process may run on */
static int srv_threads(const struct srv_opts *o)
{
	cpu_set_t set;

	if (o->threads)
		return (int)o->threads;
	if (!sched_getaffinity(0, sizeof(set), &set) && CPU_COUNT(&set) > 0)
		return CPU_COUNT(&set);
	return 1;
}

/* struct srv_exec - one executor and the time it spent per kind of step */
struct srv_exec {
	struct llm_cpu *cpu;
#ifdef KVMM_HAVE_CUDA
	struct llm_cuda *gpu;
#endif
	float *z;		/* CPU logits, [max_seqs][vocab] */
	uint32_t vocab;
	double prefill_s, decode_s;
	uint64_t prefill_tok, decode_steps, decode_tok;
	double read_gbs;	/* CUDA: weight read rate measured; 0 on CPU */
	uint64_t weight_bytes;
};

/* a batch all prompts or all decode tokens, timed by its kind */
static int pure_step(void *m, struct llm_kv *kv, const struct llm_batch *b,
		     void *out)
{
	struct srv_exec *x = m;
	int kind = llm_kv_batch_kind(kv, b), ret;
	double t0 = kvmm_now_us();

#ifdef KVMM_HAVE_CUDA
	if (x->gpu)
		ret = llm_cuda_forward_greedy(x->gpu, kv, b, out);
	else
#endif
	{
		ret = llm_cpu_forward(x->cpu, kv, b, x->z);
		if (!ret)
			ret = kvk_argmax_cpu(out, x->z, b->n_seq, x->vocab,
					     KVK_F32, NULL);
	}
	if (kind == LLM_KV_PREFILL) {
		x->prefill_s += (kvmm_now_us() - t0) * 1e-6;
		for (int i = 0; !ret && i < b->n_seq; i++)
			x->prefill_tok += b->n_tok[i];
	} else {
		x->decode_s += (kvmm_now_us() - t0) * 1e-6;
		x->decode_steps++;
		x->decode_tok += b->n_seq;
	}
	return ret;
}

/* the scheduler's step: the executor's split, each part timed */
static int srv_step(void *ctx, struct llm_kv *kv, const struct llm_batch *b,
		    int32_t *next)
{
	return llm_batch_split(kv, b, next, sizeof(int32_t), pure_step, ctx);
}

/* ---- one run ---- */

/* struct srv_result - what one policy (at one rate) achieved */
struct srv_result {
	const char *policy;
	double rate;		/* 0: offline */
	int requests, completed, failed;
	double wall_s, gen_tok_s, req_s, mean_conc;
	int peak_conc;
	uint64_t generated, preemptions, rollbacks, compactions, granules;
	double peak_kv_gb, budget_gb, compression;
	double prefill_tok_s, prefill_gflops, decode_s;
	double step_ms, batch, floor_ms; /* decode: mean step, batch, floor */
	double ttft[3], tpot[3], e2e[3]; /* p50, p90, p99, seconds */
	int saturated;
	int n_samples;
	double sample_t[SRV_SAMPLES];
	uint64_t sample_pages[SRV_SAMPLES];
	char why[160];		/* a failure's reason, the first */
};

static double pct(double *v, int n, double p)
{
	int k;

	if (!n)
		return 0;
	qsort(v, n, sizeof(double), kvmm_cmp_double);
	k = (int)ceil(p * n) - 1;
	return v[k < 0 ? 0 : k];
}

/* Poisson arrival times at @rate, the same for every policy */
static void arrivals(double rate, int n, uint64_t seed, double *at)
{
	double t = 0;

	for (int i = 0; i < n; i++) {
		double u = ((kvmm_rand(&seed) >> 11) + 0.5) * 0x1.0p-53;

		t += -log(u) / rate;
		at[i] = t;
	}
}

static void progress(const struct srv_result *r, const struct llm_sched *s,
		     double t)
{
	struct llm_sched_stats st;

	llm_sched_stats(s, &st);
	fprintf(stderr, "\r%s%s: %.1fs, %d/%d done, %d running, %d waiting, "
		"%.0f%% of the KV budget   ", r->policy,
		r->rate > 0 ? " (online)" : "", t, st.done + st.failed,
		r->requests, st.running, st.waiting,
		st.budget_pages ? 100.0 * st.pages_used / st.budget_pages : 0);
}

static int run_one(const struct srv_opts *o, struct srv_exec *x,
		   const struct llm_config *cfg, const struct llm_policy *pol,
		   const struct srv_work *w, double rate, uint64_t wbytes,
		   struct srv_result *r)
{
	struct llm_kv_policy_opts ko = { .n_seq = (int)o->max_seqs,
					 .max_tok = w->max_tok + 1,
					 .n_threads = x->cpu ?
						llm_cpu_threads(x->cpu) : 0,
					 .device = o->cuda ? 0 : -1,
					 .budget = o->budget };
	struct llm_sched_opts so = { .max_step_tokens = (int)o->step_tokens,
				     .reserve = o->reserve > 0 ?
						(float)o->reserve : -1.0f };
	double *at = NULL, *lat = NULL, t0, last = -1, next_sample = 0;
	double every = 0.25;	/* seconds between two samples of the pages */
	double kv_sum = 0;	/* KV bytes held after each step, summed */
	uint64_t n_kv = 0;
	int tty = isatty(2) && !o->json, *ids = NULL, sub = 0, ret;
	struct llm_sched *s = NULL;
	struct llm_sched_stats st;
	struct llm_kv *kv = NULL;
	char err[200] = "";

	r->rate = rate;
	r->requests = w->n;
	ids = calloc(w->n, sizeof(int));
	at = calloc(w->n, sizeof(double));
	lat = calloc(w->n, sizeof(double));
	if (!ids || !at || !lat) {
		ret = -ENOMEM;
		goto out;
	}
	if (rate > 0)
		arrivals(rate, w->n, o->seed ^ 0xa7a7, at);
	ret = llm_kv_policy_open(cfg, pol, &ko, &kv, err, sizeof(err));
	if (ret) {
		fprintf(stderr, "kvmm bench serve: %s: %s\n", r->policy, err);
		goto out;
	}
	ret = llm_sched_create(kv, &so, srv_step, x, &s);
	if (ret)
		goto out;
	x->prefill_s = x->decode_s = 0;
	x->prefill_tok = x->decode_steps = x->decode_tok = 0;
	t0 = kvmm_now_us() * 1e-6;
	while (sub < w->n || !llm_sched_idle(s)) {
		double t = kvmm_now_us() * 1e-6 - t0;

		while (sub < w->n && at[sub] <= t) {
			struct llm_sched_req q = { w->prompt[sub], w->np[sub],
						   w->no[sub], -1.0f, -1.0f };

			ret = llm_sched_submit(s, &q, &ids[sub]);
			if (ret)
				goto out;
			sub++;
		}
		if (llm_sched_idle(s)) {
			double d = at[sub] - t;

			if (d > 0)
				usleep((useconds_t)(d * 1e6));
			continue;
		}
		ret = llm_sched_step(s);
		if (ret < 0) {
			fprintf(stderr, "kvmm bench serve: %s: step: %s\n",
				r->policy, strerror(-ret));
			goto out;
		}
		llm_sched_stats(s, &st);
		kv_sum += (double)st.pages_used * st.page_size;
		n_kv++;
		if (t >= next_sample) {
			/* full: keep every other sample, sample half as often */
			if (r->n_samples == SRV_SAMPLES) {
				for (int i = 0; i < SRV_SAMPLES / 2; i++) {
					r->sample_t[i] = r->sample_t[2 * i];
					r->sample_pages[i] =
						r->sample_pages[2 * i];
				}
				r->n_samples = SRV_SAMPLES / 2;
				every *= 2;
			}
			r->sample_t[r->n_samples] = t;
			r->sample_pages[r->n_samples++] = st.pages_used;
			next_sample = t + every;
		}
		if (tty && t - last > 0.5) {
			progress(r, s, t);
			last = t;
		}
	}
	r->wall_s = kvmm_now_us() * 1e-6 - t0;
	if (tty)
		fprintf(stderr, "\r%*s\r", 100, "");
	llm_sched_stats(s, &st);
	r->completed = st.done;
	r->failed = st.failed;
	r->generated = st.generated;
	r->gen_tok_s = st.generated / r->wall_s;
	r->req_s = st.done / r->wall_s;
	r->peak_conc = st.peak_running;
	r->mean_conc = st.steps ? (double)st.sum_running / st.steps : 0;
	r->preemptions = st.preemptions;
	r->rollbacks = st.rollbacks;
	r->compactions = st.compactions;
	r->granules = st.granules_released;
	r->peak_kv_gb = (double)st.peak_pages * st.page_size / 1e9;
	r->budget_gb = (double)st.budget_pages * st.page_size / 1e9;
	r->compression = st.held_bytes ?
				 (double)st.full_bytes / st.held_bytes : 0;
	r->prefill_tok_s = x->prefill_s > 0 ? x->prefill_tok / x->prefill_s
					    : 0;
	/* 2 FLOP per weight per token: the GEMMs, attention left out */
	r->prefill_gflops = r->prefill_tok_s * 2.0 * wbytes / 1e9;
	r->decode_s = x->decode_s;
	if (x->decode_steps) {
		r->step_ms = x->decode_s * 1e3 / x->decode_steps;
		r->batch = (double)x->decode_tok / x->decode_steps;
	}
	/* a decode step reads the weights and the KV it holds, at best at
	 * the measured read rate */
	if (x->read_gbs > 0 && n_kv)
		r->floor_ms = (x->weight_bytes + kv_sum / n_kv) /
			      (x->read_gbs * 1e9) * 1e3;
	for (int k = 0; k < 3; k++) {
		static const double p[3] = { 0.5, 0.9, 0.99 };
		double *v[3] = { r->ttft, r->tpot, r->e2e };

		for (int m = 0; m < 3; m++) {
			int n = 0;

			for (int i = 0; i < w->n; i++) {
				struct llm_sched_info in;

				llm_sched_info(s, ids[i], &in);
				if (in.state != LLM_SCHED_DONE)
					continue;
				/* from the arrival, not the submission,
				 * which waits for the step in flight */
				if (m == 0)
					lat[n++] = in.t_first - t0 - at[i];
				else if (m == 1 && in.n_gen > 1)
					lat[n++] = (in.t_done - in.t_first) /
						   (in.n_gen - 1);
				else if (m == 2)
					lat[n++] = in.t_done - t0 - at[i];
			}
			v[m][k] = pct(lat, n, p[k]);
		}
	}
	for (int i = 0; i < w->n; i++) {
		struct llm_sched_info in;

		llm_sched_info(s, ids[i], &in);
		if (in.state == LLM_SCHED_FAILED && !r->why[0])
			snprintf(r->why, sizeof(r->why), "request %d: %s", i,
				 in.reason);
	}
	r->saturated = rate > 0 && r->req_s < 0.9 * rate;
	ret = 0;
out:
	llm_sched_destroy(s);
	llm_kv_destroy(kv);
	free(ids);
	free(at);
	free(lat);
	return ret;
}

static void print_json(const struct srv_result *r, const char *dev)
{
	printf("{\"mode\": \"%s\", \"device\": \"%s\", \"policy\": \"%s\", ",
	       r->rate > 0 ? "online" : "offline", dev, r->policy);
	if (r->rate > 0)
		printf("\"rate\": %.3f, ", r->rate);
	printf("\"requests\": %d, \"completed\": %d, \"failed\": %d, "
	       "\"peak_concurrency\": %d, \"mean_concurrency\": %.2f, "
	       "\"gen_tok_s\": %.2f, \"req_s\": %.3f, \"wall_s\": %.3f, "
	       "\"generated\": %" PRIu64 ", \"preemptions\": %" PRIu64 ", "
	       "\"rollbacks\": %" PRIu64 ", \"compactions\": %" PRIu64 ", "
	       "\"granules_released\": %" PRIu64 ", \"peak_kv_gb\": %.4f, "
	       "\"budget_gb\": %.4f, \"compression\": %.3f, "
	       "\"prefill_tok_s\": %.1f, \"prefill_gflop_s\": %.1f, "
	       "\"ttft_s\": [%.4f, %.4f, %.4f], "
	       "\"tpot_ms\": [%.3f, %.3f, %.3f], "
	       "\"e2e_s\": [%.3f, %.3f, %.3f], \"saturated\": %s, "
	       "\"decode_step_ms\": %.3f, \"decode_batch\": %.2f, "
	       "\"decode_floor_ms\": %.3f, \"pages\": [", r->requests, r->completed, r->failed,
	       r->peak_conc, r->mean_conc, r->gen_tok_s, r->req_s, r->wall_s,
	       r->generated, r->preemptions, r->rollbacks, r->compactions,
	       r->granules, r->peak_kv_gb, r->budget_gb, r->compression,
	       r->prefill_tok_s, r->prefill_gflops, r->ttft[0], r->ttft[1],
	       r->ttft[2], r->tpot[0] * 1e3, r->tpot[1] * 1e3,
	       r->tpot[2] * 1e3, r->e2e[0], r->e2e[1], r->e2e[2],
	       r->saturated ? "true" : "false", r->step_ms, r->batch,
	       r->floor_ms);
	for (int i = 0; i < r->n_samples; i++)
		printf("%s[%.2f, %" PRIu64 "]", i ? ", " : "", r->sample_t[i],
		       r->sample_pages[i]);
	printf("]");
	if (r->why[0])
		printf(", \"first_failure\": \"%s\"", r->why);
	printf("}\n");
	fflush(stdout);
}

static void print_row(const struct srv_result *r)
{
	if (r->rate > 0)
		printf("%-20s %7.2f %5d/%-5d %9.1f %7.2f %5d %6.1f %8.3f "
		       "%8.3f %8.2f %8.2f %7.2f %5" PRIu64 "%s\n", r->policy,
		       r->rate, r->completed, r->requests, r->gen_tok_s,
		       r->req_s, r->peak_conc, r->mean_conc, r->ttft[0],
		       r->ttft[2], r->tpot[0] * 1e3, r->tpot[2] * 1e3,
		       r->e2e[2], r->preemptions,
		       r->saturated ? "  saturated" : "");
	else
		printf("%-20s %5d/%-5d %9.1f %7.3f %5d %6.1f %6.2fx %8.4f "
		       "%8.4f %5" PRIu64 " %5" PRIu64 " %4" PRIu64 " %9.1f "
		       "%8.2f\n", r->policy, r->completed, r->requests,
		       r->gen_tok_s, r->req_s, r->peak_conc, r->mean_conc,
		       r->compression, r->peak_kv_gb, r->budget_gb,
		       r->preemptions, r->compactions, r->granules,
		       r->prefill_tok_s, r->prefill_gflops);
	if (r->why[0])
		printf("  %d failed; first: %s\n", r->failed, r->why);
	fflush(stdout);
}

static void print_pages(const struct srv_result *r)
{
	printf("  %s decode: %.2f ms a step at a mean batch of %.1f", r->policy,
	       r->step_ms, r->batch);
	if (r->floor_ms > 0)
		printf("; floor (weights + KV held) / read rate %.2f ms, "
		       "ratio %.2f", r->floor_ms, r->step_ms / r->floor_ms);
	printf("\n");
	printf("  %s KV pages in use over time:", r->policy);
	for (int i = 0; i < r->n_samples; i += r->n_samples > 8 ?
						      r->n_samples / 8 : 1)
		printf(" %.1fs:%" PRIu64, r->sample_t[i], r->sample_pages[i]);
	printf("\n");
}

/**
 * cmd_bench_serve() - `kvmm bench serve`
 * @argc: argument count
 * @argv: arguments, argv[0] = "serve"
 *
 * Return: 0, 1 when a run failed, 2 for bad arguments.
 */
int cmd_bench_serve(int argc, char **argv)
{
	char err[LLM_GGUF_ERR_MAX] = "";
	struct llm_policy pol[SRV_MAX_LIST];
	struct llm_model *mo = NULL;
	struct srv_exec x = { 0 };
	struct srv_work w = { 0 };
	struct srv_opts o;
	uint64_t wbytes;
	const char *dev;
	double sat[SRV_MAX_LIST];
	int ret, nrates;

	ret = srv_parse(argc, argv, &o);
	if (ret)
		return ret > 0 ? 0 : 2;
	for (int i = 0; i < o.n_pol; i++)
		if (llm_policy_parse(o.pol[i], &pol[i], err, sizeof(err))) {
			fprintf(stderr, "kvmm bench serve: --policy: %s\n",
				err);
			return 2;
		}
	ret = llm_model_open(o.model, &mo, err, sizeof(err));
	if (ret) {
		fprintf(stderr, "kvmm bench serve: %s\n", err);
		return 1;
	}
	ret = work_make(&o, mo, &w);
	if (ret)
		goto out;
	x.vocab = mo->cfg.n_vocab;
	if (o.cuda) {
#ifdef KVMM_HAVE_CUDA
		struct llm_cuda_opts co = { .no_graphs = o.no_graphs };

		if (kvrt_cuda_probe(err, sizeof(err))) {
			fprintf(stderr, "kvmm bench serve: no GPU: %s\n", err);
			ret = -ENODEV;
			goto out;
		}
		ret = llm_cuda_load(&mo->cfg, &mo->w, &co, &x.gpu, err,
				    sizeof(err));
		wbytes = ret ? 0 : llm_cuda_weight_bytes(x.gpu) /
				   kvk_dtype_size(llm_cuda_dtype(x.gpu));
		if (!ret) {
			x.weight_bytes = llm_cuda_weight_bytes(x.gpu);
			ret = llm_cuda_read_weights(x.gpu, &x.read_gbs);
		}
#else
		fprintf(stderr, "kvmm bench serve: --device cuda: built "
			"without CUDA\n");
		ret = -ENODEV;
		goto out;
#endif
	} else {
		ret = llm_cpu_load(&mo->cfg, &mo->w, srv_threads(&o), &x.cpu,
				   err, sizeof(err));
		wbytes = ret ? 0 : llm_cpu_weight_bytes(x.cpu) / 4;
		x.z = ret ? NULL : malloc((size_t)o.max_seqs * x.vocab *
					  sizeof(float));
		if (!ret && !x.z)
			ret = -ENOMEM;
	}
	if (ret) {
		fprintf(stderr, "kvmm bench serve: %s\n",
			*err ? err : strerror(-ret));
		goto out;
	}
	dev = o.cuda ? "cuda" : "cpu";
	if (!o.json) {
		uint64_t pt = 0, ot = 0;

		for (int i = 0; i < w.n; i++) {
			pt += w.np[i];
			ot += w.no[i];
		}
		printf("# %s on %s: %d requests, %" PRIu64 " prompt and %"
		       PRIu64 " output tokens, KV budget %.3f GB, at most %"
		       PRIu64 " sequences, %" PRIu64 " tokens a step, reserve "
		       "%.2f; greedy, EOS ignored\n", o.model, dev, w.n, pt, ot,
		       o.budget / 1e9, o.max_seqs, o.step_tokens, o.reserve);
		if (o.cuda)
			printf("# prefill GFLOP/s = 2 x %.2f G weights x "
			       "prefill tok/s; ceiling: %.0f TFLOP/s dense "
			       "bf16 (H100 SXM spec); weights read at %.0f "
			       "GB/s\n", wbytes / 1e9, SRV_H100_BF16_TFLOPS,
			       x.read_gbs);
		else
			printf("# prefill GFLOP/s = 2 x %.2f G weights x "
			       "prefill tok/s (attention left out)\n",
			       wbytes / 1e9);
	}
	for (int pi = 0; pi < o.n_pol; pi++)
		sat[pi] = 0;
	nrates = o.n_rate ? o.n_rate : 1;
	for (int ri = 0; ri < nrates; ri++) {
		double rate = o.n_rate ? o.rate[ri] : 0;

		if (!o.json && rate > 0)
			printf("%-20s %7s %11s %9s %7s %5s %6s %8s %8s %8s "
			       "%8s %7s %5s\n", "policy", "rate", "done",
			       "gen tok/s", "req/s", "peak", "mean",
			       "ttft p50", "ttft p99", "tpot p50", "tpot p99",
			       "e2e p99", "preem");
		else if (!o.json)
			printf("%-20s %11s %9s %7s %5s %6s %7s %8s %8s %5s "
			       "%5s %4s %9s %8s\n", "policy", "done",
			       "gen tok/s", "req/s", "peak", "mean", "compr",
			       "peak GB", "budget", "preem", "compa", "gran",
			       "prefill/s", "GFLOP/s");
		for (int pi = 0; pi < o.n_pol; pi++) {
			struct srv_result r = { .policy = o.pol[pi] };

			ret = run_one(&o, &x, &mo->cfg, &pol[pi], &w, rate,
				      wbytes, &r);
			if (ret)
				goto out;
			if (r.saturated && !sat[pi])
				sat[pi] = rate;
			if (o.json) {
				print_json(&r, dev);
			} else {
				print_row(&r);
				if (rate <= 0)
					print_pages(&r);
			}
		}
	}
	/* the first rate each policy could not keep up with */
	for (int pi = 0; o.n_rate && pi < o.n_pol; pi++) {
		if (o.json && sat[pi])
			printf("{\"mode\": \"saturation\", \"policy\": "
			       "\"%s\", \"saturation_rate\": %.3f}\n",
			       o.pol[pi], sat[pi]);
		else if (o.json)
			printf("{\"mode\": \"saturation\", \"policy\": "
			       "\"%s\", \"saturation_rate\": null}\n",
			       o.pol[pi]);
		else if (sat[pi])
			printf("# %s saturates at %.2f requests/s (completed "
			       "requests/s below 90%% of the rate)\n",
			       o.pol[pi], sat[pi]);
		else
			printf("# %s keeps up with every rate up to %.2f "
			       "requests/s\n", o.pol[pi],
			       o.rate[o.n_rate - 1]);
	}
out:
#ifdef KVMM_HAVE_CUDA
	llm_cuda_free(x.gpu);
#endif
	llm_cpu_free(x.cpu);
	free(x.z);
	work_free(&w);
	llm_model_close(mo);
	return ret ? 1 : 0;
}
