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
#include <netdb.h>
#include <pthread.h>
#include <inttypes.h>
#include <math.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
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
	"  --max-step-tokens N token budget of a step, decode tokens and\n"
	"                      prompts (2048; also --step-tokens): a longer\n"
	"                      prompt comes in chunks over several steps\n"
	"  --no-chunked-prefill  whole prompts only (a step's first prompt\n"
	"                      may exceed the budget); CUDA always does\n"
	"  --reserve F         share of each request's remaining output held\n"
	"                      back at admission, 0..1 (1); 0 packs on\n"
	"                      prompts and preempts, as vLLM\n"
	"  --preempt MODE      what a preemption does with the victim's\n"
	"                      pages: recompute (release; prefill again),\n"
	"                      swap (to a swap file and back; CPU only) or\n"
	"                      auto (swap when its estimated time is below\n"
	"                      the recompute's, measured in the run;\n"
	"                      recompute on cuda) (auto)\n"
	"  --order ORDER       the order new requests wait in: fcfs, or\n"
	"                      longest (output first; offline, the long\n"
	"                      requests start first and the short ones\n"
	"                      fill in at the end) (fcfs)\n"
	"  --swap-dir DIR      where the swap file is made, and unlinked at\n"
	"                      once ($TMPDIR, else /tmp)\n"
	"  --threads N         CPU executor threads (all cores)\n"
	"  --url URL           drive a running `kvmm serve` at URL\n"
	"                      (http://HOST:PORT) with the same requests,\n"
	"                      streamed, instead of the engine in-process;\n"
	"                      --model is then optional (the server's\n"
	"                      /v1/models gives the vocabulary), --policy\n"
	"                      goes with each request (the server's by\n"
	"                      default)\n"
	"  --concurrency N     --url: most requests in flight (all)\n"
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
	enum llm_sched_preempt preempt;
	enum llm_sched_order order;
	const char *swap_dir;
	double rate[SRV_MAX_LIST];
	int n_rate;
	int json;
	int no_graphs;
	int no_chunk;		/* --no-chunked-prefill */
	const char *url;	/* --url: a server instead of the engine */
	uint64_t concurrency;	/* --url: requests in flight, 0: all */
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
       OPT_RESERVE, OPT_PREEMPT, OPT_ORDER, OPT_SWAPDIR, OPT_THREADS,
       OPT_SEED, OPT_JSON, OPT_NOGRAPHS, OPT_URL, OPT_CONC,
       OPT_NOCHUNK,
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
	{ "max-step-tokens", required_argument, NULL, OPT_STEPTOK },
	{ "no-chunked-prefill", no_argument, NULL, OPT_NOCHUNK },
	{ "reserve", required_argument, NULL, OPT_RESERVE },
	{ "preempt", required_argument, NULL, OPT_PREEMPT },
	{ "order", required_argument, NULL, OPT_ORDER },
	{ "swap-dir", required_argument, NULL, OPT_SWAPDIR },
	{ "threads", required_argument, NULL, OPT_THREADS },
	{ "seed", required_argument, NULL, OPT_SEED },
	{ "json", no_argument, NULL, OPT_JSON },
	{ "no-graphs", no_argument, NULL, OPT_NOGRAPHS },
	{ "url", required_argument, NULL, OPT_URL },
	{ "concurrency", required_argument, NULL, OPT_CONC },
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
			if (kvmm_parse_u64("--max-step-tokens", optarg, 1,
					   1 << 24, &o->step_tokens))
				return -EINVAL;
			break;
		case OPT_NOCHUNK:
			o->no_chunk = 1;
			break;
		case OPT_RESERVE:
			o->reserve = strtod(optarg, &end);
			if (*end || !(o->reserve >= 0 && o->reserve <= 1)) {
				fprintf(stderr, "kvmm bench serve: --reserve: "
					"'%s' is not in [0, 1]\n", optarg);
				return -EINVAL;
			}
			break;
		case OPT_PREEMPT:
			if (llm_sched_parse_preempt(optarg, &o->preempt)) {
				fprintf(stderr, "kvmm bench serve: --preempt: "
					"'%s' is not recompute, swap or "
					"auto\n", optarg);
				return -EINVAL;
			}
			break;
		case OPT_ORDER:
			if (llm_sched_parse_order(optarg, &o->order)) {
				fprintf(stderr, "kvmm bench serve: --order: "
					"'%s' is not fcfs or longest\n",
					optarg);
				return -EINVAL;
			}
			break;
		case OPT_SWAPDIR:
			o->swap_dir = optarg;
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
		case OPT_URL:
			o->url = optarg;
			break;
		case OPT_CONC:
			if (kvmm_parse_u64("--concurrency", optarg, 1, 1 << 16,
					   &o->concurrency))
				return -EINVAL;
			break;
		case OPT_HELP:
			fputs(srv_usage, stdout);
			return 1;
		default:
			fputs(srv_usage, stderr);
			return -EINVAL;
		}
	}
	if (optind < argc || (!o->model && !o->url)) {
		fprintf(stderr, "kvmm bench serve: %s\n", optind < argc ?
			"unexpected argument" : "--model is required");
		fputs(srv_usage, stderr);
		return -EINVAL;
	}
	if (o->url && o->n_pol > 1) {
		fprintf(stderr, "kvmm bench serve: --url: one --policy at most "
			"(a server runs one)\n");
		return -EINVAL;
	}
	if (o->url && (o->preempt || o->order || o->swap_dir)) {
		fprintf(stderr, "kvmm bench serve: --url: --preempt, --order "
			"and --swap-dir are the server's (kvmm serve "
			"--preempt)\n");
		return -EINVAL;
	}
	if (o->cuda && o->preempt == LLM_SCHED_PREEMPT_SWAP) {
		fprintf(stderr, "kvmm bench serve: --preempt swap: the CUDA "
			"device cache cannot swap yet (its page tables are on "
			"the device); use --preempt recompute or auto\n");
		return -EINVAL;
	}
	if (o->url)
		return 0;
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
		      size_t len, uint32_t vocab, const struct llm_tok *tok,
		      uint64_t *seed)
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
			ret = random_prompt(w, i, vocab, seed);
		}
	} else if (pr && mt && pr->type == LLM_JSON_STRING && tok &&
		   !llm_json_int(mt, 1, 1 << 20, &v)) {
		size_t cap = pr->n + 16, n = 0;

		w->no[i] = (int)v;
		w->prompt[i] = malloc(cap * sizeof(int32_t));
		ret = w->prompt[i] ? llm_tok_encode(tok, pr->str, pr->n,
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
			tok ? "" : " (no tokenizer: give --model)");
	llm_json_free(d);
	return ret;
}

static int trace_read(const char *path, struct srv_work *w, uint32_t vocab,
		      const struct llm_tok *tok, uint64_t *seed)
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
		ret = trace_line(w, i++, line, (size_t)len, vocab, tok, seed);
	}
out:
	free(line);
	fclose(f);
	return ret;
}

/* the requests: a trace's, or random prompts of @vocab's token ids */
static int work_make(const struct srv_opts *o, uint32_t vocab,
		     const struct llm_tok *tok, struct srv_work *w)
{
	uint64_t seed = o->seed;
	int ret;

	if (o->trace)
		ret = trace_read(o->trace, w, vocab, tok, &seed);
	else
		ret = work_alloc(w, (int)o->requests);
	for (int i = 0; !ret && !o->trace && i < w->n; i++) {
		w->np[i] = (int)(o->p0 + kvmm_rand(&seed) % (o->p1 - o->p0 + 1));
		w->no[i] = (int)(o->o0 + kvmm_rand(&seed) % (o->o1 - o->o0 + 1));
		ret = random_prompt(w, i, vocab, &seed);
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
	const char *order;	/* the queue's order (engine runs) */
	double rate;		/* 0: offline */
	int requests, completed, failed;
	double wall_s, gen_tok_s, req_s, mean_conc;
	/* until the queue first empties with every request submitted: the
	 * phase in which the policy runs at the concurrency it can hold */
	double queued_s, queued_tok_s;
	int peak_conc;
	uint64_t generated, preemptions, rollbacks, compactions, granules;
	uint64_t chunks;	/* prompt chunks that did not end a prompt */
	uint64_t swaps_out, swaps_in, swap_bytes_out, swap_bytes_in;
	uint64_t swap_fallbacks;
	uint64_t prefill_tokens, prompt_tokens; /* prefilled; in the prompts */
	double swap_out_gbs, swap_in_gbs;
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
					 .device = o->cuda ? 0 : -1,
					 .budget = o->budget,
					 /* the attention on the executor's threads:
					  * this loop alone drives both */
					 .pool = x->cpu ? llm_cpu_pool(x->cpu)
							: NULL };
	struct llm_sched_opts so = { .max_step_tokens = (int)o->step_tokens,
				     .reserve = o->reserve > 0 ?
						(float)o->reserve : -1.0f,
				     .no_chunk = o->no_chunk,
				     .preempt = o->preempt,
				     .order = o->order,
				     .swap_dir = o->swap_dir };
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
	if (ret) {
		fprintf(stderr, "kvmm bench serve: %s: the scheduler: %s%s\n",
			r->policy, strerror(-ret), so.preempt ==
			LLM_SCHED_PREEMPT_SWAP ? " (--preempt swap: making "
			"the swap file)" : "");
		goto out;
	}
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
		if (!r->queued_s && sub == w->n && !st.waiting) {
			r->queued_s = kvmm_now_us() * 1e-6 - t0;
			r->queued_tok_s = st.generated / r->queued_s;
		}
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
	r->swaps_out = st.swaps_out;
	r->swaps_in = st.swaps_in;
	r->swap_bytes_out = st.swap_bytes_out;
	r->swap_bytes_in = st.swap_bytes_in;
	r->swap_fallbacks = st.swap_fallbacks;
	r->prefill_tokens = st.prefill_tokens;
	for (int i = 0; i < w->n; i++)
		r->prompt_tokens += (uint64_t)w->np[i];
	r->swap_out_gbs = st.swap_out_s > 0 ?
				  st.swap_bytes_out / st.swap_out_s / 1e9 : 0;
	r->swap_in_gbs = st.swap_in_s > 0 ?
				 st.swap_bytes_in / st.swap_in_s / 1e9 : 0;
	r->chunks = st.chunks;
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
	if (r->order)
		printf("\"order\": \"%s\", ", r->order);
	printf("\"requests\": %d, \"completed\": %d, \"failed\": %d, "
	       "\"peak_concurrency\": %d, \"mean_concurrency\": %.2f, "
	       "\"gen_tok_s\": %.2f, \"req_s\": %.3f, \"wall_s\": %.3f, "
	       "\"generated\": %" PRIu64 ", \"preemptions\": %" PRIu64 ", "
	       "\"swaps_out\": %" PRIu64 ", \"swaps_in\": %" PRIu64 ", "
	       "\"swap_bytes_out\": %" PRIu64 ", "
	       "\"swap_bytes_in\": %" PRIu64 ", \"swap_out_gbs\": %.3f, "
	       "\"swap_in_gbs\": %.3f, \"swap_fallbacks\": %" PRIu64 ", "
	       "\"prefill_tokens\": %" PRIu64 ", "
	       "\"rollbacks\": %" PRIu64 ", \"chunks\": %" PRIu64 ", "
	       "\"compactions\": %" PRIu64 ", "
	       "\"granules_released\": %" PRIu64 ", \"peak_kv_gb\": %.4f, "
	       "\"budget_gb\": %.4f, \"compression\": %.3f, "
	       "\"prefill_tok_s\": %.1f, \"prefill_gflop_s\": %.1f, "
	       "\"ttft_s\": [%.4f, %.4f, %.4f], "
	       "\"tpot_ms\": [%.3f, %.3f, %.3f], "
	       "\"e2e_s\": [%.3f, %.3f, %.3f], \"saturated\": %s, "
	       "\"decode_step_ms\": %.3f, \"decode_batch\": %.2f, "
	       "\"decode_floor_ms\": %.3f, \"queued_s\": %.3f, "
	       "\"queued_gen_tok_s\": %.2f, \"pages\": [", r->requests,
	       r->completed, r->failed,
	       r->peak_conc, r->mean_conc, r->gen_tok_s, r->req_s, r->wall_s,
	       r->generated, r->preemptions, r->swaps_out, r->swaps_in,
	       r->swap_bytes_out, r->swap_bytes_in, r->swap_out_gbs,
	       r->swap_in_gbs, r->swap_fallbacks, r->prefill_tokens,
	       r->rollbacks, r->chunks,
	       r->compactions,
	       r->granules, r->peak_kv_gb, r->budget_gb, r->compression,
	       r->prefill_tok_s, r->prefill_gflops, r->ttft[0], r->ttft[1],
	       r->ttft[2], r->tpot[0] * 1e3, r->tpot[1] * 1e3,
	       r->tpot[2] * 1e3, r->e2e[0], r->e2e[1], r->e2e[2],
	       r->saturated ? "true" : "false", r->step_ms, r->batch,
	       r->floor_ms, r->queued_s, r->queued_tok_s);
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
		       "%8.3f %8.2f %8.2f %7.2f %5" PRIu64 " %5" PRIu64
		       "%s\n", r->policy,
		       r->rate, r->completed, r->requests, r->gen_tok_s,
		       r->req_s, r->peak_conc, r->mean_conc, r->ttft[0],
		       r->ttft[2], r->tpot[0] * 1e3, r->tpot[2] * 1e3,
		       r->e2e[2], r->preemptions, r->swaps_out,
		       r->saturated ? "  saturated" : "");
	else
		printf("%-20s %5d/%-5d %9.1f %7.3f %5d %6.1f %6.2fx %8.4f "
		       "%8.4f %5" PRIu64 " %5" PRIu64 " %5" PRIu64 " %4" PRIu64
		       " %9.1f %8.2f\n", r->policy, r->completed, r->requests,
		       r->gen_tok_s, r->req_s, r->peak_conc, r->mean_conc,
		       r->compression, r->peak_kv_gb, r->budget_gb,
		       r->preemptions, r->swaps_out, r->compactions, r->granules,
		       r->prefill_tok_s, r->prefill_gflops);
	if (r->why[0])
		printf("  %d failed; first: %s\n", r->failed, r->why);
	fflush(stdout);
}

static void print_pages(const struct srv_result *r)
{
	if (r->preemptions)
		printf("  %s prefill: %" PRIu64 " tokens for %" PRIu64 " prompt "
		       "tokens (%" PRIu64 " recomputed)\n", r->policy,
		       r->prefill_tokens, r->prompt_tokens,
		       r->prefill_tokens > r->prompt_tokens ?
			       r->prefill_tokens - r->prompt_tokens : 0);
	if (r->swaps_out || r->swap_fallbacks)
		printf("  %s swap: %" PRIu64 " out (%.1f MB, %.2f GB/s), %"
		       PRIu64 " in (%.1f MB, %.2f GB/s), %" PRIu64 " fell back "
		       "to recompute\n", r->policy, r->swaps_out,
		       r->swap_bytes_out / 1e6, r->swap_out_gbs, r->swaps_in,
		       r->swap_bytes_in / 1e6, r->swap_in_gbs,
		       r->swap_fallbacks);
	printf("  %s decode: %.2f ms a step at a mean batch of %.1f", r->policy,
	       r->step_ms, r->batch);
	if (r->floor_ms > 0)
		printf("; floor (weights + KV held) / read rate %.2f ms, "
		       "ratio %.2f", r->floor_ms, r->step_ms / r->floor_ms);
	printf("\n");
	if (r->queued_s > 0)
		printf("  %s until the queue emptied (%.1f s of %.1f): %.1f "
		       "generated tok/s\n", r->policy, r->queued_s, r->wall_s,
		       r->queued_tok_s);
	printf("  %s KV pages in use over time:", r->policy);
	for (int i = 0; i < r->n_samples; i += r->n_samples > 8 ?
						      r->n_samples / 8 : 1)
		printf(" %.1fs:%" PRIu64, r->sample_t[i], r->sample_pages[i]);
	printf("\n");
}

/* ---- --url: the same requests to a running `kvmm serve` ---- */

/* struct srv_url - where the server listens */
struct srv_url {
	char host[256];
	char port[16];
	struct addrinfo *ai;
};

static int url_parse(const char *s, struct srv_url *u)
{
	const char *h = s, *e;
	size_t n;

	memset(u, 0, sizeof(*u));
	if (!strncmp(h, "http://", 7))
		h += 7;
	else if (strstr(h, "://"))
		return -EINVAL;
	if (*h == '[') {
		e = strchr(++h, ']');
		if (!e)
			return -EINVAL;
		n = e++ - h;
	} else {
		e = h + strcspn(h, ":/");
		n = e - h;
	}
	if (!n || n >= sizeof(u->host))
		return -EINVAL;
	memcpy(u->host, h, n);
	snprintf(u->port, sizeof(u->port), "80");
	if (*e == ':') {
		n = strspn(e + 1, "0123456789");
		if (!n || n >= sizeof(u->port))
			return -EINVAL;
		memcpy(u->port, e + 1, n);
		u->port[n] = 0;
		e += 1 + n;
	}
	if (*e && strcmp(e, "/"))
		return -EINVAL;
	return getaddrinfo(u->host, u->port, &(struct addrinfo){
				   .ai_socktype = SOCK_STREAM }, &u->ai) ?
		       -EHOSTUNREACH : 0;
}

static int url_dial(const struct srv_url *u)
{
	struct timeval tv = { .tv_sec = 900 };
	int fd = socket(u->ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (connect(fd, u->ai->ai_addr, u->ai->ai_addrlen)) {
		int ret = -errno;

		close(fd);
		return ret;
	}
	return fd;
}

static int send_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -EPIPE;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/*
 * One HTTP/1.0 exchange (the server closes at the end, no chunked
 * encoding): the status, the body into *body (free()). @first, when not
 * NULL, gets the time the first server-sent event arrived.
 */
static int url_call(const struct srv_url *u, const char *method,
		    const char *path, const char *body, char **out,
		    double *first)
{
	size_t len = 0, cap = 16384, bl = body ? strlen(body) : 0;
	char head[512], *buf = malloc(cap), *b;
	int fd, status = 0, ret;
	ssize_t n;

	*out = NULL;
	if (!buf)
		return -ENOMEM;
	fd = url_dial(u);
	if (fd < 0) {
		free(buf);
		return fd;
	}
	snprintf(head, sizeof(head), "%s %s HTTP/1.0\r\nHost: %s:%s\r\n"
		 "Content-Type: application/json\r\nContent-Length: %zu\r\n"
		 "\r\n", method, path, u->host, u->port, bl);
	ret = send_all(fd, head, strlen(head));
	if (!ret && bl)
		ret = send_all(fd, body, bl);
	while (!ret) {
		n = recv(fd, buf + len, cap - len - 1, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
		buf[len] = 0;
		if (first && !*first && strstr(buf, "\ndata: "))
			*first = kvmm_now_us() * 1e-6;
		if (cap - len < 4096) {
			b = realloc(buf, cap * 2);
			if (!b) {
				ret = -ENOMEM;
				break;
			}
			buf = b;
			cap *= 2;
		}
	}
	close(fd);
	buf[len] = 0;
	if (ret || sscanf(buf, "HTTP/1.%*d %d", &status) != 1) {
		free(buf);
		return ret ? ret : -EPROTO;
	}
	b = strstr(buf, "\r\n\r\n");
	memmove(buf, b ? b + 4 : buf + len, strlen(b ? b + 4 : buf + len) + 1);
	*out = buf;
	return status;
}

/* a Prometheus sample "NAME VALUE" of @text; 0 when absent */
static double metric(const char *text, const char *name)
{
	size_t n = strlen(name);

	for (const char *p = text; p && *p; p = strchr(p, '\n'), p += !!p)
		if (!strncmp(p, name, n) && p[n] == ' ')
			return strtod(p + n + 1, NULL);
	return 0;
}

/* struct url_job - one request over HTTP; the times in seconds */
struct url_job {
	const struct srv_url *u;
	char *body;
	double t_first, t_done;
	int status, n_gen;
	char why[128];
	struct url_pool *pool;
};

/* struct url_pool - requests in flight, under @lock */
struct url_pool {
	pthread_mutex_t lock;
	pthread_cond_t cv;
	int in_flight;
};

static void *url_job_run(void *arg)
{
	struct url_job *j = arg;
	char *out = NULL, *p;

	j->status = url_call(j->u, "POST", "/v1/completions", j->body, &out,
			     &j->t_first);
	j->t_done = kvmm_now_us() * 1e-6;
	/* the usage chunk: the tokens the server generated */
	p = out ? strstr(out, "\"usage\"") : NULL;
	p = p ? strstr(p, "\"completion_tokens\":") : NULL;
	if (p)
		j->n_gen = atoi(p + 20);
	if (j->status != 200 || !p)
		snprintf(j->why, sizeof(j->why), "HTTP %d: %.96s", j->status,
			 out ? out : j->status < 0 ? strerror(-j->status) :
			 "");
	else if (strstr(out, "\"error\""))
		snprintf(j->why, sizeof(j->why), "%.120s", strstr(out,
								  "\"error\""));
	free(out);
	pthread_mutex_lock(&j->pool->lock);
	j->pool->in_flight--;
	pthread_cond_signal(&j->pool->cv);
	pthread_mutex_unlock(&j->pool->lock);
	return NULL;
}

/* the request body of @i: its token ids, greedy, EOS ignored, streamed */
static char *url_body(const struct srv_work *w, int i, const char *policy)
{
	size_t cap = (size_t)w->np[i] * 12 + 256, n = 0;
	char *b = malloc(cap);

	if (!b)
		return NULL;
	n += snprintf(b + n, cap - n, "{\"prompt\": [");
	for (int t = 0; t < w->np[i]; t++)
		n += snprintf(b + n, cap - n, "%s%d", t ? "," : "",
			      w->prompt[i][t]);
	n += snprintf(b + n, cap - n, "], \"max_tokens\": %d, \"temperature\""
		      ": 0, \"ignore_eos\": true, \"stream\": true, "
		      "\"stream_options\": {\"include_usage\": true}",
		      w->no[i]);
	if (policy)
		n += snprintf(b + n, cap - n, ", \"policy\": \"%s\"", policy);
	snprintf(b + n, cap - n, "}");
	return b;
}

/* one run over HTTP: every request at its arrival, the server measured */
static int url_run_one(const struct srv_opts *o, const struct srv_url *u,
		       const struct srv_work *w, double rate,
		       struct srv_result *r)
{
	struct url_pool pool = { PTHREAD_MUTEX_INITIALIZER,
				 PTHREAD_COND_INITIALIZER, 0 };
	struct url_job *jobs = calloc(w->n, sizeof(*jobs));
	pthread_t *th = calloc(w->n, sizeof(*th));
	double *at = calloc(w->n, sizeof(double));
	double *lat = calloc(w->n, sizeof(double));
	int conc = o->concurrency ? (int)o->concurrency : w->n, started = 0;
	char *m0 = NULL, *m1 = NULL;
	double t0, steps, sum;
	int ret = -ENOMEM;

	r->rate = rate;
	r->requests = w->n;
	if (!jobs || !th || !at || !lat)
		goto out;
	if (rate > 0)
		arrivals(rate, w->n, o->seed ^ 0xa7a7, at);
	for (int i = 0; i < w->n; i++) {
		jobs[i] = (struct url_job){ .u = u, .pool = &pool };
		jobs[i].body = url_body(w, i, o->n_pol ? o->pol[0] : NULL);
		if (!jobs[i].body)
			goto out;
	}
	if (url_call(u, "GET", "/metrics", NULL, &m0, NULL) != 200) {
		fprintf(stderr, "kvmm bench serve: %s/metrics: no answer\n",
			o->url);
		ret = -EPROTO;
		goto out;
	}
	t0 = kvmm_now_us() * 1e-6;
	for (int i = 0; i < w->n; i++) {
		double d = at[i] - (kvmm_now_us() * 1e-6 - t0);

		if (d > 0)
			usleep((useconds_t)(d * 1e6));
		pthread_mutex_lock(&pool.lock);
		while (pool.in_flight >= conc)
			pthread_cond_wait(&pool.cv, &pool.lock);
		pool.in_flight++;
		pthread_mutex_unlock(&pool.lock);
		if (pthread_create(&th[i], NULL, url_job_run, &jobs[i])) {
			pool.in_flight--;
			ret = -EAGAIN;
			break;
		}
		started++;
	}
	for (int i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	if (started < w->n)
		goto out;
	r->wall_s = kvmm_now_us() * 1e-6 - t0;
	if (url_call(u, "GET", "/metrics", NULL, &m1, NULL) != 200) {
		ret = -EPROTO;
		goto out;
	}
	for (int i = 0; i < w->n; i++) {
		if (jobs[i].why[0] || jobs[i].n_gen != w->no[i]) {
			r->failed++;
			if (!r->why[0])
				snprintf(r->why, sizeof(r->why), "request %d: "
					 "%s", i, jobs[i].why[0] ? jobs[i].why :
					 "fewer tokens than asked");
			continue;
		}
		r->completed++;
		r->generated += jobs[i].n_gen;
	}
	r->gen_tok_s = r->generated / r->wall_s;
	r->req_s = r->completed / r->wall_s;
#define D(name) (metric(m1, "kvmm_" name) - metric(m0, "kvmm_" name))
	r->preemptions = (uint64_t)D("preemptions_total");
	r->rollbacks = (uint64_t)D("rollbacks_total");
	r->compactions = (uint64_t)D("compactions_total");
	r->granules = (uint64_t)D("granules_released_total");
	steps = D("steps_total");
	sum = D("running_sum_total");
	r->compression = D("kv_held_bytes_total") > 0 ?
				 D("kv_full_bytes_total") /
					 D("kv_held_bytes_total") : 0;
	r->prefill_tok_s = D("prefill_seconds_total") > 0 ?
				   D("prompt_tokens_total") /
					   D("prefill_seconds_total") : 0;
#undef D
	r->mean_conc = steps > 0 ? sum / steps : 0;
	r->peak_conc = (int)metric(m1, "kvmm_running_peak");
	r->peak_kv_gb = metric(m1, "kvmm_kv_pages_peak") *
			metric(m1, "kvmm_kv_page_bytes") / 1e9;
	r->budget_gb = metric(m1, "kvmm_kv_pages_budget") *
		       metric(m1, "kvmm_kv_page_bytes") / 1e9;
	for (int k = 0; k < 3; k++) {
		static const double p[3] = { 0.5, 0.9, 0.99 };
		double *v[3] = { r->ttft, r->tpot, r->e2e };

		for (int m = 0; m < 3; m++) {
			int n = 0;

			for (int i = 0; i < w->n; i++) {
				const struct url_job *j = &jobs[i];

				if (j->why[0] || !j->t_first)
					continue;
				if (m == 0)
					lat[n++] = j->t_first - t0 - at[i];
				else if (m == 1 && j->n_gen > 1)
					lat[n++] = (j->t_done - j->t_first) /
						   (j->n_gen - 1);
				else if (m == 2)
					lat[n++] = j->t_done - t0 - at[i];
			}
			v[m][k] = pct(lat, n, p[k]);
		}
	}
	r->saturated = rate > 0 && r->req_s < 0.9 * rate;
	ret = 0;
out:
	for (int i = 0; jobs && i < w->n; i++)
		free(jobs[i].body);
	free(jobs);
	free(th);
	free(at);
	free(lat);
	free(m0);
	free(m1);
	return ret;
}

/* `kvmm bench serve --url`: the server's model, then each rate */
static int url_bench(struct srv_opts *o)
{
	char err[LLM_GGUF_ERR_MAX] = "", *models = NULL, pol[96] = "";
	struct llm_model *mo = NULL;
	struct srv_work w = { 0 };
	struct srv_url u;
	double sat = 0;
	uint32_t vocab;
	const char *p;
	int ret, nrates;

	if (url_parse(o->url, &u)) {
		fprintf(stderr, "kvmm bench serve: --url: '%s' is not "
			"http://HOST:PORT, or the host is unknown\n", o->url);
		return 2;
	}
	ret = url_call(&u, "GET", "/v1/models", NULL, &models, NULL);
	p = ret == 200 ? strstr(models, "\"vocab_size\":") : NULL;
	if (!p) {
		fprintf(stderr, "kvmm bench serve: %s/v1/models: %s\n", o->url,
			ret < 0 ? strerror(-ret) : "not a kvmm server");
		ret = -EPROTO;
		goto out;
	}
	vocab = (uint32_t)strtoul(p + 13, NULL, 10);
	p = strstr(models, "\"policy\":\"");
	if (p)
		sscanf(p + 10, "%95[^\"]", pol);
	if (o->model) {
		ret = llm_model_open(o->model, &mo, err, sizeof(err));
		if (ret) {
			fprintf(stderr, "kvmm bench serve: %s\n", err);
			goto out;
		}
		if (mo->cfg.n_vocab != vocab) {
			fprintf(stderr, "kvmm bench serve: --model has %u "
				"tokens, the server's %u\n", mo->cfg.n_vocab,
				vocab);
			ret = -EINVAL;
			goto out;
		}
	}
	ret = work_make(o, vocab, mo ? mo->tok : NULL, &w);
	if (ret)
		goto out;
	if (!o->json) {
		uint64_t pt = 0, ot = 0;

		for (int i = 0; i < w.n; i++) {
			pt += w.np[i];
			ot += w.no[i];
		}
		printf("# %s over HTTP: %d requests, %" PRIu64 " prompt and %"
		       PRIu64 " output tokens, at most %d in flight; greedy, "
		       "EOS ignored, streamed\n", o->url, w.n, pt, ot,
		       o->concurrency ? (int)o->concurrency : w.n);
	}
	nrates = o->n_rate ? o->n_rate : 1;
	for (int ri = 0; ri < nrates; ri++) {
		double rate = o->n_rate ? o->rate[ri] : 0;
		struct srv_result r = { .policy = o->n_pol ? o->pol[0] : pol };

		if (!o->json && rate > 0)
			printf("%-20s %7s %11s %9s %7s %5s %6s %8s %8s %8s "
			       "%8s %7s %5s %5s\n", "policy", "rate", "done",
			       "gen tok/s", "req/s", "peak", "mean",
			       "ttft p50", "ttft p99", "tpot p50", "tpot p99",
			       "e2e p99", "preem", "swaps");
		else if (!o->json)
			printf("%-20s %11s %9s %7s %5s %6s %7s %8s %8s %5s "
			       "%5s %5s %4s %9s %8s\n", "policy", "done",
			       "gen tok/s", "req/s", "peak", "mean", "compr",
			       "peak GB", "budget", "preem", "swaps", "compa",
			       "gran",
			       "prefill/s", "GFLOP/s");
		ret = url_run_one(o, &u, &w, rate, &r);
		if (ret)
			goto out;
		if (o->json)
			print_json(&r, "http");
		else
			print_row(&r);
		if (!o->json && rate <= 0)
			printf("  latency: ttft p50 %.3f s, tpot p50 %.2f ms, "
			       "e2e p99 %.3f s\n", r.ttft[0], r.tpot[0] * 1e3,
			       r.e2e[2]);
		if (r.saturated && !sat)
			sat = rate;
	}
	/* the first rate the server could not keep up with, as in-process */
	if (o->n_rate && o->json && sat)
		printf("{\"mode\": \"saturation\", \"policy\": \"%s\", "
		       "\"saturation_rate\": %.3f}\n", o->n_pol ? o->pol[0] :
		       pol, sat);
	else if (o->n_rate && o->json)
		printf("{\"mode\": \"saturation\", \"policy\": \"%s\", "
		       "\"saturation_rate\": null}\n", o->n_pol ? o->pol[0] :
		       pol);
	else if (o->n_rate && sat)
		printf("# %s saturates at %.2f requests/s (completed requests/s "
		       "below 90%% of the rate)\n", o->n_pol ? o->pol[0] : pol,
		       sat);
	else if (o->n_rate)
		printf("# %s keeps up with every rate up to %.2f requests/s\n",
		       o->n_pol ? o->pol[0] : pol, o->rate[o->n_rate - 1]);
out:
	work_free(&w);
	llm_model_close(mo);
	free(models);
	freeaddrinfo(u.ai);
	return ret ? 1 : 0;
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
	if (o.url)
		return url_bench(&o);
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
	ret = work_make(&o, mo->cfg.n_vocab, mo->tok, &w);
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
		       PRIu64 " sequences, %" PRIu64 " tokens a step (%s), "
		       "reserve %.2f, preempt %s, order %s; greedy, EOS "
		       "ignored\n",
		       o.model, dev, w.n, pt, ot, o.budget / 1e9, o.max_seqs,
		       o.step_tokens, o.no_chunk || o.cuda ? "whole prompts"
							 : "chunked prefill",
		       o.reserve, llm_sched_preempt_name(o.preempt),
		       llm_sched_order_name(o.order));
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
			       "%8s %7s %5s %5s\n", "policy", "rate", "done",
			       "gen tok/s", "req/s", "peak", "mean",
			       "ttft p50", "ttft p99", "tpot p50", "tpot p99",
			       "e2e p99", "preem", "swaps");
		else if (!o.json)
			printf("%-20s %11s %9s %7s %5s %6s %7s %8s %8s %5s "
			       "%5s %5s %4s %9s %8s\n", "policy", "done",
			       "gen tok/s", "req/s", "peak", "mean", "compr",
			       "peak GB", "budget", "preem", "swaps", "compa",
			       "gran",
			       "prefill/s", "GFLOP/s");
		for (int pi = 0; pi < o.n_pol; pi++) {
			struct srv_result r = {
				.policy = o.pol[pi],
				.order = llm_sched_order_name(o.order),
			};

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
