/* SPDX-License-Identifier: MIT */
/*
 * server.h - `kvmm serve`: an OpenAI-compatible HTTP server over the
 * serving scheduler (model/sched/).
 *
 * One engine thread owns the scheduler, the policy cache and the executor
 * and runs the steps; libmicrohttpd's connection threads parse requests
 * (request.h), tokenize them, hand them to the engine through a queue under
 * one lock, and take the text back as it is generated. See
 * Documentation/serve/http.rst.
 */
#ifndef LLM_SERVE_SERVER_H
#define LLM_SERVE_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "scheduler.h"

#define LLM_SERVE_MAX_BODY (1 << 20)	/* default limit of a body, bytes */

/**
 * struct llm_serve_opts - how to serve. Plain value; zeros take the
 * defaults.
 * @host: address to listen on ("127.0.0.1"; "0.0.0.0" or "::" for all)
 * @port: TCP port (8000); -1 picks a free one (llm_serve_port() says)
 * @name: the model's id in requests and /v1/models (the file's name)
 * @policy: the KV policy of the cache, a spec as `--policy` ("full")
 * @budget: KV memory budget, bytes (256 MiB)
 * @max_seqs: sequences that run at once: the cache's slots (64)
 * @max_model_len: prompt and output tokens of one sequence (the model's
 *	context, at most 4096)
 * @step_tokens: token budget of a step (2048); longer prompts come in
 *	chunks (chunked prefill, struct llm_sched_opts)
 * @no_chunk: whole prompts only
 * @reserve: share of a request's remaining output held back at admission,
 *	0 .. 1 (1; 0 preempts instead, see struct llm_sched_opts)
 * @preempt: what a preemption does with the victim's pages (auto;
 *	enum llm_sched_preempt)
 * @swap_dir: where the swap file is made ($TMPDIR, else /tmp)
 * @threads: CPU executor threads (every CPU this process may run on)
 * @cuda: 1: the CUDA executor on device 0
 * @max_body: most bytes of a request body (LLM_SERVE_MAX_BODY); larger
 *	ones get 413
 * @max_conns: most open connections (512)
 * @default_max_tokens: /v1/completions without max_tokens (16, OpenAI's);
 *	chat without one generates to the end of the context
 */
struct llm_serve_opts {
	const char *host;
	int port;
	const char *name;
	const char *policy;
	uint64_t budget;
	int max_seqs;
	int max_model_len;
	int step_tokens;
	bool no_chunk;
	float reserve;
	enum llm_sched_preempt preempt;
	const char *swap_dir;
	int threads;
	int cuda;
	size_t max_body;
	int max_conns;
	int default_max_tokens;
};

/**
 * struct llm_serve_stats - the server's counters, a snapshot
 * @sched: the scheduler's, after the last step
 * @tier_pages: KV pages in use per tier, read at most twice a second
 * @tok_s: tokens generated per second over the last 10 seconds
 * @active: requests the engine holds (queued or running)
 * @finished: requests that ended by "stop", "length", cancelled (client
 *	gone or shutdown) and failed
 * @http: responses sent, by status class: [0] 2xx, [1] 4xx, [2] 5xx
 */
struct llm_serve_stats {
	struct llm_sched_stats sched;
	uint64_t tier_pages[2];
	double tok_s;
	double prefill_s;	/* executor time in prompt batches */
	int active;
	uint64_t finished_stop, finished_length, cancelled, failed;
	uint64_t http[3];
};

struct llm_server;

int llm_serve_start(const struct llm_model *m, const struct llm_serve_opts *o,
		    struct llm_server **out, char *err, size_t errlen);
int llm_serve_port(const struct llm_server *s);
void llm_serve_stats(struct llm_server *s, struct llm_serve_stats *st);
void llm_serve_stop(struct llm_server *s, double grace_s);

#endif /* LLM_SERVE_SERVER_H */
