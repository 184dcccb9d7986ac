// SPDX-License-Identifier: MIT
/*
 * request.c - the request parser of `kvmm serve` (request.h).
 *
 * DOC: request parser
 *
 * llm_serve_parse() reads one body with jansson and checks every field it
 * knows against OpenAI's rules: types, ranges, n = 1 only (several
 * choices are refused, not ignored), stop strings, messages and their
 * roles. A field of OpenAI's that kvmm does not implement (logprobs, echo,
 * tools, penalties...) is refused when set to anything but its neutral
 * value, so that no client gets a silently different answer; fields it
 * does not know are ignored, as OpenAI does with some. null reads as
 * absent. The result holds copies: the body can go at once.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "request.h"

#define INVALID "invalid_request_error"

/**
 * llm_serve_err_set() - fill an error
 * @e: the error
 * @status: HTTP status
 * @type: OpenAI's error type
 * @code: machine-readable code, or NULL
 * @param: the field at fault, or NULL
 * @fmt: the message, printf-style
 */
void llm_serve_err_set(struct llm_serve_err *e, int status, const char *type,
		       const char *code, const char *param, const char *fmt,
		       ...)
{
	va_list ap;

	e->status = status;
	e->type = type;
	e->code = code;
	snprintf(e->param, sizeof(e->param), "%s", param ? param : "");
	va_start(ap, fmt);
	vsnprintf(e->message, sizeof(e->message), fmt, ap);
	va_end(ap);
}

/* bytes of the valid UTF-8 character at @s (of @n), or 0 */
static size_t utf8_len(const unsigned char *s, size_t n)
{
	size_t l = s[0] < 0x80 ? 1 : (s[0] & 0xe0) == 0xc0 ? 2 :
		   (s[0] & 0xf0) == 0xe0 ? 3 : (s[0] & 0xf8) == 0xf0 ? 4 : 0;
	uint32_t cp;

	if (!l || l > n)
		return 0;
	cp = l == 1 ? s[0] : s[0] & (0x7f >> l);
	for (size_t i = 1; i < l; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	if ((l == 2 && cp < 0x80) || (l == 3 && cp < 0x800) ||
	    (l == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return l;
}

/* @s with every byte that is not part of valid UTF-8 made a '?' */
static void utf8_fix(char *s)
{
	size_t n = strlen(s);

	for (size_t i = 0; i < n;) {
		size_t l = utf8_len((unsigned char *)s + i, n - i);

		if (!l) {
			s[i++] = '?';
			continue;
		}
		i += l;
	}
}

/**
 * llm_serve_err_json() - the body of an error response
 * @e: the error
 *
 * Return: {"error": {"message", "type", "param", "code"}} as a string to
 * free(), or NULL when out of memory.
 */
char *llm_serve_err_json(const struct llm_serve_err *e)
{
	char msg[sizeof(e->message)], param[sizeof(e->param)];
	json_t *o;
	char *s;

	/* a message quotes the request (a JSON error's near text, a model
	 * name) and may be cut mid-character: keep it valid UTF-8 */
	memcpy(msg, e->message, sizeof(msg));
	msg[sizeof(msg) - 1] = 0;
	utf8_fix(msg);
	memcpy(param, e->param, sizeof(param));
	param[sizeof(param) - 1] = 0;
	utf8_fix(param);
	o = json_pack("{s:{s:s, s:s, s:o, s:o}}", "error",
			      "message", msg,
			      "type", e->type ? e->type : INVALID,
			      "param", param[0] ? json_string(param) :
						  json_null(),
			      "code", e->code ? json_string(e->code) :
						json_null());
	if (!o)
		return NULL;
	s = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	return s;
}

static int bad(struct llm_serve_err *e, const char *param, const char *fmt,
	       ...) __attribute__((format(printf, 3, 4)));

/* a 400 about @param; Return: -EINVAL */
static int bad(struct llm_serve_err *e, const char *param, const char *fmt,
	       ...)
{
	char msg[sizeof(e->message)];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	llm_serve_err_set(e, 400, INVALID, param ? "invalid_value" : NULL,
			  param, "%s", msg);
	return -EINVAL;
}

/* @key of @o, NULL when absent or null */
static json_t *field(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);

	return v && !json_is_null(v) ? v : NULL;
}

static int get_string(json_t *o, const char *key, char **out,
		      struct llm_serve_err *e)
{
	json_t *v = field(o, key);

	if (!v)
		return 0;
	if (!json_is_string(v))
		return bad(e, key, "'%s' must be a string", key);
	*out = strdup(json_string_value(v));
	if (!*out) {
		llm_serve_err_set(e, 500, "server_error", NULL, NULL,
				  "out of memory");
		return -ENOMEM;
	}
	return 0;
}

/* an integer (or a number with an integral value) in [lo, hi] */
static int get_int(json_t *o, const char *key, long long lo, long long hi,
		   long long *out, struct llm_serve_err *e)
{
	json_t *v = field(o, key);
	double d;

	if (!v)
		return 0;
	if (json_is_integer(v)) {
		*out = json_integer_value(v);
	} else if (json_is_real(v)) {
		d = json_real_value(v);
		if (d != floor(d) || d < -9e18 || d > 9e18)
			return bad(e, key, "'%s' must be an integer", key);
		*out = (long long)d;
	} else {
		return bad(e, key, "'%s' must be an integer", key);
	}
	if (*out < lo || *out > hi)
		return bad(e, key, "'%s' must be in [%lld, %lld], not %lld",
			   key, lo, hi, *out);
	return 1;
}

/* a number in [lo, hi] (hi included unless @open_hi) */
static int get_num(json_t *o, const char *key, double lo, double hi,
		   bool open_lo, float *out, struct llm_serve_err *e)
{
	json_t *v = field(o, key);
	double d;

	if (!v)
		return 0;
	if (!json_is_number(v))
		return bad(e, key, "'%s' must be a number", key);
	d = json_number_value(v);
	if (!(d >= lo && d <= hi) || (open_lo && d == lo))
		return bad(e, key, "'%s' must be in %c%g, %g], not %g", key,
			   open_lo ? '(' : '[', lo, hi, d);
	*out = (float)d;
	return 0;
}

static int get_bool(json_t *o, const char *key, bool *out,
		    struct llm_serve_err *e)
{
	json_t *v = field(o, key);

	if (!v)
		return 0;
	if (!json_is_boolean(v))
		return bad(e, key, "'%s' must be a boolean", key);
	*out = json_is_true(v);
	return 0;
}

/* OpenAI fields kvmm does not implement: refused unless neutral */
static int unsupported(json_t *o, struct llm_serve_err *e)
{
	static const char *const absent[] = {
		"tools", "functions", "tool_choice", "function_call",
		"suffix", "audio", "prediction",
	};
	static const char *const zero[] = {
		"presence_penalty", "frequency_penalty",
	};
	json_t *v;

	for (size_t i = 0; i < sizeof(absent) / sizeof(absent[0]); i++)
		if (field(o, absent[i]))
			return bad(e, absent[i], "'%s' is not supported",
				   absent[i]);
	for (size_t i = 0; i < sizeof(zero) / sizeof(zero[0]); i++) {
		v = field(o, zero[i]);
		if (v && !(json_is_number(v) && json_number_value(v) == 0))
			return bad(e, zero[i], "'%s' is not supported (only "
				   "0)", zero[i]);
	}
	v = field(o, "logprobs");
	if (v && !json_is_false(v) &&
	    !(json_is_integer(v) && !json_integer_value(v)))
		return bad(e, "logprobs", "'logprobs' is not supported");
	v = field(o, "top_logprobs");
	if (v && !(json_is_integer(v) && !json_integer_value(v)))
		return bad(e, "top_logprobs", "'top_logprobs' is not "
			   "supported");
	v = field(o, "echo");
	if (v && !json_is_false(v))
		return bad(e, "echo", "'echo' is not supported");
	v = field(o, "logit_bias");
	if (v && !(json_is_object(v) && !json_object_size(v)))
		return bad(e, "logit_bias", "'logit_bias' is not supported");
	v = field(o, "best_of");
	if (v && !(json_is_integer(v) && json_integer_value(v) == 1))
		return bad(e, "best_of", "'best_of' must be 1: one choice "
			   "per request");
	v = field(o, "response_format");
	if (v) {
		json_t *t = json_is_object(v) ? field(v, "type") : NULL;

		if (!t || !json_is_string(t) ||
		    strcmp(json_string_value(t), "text"))
			return bad(e, "response_format", "'response_format' "
				   "must be {\"type\": \"text\"}");
	}
	return 0;
}

/* "prompt": a string, an array of one string, or an array of token ids */
static int get_prompt(json_t *o, struct llm_serve_req *r,
		      struct llm_serve_err *e)
{
	json_t *v = field(o, "prompt"), *x;
	size_t n, i;

	if (!v)
		return bad(e, "prompt", "'prompt' is required");
	if (json_is_string(v))
		return get_string(o, "prompt", &r->prompt, e);
	if (!json_is_array(v))
		return bad(e, "prompt", "'prompt' must be a string or an "
			   "array of token ids");
	n = json_array_size(v);
	if (!n)
		return bad(e, "prompt", "'prompt' is empty");
	if (json_is_string(json_array_get(v, 0))) {
		if (n > 1)
			return bad(e, "prompt", "one prompt per request "
				   "(%zu given)", n);
		r->prompt = strdup(json_string_value(json_array_get(v, 0)));
		if (!r->prompt)
			return bad(e, NULL, "out of memory");
		return 0;
	}
	if (json_is_array(json_array_get(v, 0)))
		return bad(e, "prompt", "one prompt per request (an array of "
			   "token arrays given)");
	if (n > (1 << 24))
		return bad(e, "prompt", "'prompt' has too many tokens");
	r->ids = malloc(n * sizeof(int32_t));
	if (!r->ids)
		return bad(e, NULL, "out of memory");
	json_array_foreach(v, i, x) {
		if (!json_is_integer(x) || json_integer_value(x) < 0 ||
		    json_integer_value(x) > INT32_MAX)
			return bad(e, "prompt", "'prompt': token %zu is not a "
				   "token id", i);
		r->ids[i] = (int32_t)json_integer_value(x);
	}
	r->n_ids = (int)n;
	return 0;
}

/* a message's "content": a string or an array of {"type": "text"} parts */
static int get_content(json_t *c, char **out, struct llm_serve_err *e)
{
	size_t len = 0, i;
	json_t *p;
	char *s;

	if (json_is_string(c)) {
		*out = strdup(json_string_value(c));
		return *out ? 0 : bad(e, NULL, "out of memory");
	}
	if (!json_is_array(c))
		return bad(e, "messages", "a message's 'content' must be a "
			   "string or an array of text parts");
	json_array_foreach(c, i, p) {
		json_t *t = json_is_object(p) ? field(p, "type") : NULL;
		json_t *x = json_is_object(p) ? field(p, "text") : NULL;

		if (!t || !json_is_string(t) ||
		    strcmp(json_string_value(t), "text") || !x ||
		    !json_is_string(x))
			return bad(e, "messages", "content part %zu: only "
				   "{\"type\": \"text\", \"text\": ...} parts "
				   "are supported", i);
		len += json_string_length(x);
	}
	s = malloc(len + 1);
	if (!s)
		return bad(e, NULL, "out of memory");
	len = 0;
	json_array_foreach(c, i, p) {
		json_t *x = json_object_get(p, "text");

		memcpy(s + len, json_string_value(x), json_string_length(x));
		len += json_string_length(x);
	}
	s[len] = 0;
	*out = s;
	return 0;
}

static int get_messages(json_t *o, struct llm_serve_req *r,
			struct llm_serve_err *e)
{
	json_t *v = field(o, "messages"), *m;
	size_t i;
	int ret;

	if (!v)
		return bad(e, "messages", "'messages' is required");
	if (!json_is_array(v) || !json_array_size(v))
		return bad(e, "messages", "'messages' must be a non-empty "
			   "array");
	if (json_array_size(v) > LLM_SERVE_MAX_MSGS)
		return bad(e, "messages", "at most %d messages",
			   LLM_SERVE_MAX_MSGS);
	r->msgs = calloc(json_array_size(v), sizeof(*r->msgs));
	if (!r->msgs)
		return bad(e, NULL, "out of memory");
	json_array_foreach(v, i, m) {
		json_t *role = json_is_object(m) ? field(m, "role") : NULL;
		json_t *c = json_is_object(m) ? field(m, "content") : NULL;
		const char *rs;

		if (!json_is_object(m))
			return bad(e, "messages", "message %zu is not an "
				   "object", i);
		if (!role || !json_is_string(role))
			return bad(e, "messages", "message %zu has no 'role'",
				   i);
		rs = json_string_value(role);
		if (!strcmp(rs, "developer"))
			rs = "system";
		if (strcmp(rs, "system") && strcmp(rs, "user") &&
		    strcmp(rs, "assistant"))
			return bad(e, "messages", "message %zu: role '%.32s' "
				   "is not system, user or assistant", i, rs);
		if (!c)
			return bad(e, "messages", "message %zu has no "
				   "'content'", i);
		r->msgs[i].role = strdup(rs);
		r->n_msgs = (int)i + 1;
		if (!r->msgs[i].role)
			return bad(e, NULL, "out of memory");
		ret = get_content(c, &r->msgs[i].content, e);
		if (ret)
			return ret;
	}
	return 0;
}

static int get_stop(json_t *o, struct llm_serve_req *r,
		    struct llm_serve_err *e)
{
	json_t *v = field(o, "stop"), *x;
	size_t i;

	if (!v)
		return 0;
	if (json_is_string(v)) {
		if (!json_string_length(v))
			return bad(e, "stop", "'stop' is empty");
		r->stop[0] = strdup(json_string_value(v));
		r->n_stop = 1;
		return r->stop[0] ? 0 : bad(e, NULL, "out of memory");
	}
	if (!json_is_array(v))
		return bad(e, "stop", "'stop' must be a string or an array "
			   "of strings");
	if (json_array_size(v) > LLM_SERVE_MAX_STOP)
		return bad(e, "stop", "at most %d stop strings",
			   LLM_SERVE_MAX_STOP);
	json_array_foreach(v, i, x) {
		if (!json_is_string(x) || !json_string_length(x))
			return bad(e, "stop", "stop string %zu is not a "
				   "non-empty string", i);
		r->stop[i] = strdup(json_string_value(x));
		r->n_stop = (int)i + 1;
		if (!r->stop[i])
			return bad(e, NULL, "out of memory");
	}
	return 0;
}

static int parse_obj(json_t *o, struct llm_serve_req *r,
		     struct llm_serve_err *e)
{
	json_t *so;
	long long v;
	int ret;

	ret = unsupported(o, e);
	ret = ret ?: get_string(o, "model", &r->model, e);
	if (!ret && r->api == LLM_SERVE_COMPLETIONS)
		ret = get_prompt(o, r, e);
	else if (!ret)
		ret = get_messages(o, r, e);
	if (ret)
		return ret;
	v = 1;
	ret = get_int(o, "n", 1, 1 << 30, &v, e);
	if (ret < 0)
		return ret;
	if (v != 1)
		return bad(e, "n", "'n' must be 1: one choice per request "
			   "(%lld asked)", v);
	ret = get_int(o, "max_tokens", 1, 1 << 24, &v, e);
	if (ret < 0)
		return ret;
	if (ret)
		r->max_tokens = (int)v;
	if (r->api == LLM_SERVE_CHAT) {
		ret = get_int(o, "max_completion_tokens", 1, 1 << 24, &v, e);
		if (ret < 0)
			return ret;
		if (ret)
			r->max_tokens = (int)v;
	}
	ret = get_int(o, "top_k", -1, 1 << 30, &v, e);
	if (ret < 0)
		return ret;
	if (ret)
		r->top_k = v < 0 ? 0 : (int)v;
	ret = get_int(o, "seed", INT64_MIN, INT64_MAX, &v, e);
	if (ret < 0)
		return ret;
	if (ret) {
		r->seed = (uint64_t)v;
		r->has_seed = true;
	}
	ret = get_num(o, "temperature", 0, 2, false, &r->temperature, e);
	ret = ret ?: get_num(o, "top_p", 0, 1, true, &r->top_p, e);
	ret = ret ?: get_stop(o, r, e);
	ret = ret ?: get_bool(o, "stream", &r->stream, e);
	ret = ret ?: get_bool(o, "ignore_eos", &r->ignore_eos, e);
	ret = ret ?: get_string(o, "policy", &r->policy, e);
	if (ret)
		return ret;
	so = field(o, "stream_options");
	if (so && !json_is_object(so))
		return bad(e, "stream_options", "'stream_options' must be an "
			   "object");
	if (so && !r->stream)
		return bad(e, "stream_options", "'stream_options' needs "
			   "'stream': true");
	if (so)
		return get_bool(so, "include_usage", &r->include_usage, e);
	return 0;
}

/**
 * llm_serve_parse() - a request body into a request
 * @api: the endpoint it came to
 * @body: the body, not NUL-terminated (any bytes)
 * @len: its bytes
 * @out: the request; llm_serve_req_free() it whatever the result
 * @err: filled on failure: a 400 with the field at fault
 *
 * Return: 0; -EINVAL (malformed JSON, a field of the wrong type or out of
 * range, a feature not supported: @err says which); -ENOMEM (@err is a
 * 500).
 */
int llm_serve_parse(enum llm_serve_api api, const char *body, size_t len,
		    struct llm_serve_req *out, struct llm_serve_err *err)
{
	json_error_t je;
	json_t *o;
	int ret;

	memset(out, 0, sizeof(*out));
	out->api = api;
	out->temperature = 1.0f;
	out->top_p = 1.0f;
	o = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
	if (!o)
		return bad(err, NULL, "the body is not valid JSON: %s (line "
			   "%d, column %d)", je.text, je.line, je.column);
	if (!json_is_object(o))
		ret = bad(err, NULL, "the body must be a JSON object");
	else
		ret = parse_obj(o, out, err);
	json_decref(o);
	if (ret == -EINVAL && err->status == 400 &&
	    !strcmp(err->message, "out of memory")) {
		err->status = 500;
		err->type = "server_error";
		ret = -ENOMEM;
	}
	return ret;
}

/**
 * llm_serve_req_free() - free what llm_serve_parse() allocated
 * @r: the request (zeroed afterwards); a zeroed one is fine
 */
void llm_serve_req_free(struct llm_serve_req *r)
{
	free(r->model);
	free(r->prompt);
	free(r->ids);
	for (int i = 0; i < r->n_msgs; i++) {
		free(r->msgs[i].role);
		free(r->msgs[i].content);
	}
	free(r->msgs);
	for (int i = 0; i < r->n_stop; i++)
		free(r->stop[i]);
	free(r->policy);
	memset(r, 0, sizeof(*r));
}
