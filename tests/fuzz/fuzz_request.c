// SPDX-License-Identifier: MIT
/*
 * fuzz_request.c - libFuzzer harness of `kvmm serve`'s request parser
 * (model/serve/request.c, llm_serve_parse()).
 *
 * An input's first byte picks the endpoint ('h' chat, anything else
 * completions); the rest is the body, any bytes. The parser must return
 * 0 or -EINVAL/-ENOMEM, never crash or leak (ASan, LeakSanitizer), and:
 *
 * - on failure: a 4xx/5xx status, a message, an error body that is JSON;
 * - on success: a prompt for completions (text or ids, not both), at
 *   least one message for chat, every field within its documented range.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "request.h"

#define CHECK(c)                                                               \
	do {                                                                   \
		if (!(c)) {                                                    \
			fprintf(stderr, "fuzz_request: %s:%d: %s\n", __FILE__, \
				__LINE__, #c);                                 \
			abort();                                               \
		}                                                              \
	} while (0)

static void check_ok(const struct llm_serve_req *r)
{
	if (r->api == LLM_SERVE_COMPLETIONS) {
		CHECK(!r->prompt != !r->ids);
		CHECK(!r->ids || r->n_ids > 0);
		for (int i = 0; i < r->n_ids; i++)
			CHECK(r->ids[i] >= 0);
		CHECK(!r->msgs && !r->n_msgs);
	} else {
		CHECK(r->n_msgs >= 1 && r->n_msgs <= LLM_SERVE_MAX_MSGS);
		for (int i = 0; i < r->n_msgs; i++) {
			CHECK(r->msgs[i].role && r->msgs[i].content);
			CHECK(!strcmp(r->msgs[i].role, "system") ||
			      !strcmp(r->msgs[i].role, "user") ||
			      !strcmp(r->msgs[i].role, "assistant"));
		}
		CHECK(!r->prompt && !r->ids);
	}
	CHECK(r->max_tokens >= 0 && r->max_tokens <= (1 << 24));
	CHECK(r->temperature >= 0 && r->temperature <= 2);
	CHECK(r->top_p > 0 && r->top_p <= 1);
	CHECK(r->top_k >= 0);
	CHECK(r->n_stop >= 0 && r->n_stop <= LLM_SERVE_MAX_STOP);
	for (int i = 0; i < r->n_stop; i++)
		CHECK(r->stop[i] && r->stop[i][0]);
	CHECK(!r->include_usage || r->stream);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	enum llm_serve_api api;
	struct llm_serve_req r;
	struct llm_serve_err e;
	int ret;

	if (!size)
		return 0;
	api = data[0] == 'h' ? LLM_SERVE_CHAT : LLM_SERVE_COMPLETIONS;
	memset(&e, 0, sizeof(e));
	ret = llm_serve_parse(api, (const char *)data + 1, size - 1, &r, &e);
	if (!ret) {
		check_ok(&r);
	} else {
		char *body;
		json_t *j;

		CHECK(ret == -EINVAL || ret == -ENOMEM);
		CHECK(e.status >= 400 && e.status < 600 && e.message[0]);
		body = llm_serve_err_json(&e);
		CHECK(body);
		j = json_loads(body, 0, NULL);
		CHECK(j && json_is_object(json_object_get(j, "error")));
		json_decref(j);
		free(body);
	}
	llm_serve_req_free(&r);
	return 0;
}
