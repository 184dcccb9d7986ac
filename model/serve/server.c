// SPDX-License-Identifier: MIT
/*
 * server.c - `kvmm serve` (server.h).
 *
 * DOC: server
 *
 * Threads. libmicrohttpd runs a thread per connection. A completion
 * request is parsed (llm_serve_parse()), tokenized (the chat template
 * applied as `kvmm generate --chat` does) and checked on that thread; it
 * becomes a struct srv_req, put on the engine's inbox under @lock. The one
 * engine thread owns the scheduler, the cache and the executor: between
 * steps it submits the inbox, withdraws what was cancelled
 * (llm_sched_cancel(), llm_sched_forget()), runs llm_sched_step(), then
 * turns each request's new tokens into text (end-of-sequence tokens and
 * stop strings end a request early: it is cancelled in the scheduler, so
 * its pages go back at once) and wakes the connection threads waiting on
 * it. The step itself samples per request: greedy rows by argmax as
 * `kvmm bench serve`, others with their temperature, top_p and seed.
 *
 * A connection thread waits on its request's condition variable, in slices
 * of 100 ms, and looks at its socket between slices: a client that closed
 * it (RDHUP, or a read of 0 bytes) cancels its request, streaming or not.
 *
 * Lifetime. A struct srv_req has two references, the connection's and the
 * engine's; the last to drop it frees it. Everything in it below "shared"
 * is read and written under the server's @lock.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <microhttpd.h>

#include "forward.h"
#include "kvk.h"
#include "kvmm_base.h"
#include "kvpolicy.h"
#include "request.h"
#include "server.h"
#ifdef KVMM_HAVE_CUDA
#include "forward_cuda.h"
#endif

#define SRV_SLICE_MS 100	/* a waiting connection looks at its socket */
#define SRV_KEEPALIVE_S 10.0	/* an SSE comment after this long silent */
#define SRV_RATE_N 64		/* samples of the tokens generated, 0.25 s */
#define SRV_RATE_S 10.0		/* the tokens/s window, seconds */

enum srv_end {
	SRV_RUNNING = 0,
	SRV_END_STOP,		/* EOS or a stop string */
	SRV_END_LENGTH,		/* max_tokens, or the context */
	SRV_END_CANCELLED,	/* the client went away, or shutdown */
	SRV_END_FAILED,		/* the scheduler gave up: @why */
};

/* struct srv_req - one completion request; see DOC: server for lifetime */
struct srv_req {
	/* set by the connection thread before the engine sees it */
	enum llm_serve_api api;
	int32_t *prompt;
	int n_prompt;
	int max_new;
	struct kvk_sample_cfg sample;
	uint64_t seed;
	float alpha[2];		/* diffkv thresholds; negative: cache's */
	int cache;		/* its policy: an index of llm_server.pols */
	char *stop[LLM_SERVE_MAX_STOP];
	int n_stop;
	bool ignore_eos;
	uint64_t seq;		/* the response's id */
	struct srv_req *next;	/* inbox link */

	/* the engine's own */
	int id;			/* scheduler id, -1 before submission */
	int n_seen;		/* tokens taken from the scheduler */

	/* shared, under the server's lock */
	int refs;
	bool cancel;		/* asked by the connection */
	enum srv_end end;
	char why[128];		/* SRV_END_FAILED */
	char *text;		/* generated text, NUL-terminated */
	size_t text_len, text_cap;
	size_t ready;		/* bytes of @text that may be shown */
	int n_gen;		/* tokens generated */
	pthread_cond_t cv;	/* signalled on new text and at the end */
};

/*
 * struct srv_pol - one policy the server runs: a cache of the scheduler.
 * @key and @pol are written once, under the server's lock, by the
 * connection thread that first asks for the policy; @kv, @failed and @why
 * are the engine thread's, which opens the cache before the first request
 * that runs in it.
 */
struct srv_pol {
	char key[LLM_POLICY_SPEC_MAX + 1]; /* the spec, diffkv's alphas left
					    * out (they go per request) */
	struct llm_policy pol;
	struct llm_kv *kv;
	int idx;		/* the scheduler's index of @kv */
	bool failed;
	char why[160];
};

/*
 * struct llm_server - the server. Created by llm_serve_start(), freed by
 * llm_serve_stop(). @lock protects the inbox, the stopping flags, every
 * request's shared part, @n_pols and the statistics snapshot; the
 * engine's part (scheduler, caches, executor, @active) is the engine
 * thread's alone.
 */
struct llm_server {
	const struct llm_model *m;
	struct llm_serve_opts o;
	char name[256];
	char policy_spec[LLM_POLICY_SPEC_MAX + 1];
	struct llm_policy pol;
	enum llm_chat_tmpl chat;
	bool has_chat;
	const char *chat_sys;
	size_t chat_sys_len;
	int32_t stop_id[3 + LLM_MODEL_MAX_EOS]; /* -1: unused */
	int max_tok;		/* tokens of one sequence */
	double prefill_s;	/* engine thread: time in prompt batches */
	int port;
	time_t created;

	/* the engine's */
	struct llm_cpu *cpu;
#ifdef KVMM_HAVE_CUDA
	struct llm_cuda *gpu;
#endif
	float *z;		/* [max_seqs][vocab] logits */
	float *u;		/* [max_seqs] uniforms */
	struct srv_pol pols[LLM_SCHED_MAX_CACHES]; /* [0]: --policy */
	int n_pols;
	struct llm_sched *sched;
	struct srv_req **active; /* [n_active] */
	int n_active, cap_active;
	struct srv_req **byid;	/* [cap_byid] scheduler id -> request */
	int cap_byid;
	pthread_t engine;
	bool engine_up;

	struct MHD_Daemon *d;

	pthread_mutex_t lock;
	pthread_cond_t wake;	/* the engine: inbox, cancel, stop */
	struct srv_req *inbox, **inbox_tail;
	bool stopping;		/* no new requests: 503 */
	bool abort;		/* cancel everything in flight */
	bool quit;		/* the engine returns when nothing is left */
	int busy;		/* completions whose response is not done */
	uint64_t seq;		/* ids of responses */
	struct llm_serve_stats st;
	double rate_t[SRV_RATE_N];	/* CLOCK_MONOTONIC seconds */
	uint64_t rate_n[SRV_RATE_N];	/* tokens generated by then */
	int rate_i;
	double tiers_t;
};

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- requests ---- */

static void req_put(struct llm_server *s, struct srv_req *r)
{
	bool last;

	pthread_mutex_lock(&s->lock);
	last = !--r->refs;
	pthread_mutex_unlock(&s->lock);
	if (!last)
		return;
	free(r->prompt);
	for (int i = 0; i < r->n_stop; i++)
		free(r->stop[i]);
	free(r->text);
	pthread_cond_destroy(&r->cv);
	free(r);
}

static bool is_stop_id(const struct llm_server *s, int32_t id)
{
	for (size_t i = 0; i < ARRAY_SIZE(s->stop_id); i++)
		if (s->stop_id[i] >= 0 && id == s->stop_id[i])
			return true;
	return false;
}

/* a JSON string of @n bytes, invalid UTF-8 replaced by U+FFFD */
static json_t *json_text(const char *p, size_t n)
{
	json_t *j = json_stringn(p, n);
	char *c;
	size_t k = 0;

	if (j)
		return j;
	c = malloc(n * 3 + 1);
	if (!c)
		return NULL;
	for (size_t i = 0; i < n;) {
		uint32_t cp;
		size_t l = llm_utf8_decode((const uint8_t *)p + i, n - i, &cp);
		json_t *t = l ? json_stringn(p + i, l) : NULL;

		if (t) {
			memcpy(c + k, p + i, l);
			k += l;
			i += l;
			json_decref(t);
		} else {
			memcpy(c + k, "\xef\xbf\xbd", 3);
			k += 3;
			i++;
		}
	}
	j = json_stringn(c, k);
	free(c);
	return j;
}

/* ---- the engine ---- */

static struct srv_req *row_req(struct llm_server *s, int slot)
{
	int id = llm_sched_slot_owner(s->sched, slot);

	return id >= 0 && id < s->cap_byid ? s->byid[id] : NULL;
}

static int eng_pure_run(struct llm_server *s, struct llm_kv *kv,
			const struct llm_batch *b, int32_t *next);

/* a batch all prompts or all decode tokens, timed by its kind */
static int eng_pure(void *ctx, struct llm_kv *kv, const struct llm_batch *b,
		    void *out)
{
	struct llm_server *s = ctx;
	int kind = llm_kv_batch_kind(kv, b);	/* before the step moves it */
	double t0 = now_s();
	int ret = eng_pure_run(s, kv, b, out);

	if (kind == LLM_KV_PREFILL)
		s->prefill_s += now_s() - t0;
	return ret;
}

/* eng_pure(): run one pure batch, one next token per sequence */
static int eng_pure_run(struct llm_server *s, struct llm_kv *kv,
			const struct llm_batch *b, int32_t *next)
{
	uint32_t vocab = s->m->cfg.n_vocab;
	bool greedy = true;
	int ret;

	for (int i = 0; i < b->n_seq; i++) {
		struct srv_req *r = row_req(s, b->seq[i]);

		if (r && r->sample.temperature > 0)
			greedy = false;
	}
#ifdef KVMM_HAVE_CUDA
	if (s->gpu && greedy)
		return llm_cuda_forward_greedy(s->gpu, kv, b, next);
	if (s->gpu)
		ret = llm_cuda_forward(s->gpu, kv, b, s->z);
	else
#endif
	ret = llm_cpu_forward(s->cpu, kv, b, s->z);
	if (ret)
		return ret;
	if (greedy)
		return kvk_argmax_cpu(next, s->z, b->n_seq, vocab, KVK_F32,
				      NULL);
	for (int i = 0; !ret && i < b->n_seq; i++) {
		struct srv_req *r = row_req(s, b->seq[i]);
		const float *z = s->z + (size_t)i * vocab;

		if (!r || r->sample.temperature <= 0) {
			ret = kvk_argmax_cpu(&next[i], z, 1, vocab, KVK_F32,
					     NULL);
			continue;
		}
		s->u[i] = kvk_rand_uniform(r->seed, (uint64_t)r->n_seen);
		ret = kvk_sample_cpu(&next[i], z, &s->u[i], 1, vocab,
				     &r->sample, KVK_F32, NULL);
	}
	return ret;
}

static int eng_step(void *ctx, struct llm_kv *kv, const struct llm_batch *b,
		    int32_t *next)
{
	return llm_batch_split(kv, b, next, sizeof(int32_t), eng_pure, ctx);
}

/* under the lock: @r ends; its connection is woken */
static void req_end(struct llm_server *s, struct srv_req *r, enum srv_end e,
		    const char *why)
{
	if (r->end)
		return;
	r->end = e;
	if (why)
		snprintf(r->why, sizeof(r->why), "%s", why);
	r->ready = r->text_len;
	switch (e) {
	case SRV_END_STOP:
		s->st.finished_stop++;
		break;
	case SRV_END_LENGTH:
		s->st.finished_length++;
		break;
	case SRV_END_CANCELLED:
		s->st.cancelled++;
		break;
	default:
		s->st.failed++;
	}
	pthread_cond_broadcast(&r->cv);
}

/* the engine lets go of @r: out of the scheduler and of @active */
static void eng_drop(struct llm_server *s, int i)
{
	struct srv_req *r = s->active[i];

	if (r->id >= 0) {
		llm_sched_cancel(s->sched, r->id);
		llm_sched_forget(s->sched, r->id);
		s->byid[r->id] = NULL;
	}
	s->active[i] = s->active[--s->n_active];
	req_put(s, r);
}

static int srv_cache_open(struct llm_server *s, const struct llm_policy *p,
			  struct llm_kv **kv, char *err, size_t errlen);

/*
 * the cache of policy @i, opened and added to the scheduler before its
 * first request: 0, or -errno with the reason in the policy
 */
static int eng_cache(struct llm_server *s, int i)
{
	struct srv_pol *p = &s->pols[i];
	int ret;

	if (p->kv)
		return 0;
	if (p->failed)
		return -EINVAL;
	ret = srv_cache_open(s, &p->pol, &p->kv, p->why, sizeof(p->why));
	if (!ret) {
		char why[sizeof(p->why)];

		ret = llm_sched_add_cache(s->sched, p->kv, &p->idx);
		snprintf(why, sizeof(why), "adding the cache of '%s': %s",
			 p->key, strerror(-ret));
		if (ret)
			memcpy(p->why, why, sizeof(why));
	}
	if (ret) {
		llm_kv_destroy(p->kv);
		p->kv = NULL;
		p->failed = true;
	}
	return ret;
}

static int eng_submit(struct llm_server *s, struct srv_req *r)
{
	struct llm_sched_req q = { r->prompt, r->n_prompt, r->max_new,
				   r->alpha[0], r->alpha[1], 0 };
	int ret;

	if (eng_cache(s, r->cache)) {
		pthread_mutex_lock(&s->lock);
		req_end(s, r, SRV_END_FAILED, s->pols[r->cache].why);
		pthread_mutex_unlock(&s->lock);
		return -EINVAL;
	}
	q.cache = s->pols[r->cache].idx;

	if (s->n_active == s->cap_active) {
		int cap = s->cap_active ? 2 * s->cap_active : 64;
		struct srv_req **a = realloc(s->active, cap * sizeof(*a));

		if (!a)
			return -ENOMEM;
		s->active = a;
		s->cap_active = cap;
	}
	ret = llm_sched_submit(s->sched, &q, &r->id);
	if (ret) {
		r->id = -1;
		return ret;
	}
	if (r->id >= s->cap_byid) {
		int cap = r->id * 2 + 64;
		struct srv_req **a = realloc(s->byid, cap * sizeof(*a));

		if (!a) {
			llm_sched_cancel(s->sched, r->id);
			llm_sched_forget(s->sched, r->id);
			r->id = -1;
			return -ENOMEM;
		}
		memset(a + s->cap_byid, 0,
		       (cap - s->cap_byid) * sizeof(*a));
		s->byid = a;
		s->cap_byid = cap;
	}
	s->byid[r->id] = r;
	s->active[s->n_active++] = r;
	return 0;
}

/* under the lock: @r's new tokens into text; true when it ended */
static bool eng_take(struct llm_server *s, struct srv_req *r,
		     const struct llm_sched_info *in)
{
	const struct llm_tok *t = s->m->tok;
	size_t hold = 0, from = r->text_len;

	while (r->n_seen < in->n_gen) {
		int32_t id = in->out[r->n_seen++];
		size_t pl;
		const char *p;

		r->n_gen++;
		if (!r->ignore_eos && is_stop_id(s, id)) {
			req_end(s, r, SRV_END_STOP, NULL);
			return true;
		}
		p = t ? llm_tok_piece(t, id, &pl) : NULL;
		if (p && t->type[id] != LLM_TOKTYPE_CONTROL &&
		    llm_text_append(&r->text, &r->text_len, &r->text_cap, p,
				    pl)) {
			req_end(s, r, SRV_END_FAILED, "out of memory");
			return true;
		}
		if (llm_text_stop(r->text, &r->text_len,
				  (const char *const *)r->stop, r->n_stop,
				  from, &hold)) {
			req_end(s, r, SRV_END_STOP, NULL);
			return true;
		}
	}
	if (in->state == LLM_SCHED_DONE) {
		req_end(s, r, SRV_END_LENGTH, NULL);
		return true;
	}
	if (in->state == LLM_SCHED_FAILED) {
		req_end(s, r, SRV_END_FAILED, in->reason);
		return true;
	}
	r->ready = r->text_len - hold;
	r->ready = r->ready ? llm_utf8_whole(r->text, r->ready) : 0;
	pthread_cond_broadcast(&r->cv);
	return false;
}

/* under the lock: the statistics after a step */
static void eng_stats(struct llm_server *s)
{
	double t = now_s();

	llm_sched_stats(s->sched, &s->st.sched);
	s->st.active = s->n_active;
	s->st.prefill_s = s->prefill_s;
	if (t - s->rate_t[s->rate_i] >= 0.25) {
		s->rate_i = (s->rate_i + 1) % SRV_RATE_N;
		s->rate_t[s->rate_i] = t;
	}
	s->rate_n[s->rate_i] = s->st.sched.generated;
	if (t - s->tiers_t >= 0.5 || llm_sched_idle(s->sched)) {
		llm_sched_tier_pages(s->sched, s->st.tier_pages);
		s->tiers_t = t;
	}
}

static void *eng_main(void *arg)
{
	struct llm_server *s = arg;

	for (;;) {
		struct srv_req *in, *r;
		bool abort;
		int ret;

		pthread_mutex_lock(&s->lock);
		while (!s->inbox && !s->n_active && !s->quit)
			pthread_cond_wait(&s->wake, &s->lock);
		if (s->quit && !s->inbox && !s->n_active) {
			pthread_mutex_unlock(&s->lock);
			break;
		}
		in = s->inbox;
		s->inbox = NULL;
		s->inbox_tail = &s->inbox;
		abort = s->abort;
		/* withdraw what the clients (or a shutdown) cancelled */
		for (int i = s->n_active - 1; i >= 0; i--) {
			r = s->active[i];
			if (!r->cancel && !abort)
				continue;
			req_end(s, r, SRV_END_CANCELLED, NULL);
			pthread_mutex_unlock(&s->lock);
			eng_drop(s, i);
			pthread_mutex_lock(&s->lock);
		}
		pthread_mutex_unlock(&s->lock);
		while (in) {
			r = in;
			in = r->next;
			ret = r->cancel || abort ? -ECANCELED :
						   eng_submit(s, r);
			if (ret) {
				pthread_mutex_lock(&s->lock);
				req_end(s, r, ret == -ECANCELED ?
					SRV_END_CANCELLED : SRV_END_FAILED,
					strerror(-ret));
				pthread_mutex_unlock(&s->lock);
				req_put(s, r);
			}
		}
		if (!llm_sched_idle(s->sched)) {
			ret = llm_sched_step(s->sched);
			if (ret < 0)
				fprintf(stderr, "kvmm serve: step: %s\n",
					strerror(-ret));
			/* nothing could run (all waiting on pages that a
			 * step will not free): no hot loop */
			if (!ret)
				usleep(1000);
		}
		pthread_mutex_lock(&s->lock);
		for (int i = s->n_active - 1; i >= 0; i--) {
			struct llm_sched_info info;

			r = s->active[i];
			if (llm_sched_info(s->sched, r->id, &info))
				continue;
			if (!eng_take(s, r, &info))
				continue;
			pthread_mutex_unlock(&s->lock);
			eng_drop(s, i);
			pthread_mutex_lock(&s->lock);
		}
		eng_stats(s);
		pthread_mutex_unlock(&s->lock);
	}
	return NULL;
}

/* ---- HTTP ---- */

/* struct srv_conn - one HTTP request's state across the handler's calls */
struct srv_conn {
	char *body;
	size_t len, cap;
	bool too_big;
};

/* struct srv_stream - an SSE response: the request and what is unsent */
struct srv_stream {
	struct llm_server *s;
	struct srv_req *r;
	struct MHD_Connection *c;
	int fd;
	char id[48];
	size_t sent;		/* bytes of the text sent */
	int gen_seen;		/* tokens of the request's last chunk */
	bool role_sent, end_sent, done_sent, usage;
	char *buf;		/* formatted events not yet handed to MHD */
	size_t len, off;
	double last;		/* last write, for keepalives */
};

static void count_status(struct llm_server *s, unsigned int status)
{
	pthread_mutex_lock(&s->lock);
	s->st.http[status < 400 ? 0 : status < 500 ? 1 : 2]++;
	pthread_mutex_unlock(&s->lock);
}

static enum MHD_Result reply(struct llm_server *s, struct MHD_Connection *c,
			     unsigned int status, const char *type,
			     char *body)
{
	struct MHD_Response *rsp;
	enum MHD_Result ret;

	if (!body)
		return MHD_NO;
	rsp = MHD_create_response_from_buffer(strlen(body), body,
					      MHD_RESPMEM_MUST_FREE);
	if (!rsp) {
		free(body);
		return MHD_NO;
	}
	MHD_add_response_header(rsp, "Content-Type", type);
	if (status == 405)
		MHD_add_response_header(rsp, "Allow", "GET, POST");
	ret = MHD_queue_response(c, status, rsp);
	MHD_destroy_response(rsp);
	count_status(s, status);
	return ret;
}

static enum MHD_Result reply_json(struct llm_server *s,
				  struct MHD_Connection *c,
				  unsigned int status, json_t *j)
{
	char *body = j ? json_dumps(j, JSON_COMPACT) : NULL;

	json_decref(j);
	return reply(s, c, status, "application/json", body);
}

static enum MHD_Result reply_err(struct llm_server *s,
				 struct MHD_Connection *c,
				 const struct llm_serve_err *e)
{
	return reply(s, c, e->status, "application/json",
		     llm_serve_err_json(e));
}

static enum MHD_Result reply_errf(struct llm_server *s,
				  struct MHD_Connection *c, int status,
				  const char *type, const char *code,
				  const char *param, const char *msg)
{
	struct llm_serve_err e;

	llm_serve_err_set(&e, status, type, code, param, "%s", msg);
	return reply_err(s, c, &e);
}

static int conn_fd(struct MHD_Connection *c)
{
	const union MHD_ConnectionInfo *ci =
		MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);

	return ci ? ci->connect_fd : -1;
}

/* the client closed its side of the connection */
static bool client_gone(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN | POLLRDHUP };
	char b;

	if (fd < 0 || poll(&p, 1, 0) <= 0)
		return false;
	if (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL))
		return true;
	return (p.revents & POLLIN) &&
	       recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
}

/* under the lock: wait a slice for @r to change */
static void wait_slice(struct llm_server *s, struct srv_req *r)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_nsec += SRV_SLICE_MS * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	pthread_cond_timedwait(&r->cv, &s->lock, &ts);
}

/* the connection gives up @r: the engine cancels it */
static void req_cancel(struct llm_server *s, struct srv_req *r)
{
	pthread_mutex_lock(&s->lock);
	if (!r->end) {
		r->cancel = true;
		pthread_cond_signal(&s->wake);
	}
	pthread_mutex_unlock(&s->lock);
}

static const char *end_reason(enum srv_end e)
{
	return e == SRV_END_LENGTH ? "length" : "stop";
}

static json_t *usage_json(const struct srv_req *r)
{
	return json_pack("{s:i, s:i, s:i}", "prompt_tokens", r->n_prompt,
			 "completion_tokens", r->n_gen, "total_tokens",
			 r->n_prompt + r->n_gen);
}

/* one choice of a response or a chunk */
static json_t *choice_json(const struct srv_req *r, const char *p, size_t n,
			   bool chunk, const char *finish, bool role)
{
	json_t *fin = finish ? json_string(finish) : json_null();
	json_t *text = json_text(p, n);

	if (r->api == LLM_SERVE_COMPLETIONS)
		return json_pack("{s:i, s:o, s:n, s:o}", "index", 0, "text",
				 text, "logprobs", "finish_reason", fin);
	if (!chunk)
		return json_pack("{s:i, s:{s:s, s:o}, s:n, s:o}", "index", 0,
				 "message", "role", "assistant", "content",
				 text, "logprobs", "finish_reason", fin);
	if (finish && !n) {
		json_decref(text);
		return json_pack("{s:i, s:{}, s:n, s:o}", "index", 0,
				 "delta", "logprobs", "finish_reason", fin);
	}
	if (role)
		return json_pack("{s:i, s:{s:s, s:o}, s:n, s:o}", "index", 0,
				 "delta", "role", "assistant", "content", text,
				 "logprobs", "finish_reason", fin);
	return json_pack("{s:i, s:{s:o}, s:n, s:o}", "index", 0, "delta",
			 "content", text, "logprobs", "finish_reason", fin);
}

static json_t *envelope(const struct llm_server *s, const struct srv_req *r,
			const char *id, bool chunk, json_t *choices)
{
	const char *obj = r->api == LLM_SERVE_COMPLETIONS ? "text_completion" :
			  chunk ? "chat.completion.chunk" : "chat.completion";

	return json_pack("{s:s, s:s, s:I, s:s, s:o}", "id", id, "object",
			 obj, "created", (json_int_t)time(NULL), "model",
			 s->name, "choices", choices);
}

/* ---- streaming ---- */

static int sse_put(struct srv_stream *st, json_t *j)
{
	char *d = j ? json_dumps(j, JSON_COMPACT) : NULL;
	size_t n = d ? strlen(d) : 0;
	char *b;

	json_decref(j);
	if (!d)
		return -ENOMEM;
	b = realloc(st->buf, st->len + n + 9);
	if (!b) {
		free(d);
		return -ENOMEM;
	}
	st->buf = b;
	memcpy(b + st->len, "data: ", 6);
	memcpy(b + st->len + 6, d, n);
	memcpy(b + st->len + 6 + n, "\n\n", 3);
	st->len += n + 8;
	free(d);
	return 0;
}

static int sse_raw(struct srv_stream *st, const char *s)
{
	size_t n = strlen(s);
	char *b = realloc(st->buf, st->len + n + 1);

	if (!b)
		return -ENOMEM;
	st->buf = b;
	memcpy(b + st->len, s, n + 1);
	st->len += n;
	return 0;
}

/* under the lock: events for what @r has now */
static int sse_fill(struct srv_stream *st)
{
	struct srv_req *r = st->r;
	struct llm_server *s = st->s;
	size_t n = r->ready > st->sent ? r->ready - st->sent : 0;
	const char *fin = NULL;
	int ret = 0;

	if (r->end == SRV_END_FAILED || r->end == SRV_END_CANCELLED) {
		struct llm_serve_err e;
		char *body;

		llm_serve_err_set(&e, 500, "server_error", NULL, NULL,
				  "the request failed: %s", r->end ==
				  SRV_END_CANCELLED ? "the server is shutting "
				  "down" : r->why);
		body = llm_serve_err_json(&e);
		ret = body ? sse_raw(st, "data: ") : -ENOMEM;
		ret = ret ?: sse_raw(st, body);
		ret = ret ?: sse_raw(st, "\n\n");
		free(body);
		st->end_sent = st->done_sent = true;
		return ret;
	}
	if (r->end)
		fin = end_reason(r->end);
	/* a chunk for each step that brought tokens, even when their text
	 * is held back: the client sees time to first token and each step */
	if (n || fin || r->n_gen > st->gen_seen) {
		json_t *ch = json_array();

		json_array_append_new(ch, choice_json(r, r->text ? r->text +
						      st->sent : "", n, true,
						      fin, !st->role_sent));
		ret = sse_put(st, envelope(s, r, st->id, true, ch));
		st->sent += n;
		st->gen_seen = r->n_gen;
		st->role_sent = true;
		st->end_sent = fin != NULL;
	}
	if (!ret && st->end_sent && st->usage) {
		json_t *j = envelope(s, r, st->id, true, json_array());

		json_object_set_new(j, "usage", usage_json(r));
		ret = sse_put(st, j);
	}
	if (!ret && st->end_sent) {
		ret = sse_raw(st, "data: [DONE]\n\n");
		st->done_sent = true;
	}
	return ret;
}

static ssize_t sse_read(void *cls, uint64_t pos, char *buf, size_t max)
{
	struct srv_stream *st = cls;
	struct llm_server *s = st->s;
	size_t n;

	(void)pos;
	while (st->off == st->len) {
		int ret;

		st->off = st->len = 0;
		if (st->done_sent)
			return MHD_CONTENT_READER_END_OF_STREAM;
		pthread_mutex_lock(&s->lock);
		ret = sse_fill(st);
		if (!ret && st->off == st->len && !st->done_sent)
			wait_slice(s, st->r);
		pthread_mutex_unlock(&s->lock);
		if (ret)
			return MHD_CONTENT_READER_END_WITH_ERROR;
		if (st->off == st->len && client_gone(st->fd))
			return MHD_CONTENT_READER_END_WITH_ERROR;
		if (st->off == st->len && now_s() - st->last > SRV_KEEPALIVE_S)
			sse_raw(st, ": keepalive\n\n");
	}
	n = st->len - st->off < max ? st->len - st->off : max;
	memcpy(buf, st->buf + st->off, n);
	st->off += n;
	st->last = now_s();
	return (ssize_t)n;
}

static void busy_add(struct llm_server *s, int d)
{
	pthread_mutex_lock(&s->lock);
	s->busy += d;
	pthread_mutex_unlock(&s->lock);
}

static void sse_free(void *cls)
{
	struct srv_stream *st = cls;
	struct llm_server *s = st->s;

	req_cancel(s, st->r);
	req_put(s, st->r);
	free(st->buf);
	free(st);
	busy_add(s, -1);
}

/* ---- completions ---- */

/* @p as a key: its spec with diffkv's thresholds left out */
static void pol_key(const struct llm_policy *p, char *buf, size_t len)
{
	struct llm_policy q = *p, d;
	char err[64];

	if (q.kind == LLM_POLICY_DIFFKV &&
	    !llm_policy_parse("diffkv", &d, err, sizeof(err))) {
		q.alpha_prune = d.alpha_prune;
		q.alpha_quant = d.alpha_quant;
	}
	llm_policy_format(&q, buf, len);
}

/*
 * the request's policy: the index of its cache in @s->pols (a policy
 * asked for the first time takes the next one), and diffkv's thresholds,
 * which go per request in a cache of the same tiers
 */
static int req_policy(struct llm_server *s, const char *spec, float *alpha,
		      int *cache, struct llm_serve_err *e)
{
	char key[LLM_POLICY_SPEC_MAX + 1];
	struct llm_policy p;
	char err[200];
	int i;

	if (llm_policy_parse(spec, &p, err, sizeof(err))) {
		llm_serve_err_set(e, 400, "invalid_request_error",
				  "invalid_value", "policy", "'policy': %s",
				  err);
		return -EINVAL;
	}
	if (p.topk && s->o.cuda) {
		llm_serve_err_set(e, 400, "invalid_request_error",
				  "unsupported_policy", "policy", "'policy': "
				  "topk sparse attention runs in host caches "
				  "only, and this server runs on the GPU");
		return -EINVAL;
	}
	pol_key(&p, key, sizeof(key));
	pthread_mutex_lock(&s->lock);
	for (i = 0; i < s->n_pols; i++)
		if (!strcmp(s->pols[i].key, key))
			break;
	if (i == LLM_SCHED_MAX_CACHES) {
		pthread_mutex_unlock(&s->lock);
		llm_serve_err_set(e, 400, "invalid_request_error",
				  "too_many_policies", "policy", "this server "
				  "runs at most %d KV policies (one cache "
				  "each, in one budget); '%.64s' would be one "
				  "more", LLM_SCHED_MAX_CACHES, spec);
		return -EINVAL;
	}
	if (i == s->n_pols) {
		memcpy(s->pols[i].key, key, sizeof(key));
		s->pols[i].pol = p;
		s->n_pols++;
	}
	pthread_mutex_unlock(&s->lock);
	*cache = i;
	if (p.kind == LLM_POLICY_DIFFKV) {
		alpha[0] = p.alpha_prune;
		alpha[1] = p.alpha_quant;
	}
	return 0;
}

/* the prompt's tokens, the chat template applied as `generate --chat` */
static int req_tokens(struct llm_server *s, const struct llm_serve_req *q,
		      struct srv_req *r, struct llm_serve_err *e)
{
	const struct llm_tok *t = s->m->tok;
	struct llm_chat_msg *msg = NULL;
	unsigned int flags = 0;
	char *text = NULL;
	const char *src;
	size_t len = 0, n = 0;
	int ret;

	if (q->ids) {
		for (int i = 0; i < q->n_ids; i++)
			if ((uint32_t)q->ids[i] >= s->m->cfg.n_vocab) {
				llm_serve_err_set(e, 400,
						  "invalid_request_error",
						  "invalid_value", "prompt",
						  "'prompt': token %d is %d, "
						  "the vocabulary has %u", i,
						  q->ids[i],
						  s->m->cfg.n_vocab);
				return -EINVAL;
			}
		r->prompt = malloc(q->n_ids * sizeof(int32_t));
		if (!r->prompt)
			return -ENOMEM;
		memcpy(r->prompt, q->ids, q->n_ids * sizeof(int32_t));
		r->n_prompt = q->n_ids;
		return 0;
	}
	if (!t) {
		llm_serve_err_set(e, 400, "invalid_request_error", NULL,
				  "prompt", "the model has no tokenizer: give "
				  "the prompt as token ids");
		return -EINVAL;
	}
	if (q->api == LLM_SERVE_CHAT) {
		if (!s->has_chat) {
			llm_serve_err_set(e, 400, "invalid_request_error",
					  NULL, "messages", "the model has no "
					  "ChatML or Llama-3 chat template");
			return -EINVAL;
		}
		msg = calloc(q->n_msgs, sizeof(*msg));
		if (!msg)
			return -ENOMEM;
		for (int i = 0; i < q->n_msgs; i++)
			msg[i] = (struct llm_chat_msg){ q->msgs[i].role,
							q->msgs[i].content };
		llm_chat_format(s->chat, s->chat_sys, s->chat_sys_len, msg,
				q->n_msgs, true, NULL, 0, &len);
		text = malloc(len + 1);
		if (!text) {
			free(msg);
			return -ENOMEM;
		}
		llm_chat_format(s->chat, s->chat_sys, s->chat_sys_len, msg,
				q->n_msgs, true, text, len + 1, &len);
		free(msg);
		flags = LLM_TOK_PARSE_SPECIAL;
		src = text;
	} else {
		src = q->prompt;
		len = strlen(src);
		if (t->add_bos)
			flags = LLM_TOK_ADD_BOS;
	}
	ret = llm_tok_encode(t, src, len, flags, NULL, 0, &n);
	if (ret && ret != -ENOSPC)
		goto out;
	ret = -EINVAL;
	if (!n) {
		llm_serve_err_set(e, 400, "invalid_request_error", NULL,
				  q->api == LLM_SERVE_CHAT ? "messages" :
				  "prompt", "the prompt is empty");
		goto out;
	}
	ret = -ENOMEM;
	r->prompt = malloc(n * sizeof(int32_t));
	if (!r->prompt)
		goto out;
	ret = llm_tok_encode(t, src, len, flags, r->prompt, n, &n);
	r->n_prompt = (int)n;
out:
	free(text);
	return ret;
}

/* the checked request of @q, or an error */
static struct srv_req *req_make(struct llm_server *s,
				const struct llm_serve_req *q,
				struct llm_serve_err *e)
{
	struct srv_req *r = calloc(1, sizeof(*r));
	int ret, room;

	if (!r)
		goto nomem;
	pthread_cond_init(&r->cv, NULL);
	r->refs = 1;
	r->id = -1;
	r->api = q->api;
	r->alpha[0] = r->alpha[1] = -1.0f;
	r->ignore_eos = q->ignore_eos;
	r->sample = (struct kvk_sample_cfg){ q->temperature, q->top_k,
					     q->top_p };
	r->seed = q->has_seed ? q->seed : (uint64_t)time(NULL) ^
		  ((uint64_t)(uintptr_t)r << 16);
	if (q->model && strcmp(q->model, s->name)) {
		llm_serve_err_set(e, 404, "invalid_request_error",
				  "model_not_found", "model", "the model "
				  "'%.64s' does not exist: this server serves "
				  "'%.64s'", q->model, s->name);
		goto fail;
	}
	if (q->policy && req_policy(s, q->policy, r->alpha, &r->cache, e))
		goto fail;
	ret = req_tokens(s, q, r, e);
	if (ret == -ENOMEM)
		goto nomem;
	if (ret)
		goto fail;
	room = s->max_tok - r->n_prompt;
	if (q->max_tokens && q->max_tokens > room) {
		llm_serve_err_set(e, 400, "invalid_request_error",
				  "context_length_exceeded", "max_tokens",
				  "this model's maximum context length is %d "
				  "tokens; you asked for %d (%d in the prompt, "
				  "%d in the completion)", s->max_tok,
				  r->n_prompt + q->max_tokens, r->n_prompt,
				  q->max_tokens);
		goto fail;
	}
	if (room < 1) {
		llm_serve_err_set(e, 400, "invalid_request_error",
				  "context_length_exceeded",
				  q->api == LLM_SERVE_CHAT ? "messages" :
				  "prompt", "this model's maximum context "
				  "length is %d tokens; the prompt has %d",
				  s->max_tok, r->n_prompt);
		goto fail;
	}
	r->max_new = q->max_tokens ? q->max_tokens :
		     q->api == LLM_SERVE_CHAT ? room :
		     (s->o.default_max_tokens < room ?
		      s->o.default_max_tokens : room);
	for (int i = 0; i < q->n_stop; i++) {
		r->stop[i] = strdup(q->stop[i]);
		if (!r->stop[i])
			goto nomem;
		r->n_stop = i + 1;
	}
	return r;
nomem:
	llm_serve_err_set(e, 500, "server_error", NULL, NULL, "out of memory");
fail:
	if (r) {
		r->refs = 1;
		req_put(s, r);
	}
	return NULL;
}

/* hand @r to the engine: Return: false when the server is stopping */
static bool req_queue(struct llm_server *s, struct srv_req *r)
{
	bool ok;

	pthread_mutex_lock(&s->lock);
	ok = !s->stopping;
	if (ok) {
		r->refs = 2;
		r->next = NULL;
		*s->inbox_tail = r;
		s->inbox_tail = &r->next;
		r->seq = ++s->seq;
		pthread_cond_signal(&s->wake);
	}
	pthread_mutex_unlock(&s->lock);
	return ok;
}

static enum MHD_Result completion_(struct llm_server *s,
				   struct MHD_Connection *c,
				   enum llm_serve_api api,
				   const struct srv_conn *sc, bool *streams)
{
	struct llm_serve_req q;
	struct llm_serve_err e;
	struct srv_req *r;
	char id[48];
	int fd = conn_fd(c);
	json_t *ch, *j;

	if (llm_serve_parse(api, sc->body ? sc->body : "", sc->len, &q, &e)) {
		llm_serve_req_free(&q);
		return reply_err(s, c, &e);
	}
	r = req_make(s, &q, &e);
	if (!r) {
		llm_serve_req_free(&q);
		return reply_err(s, c, &e);
	}
	if (!req_queue(s, r)) {
		llm_serve_req_free(&q);
		req_put(s, r);
		return reply_errf(s, c, 503, "server_error", NULL, NULL,
				  "the server is shutting down");
	}
	snprintf(id, sizeof(id), "%s-%llu", api == LLM_SERVE_CHAT ?
		 "chatcmpl" : "cmpl", (unsigned long long)r->seq);
	if (q.stream) {
		struct srv_stream *st = calloc(1, sizeof(*st));
		struct MHD_Response *rsp;
		enum MHD_Result ret;

		if (!st) {
			req_cancel(s, r);
			req_put(s, r);
			llm_serve_req_free(&q);
			return MHD_NO;
		}
		/* sse_free() ends the response, whatever happens next */
		*streams = true;
		*st = (struct srv_stream){ .s = s, .r = r, .c = c, .fd = fd,
					   .usage = q.include_usage,
					   .last = now_s() };
		snprintf(st->id, sizeof(st->id), "%s", id);
		llm_serve_req_free(&q);
		rsp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096,
							sse_read, st,
							sse_free);
		if (!rsp) {
			sse_free(st);
			return MHD_NO;
		}
		MHD_add_response_header(rsp, "Content-Type",
					"text/event-stream");
		MHD_add_response_header(rsp, "Cache-Control", "no-cache");
		ret = MHD_queue_response(c, 200, rsp);
		MHD_destroy_response(rsp);
		count_status(s, 200);
		return ret;
	}
	llm_serve_req_free(&q);
	pthread_mutex_lock(&s->lock);
	while (!r->end) {
		wait_slice(s, r);
		if (r->end)
			break;
		pthread_mutex_unlock(&s->lock);
		if (client_gone(fd)) {
			req_cancel(s, r);
			req_put(s, r);
			return MHD_NO;
		}
		pthread_mutex_lock(&s->lock);
	}
	pthread_mutex_unlock(&s->lock);
	/* the engine wrote its last; @r is read without the lock now */
	if (r->end == SRV_END_FAILED || r->end == SRV_END_CANCELLED) {
		int status = r->end == SRV_END_CANCELLED ? 503 : 500;
		char why[160];

		snprintf(why, sizeof(why), "the request failed: %s",
			 r->end == SRV_END_CANCELLED ? "the server is "
			 "shutting down" : r->why);
		req_put(s, r);
		return reply_errf(s, c, status, "server_error", NULL, NULL,
				  why);
	}
	ch = json_array();
	json_array_append_new(ch, choice_json(r, r->text ? r->text : "",
					      r->text_len, false,
					      end_reason(r->end), false));
	j = envelope(s, r, id, false, ch);
	json_object_set_new(j, "usage", usage_json(r));
	req_put(s, r);
	return reply_json(s, c, 200, j);
}

static enum MHD_Result completion(struct llm_server *s,
				  struct MHD_Connection *c,
				  enum llm_serve_api api,
				  const struct srv_conn *sc)
{
	bool streams = false;
	enum MHD_Result ret;

	busy_add(s, 1);
	ret = completion_(s, c, api, sc, &streams);
	if (!streams)
		busy_add(s, -1);
	return ret;
}

/* ---- the other endpoints ---- */

static char *metrics_text(struct llm_server *s)
{
	struct llm_serve_stats st;
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	if (!f)
		return NULL;
	llm_serve_stats(s, &st);
#define M(name, type, help, fmt, ...)                                          \
	fprintf(f, "# HELP kvmm_" name " " help "\n# TYPE kvmm_" name " " type \
		   "\n" fmt "\n", __VA_ARGS__)
	M("requests_waiting", "gauge", "Requests queued in the scheduler.",
	  "kvmm_requests_waiting %d", st.sched.waiting);
	M("requests_running", "gauge", "Sequences holding a slot of the cache.",
	  "kvmm_requests_running %d", st.sched.running);
	M("requests_active", "gauge", "Requests the engine holds, from "
	  "arrival to the end.", "kvmm_requests_active %d", st.active);
	fprintf(f, "# HELP kvmm_kv_pages KV pages in use, by tier.\n"
		"# TYPE kvmm_kv_pages gauge\n"
		"kvmm_kv_pages{tier=\"high\"} %llu\n"
		"kvmm_kv_pages{tier=\"low\"} %llu\n",
		(unsigned long long)st.tier_pages[0],
		(unsigned long long)st.tier_pages[1]);
	M("kv_pages_used", "gauge", "KV pages in use after the last step.",
	  "kvmm_kv_pages_used %llu", (unsigned long long)st.sched.pages_used);
	M("kv_pages_budget", "gauge", "KV pages the memory budget maps.",
	  "kvmm_kv_pages_budget %llu",
	  (unsigned long long)st.sched.budget_pages);
	M("kv_page_bytes", "gauge", "Bytes of one KV page.",
	  "kvmm_kv_page_bytes %u", st.sched.page_size);
	M("kv_pages_peak", "gauge", "Most KV pages in use after a step.",
	  "kvmm_kv_pages_peak %llu", (unsigned long long)st.sched.peak_pages);
	M("kv_bytes_used", "gauge", "KV page bytes in use after the last "
	  "step, every policy's cache.", "kvmm_kv_bytes_used %llu",
	  (unsigned long long)st.sched.bytes_used);
	M("kv_bytes_budget", "gauge", "KV page bytes the memory budget "
	  "maps.", "kvmm_kv_bytes_budget %llu",
	  (unsigned long long)st.sched.budget_bytes);
	M("kv_policies", "gauge", "KV policies in use: a cache each.",
	  "kvmm_kv_policies %d", st.sched.caches);
	M("prefill_chunks_total", "counter", "Prompt chunks that did not end "
	  "their prompt (chunked prefill).", "kvmm_prefill_chunks_total %llu",
	  (unsigned long long)st.sched.chunks);
	M("running_peak", "gauge", "Most sequences in one step.",
	  "kvmm_running_peak %d", st.sched.peak_running);
	M("running_sum_total", "counter", "Sequences of each step, summed "
	  "(over kvmm_steps_total: the mean batch).",
	  "kvmm_running_sum_total %llu",
	  (unsigned long long)st.sched.sum_running);
	M("preemptions_total", "counter", "Requests released and queued "
	  "again for lack of pages.", "kvmm_preemptions_total %llu",
	  (unsigned long long)st.sched.preemptions);
	M("swaps_out_total", "counter", "Preemptions whose pages went to the "
	  "swap file.", "kvmm_swaps_out_total %llu",
	  (unsigned long long)st.sched.swaps_out);
	M("swaps_in_total", "counter", "Swapped requests read back in.",
	  "kvmm_swaps_in_total %llu", (unsigned long long)st.sched.swaps_in);
	M("swap_bytes_out_total", "counter", "Swap file bytes written.",
	  "kvmm_swap_bytes_out_total %llu",
	  (unsigned long long)st.sched.swap_bytes_out);
	M("swap_bytes_in_total", "counter", "Swap file bytes read.",
	  "kvmm_swap_bytes_in_total %llu",
	  (unsigned long long)st.sched.swap_bytes_in);
	M("swap_fallbacks_total", "counter", "Swaps that failed and were "
	  "recomputed instead.", "kvmm_swap_fallbacks_total %llu",
	  (unsigned long long)st.sched.swap_fallbacks);
	M("rollbacks_total", "counter", "Prompts of a refused step queued "
	  "again.", "kvmm_rollbacks_total %llu",
	  (unsigned long long)st.sched.rollbacks);
	M("compactions_total", "counter", "Physical compactions.",
	  "kvmm_compactions_total %llu",
	  (unsigned long long)st.sched.compactions);
	M("granules_released_total", "counter", "Granules compaction gave "
	  "back.", "kvmm_granules_released_total %llu",
	  (unsigned long long)st.sched.granules_released);
	M("steps_total", "counter", "Executor steps.", "kvmm_steps_total %llu",
	  (unsigned long long)st.sched.steps);
	M("prompt_tokens_total", "counter", "Prompt tokens prefilled, "
	  "recomputed ones included.", "kvmm_prompt_tokens_total %llu",
	  (unsigned long long)st.sched.prefill_tokens);
	M("prefill_seconds_total", "counter", "Executor time in prompt "
	  "batches (over it, kvmm_prompt_tokens_total: the prefill rate).",
	  "kvmm_prefill_seconds_total %.6f", st.prefill_s);
	M("kv_held_bytes_total", "counter", "Page bytes of each request "
	  "right after its prefill, summed.", "kvmm_kv_held_bytes_total %llu",
	  (unsigned long long)st.sched.held_bytes);
	M("kv_full_bytes_total", "counter", "What the full policy would have "
	  "held for the same requests (over kvmm_kv_held_bytes_total: the "
	  "compression reached).", "kvmm_kv_full_bytes_total %llu",
	  (unsigned long long)st.sched.full_bytes);
	M("generation_tokens_total", "counter", "Tokens generated.",
	  "kvmm_generation_tokens_total %llu",
	  (unsigned long long)st.sched.generated);
	M("generation_tokens_per_second", "gauge", "Tokens generated per "
	  "second over the last 10 s.", "kvmm_generation_tokens_per_second "
	  "%.2f", st.tok_s);
	fprintf(f, "# HELP kvmm_requests_finished_total Requests ended, by "
		"reason.\n# TYPE kvmm_requests_finished_total counter\n"
		"kvmm_requests_finished_total{reason=\"stop\"} %llu\n"
		"kvmm_requests_finished_total{reason=\"length\"} %llu\n"
		"kvmm_requests_finished_total{reason=\"cancelled\"} %llu\n"
		"kvmm_requests_finished_total{reason=\"failed\"} %llu\n",
		(unsigned long long)st.finished_stop,
		(unsigned long long)st.finished_length,
		(unsigned long long)st.cancelled,
		(unsigned long long)st.failed);
	fprintf(f, "# HELP kvmm_http_responses_total HTTP responses, by "
		"status class.\n# TYPE kvmm_http_responses_total counter\n"
		"kvmm_http_responses_total{code=\"2xx\"} %llu\n"
		"kvmm_http_responses_total{code=\"4xx\"} %llu\n"
		"kvmm_http_responses_total{code=\"5xx\"} %llu\n",
		(unsigned long long)st.http[0], (unsigned long long)st.http[1],
		(unsigned long long)st.http[2]);
#undef M
	fclose(f);
	return buf;
}

static enum MHD_Result route(struct llm_server *s, struct MHD_Connection *c,
			     const char *url, const char *method,
			     const struct srv_conn *sc)
{
	bool get = !strcmp(method, "GET"), post = !strcmp(method, "POST");
	bool stopping;
	json_t *j;

	if (!strcmp(url, "/v1/completions") ||
	    !strcmp(url, "/v1/chat/completions")) {
		if (!post)
			goto not_allowed;
		return completion(s, c, url[4] == 'c' && url[5] == 'h' ?
				  LLM_SERVE_CHAT : LLM_SERVE_COMPLETIONS, sc);
	}
	if (!strcmp(url, "/health")) {
		if (!get)
			goto not_allowed;
		pthread_mutex_lock(&s->lock);
		stopping = s->stopping;
		pthread_mutex_unlock(&s->lock);
		return reply_json(s, c, stopping ? 503 : 200,
				  json_pack("{s:s}", "status", stopping ?
					    "stopping" : "ok"));
	}
	if (!strcmp(url, "/metrics")) {
		if (!get)
			goto not_allowed;
		return reply(s, c, 200, "text/plain; version=0.0.4",
			     metrics_text(s));
	}
	if (!strcmp(url, "/v1/models")) {
		if (!get)
			goto not_allowed;
		j = json_pack("{s:s, s:[{s:s, s:s, s:I, s:s, s:i, s:i, s:s}]}",
			      "object", "list", "data", "id", s->name,
			      "object", "model", "created",
			      (json_int_t)s->created, "owned_by", "kvmm",
			      "max_model_len", s->max_tok, "vocab_size",
			      (int)s->m->cfg.n_vocab, "policy",
			      s->policy_spec);
		return reply_json(s, c, 200, j);
	}
	return reply_errf(s, c, 404, "not_found_error", "not_found", NULL,
			  "no such endpoint: the server has /v1/completions, "
			  "/v1/chat/completions, /v1/models, /health and "
			  "/metrics");
not_allowed:
	return reply_errf(s, c, 405, "invalid_request_error",
			  "method_not_allowed", NULL, "method not allowed "
			  "on this endpoint");
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c,
				  const char *url, const char *method,
				  const char *version, const char *data,
				  size_t *size, void **con_cls)
{
	struct llm_server *s = cls;
	struct srv_conn *sc = *con_cls;
	char msg[96];

	(void)version;
	if (!sc) {
		const char *cl = MHD_lookup_connection_value(c,
				MHD_HEADER_KIND, "Content-Length");

		sc = calloc(1, sizeof(*sc));
		if (!sc)
			return MHD_NO;
		*con_cls = sc;
		if (cl && strtoull(cl, NULL, 10) > s->o.max_body) {
			sc->too_big = true;
			snprintf(msg, sizeof(msg), "the body is over the "
				 "limit of %zu bytes", s->o.max_body);
			return reply_errf(s, c, 413, "invalid_request_error",
					  "body_too_large", NULL, msg);
		}
		return MHD_YES;
	}
	if (*size) {
		if (!sc->too_big && sc->len + *size > s->o.max_body) {
			sc->too_big = true;
			free(sc->body);
			sc->body = NULL;
			sc->len = sc->cap = 0;
		}
		if (!sc->too_big) {
			if (sc->len + *size + 1 > sc->cap) {
				size_t cap = (sc->len + *size + 1) * 2;
				char *b;

				cap = cap > s->o.max_body + 1 ?
					s->o.max_body + 1 : cap;
				b = realloc(sc->body, cap);
				if (!b)
					return MHD_NO;
				sc->body = b;
				sc->cap = cap;
			}
			memcpy(sc->body + sc->len, data, *size);
			sc->len += *size;
		}
		*size = 0;
		return MHD_YES;
	}
	if (sc->too_big) {
		snprintf(msg, sizeof(msg), "the body is over the limit of %zu "
			 "bytes", s->o.max_body);
		return reply_errf(s, c, 413, "invalid_request_error",
				  "body_too_large", NULL, msg);
	}
	return route(s, c, url, method, sc);
}

static void on_done(void *cls, struct MHD_Connection *c, void **con_cls,
		    enum MHD_RequestTerminationCode toe)
{
	struct srv_conn *sc = *con_cls;

	(void)cls;
	(void)c;
	(void)toe;
	if (sc) {
		free(sc->body);
		free(sc);
		*con_cls = NULL;
	}
}

/* ---- lifecycle ---- */

static int srv_threads(const struct llm_serve_opts *o)
{
	cpu_set_t set;

	if (o->threads > 0)
		return o->threads;
	if (!sched_getaffinity(0, sizeof(set), &set) && CPU_COUNT(&set) > 0)
		return CPU_COUNT(&set);
	return 1;
}

static int srv_exec(struct llm_server *s, char *err, size_t errlen)
{
	const struct llm_model *m = s->m;
	int ret;

	if (s->o.cuda) {
#ifdef KVMM_HAVE_CUDA
		struct llm_cuda_opts co = { 0 };

		ret = llm_cuda_load(&m->cfg, &m->w, &co, &s->gpu, err, errlen);
#else
		snprintf(err, errlen, "--device cuda: built without CUDA");
		return -ENODEV;
#endif
	} else {
		ret = llm_cpu_load(&m->cfg, &m->w, srv_threads(&s->o), &s->cpu,
				   err, errlen);
	}
	if (ret)
		return ret;
	s->z = malloc((size_t)s->o.max_seqs * m->cfg.n_vocab * sizeof(float));
	s->u = malloc((size_t)s->o.max_seqs * sizeof(float));
	return s->z && s->u ? 0 : -ENOMEM;
}

/* a cache of policy @p, of the server's slots, context and budget */
static int srv_cache_open(struct llm_server *s, const struct llm_policy *p,
			  struct llm_kv **kv, char *err, size_t errlen)
{
	struct llm_kv_policy_opts ko = { .n_seq = s->o.max_seqs,
					 .max_tok = s->max_tok + 1,
					 .device = s->o.cuda ? 0 : -1,
					 .budget = s->o.budget,
					 /* the engine thread alone runs both: the
					  * attention on the executor's threads */
					 .pool = s->cpu ? llm_cpu_pool(s->cpu)
							: NULL };

	return llm_kv_policy_open(&s->m->cfg, p, &ko, kv, err, errlen);
}

/* the cache of --policy and the scheduler */
static int srv_cache(struct llm_server *s, char *err, size_t errlen)
{
	struct llm_sched_opts so = { .max_step_tokens = s->o.step_tokens,
				     .reserve = s->o.reserve > 0 ?
						s->o.reserve : -1.0f,
				     .no_chunk = s->o.no_chunk,
				     .preempt = s->o.preempt,
				     .swap_dir = s->o.swap_dir };
	struct srv_pol *p = &s->pols[0];
	int ret;

	pol_key(&s->pol, p->key, sizeof(p->key));
	p->pol = s->pol;
	s->n_pols = 1;
	ret = srv_cache_open(s, &s->pol, &p->kv, err, errlen);
	if (ret)
		return ret;
	ret = llm_sched_create(p->kv, &so, eng_step, s, &s->sched);
	if (ret == -EOPNOTSUPP && so.preempt == LLM_SCHED_PREEMPT_SWAP)
		snprintf(err, errlen, "--preempt swap: the CUDA device cache "
			 "cannot swap yet; use --preempt recompute or auto");
	else if (ret)
		snprintf(err, errlen, "scheduler: %s%s", strerror(-ret),
			 so.preempt == LLM_SCHED_PREEMPT_SWAP ?
				 " (making the swap file)" : "");
	return ret;
}

static int srv_listen(struct llm_server *s, char *err, size_t errlen)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC,
				  .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_PASSIVE | AI_NUMERICSERV };
	struct addrinfo *ai = NULL;
	unsigned int flags = MHD_USE_THREAD_PER_CONNECTION |
			     MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL |
			     MHD_USE_ITC | MHD_USE_ERROR_LOG;
	const union MHD_DaemonInfo *di;
	char port[16];
	int ret;

	snprintf(port, sizeof(port), "%d", s->o.port < 0 ? 0 : s->o.port);
	ret = getaddrinfo(s->o.host, port, &hints, &ai);
	if (ret) {
		snprintf(err, errlen, "--host %s: %s", s->o.host,
			 gai_strerror(ret));
		return -EINVAL;
	}
	if (ai->ai_family == AF_INET6)
		flags |= MHD_USE_IPv6;
	s->d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, s,
				MHD_OPTION_SOCK_ADDR, ai->ai_addr,
				MHD_OPTION_NOTIFY_COMPLETED, on_done, s,
				MHD_OPTION_CONNECTION_LIMIT,
				(unsigned int)s->o.max_conns,
				MHD_OPTION_CONNECTION_TIMEOUT, 300U,
				MHD_OPTION_THREAD_STACK_SIZE,
				(size_t)(512 << 10),
				MHD_OPTION_LISTENING_ADDRESS_REUSE, 1U,
				MHD_OPTION_END);
	freeaddrinfo(ai);
	if (!s->d) {
		snprintf(err, errlen, "cannot listen on %s port %s", s->o.host,
			 port);
		return -EADDRINUSE;
	}
	di = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
	s->port = di ? di->port : s->o.port;
	return 0;
}

static void srv_free(struct llm_server *s)
{
	llm_sched_destroy(s->sched);
	for (int i = 0; i < s->n_pols; i++)
		llm_kv_destroy(s->pols[i].kv);
	llm_cpu_free(s->cpu);
#ifdef KVMM_HAVE_CUDA
	llm_cuda_free(s->gpu);
#endif
	free(s->z);
	free(s->u);
	free(s->active);
	free(s->byid);
	pthread_mutex_destroy(&s->lock);
	pthread_cond_destroy(&s->wake);
	free(s);
}

/**
 * llm_serve_start() - load the executor, open the cache and listen
 * @m: the model, open for the server's whole life
 * @o: options, or NULL for the defaults
 * @out: the running server; llm_serve_stop() stops and frees it
 * @err: a failure in words
 * @errlen: bytes of @err
 *
 * Return: 0; -EINVAL (an option out of range, a bad policy or host);
 * -EADDRINUSE (cannot listen); the executor's or the cache's -errno.
 */
int llm_serve_start(const struct llm_model *m, const struct llm_serve_opts *o,
		    struct llm_server **out, char *err, size_t errlen)
{
	struct llm_server *s = calloc(1, sizeof(*s));
	const char *base;
	int ret;

	if (!s)
		return -ENOMEM;
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->wake, NULL);
	s->inbox_tail = &s->inbox;
	s->m = m;
	if (o)
		s->o = *o;
	if (!s->o.host)
		s->o.host = "127.0.0.1";
	if (!s->o.port)
		s->o.port = 8000;
	if (!s->o.budget)
		s->o.budget = 256ULL << 20;
	if (!s->o.max_seqs)
		s->o.max_seqs = 64;
	if (!s->o.step_tokens)
		s->o.step_tokens = 2048;
	if (!s->o.reserve)
		s->o.reserve = 1.0f;
	if (!s->o.max_body)
		s->o.max_body = LLM_SERVE_MAX_BODY;
	if (!s->o.max_conns)
		s->o.max_conns = 512;
	if (!s->o.default_max_tokens)
		s->o.default_max_tokens = 16;
	s->max_tok = s->o.max_model_len ? s->o.max_model_len :
		     (int)(m->cfg.n_ctx < 4096 ? m->cfg.n_ctx : 4096);
	ret = -EINVAL;
	if (s->max_tok < 2 || (uint32_t)s->max_tok > m->cfg.n_ctx ||
	    s->o.max_seqs < 1 || s->o.reserve > 1 || s->o.port > 65535) {
		snprintf(err, errlen, "an option is out of range (context "
			 "%d of the model's %u, %d sequences)", s->max_tok,
			 m->cfg.n_ctx, s->o.max_seqs);
		goto fail;
	}
	if (llm_policy_parse(s->o.policy ? s->o.policy : "full", &s->pol, err,
			     errlen))
		goto fail;
	llm_policy_format(&s->pol, s->policy_spec, sizeof(s->policy_spec));
	base = strrchr(m->path, '/');
	snprintf(s->name, sizeof(s->name), "%.255s", s->o.name ? s->o.name :
		 base ? base + 1 : m->path);
	if (m->tok) {
		s->has_chat = m->tok->chat_template &&
			      !llm_chat_detect(m->tok->chat_template, &s->chat,
					       &s->chat_sys,
					       &s->chat_sys_len);
		s->stop_id[0] = m->tok->eos_id;
		s->stop_id[1] = llm_tok_lookup(m->tok, "<|im_end|>");
		s->stop_id[2] = llm_tok_lookup(m->tok, "<|eot_id|>");
	} else {
		s->stop_id[0] = s->stop_id[1] = s->stop_id[2] = -1;
	}
	for (int i = 0; i < LLM_MODEL_MAX_EOS; i++)
		s->stop_id[3 + i] = i < m->gen.n_eos ? m->gen.eos[i] : -1;
	ret = srv_exec(s, err, errlen);
	if (ret) {
		if (!*err)
			snprintf(err, errlen, "executor: %s", strerror(-ret));
		goto fail;
	}
	ret = srv_cache(s, err, errlen);
	if (ret)
		goto fail;
	s->created = time(NULL);
	ret = pthread_create(&s->engine, NULL, eng_main, s);
	if (ret) {
		snprintf(err, errlen, "engine thread: %s", strerror(ret));
		ret = -ret;
		goto fail;
	}
	s->engine_up = true;
	ret = srv_listen(s, err, errlen);
	if (ret)
		goto fail;
	*out = s;
	return 0;
fail:
	if (s->engine_up) {
		pthread_mutex_lock(&s->lock);
		s->quit = true;
		pthread_cond_signal(&s->wake);
		pthread_mutex_unlock(&s->lock);
		pthread_join(s->engine, NULL);
	}
	srv_free(s);
	return ret;
}

/**
 * llm_serve_port() - the TCP port the server listens on
 * @s: the server
 *
 * Return: the port (the one picked when the options asked for any).
 */
int llm_serve_port(const struct llm_server *s)
{
	return s->port;
}

/**
 * llm_serve_stats() - a snapshot of the server's counters
 * @s: the server
 * @st: filled
 */
void llm_serve_stats(struct llm_server *s, struct llm_serve_stats *st)
{
	double t = now_s(), t0 = 0;
	uint64_t n0 = 0, n1;

	pthread_mutex_lock(&s->lock);
	*st = s->st;
	/* tokens/s: from the oldest sample inside the window to now */
	n1 = s->rate_n[s->rate_i];
	for (int k = 1; k <= SRV_RATE_N; k++) {
		int i = (s->rate_i + k) % SRV_RATE_N;

		if (s->rate_t[i] && t - s->rate_t[i] <= SRV_RATE_S) {
			t0 = s->rate_t[i];
			n0 = s->rate_n[(i + SRV_RATE_N - 1) % SRV_RATE_N];
			break;
		}
	}
	st->tok_s = t0 ? (n1 - n0) / (t - t0 > 0.25 ? t - t0 : 0.25) : 0;
	pthread_mutex_unlock(&s->lock);
}

/**
 * llm_serve_stop() - stop gracefully and free the server
 * @s: the server, or NULL
 * @grace_s: seconds the requests in flight may take to finish; those
 *	still running then are cancelled (their clients get an error)
 *
 * New requests get 503 at once and no new connection is accepted; then
 * the engine drains, the connections close, the threads are joined.
 */
void llm_serve_stop(struct llm_server *s, double grace_s)
{
	double t0 = now_s();
	MHD_socket ls;
	bool busy;

	if (!s)
		return;
	pthread_mutex_lock(&s->lock);
	s->stopping = true;
	pthread_mutex_unlock(&s->lock);
	ls = MHD_quiesce_daemon(s->d);
	if (ls != MHD_INVALID_SOCKET)
		close(ls);
	for (;;) {
		pthread_mutex_lock(&s->lock);
		busy = s->inbox || s->busy;
		if (busy && now_s() - t0 >= grace_s)
			s->abort = true;
		pthread_cond_signal(&s->wake);
		pthread_mutex_unlock(&s->lock);
		if (!busy || now_s() - t0 >= grace_s + 5)
			break;
		usleep(20000);
	}
	/* the last responses leave on their connections' threads */
	MHD_stop_daemon(s->d);
	pthread_mutex_lock(&s->lock);
	s->quit = true;
	pthread_cond_signal(&s->wake);
	pthread_mutex_unlock(&s->lock);
	pthread_join(s->engine, NULL);
	srv_free(s);
}
