// SPDX-License-Identifier: MIT
/*
 * check_serve.c - `kvmm serve` (model/serve/): the request parser alone,
 * then the server started in this process on a free port with the default
 * model (models/, `make model`, or KVMM_MODEL=path; the tests that need
 * it are skipped without it) and driven over real sockets: 64 concurrent
 * greedy requests against `kvmm generate`'s output, server-sent events,
 * malformed and oversized bodies, unknown endpoints and methods, a client
 * that disconnects mid-stream (its sequence must leave the scheduler), a
 * graceful stop.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "gguf_writer.h"
#include "kvtest.h"
#include "model.h"
#include "request.h"
#include "server.h"

#define NREQ 64		/* concurrent requests of the greedy test */
#define NTOK 8		/* tokens each generates at most */

/* ---- the parser alone ---- */

static int parse(enum llm_serve_api api, const char *body,
		 struct llm_serve_req *r, struct llm_serve_err *e)
{
	return llm_serve_parse(api, body, strlen(body), r, e);
}

START_TEST(test_serve_parse)
{
	static const struct {
		enum llm_serve_api api;
		const char *body, *param;
	} bad[] = {
		{ LLM_SERVE_COMPLETIONS, "{\"prompt\":", NULL },
		{ LLM_SERVE_COMPLETIONS, "[1, 2]", NULL },
		{ LLM_SERVE_COMPLETIONS, "{}", "prompt" },
		{ LLM_SERVE_COMPLETIONS, "{\"prompt\": 3}", "prompt" },
		{ LLM_SERVE_COMPLETIONS, "{\"prompt\": [\"a\", \"b\"]}",
		  "prompt" },
		{ LLM_SERVE_COMPLETIONS, "{\"prompt\": [1, -2]}", "prompt" },
		{ LLM_SERVE_COMPLETIONS, "{\"prompt\": \"a\", \"n\": 2}", "n" },
		{ LLM_SERVE_COMPLETIONS, "{\"prompt\": \"a\", \"max_tokens\": "
		  "\"8\"}", "max_tokens" },
		{ LLM_SERVE_COMPLETIONS, "{\"prompt\": \"a\", \"max_tokens\": "
		  "0}", "max_tokens" },
		{ LLM_SERVE_COMPLETIONS, "{\"prompt\": \"a\", \"max_tokens\": "
		  "1.5}", "max_tokens" },
		{ LLM_SERVE_COMPLETIONS, "{\"prompt\": \"a\", \"temperature\": "
		  "3}", "temperature" },
		{ LLM_SERVE_COMPLETIONS, "{\"prompt\": \"a\", \"top_p\": 0}",
		  "top_p" },
		{ LLM_SERVE_COMPLETIONS, "{\"prompt\": \"a\", \"stream\": 1}",
		  "stream" },
		{ LLM_SERVE_COMPLETIONS, "{\"prompt\": \"a\", \"stop\": [\"a\","
		  "\"b\",\"c\",\"d\",\"e\"]}", "stop" },
		{ LLM_SERVE_COMPLETIONS, "{\"prompt\": \"a\", \"stop\": \"\"}",
		  "stop" },
		{ LLM_SERVE_COMPLETIONS, "{\"prompt\": \"a\", \"logprobs\": 3}",
		  "logprobs" },
		{ LLM_SERVE_COMPLETIONS, "{\"prompt\": \"a\", \"echo\": true}",
		  "echo" },
		{ LLM_SERVE_COMPLETIONS, "{\"prompt\": \"a\", \"stream_options\""
		  ": {\"include_usage\": true}}", "stream_options" },
		{ LLM_SERVE_COMPLETIONS, "{\"prompt\": \"a\", \"prompt\": \"b\"}",
		  NULL },
		{ LLM_SERVE_CHAT, "{\"messages\": []}", "messages" },
		{ LLM_SERVE_CHAT, "{\"messages\": [{\"role\": \"robot\", "
		  "\"content\": \"x\"}]}", "messages" },
		{ LLM_SERVE_CHAT, "{\"messages\": [{\"role\": \"user\"}]}",
		  "messages" },
		{ LLM_SERVE_CHAT, "{\"messages\": [{\"role\": \"user\", "
		  "\"content\": [{\"type\": \"image_url\"}]}]}", "messages" },
		{ LLM_SERVE_CHAT, "{\"messages\": [{\"role\": \"user\", "
		  "\"content\": \"x\"}], \"tools\": []}", "tools" },
	};
	struct llm_serve_req r;
	struct llm_serve_err e;
	char *j;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memset(&e, 0, sizeof(e));
		ck_assert_msg(parse(bad[i].api, bad[i].body, &r, &e) ==
			      -EINVAL, "accepted: %s", bad[i].body);
		ck_assert_int_eq(e.status, 400);
		ck_assert_str_eq(e.param, bad[i].param ? bad[i].param : "");
		ck_assert(e.message[0]);
		llm_serve_req_free(&r);
	}
	ck_assert_int_eq(parse(LLM_SERVE_COMPLETIONS, "{\"model\": \"m\", "
			       "\"prompt\": [\"hi\"], \"max_tokens\": 7, "
			       "\"temperature\": 0, \"top_p\": 0.5, \"seed\": "
			       "-3, \"stop\": [\"x\", \"yz\"], \"stream\": "
			       "true, \"stream_options\": {\"include_usage\": "
			       "true}, \"n\": 1, \"policy\": \"diffkv\", "
			       "\"ignore_eos\": true, \"user\": \"u\", "
			       "\"logprobs\": null, \"presence_penalty\": 0}",
			       &r, &e), 0);
	ck_assert_str_eq(r.model, "m");
	ck_assert_str_eq(r.prompt, "hi");
	ck_assert_int_eq(r.max_tokens, 7);
	ck_assert(r.temperature == 0 && r.top_p == 0.5f);
	ck_assert(r.has_seed && r.seed == (uint64_t)-3);
	ck_assert_int_eq(r.n_stop, 2);
	ck_assert_str_eq(r.stop[1], "yz");
	ck_assert(r.stream && r.include_usage && r.ignore_eos);
	ck_assert_str_eq(r.policy, "diffkv");
	llm_serve_req_free(&r);
	ck_assert_int_eq(parse(LLM_SERVE_COMPLETIONS, "{\"prompt\": [1, 2, "
			       "3]}", &r, &e), 0);
	ck_assert_int_eq(r.n_ids, 3);
	ck_assert_int_eq(r.ids[2], 3);
	ck_assert(r.temperature == 1 && !r.max_tokens && !r.stream);
	llm_serve_req_free(&r);
	ck_assert_int_eq(parse(LLM_SERVE_CHAT, "{\"messages\": [{\"role\": "
			       "\"developer\", \"content\": \"s\"}, {\"role\": "
			       "\"user\", \"content\": [{\"type\": \"text\", "
			       "\"text\": \"a\"}, {\"type\": \"text\", "
			       "\"text\": \"b\"}]}], \"max_completion_tokens\""
			       ": 5}", &r, &e), 0);
	ck_assert_int_eq(r.n_msgs, 2);
	ck_assert_str_eq(r.msgs[0].role, "system");
	ck_assert_str_eq(r.msgs[1].content, "ab");
	ck_assert_int_eq(r.max_tokens, 5);
	llm_serve_req_free(&r);
	/* the error body is OpenAI's shape */
	llm_serve_err_set(&e, 400, "invalid_request_error", "c", "p", "m %d",
			  1);
	j = llm_serve_err_json(&e);
	ck_assert_str_eq(j, "{\"error\":{\"message\":\"m 1\",\"type\":"
			 "\"invalid_request_error\",\"param\":\"p\",\"code\":"
			 "\"c\"}}");
	free(j);
}
END_TEST

/* ---- the server over sockets ---- */

struct tserver {
	struct llm_model *m;
	struct llm_server *s;
	int port;
};

static int server_up(const char *test, struct tserver *t,
		     const struct llm_serve_opts *o)
{
	struct llm_serve_opts d = { .port = -1, .threads = 2,
				    .budget = 64ULL << 20, .max_seqs = NREQ,
				    .max_model_len = 512 };
	char err[LLM_GGUF_ERR_MAX] = "";
	FILE *f = fopen(model_path(), "rb");

	if (!f) {
		kvtest_skip(test, "%s absent (make model fetches it)",
			    model_path());
		return -ENOENT;
	}
	fclose(f);
	ck_assert_msg(!llm_model_open(model_path(), &t->m, err, sizeof(err)),
		      "%s", err);
	ck_assert_msg(!llm_serve_start(t->m, o ? o : &d, &t->s, err,
				       sizeof(err)), "%s", err);
	t->port = llm_serve_port(t->s);
	ck_assert_int_gt(t->port, 0);
	return 0;
}

static void server_down(struct tserver *t, double grace)
{
	llm_serve_stop(t->s, grace);
	llm_model_close(t->m);
}

static int dial(int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET,
				 .sin_port = htons(port) };
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	ck_assert_int_ge(fd, 0);
	inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
	ck_assert_int_eq(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	return fd;
}

static void send_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);

		if (w <= 0)
			return;	/* the server may close early (413) */
		p += w;
		n -= (size_t)w;
	}
}

/* struct resp - a whole response, read to the connection's close */
struct resp {
	int status;
	char *raw;	/* headers and body */
	char *body;	/* into @raw */
	size_t len;
};

static void resp_free(struct resp *r)
{
	free(r->raw);
	memset(r, 0, sizeof(*r));
}

static void read_resp(int fd, struct resp *r)
{
	size_t cap = 8192;
	ssize_t n;

	r->raw = malloc(cap);
	r->len = 0;
	ck_assert_ptr_nonnull(r->raw);
	while ((n = recv(fd, r->raw + r->len, cap - r->len - 1, 0)) > 0) {
		r->len += (size_t)n;
		if (cap - r->len < 4096) {
			cap *= 2;
			r->raw = realloc(r->raw, cap);
			ck_assert_ptr_nonnull(r->raw);
		}
	}
	r->raw[r->len] = 0;
	r->status = 0;
	sscanf(r->raw, "HTTP/1.%*d %d", &r->status);
	r->body = strstr(r->raw, "\r\n\r\n");
	r->body = r->body ? r->body + 4 : r->raw + r->len;
}

/* one request on a fresh connection; Return: the status */
static int http(int port, const char *method, const char *path,
		const char *body, struct resp *r)
{
	char head[512];
	int fd = dial(port);

	snprintf(head, sizeof(head), "%s %s HTTP/1.1\r\nHost: localhost\r\n"
		 "Connection: close\r\nContent-Type: application/json\r\n"
		 "Content-Length: %zu\r\n\r\n", method, path,
		 body ? strlen(body) : 0);
	send_all(fd, head, strlen(head));
	if (body)
		send_all(fd, body, strlen(body));
	read_resp(fd, r);
	close(fd);
	return r->status;
}

/* an OpenAI error body: its "param", "code" present, "message" set */
static void check_error(const struct resp *r, int status)
{
	json_t *j, *e;

	ck_assert_msg(r->status == status, "status %d, not %d: %s", r->status,
		      status, r->body);
	j = json_loads(r->body, 0, NULL);
	ck_assert_msg(j != NULL, "not JSON: %s", r->body);
	e = json_object_get(j, "error");
	ck_assert(json_is_object(e));
	ck_assert(json_is_string(json_object_get(e, "message")));
	ck_assert(json_is_string(json_object_get(e, "type")));
	ck_assert(json_object_get(e, "param") != NULL);
	ck_assert(json_object_get(e, "code") != NULL);
	json_decref(j);
}

/*
 * `kvmm generate --json` of the prompts, the binary next to this runner,
 * under @policy (NULL: generate's default, full)
 */
static char **reference(const char *const *prompts, int n, int ntok,
			const char *policy)
{
	char self[PATH_MAX], cmd[PATH_MAX * 2 + 256], file[64], line[65536];
	char **out = calloc(n, sizeof(char *));
	FILE *f, *p;
	ssize_t l;
	int fd, got = 0;

	ck_assert_ptr_nonnull(out);
	l = readlink("/proc/self/exe", self, sizeof(self) - 1);
	ck_assert_int_gt(l, 0);
	self[l] = 0;
	*strrchr(self, '/') = 0;
	snprintf(file, sizeof(file), "/tmp/kvmm-serve-ref.XXXXXX");
	fd = mkstemp(file);
	ck_assert_int_ge(fd, 0);
	f = fdopen(fd, "w");
	for (int i = 0; i < n; i++) {
		json_t *o = json_pack("{s:s}", "prompt", prompts[i]);
		char *d = json_dumps(o, JSON_COMPACT);

		fprintf(f, "%s\n", d);
		free(d);
		json_decref(o);
	}
	fclose(f);
	snprintf(cmd, sizeof(cmd), "%s/kvmm generate --model %s --device cpu "
		 "--threads 2 --json --max-tokens %d --batch-file %s%s%s "
		 "2>/dev/null", self, model_path(), ntok, file,
		 policy ? " --policy " : "", policy ? policy : "");
	p = popen(cmd, "r");
	ck_assert_ptr_nonnull(p);
	while (fgets(line, sizeof(line), p)) {
		json_t *j = json_loads(line, 0, NULL), *ix, *tx;

		if (!j)
			continue;
		ix = json_object_get(j, "index");
		tx = json_object_get(j, "text");
		if (json_is_integer(ix) && json_is_string(tx) &&
		    json_integer_value(ix) < n) {
			out[json_integer_value(ix)] =
				strdup(json_string_value(tx));
			got++;
		}
		json_decref(j);
	}
	ck_assert_int_eq(pclose(p), 0);
	unlink(file);
	ck_assert_int_eq(got, n);
	return out;
}

struct job {
	int port;
	const char *prompt;
	const char *policy;	/* NULL: the server's */
	int ntok;		/* 0: NTOK */
	struct resp r;
};

static void *job_run(void *arg)
{
	struct job *j = arg;
	json_t *o = json_pack("{s:s, s:i, s:i}", "prompt", j->prompt,
			      "max_tokens", j->ntok ? j->ntok : NTOK,
			      "temperature", 0);
	char *body;

	if (j->policy)
		json_object_set_new(o, "policy", json_string(j->policy));
	body = json_dumps(o, JSON_COMPACT);

	json_decref(o);
	http(j->port, "POST", "/v1/completions", body, &j->r);
	free(body);
	return NULL;
}

/*
 * 64 requests at once, greedy: each one's text equals `kvmm generate`'s
 * for its prompt, its usage counts add up, and the scheduler ran them
 * together (more than one sequence a step).
 */
START_TEST(test_serve_greedy_64)
{
	static const char *const subj[8] = {
		"The capital of France is", "Water boils at",
		"My favourite colour is", "Once upon a time, there was",
		"The quick brown fox", "In 1492, Columbus",
		"The best way to learn C is", "Photosynthesis is",
	};
	char *prompts[NREQ], **ref;
	struct llm_serve_stats st;
	static struct job jobs[NREQ];
	pthread_t th[NREQ];
	struct tserver t;
	int bad = 0;

	if (server_up(__func__, &t, NULL))
		return;
	for (int i = 0; i < NREQ; i++) {
		ck_assert_int_gt(asprintf(&prompts[i], "%s%s", i >= 8 ?
					  (const char *[]){ "", " Note:",
					  " Q:", " A story.", " Hi.", " 1.",
					  " Facts:", " Well," }[i / 8] : "",
					  subj[i % 8]), 0);
		jobs[i] = (struct job){ .port = t.port, .prompt = prompts[i] };
	}
	for (int i = 0; i < NREQ; i++)
		ck_assert_int_eq(pthread_create(&th[i], NULL, job_run,
						&jobs[i]), 0);
	for (int i = 0; i < NREQ; i++)
		pthread_join(th[i], NULL);
	llm_serve_stats(t.s, &st);
	server_down(&t, 5);
	ref = reference((const char *const *)prompts, NREQ, NTOK, NULL);
	for (int i = 0; i < NREQ; i++) {
		json_t *j = json_loads(jobs[i].r.body, 0, NULL), *c, *u;
		const char *text;

		ck_assert_msg(jobs[i].r.status == 200, "request %d: %d %s", i,
			      jobs[i].r.status, jobs[i].r.body);
		ck_assert_ptr_nonnull(j);
		ck_assert_str_eq(json_string_value(json_object_get(j,
					"object")), "text_completion");
		c = json_array_get(json_object_get(j, "choices"), 0);
		text = json_string_value(json_object_get(c, "text"));
		ck_assert_ptr_nonnull(text);
		if (strcmp(text, ref[i])) {
			printf("request %d: '%s'\n  served    '%s'\n  generate  "
			       "'%s'\n", i, prompts[i], text, ref[i]);
			bad++;
		}
		u = json_object_get(j, "usage");
		ck_assert_int_eq(json_integer_value(json_object_get(u,
				 "total_tokens")),
				 json_integer_value(json_object_get(u,
				 "prompt_tokens")) +
				 json_integer_value(json_object_get(u,
				 "completion_tokens")));
		ck_assert_int_le(json_integer_value(json_object_get(u,
				 "completion_tokens")), NTOK);
		json_decref(j);
		resp_free(&jobs[i].r);
		free(prompts[i]);
		free(ref[i]);
	}
	free(ref);
	printf("greedy 64: %llu steps, peak %d sequences a step, %d of %d "
	       "texts differ from kvmm generate\n",
	       (unsigned long long)st.sched.steps, st.sched.peak_running,
	       bad, NREQ);
	ck_assert_int_eq(bad, 0);
	ck_assert_int_gt(st.sched.peak_running, 1);
	ck_assert_int_eq(st.sched.failed, 0);
	ck_assert_uint_eq(st.http[0], NREQ);
}
END_TEST

/* the events of a stream: its deltas joined, the finish, usage, [DONE] */
static void sse_parse(const char *body, bool chat, char *text, size_t cap,
		      char *finish, int *usage, bool *done, int *chunks)
{
	const char *p = body;

	*text = *finish = 0;
	*usage = -1;
	*done = false;
	*chunks = 0;
	while ((p = strstr(p, "data: "))) {
		const char *e = strstr(p, "\n\n");
		json_t *j, *c, *f, *u, *d;

		ck_assert_ptr_nonnull(e);
		p += 6;
		if (!strncmp(p, "[DONE]", 6)) {
			*done = true;
			break;
		}
		ck_assert(!*done);
		j = json_loadb(p, e - p, 0, NULL);
		ck_assert_msg(j != NULL, "event not JSON: %.*s", (int)(e - p),
			      p);
		ck_assert_str_eq(json_string_value(json_object_get(j,
					"object")), chat ?
				 "chat.completion.chunk" : "text_completion");
		u = json_object_get(j, "usage");
		if (u)
			*usage = (int)json_integer_value(json_object_get(u,
						"completion_tokens"));
		c = json_array_get(json_object_get(j, "choices"), 0);
		if (c) {
			d = chat ? json_object_get(json_object_get(c, "delta"),
						   "content") :
				   json_object_get(c, "text");
			if (json_is_string(d))
				strncat(text, json_string_value(d),
					cap - strlen(text) - 1);
			f = json_object_get(c, "finish_reason");
			if (json_is_string(f))
				snprintf(finish, 16, "%s",
					 json_string_value(f));
			(*chunks)++;
		}
		json_decref(j);
		p = e;
	}
}

/*
 * Server-sent events: chat and completions streams deliver, in order, the
 * same text as the same request without streaming, a finish_reason, the
 * usage chunk when asked, then [DONE].
 */
START_TEST(test_serve_stream)
{
	static const char *const req[2][2] = {
		{ "/v1/completions", "{\"prompt\": \"Water boils at\", "
		  "\"max_tokens\": 12, \"temperature\": 0%s}" },
		{ "/v1/chat/completions", "{\"messages\": [{\"role\": "
		  "\"user\", \"content\": \"What is 2+2?\"}], \"max_tokens\": "
		  "40, \"temperature\": 0%s}" },
	};
	char body[512], text[4096], finish[16];
	struct tserver t;
	struct resp r;
	int usage, chunks;
	bool done;

	if (server_up(__func__, &t, NULL))
		return;
	for (int k = 0; k < 2; k++) {
		json_t *j, *c, *x;
		const char *want;

		snprintf(body, sizeof(body), req[k][1], "");
		ck_assert_int_eq(http(t.port, "POST", req[k][0], body, &r),
				 200);
		j = json_loads(r.body, 0, NULL);
		ck_assert_ptr_nonnull(j);
		c = json_array_get(json_object_get(j, "choices"), 0);
		x = k ? json_object_get(json_object_get(c, "message"),
					"content") : json_object_get(c, "text");
		want = json_string_value(x);
		ck_assert_ptr_nonnull(want);
		snprintf(body, sizeof(body), req[k][1], ", \"stream\": true, "
			 "\"stream_options\": {\"include_usage\": true}");
		resp_free(&r);
		ck_assert_int_eq(http(t.port, "POST", req[k][0], body, &r),
				 200);
		ck_assert_ptr_nonnull(strstr(r.raw, "text/event-stream"));
		sse_parse(r.body, k, text, sizeof(text), finish, &usage,
			  &done, &chunks);
		printf("stream %s: %d chunks, finish %s, %d tokens: '%s'\n",
		       req[k][0], chunks, finish, usage, text);
		ck_assert_str_eq(text, want);
		ck_assert_str_eq(finish, json_string_value(json_object_get(c,
						"finish_reason")));
		ck_assert_int_eq(usage, json_integer_value(json_object_get(
			json_object_get(j, "usage"), "completion_tokens")));
		ck_assert(done);
		ck_assert_int_ge(chunks, 2);
		json_decref(j);
		resp_free(&r);
	}
	/* a stop string ends the text before it, "stop" */
	ck_assert_int_eq(http(t.port, "POST", "/v1/completions", "{\"prompt\": "
			      "\"1, 2, 3, 4,\", \"max_tokens\": 30, "
			      "\"temperature\": 0, \"stop\": \"7\", \"stream\""
			      ": true}", &r), 200);
	sse_parse(r.body, false, text, sizeof(text), finish, &usage, &done,
		  &chunks);
	printf("stop string: '%s' (%s)\n", text, finish);
	ck_assert_ptr_null(strchr(text, '7'));
	ck_assert_str_eq(finish, "stop");
	resp_free(&r);
	server_down(&t, 5);
}
END_TEST

/*
 * Every bad request gets its 4xx with an OpenAI error body, and the server
 * goes on serving: malformed JSON, wrong types, n > 1, another policy, an
 * unknown model, endpoint or method, a body over the limit (declared, or
 * sent without a length), a prompt longer than the context.
 */
START_TEST(test_serve_errors)
{
	static const struct {
		const char *method, *path, *body;
		int status;
	} bad[] = {
		{ "POST", "/v1/completions", "{\"prompt\": \"a\"", 400 },
		{ "POST", "/v1/completions", "\x01\xff garbage", 400 },
		{ "POST", "/v1/completions", "", 400 },
		{ "POST", "/v1/completions", "{\"prompt\": {}}", 400 },
		{ "POST", "/v1/completions", "{\"prompt\": \"a\", "
		  "\"max_tokens\": \"many\"}", 400 },
		{ "POST", "/v1/completions", "{\"prompt\": \"a\", \"n\": 3}",
		  400 },
		{ "POST", "/v1/completions", "{\"prompt\": \"a\", \"policy\": "
		  "\"kvcompress:rate=0.5\"}", 400 },
		{ "POST", "/v1/completions", "{\"prompt\": \"a\", \"policy\": "
		  "7}", 400 },
		{ "POST", "/v1/completions", "{\"prompt\": \"a\", \"policy\": "
		  "\"nonsense\"}", 400 },
		{ "POST", "/v1/completions", "{\"prompt\": [99999999]}", 400 },
		{ "POST", "/v1/completions", "{\"prompt\": \"a\", "
		  "\"max_tokens\": 100000}", 400 },
		{ "POST", "/v1/chat/completions", "{\"messages\": 1}", 400 },
		{ "POST", "/v1/completions", "{\"prompt\": \"a\", \"model\": "
		  "\"gpt-4\"}", 404 },
		{ "GET", "/v1/nothing", NULL, 404 },
		{ "GET", "/", NULL, 404 },
		{ "GET", "/v1/completions", NULL, 405 },
		{ "DELETE", "/v1/models", NULL, 405 },
		{ "POST", "/health", "{}", 405 },
	};
	struct llm_serve_opts o = { .port = -1, .threads = 2,
				    .budget = 16ULL << 20, .max_seqs = 4,
				    .max_model_len = 256, .max_body = 4096 };
	struct llm_serve_stats st;
	char head[256], *big;
	struct tserver t;
	struct resp r;
	int fd;

	if (server_up(__func__, &t, &o))
		return;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		http(t.port, bad[i].method, bad[i].path, bad[i].body, &r);
		check_error(&r, bad[i].status);
		resp_free(&r);
	}
	/* declared over the limit: refused before the body is read */
	big = malloc(8192);
	memset(big, 'a', 8191);
	big[8191] = 0;
	fd = dial(t.port);
	snprintf(head, sizeof(head), "POST /v1/completions HTTP/1.1\r\nHost: "
		 "x\r\nContent-Length: 1000000000\r\n\r\n");
	send_all(fd, head, strlen(head));
	send_all(fd, big, 8191);
	read_resp(fd, &r);
	close(fd);
	check_error(&r, 413);
	resp_free(&r);
	/* chunked, no length: refused when it passes the limit */
	fd = dial(t.port);
	snprintf(head, sizeof(head), "POST /v1/completions HTTP/1.1\r\nHost: "
		 "x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
		 "1fff\r\n");
	send_all(fd, head, strlen(head));
	send_all(fd, big, 8191);
	send_all(fd, "\r\n0\r\n\r\n", 7);
	read_resp(fd, &r);
	close(fd);
	check_error(&r, 413);
	resp_free(&r);
	/* a prompt over the context */
	big[4000] = 0;
	{
		json_t *j = json_pack("{s:s}", "prompt", big);
		char *b = json_dumps(j, JSON_COMPACT);

		http(t.port, "POST", "/v1/completions", b, &r);
		check_error(&r, 400);
		ck_assert_ptr_nonnull(strstr(r.body,
					     "context_length_exceeded"));
		free(b);
		json_decref(j);
		resp_free(&r);
	}
	free(big);
	/* a connection that sends half a request and goes away */
	fd = dial(t.port);
	send_all(fd, "POST /v1/completions HTTP/1.1\r\nContent-Length: 50\r\n"
		 "\r\n{\"pro", 58);
	close(fd);
	/* and the server still answers */
	ck_assert_int_eq(http(t.port, "GET", "/health", NULL, &r), 200);
	ck_assert_ptr_nonnull(strstr(r.body, "ok"));
	resp_free(&r);
	ck_assert_int_eq(http(t.port, "GET", "/v1/models", NULL, &r), 200);
	ck_assert_ptr_nonnull(strstr(r.body, "\"max_model_len\":256"));
	resp_free(&r);
	ck_assert_int_eq(http(t.port, "POST", "/v1/completions", "{\"prompt\": "
			      "\"Hello\", \"max_tokens\": 2}", &r), 200);
	resp_free(&r);
	ck_assert_int_eq(http(t.port, "GET", "/metrics", NULL, &r), 200);
	ck_assert_ptr_nonnull(strstr(r.body, "kvmm_requests_waiting 0"));
	ck_assert_ptr_nonnull(strstr(r.body, "kvmm_kv_pages{tier=\"high\"}"));
	ck_assert_ptr_nonnull(strstr(r.body, "kvmm_generation_tokens_total"));
	ck_assert_ptr_nonnull(strstr(r.body, "kvmm_preemptions_total 0"));
	/* what bench serve --url derives the prefill rate and compression from */
	{
		const char *p = strstr(r.body, "\nkvmm_prefill_seconds_total ");
		const char *h = strstr(r.body, "\nkvmm_kv_held_bytes_total ");
		const char *f = strstr(r.body, "\nkvmm_kv_full_bytes_total ");

		ck_assert_ptr_nonnull(p);
		ck_assert_ptr_nonnull(h);
		ck_assert_ptr_nonnull(f);
		ck_assert_double_gt(strtod(strchr(p + 1, ' '), NULL), 0.0);
		ck_assert_double_gt(strtod(strchr(h + 1, ' '), NULL), 0.0);
		ck_assert_double_ge(strtod(strchr(f + 1, ' '), NULL),
				    strtod(strchr(h + 1, ' '), NULL));
	}
	resp_free(&r);
	llm_serve_stats(t.s, &st);
	ck_assert_uint_ge(st.http[1], sizeof(bad) / sizeof(bad[0]) + 3);
	ck_assert_uint_eq(st.failed, 0);
	server_down(&t, 5);
}
END_TEST

/* wait up to 20 s for the engine to show @cancelled and nothing running */
static bool settled(struct tserver *t, uint64_t cancelled,
		    struct llm_serve_stats *st)
{
	for (int i = 0; i < 400; i++) {
		llm_serve_stats(t->s, st);
		if (st->cancelled == cancelled && !st->sched.running &&
		    !st->sched.waiting && !st->active)
			return true;
		usleep(50000);
	}
	return false;
}

/*
 * A client that disconnects: mid-stream, and while waiting for a response
 * without streaming. Each one's sequence is cancelled in the scheduler
 * and its pages go back: nothing runs afterwards, the pages in use fall
 * to zero.
 */
START_TEST(test_serve_disconnect)
{
	static const char body[] = "{\"prompt\": \"Tell me a long story.\", "
		"\"max_tokens\": 400, \"ignore_eos\": true, \"temperature\": "
		"0%s}";
	char req[512], buf[4096] = "";
	struct llm_serve_stats st;
	struct tserver t;
	int fd, n;

	if (server_up(__func__, &t, NULL))
		return;
	for (int k = 0; k < 2; k++) {
		char b[256];

		snprintf(b, sizeof(b), body, k ? "" : ", \"stream\": true");
		snprintf(req, sizeof(req), "POST /v1/completions HTTP/1.1\r\n"
			 "Host: x\r\nContent-Length: %zu\r\n\r\n%s",
			 strlen(b), b);
		fd = dial(t.port);
		send_all(fd, req, strlen(req));
		if (!k) {
			/* the first event: the sequence runs */
			n = 0;
			while (!strstr(buf, "data: ") &&
			       n < (int)sizeof(buf) - 1) {
				ssize_t r = recv(fd, buf + n,
						 sizeof(buf) - 1 - n, 0);

				ck_assert_int_gt(r, 0);
				n += (int)r;
				buf[n] = 0;
			}
		} else {
			/* running: the engine holds it */
			for (int i = 0; i < 200; i++) {
				llm_serve_stats(t.s, &st);
				if (st.sched.running)
					break;
				usleep(20000);
			}
		}
		llm_serve_stats(t.s, &st);
		ck_assert_int_eq(st.sched.running, 1);
		ck_assert_uint_gt(st.sched.pages_used, 0);
		close(fd);
		ck_assert_msg(settled(&t, (uint64_t)k + 1, &st), "request %d "
			      "not cancelled: %d running, %llu cancelled", k,
			      st.sched.running,
			      (unsigned long long)st.cancelled);
		printf("disconnect (%s): cancelled after %llu tokens, %llu "
		       "pages in use\n", k ? "waiting" : "streaming",
		       (unsigned long long)st.sched.generated,
		       (unsigned long long)st.sched.pages_used);
		ck_assert_int_eq(st.sched.cancelled, k + 1);
		ck_assert_uint_eq(st.sched.pages_used, 0);
		ck_assert_uint_lt(st.sched.generated, 400 * (k + 1));
	}
	server_down(&t, 5);
}
END_TEST

/*
 * A seeded sampled request repeats; `kvmm bench serve --url` (the binary
 * next to this runner) drives the server and every request completes
 * with its whole output.
 */
START_TEST(test_serve_seed_and_bench)
{
	static const char req[] = "{\"prompt\": \"Once upon a time\", "
		"\"max_tokens\": 12, \"temperature\": 0.9, \"top_p\": 0.95, "
		"\"seed\": 42}";
	char self[PATH_MAX], cmd[PATH_MAX + 256], line[4096], *a;
	struct tserver t;
	struct resp r;
	bool seen = false;
	ssize_t l;
	FILE *p;

	if (server_up(__func__, &t, NULL))
		return;
	ck_assert_int_eq(http(t.port, "POST", "/v1/completions", req, &r),
			 200);
	a = strdup(r.body);
	resp_free(&r);
	ck_assert_int_eq(http(t.port, "POST", "/v1/completions", req, &r),
			 200);
	/* the same text; the ids and times differ */
	ck_assert_str_eq(strstr(a, "\"choices\""),
			 strstr(r.body, "\"choices\""));
	free(a);
	resp_free(&r);
	l = readlink("/proc/self/exe", self, sizeof(self) - 1);
	ck_assert_int_gt(l, 0);
	self[l] = 0;
	*strrchr(self, '/') = 0;
	snprintf(cmd, sizeof(cmd), "%s/kvmm bench serve --url "
		 "http://127.0.0.1:%d --requests 6 --prompt-len 8-16 "
		 "--output-len 4-8 --concurrency 4 --json 2>&1", self, t.port);
	p = popen(cmd, "r");
	ck_assert_ptr_nonnull(p);
	while (fgets(line, sizeof(line), p)) {
		printf("bench serve --url: %.160s", line);
		if (strstr(line, "\"mode\": \"offline\"")) {
			ck_assert_ptr_nonnull(strstr(line, "\"completed\": 6,"));
			ck_assert_ptr_nonnull(strstr(line, "\"failed\": 0,"));
			seen = true;
		}
	}
	ck_assert_int_eq(pclose(p), 0);
	ck_assert(seen);
	server_down(&t, 5);
}
END_TEST

struct stop_job {
	struct tserver *t;
	struct resp r;
};

static void *slow_job(void *arg)
{
	struct stop_job *j = arg;

	http(j->t->port, "POST", "/v1/completions", "{\"prompt\": \"Hi\", "
	     "\"max_tokens\": 24, \"ignore_eos\": true}", &j->r);
	return NULL;
}

/*
 * A graceful stop: the request in flight completes, new ones get 503 or
 * find no listener, then everything is joined.
 */
START_TEST(test_serve_graceful_stop)
{
	struct llm_serve_stats st;
	struct stop_job j;
	struct tserver t;
	pthread_t th;
	json_t *o;

	if (server_up(__func__, &t, NULL))
		return;
	j.t = &t;
	ck_assert_int_eq(pthread_create(&th, NULL, slow_job, &j), 0);
	for (int i = 0; i < 200; i++) {
		llm_serve_stats(t.s, &st);
		if (st.sched.running)
			break;
		usleep(20000);
	}
	llm_serve_stop(t.s, 30);
	pthread_join(th, NULL);
	llm_model_close(t.m);
	ck_assert_int_eq(j.r.status, 200);
	o = json_loads(j.r.body, 0, NULL);
	ck_assert_ptr_nonnull(o);
	ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(o,
			 "usage"), "completion_tokens")), 24);
	json_decref(o);
	resp_free(&j.r);
}
END_TEST

/*
 * Per-request policies, mixed: four requests at once, one prompt of 107
 * tokens under full (the server's), diffkv with its own thresholds,
 * kvcompress and uniform K4V4, each in a cache of its policy within the
 * one budget, run in the same steps; each text equals `kvmm generate
 * --policy` of the prompt (greedy), and diffkv's and K4V4's differ from
 * full's (the policies were applied).
 * The policies a server runs are bounded: with LLM_SCHED_MAX_CACHES of
 * them in use, one more gets 400 too_many_policies, and the server goes
 * on serving.
 */
START_TEST(test_serve_mixed_policies)
{
	static const char *const pol[4] = { NULL, "diffkv:prune=0.1,quant=2",
					    "kvcompress:rate=2",
					    "uniform:tier=k4v4" };
	/* 107 tokens: past the policies' protected window of 64 */
	static const char prompt[] = "The history of the city is long and "
		"full of surprises. Merchants came from the south with spices, "
		"cloth and news of distant wars, and the people of the valley "
		"traded grain and wool in return. Over the centuries the town "
		"grew into a city of bridges, markets and small workshops, each "
		"street known for a craft. Bakers, smiths, weavers and scribes "
		"lived side by side, and their guilds argued about taxes and "
		"festivals. In the year of the great flood, the river rose "
		"above the old walls and";
	const char *prompts[1] = { prompt };
	char text_of[4][512];
	static struct job jobs[4];
	struct llm_serve_stats st;
	pthread_t th[4];
	struct tserver t;
	struct resp r;
	char body[256];

	if (server_up(__func__, &t, NULL))
		return;
	for (int i = 0; i < 4; i++) {
		jobs[i] = (struct job){ .port = t.port, .prompt = prompt,
					.policy = pol[i], .ntok = 24 };
		ck_assert_int_eq(pthread_create(&th[i], NULL, job_run,
						&jobs[i]), 0);
	}
	for (int i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
	llm_serve_stats(t.s, &st);
	printf("mixed policies: %d caches, %llu steps, peak %d sequences a "
	       "step\n", st.sched.caches, (unsigned long long)st.sched.steps,
	       st.sched.peak_running);
	ck_assert_int_eq(st.sched.caches, 4);
	ck_assert_int_gt(st.sched.peak_running, 1);
	ck_assert_int_eq(http(t.port, "GET", "/metrics", NULL, &r), 200);
	ck_assert_ptr_nonnull(strstr(r.body, "\nkvmm_kv_policies 4\n"));
	resp_free(&r);
	/* four more policies fill the server's; the ninth is refused */
	for (int i = 0; i < LLM_SCHED_MAX_CACHES - 4; i++) {
		snprintf(body, sizeof(body), "{\"prompt\": \"a\", \"max_tokens"
			 "\": 1, \"policy\": \"kvcompress:rate=%d\"}", 3 + i);
		ck_assert_int_eq(http(t.port, "POST", "/v1/completions", body,
				      &r), 200);
		resp_free(&r);
	}
	ck_assert_int_eq(http(t.port, "POST", "/v1/completions", "{\"prompt"
			      "\": \"a\", \"policy\": \"kvcompress:rate=50\"}",
			      &r), 400);
	check_error(&r, 400);
	ck_assert_ptr_nonnull(strstr(r.body, "too_many_policies"));
	resp_free(&r);
	/* a policy the server runs already is still served */
	ck_assert_int_eq(http(t.port, "POST", "/v1/completions", "{\"prompt"
			      "\": \"a\", \"max_tokens\": 2, \"policy\": "
			      "\"kvcompress:rate=3\"}", &r), 200);
	resp_free(&r);
	server_down(&t, 5);
	for (int i = 0; i < 4; i++) {
		char **ref = reference(prompts, 1, 24, pol[i]);
		json_t *j = json_loads(jobs[i].r.body, 0, NULL), *c;
		const char *text;

		ck_assert_msg(jobs[i].r.status == 200, "%s: %d %s",
			      pol[i] ? pol[i] : "full", jobs[i].r.status,
			      jobs[i].r.body);
		ck_assert_ptr_nonnull(j);
		c = json_array_get(json_object_get(j, "choices"), 0);
		text = json_string_value(json_object_get(c, "text"));
		ck_assert_ptr_nonnull(text);
		printf("%s: '%s'\n", pol[i] ? pol[i] : "full", text);
		ck_assert_msg(!strcmp(text, ref[0]), "%s: served '%s', "
			      "generate '%s'", pol[i] ? pol[i] : "full", text,
			      ref[0]);
		snprintf(text_of[i], sizeof(text_of[i]), "%s", text);
		json_decref(j);
		resp_free(&jobs[i].r);
		free(ref[0]);
		free(ref);
	}
	/* the policies were applied: diffkv's and K4V4's tokens are not
	 * full's on this prompt (kvcompress's are, over 24 tokens) */
	ck_assert_str_ne(text_of[1], text_of[0]);
	ck_assert_str_ne(text_of[3], text_of[0]);
}
END_TEST

Suite *suite_serve(void)
{
	Suite *s = suite_create("serve");
	TCase *tc = tcase_create("parse");
	TCase *th = tcase_create("http");

	KV_ADD(tc, test_serve_parse);
	suite_add_tcase(s, tc);
	KV_ADD(th, test_serve_greedy_64);
	KV_ADD(th, test_serve_mixed_policies);
	KV_ADD(th, test_serve_stream);
	KV_ADD(th, test_serve_errors);
	KV_ADD(th, test_serve_disconnect);
	KV_ADD(th, test_serve_seed_and_bench);
	KV_ADD(th, test_serve_graceful_stop);
	tcase_set_timeout(th, 300);
	suite_add_tcase(s, th);
	return s;
}
