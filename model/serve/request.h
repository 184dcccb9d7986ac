/* SPDX-License-Identifier: MIT */
/*
 * request.h - the OpenAI-compatible request of `kvmm serve`: a JSON body
 * turned into a plain struct, or into an OpenAI-style error. Pure: no
 * model, no tokenizer, no server; fuzzed by tests/fuzz/fuzz_request.c.
 * See Documentation/serve/http.rst.
 */
#ifndef LLM_SERVE_REQUEST_H
#define LLM_SERVE_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LLM_SERVE_MAX_STOP 4	/* stop strings of a request, as OpenAI */
#define LLM_SERVE_MAX_MSGS 256	/* messages of a chat request */

enum llm_serve_api {
	LLM_SERVE_COMPLETIONS,	/* POST /v1/completions */
	LLM_SERVE_CHAT,		/* POST /v1/chat/completions */
};

/**
 * struct llm_serve_msg - one chat message; strings owned by the request
 * @role: "system", "user" or "assistant" ("developer" reads as system)
 * @content: its text, parts of type "text" joined
 */
struct llm_serve_msg {
	char *role;
	char *content;
};

/**
 * struct llm_serve_req - one parsed request. Owned by the caller of
 * llm_serve_parse(), freed with llm_serve_req_free().
 * @api: which endpoint it was parsed for
 * @model: "model", or NULL when absent
 * @prompt: completions: the prompt as text, or NULL when given as tokens
 * @ids: completions: the prompt as token ids ([n_ids]), or NULL
 * @n_ids: token ids of @ids
 * @msgs: chat: [n_msgs] messages
 * @n_msgs: at least 1 for chat
 * @max_tokens: tokens to generate at most; 0: the server's default
 * @temperature: 0 .. 2 (1 when absent, as OpenAI); 0 is greedy
 * @top_p: (0, 1] (1)
 * @top_k: 0 (all) or more (an extension, as vLLM's)
 * @seed: the sampler's seed when @has_seed
 * @has_seed: "seed" was given
 * @stop: [n_stop] strings that end the output (not included in it)
 * @n_stop: 0 .. LLM_SERVE_MAX_STOP
 * @stream: answer with server-sent events
 * @include_usage: stream: a last chunk with the usage counts
 *	("stream_options": {"include_usage": true})
 * @ignore_eos: go on past end-of-sequence tokens (an extension, as vLLM's)
 * @policy: "policy" (an extension: the request's KV policy), or NULL
 */
struct llm_serve_req {
	enum llm_serve_api api;
	char *model;
	char *prompt;
	int32_t *ids;
	int n_ids;
	struct llm_serve_msg *msgs;
	int n_msgs;
	int max_tokens;
	float temperature;
	float top_p;
	int top_k;
	uint64_t seed;
	bool has_seed;
	char *stop[LLM_SERVE_MAX_STOP];
	int n_stop;
	bool stream;
	bool include_usage;
	bool ignore_eos;
	char *policy;
};

/**
 * struct llm_serve_err - an OpenAI-style error: the HTTP status and the
 * body's {"error": {"message", "type", "param", "code"}}
 * @status: HTTP status (400, 404, 413, ...)
 * @type: "invalid_request_error", "not_found_error", "server_error"...
 * @code: a short machine-readable code, or NULL (JSON null)
 * @param: the request field at fault, or empty (JSON null)
 * @message: for people
 */
struct llm_serve_err {
	int status;
	const char *type;
	const char *code;
	char param[64];
	char message[256];
};

int llm_serve_parse(enum llm_serve_api api, const char *body, size_t len,
		    struct llm_serve_req *out, struct llm_serve_err *err);
void llm_serve_req_free(struct llm_serve_req *r);
void llm_serve_err_set(struct llm_serve_err *e, int status, const char *type,
		       const char *code, const char *param, const char *fmt,
		       ...) __attribute__((format(printf, 6, 7)));
char *llm_serve_err_json(const struct llm_serve_err *e);

#endif /* LLM_SERVE_REQUEST_H */
