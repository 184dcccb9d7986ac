// SPDX-License-Identifier: MIT
/*
 * json.c - strict recursive-descent JSON parser.
 *
 * Every string of the document is decoded into one buffer of the input's
 * size (a decoded string is never longer than its source), so a document
 * costs its text plus one node per value. Arrays and objects grow their
 * child arrays by doubling while they are parsed.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "tokenizer.h"

struct llm_json_doc {
	struct llm_json root;
	char *strings; /* decoded strings, NUL after each */
};

struct jp {
	const uint8_t *s;
	size_t n, i;
	char *sbuf; /* next free byte of the string buffer */
	int depth;
	char *err;
	size_t errlen;
};

static int jp_fail(struct jp *p, const char *what)
{
	if (p->err && p->errlen)
		snprintf(p->err, p->errlen, "json: %s at byte %zu", what, p->i);
	return -EBADMSG;
}

static void jp_ws(struct jp *p)
{
	while (p->i < p->n && (p->s[p->i] == ' ' || p->s[p->i] == '\t' ||
			       p->s[p->i] == '\n' || p->s[p->i] == '\r'))
		p->i++;
}

static int hex4(struct jp *p, uint32_t *v)
{
	*v = 0;
	if (p->n - p->i < 4)
		return jp_fail(p, "truncated \\u escape");
	for (int k = 0; k < 4; k++) {
		uint8_t c = p->s[p->i++];

		*v <<= 4;
		if (c >= '0' && c <= '9')
			*v |= c - '0';
		else if (c >= 'a' && c <= 'f')
			*v |= c - 'a' + 10;
		else if (c >= 'A' && c <= 'F')
			*v |= c - 'A' + 10;
		else
			return jp_fail(p, "bad \\u escape");
	}
	return 0;
}

static char *put_utf8(char *o, uint32_t cp)
{
	if (cp < 0x80) {
		*o++ = (char)cp;
	} else if (cp < 0x800) {
		*o++ = (char)(0xc0 | cp >> 6);
		*o++ = (char)(0x80 | (cp & 0x3f));
	} else if (cp < 0x10000) {
		*o++ = (char)(0xe0 | cp >> 12);
		*o++ = (char)(0x80 | (cp >> 6 & 0x3f));
		*o++ = (char)(0x80 | (cp & 0x3f));
	} else {
		*o++ = (char)(0xf0 | cp >> 18);
		*o++ = (char)(0x80 | (cp >> 12 & 0x3f));
		*o++ = (char)(0x80 | (cp >> 6 & 0x3f));
		*o++ = (char)(0x80 | (cp & 0x3f));
	}
	return o;
}

/* a string starting at '"'; decoded into the string buffer */
static int jp_string(struct jp *p, const char **out, uint32_t *len)
{
	char *start = p->sbuf, *o = p->sbuf;
	uint32_t cp, lo;
	int ret;

	p->i++; /* the quote */
	for (;;) {
		uint8_t c;

		if (p->i >= p->n)
			return jp_fail(p, "unterminated string");
		c = p->s[p->i];
		if (c == '"') {
			p->i++;
			break;
		}
		if (c < 0x20)
			return jp_fail(p, "control character in string");
		if (c != '\\') {
			size_t k = llm_utf8_decode(p->s + p->i, p->n - p->i,
						   &cp);

			if (cp > 0x10ffff)
				return jp_fail(p, "invalid UTF-8");
			memcpy(o, p->s + p->i, k);
			o += k;
			p->i += k;
			continue;
		}
		if (++p->i >= p->n)
			return jp_fail(p, "unterminated string");
		c = p->s[p->i++];
		switch (c) {
		case '"': *o++ = '"'; break;
		case '\\': *o++ = '\\'; break;
		case '/': *o++ = '/'; break;
		case 'b': *o++ = '\b'; break;
		case 'f': *o++ = '\f'; break;
		case 'n': *o++ = '\n'; break;
		case 'r': *o++ = '\r'; break;
		case 't': *o++ = '\t'; break;
		case 'u':
			ret = hex4(p, &cp);
			if (ret)
				return ret;
			if (cp >= 0xdc00 && cp <= 0xdfff)
				return jp_fail(p, "lone low surrogate");
			if (cp >= 0xd800 && cp <= 0xdbff) {
				if (p->n - p->i < 2 || p->s[p->i] != '\\' ||
				    p->s[p->i + 1] != 'u')
					return jp_fail(p, "lone high "
						       "surrogate");
				p->i += 2;
				ret = hex4(p, &lo);
				if (ret)
					return ret;
				if (lo < 0xdc00 || lo > 0xdfff)
					return jp_fail(p, "bad surrogate pair");
				cp = 0x10000 + ((cp - 0xd800) << 10) +
				     (lo - 0xdc00);
			}
			o = put_utf8(o, cp);
			break;
		default:
			p->i--;
			return jp_fail(p, "bad escape");
		}
	}
	if (o - start > (long)UINT32_MAX - 1)
		return jp_fail(p, "string too long");
	*o++ = 0;
	p->sbuf = o;
	*out = start;
	*len = (uint32_t)(o - start - 1);
	return 0;
}

static int jp_number(struct jp *p, double *out)
{
	size_t st = p->i;
	char tmp[64];

	if (p->s[p->i] == '-')
		p->i++;
	if (p->i >= p->n)
		return jp_fail(p, "truncated number");
	if (p->s[p->i] == '0') {
		p->i++;
	} else if (p->s[p->i] >= '1' && p->s[p->i] <= '9') {
		while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9')
			p->i++;
	} else {
		return jp_fail(p, "bad number");
	}
	if (p->i < p->n && p->s[p->i] == '.') {
		p->i++;
		if (p->i >= p->n || p->s[p->i] < '0' || p->s[p->i] > '9')
			return jp_fail(p, "bad fraction");
		while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9')
			p->i++;
	}
	if (p->i < p->n && (p->s[p->i] == 'e' || p->s[p->i] == 'E')) {
		p->i++;
		if (p->i < p->n && (p->s[p->i] == '+' || p->s[p->i] == '-'))
			p->i++;
		if (p->i >= p->n || p->s[p->i] < '0' || p->s[p->i] > '9')
			return jp_fail(p, "bad exponent");
		while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9')
			p->i++;
	}
	if (p->i - st >= sizeof(tmp))
		return jp_fail(p, "number too long");
	memcpy(tmp, p->s + st, p->i - st);
	tmp[p->i - st] = 0;
	*out = strtod(tmp, NULL);
	if (!isfinite(*out))
		return jp_fail(p, "number out of range");
	return 0;
}

static int jp_lit(struct jp *p, const char *w)
{
	size_t k = strlen(w);

	if (p->n - p->i < k || memcmp(p->s + p->i, w, k))
		return jp_fail(p, "unexpected character");
	p->i += k;
	return 0;
}

static void json_free_kids(struct llm_json *v)
{
	if (v->type != LLM_JSON_ARRAY && v->type != LLM_JSON_OBJECT)
		return;
	for (uint32_t k = 0; k < v->n; k++)
		json_free_kids(&v->kids[k]);
	free(v->kids);
	v->kids = NULL;
	v->n = 0;
}

static int jp_value(struct jp *p, struct llm_json *v);

/* an array or object starting at '[' or '{' */
static int jp_container(struct jp *p, struct llm_json *v, bool obj)
{
	uint32_t cap = 0;
	int ret;

	v->type = obj ? LLM_JSON_OBJECT : LLM_JSON_ARRAY;
	v->n = 0;
	v->kids = NULL;
	if (++p->depth > LLM_JSON_MAX_DEPTH)
		return jp_fail(p, "nesting too deep");
	p->i++;
	jp_ws(p);
	if (p->i < p->n && p->s[p->i] == (obj ? '}' : ']')) {
		p->i++;
		p->depth--;
		return 0;
	}
	for (;;) {
		struct llm_json *kid;
		const char *key = NULL;
		uint32_t klen = 0;

		jp_ws(p);
		if (p->i >= p->n)
			return jp_fail(p, "truncated document");
		if (obj) {
			if (p->s[p->i] != '"')
				return jp_fail(p, "expected member name");
			ret = jp_string(p, &key, &klen);
			if (ret)
				return ret;
			jp_ws(p);
			if (p->i >= p->n || p->s[p->i] != ':')
				return jp_fail(p, "expected ':'");
			p->i++;
		}
		if (v->n == cap) {
			uint32_t nc = cap ? cap * 2 : 4;
			struct llm_json *nk;

			if (cap >= (1U << 30))
				return jp_fail(p, "too many elements");
			nk = realloc(v->kids, nc * sizeof(*nk));
			if (!nk) {
				if (p->err && p->errlen)
					snprintf(p->err, p->errlen,
						 "json: out of memory");
				return -ENOMEM;
			}
			v->kids = nk;
			cap = nc;
		}
		kid = &v->kids[v->n];
		memset(kid, 0, sizeof(*kid));
		ret = jp_value(p, kid);
		v->n++; /* freed on error too */
		if (ret)
			return ret;
		kid->key = key;
		kid->key_len = klen;
		jp_ws(p);
		if (p->i >= p->n)
			return jp_fail(p, "truncated document");
		if (p->s[p->i] == ',') {
			p->i++;
			continue;
		}
		if (p->s[p->i] == (obj ? '}' : ']')) {
			p->i++;
			break;
		}
		return jp_fail(p, obj ? "expected ',' or '}'" :
					"expected ',' or ']'");
	}
	p->depth--;
	return 0;
}

static int jp_value(struct jp *p, struct llm_json *v)
{
	int ret;

	jp_ws(p);
	if (p->i >= p->n)
		return jp_fail(p, "truncated document");
	switch (p->s[p->i]) {
	case '{':
		return jp_container(p, v, true);
	case '[':
		return jp_container(p, v, false);
	case '"':
		v->type = LLM_JSON_STRING;
		return jp_string(p, &v->str, &v->n);
	case 't':
		v->type = LLM_JSON_BOOL;
		v->b = true;
		return jp_lit(p, "true");
	case 'f':
		v->type = LLM_JSON_BOOL;
		v->b = false;
		return jp_lit(p, "false");
	case 'n':
		v->type = LLM_JSON_NULL;
		return jp_lit(p, "null");
	default:
		v->type = LLM_JSON_NUMBER;
		ret = jp_number(p, &v->num);
		return ret;
	}
}

/**
 * llm_json_parse() - parse a whole JSON text.
 * @text: the bytes (not necessarily NUL-terminated).
 * @len: bytes of @text.
 * @out: the document, released with llm_json_free().
 * @err: one-line message with the byte offset on failure (may be NULL).
 * @errlen: bytes of @err.
 *
 * Return: 0, -EBADMSG for invalid JSON, -ENOMEM.
 */
int llm_json_parse(const char *text, size_t len, struct llm_json_doc **out,
		   char *err, size_t errlen)
{
	struct llm_json_doc *d = calloc(1, sizeof(*d));
	struct jp p = { (const uint8_t *)text, len, 0, NULL, 0, err, errlen };
	int ret;

	if (d)
		d->strings = malloc(len + 1);
	if (!d || !d->strings) {
		free(d);
		if (err && errlen)
			snprintf(err, errlen, "json: out of memory");
		return -ENOMEM;
	}
	p.sbuf = d->strings;
	ret = jp_value(&p, &d->root);
	if (!ret) {
		jp_ws(&p);
		if (p.i != p.n)
			ret = jp_fail(&p, "trailing characters");
	}
	if (ret) {
		llm_json_free(d);
		return ret;
	}
	*out = d;
	return 0;
}

/**
 * llm_json_free() - release a document and every value in it.
 * @d: from llm_json_parse(); NULL is ignored.
 */
void llm_json_free(struct llm_json_doc *d)
{
	if (!d)
		return;
	json_free_kids(&d->root);
	free(d->strings);
	free(d);
}

/**
 * llm_json_root() - the top-level value of a document.
 * @d: the document.
 *
 * Return: the root value, owned by @d.
 */
const struct llm_json *llm_json_root(const struct llm_json_doc *d)
{
	return &d->root;
}

/**
 * llm_json_get() - the member of an object with a given name.
 * @obj: a value; anything but an object gives NULL.
 * @key: NUL-terminated name.
 *
 * A name given twice means its last value, as Python's json module (and so
 * the Hugging Face libraries) reads it.
 *
 * Return: the member's value, or NULL.
 */
const struct llm_json *llm_json_get(const struct llm_json *obj,
				    const char *key)
{
	size_t n = strlen(key);

	if (!obj || obj->type != LLM_JSON_OBJECT)
		return NULL;
	for (uint32_t k = obj->n; k-- > 0;)
		if (obj->kids[k].key_len == n &&
		    !memcmp(obj->kids[k].key, key, n))
			return &obj->kids[k];
	return NULL;
}

/**
 * llm_json_str_eq() - whether a value is the string @s.
 * @v: a value or NULL.
 * @s: NUL-terminated string.
 *
 * Return: true when @v is a string equal to @s.
 */
bool llm_json_str_eq(const struct llm_json *v, const char *s)
{
	return v && v->type == LLM_JSON_STRING && v->n == strlen(s) &&
	       !memcmp(v->str, s, v->n);
}

/**
 * llm_json_int() - read an integral number within [@lo, @hi].
 * @v: a value or NULL.
 * @lo: smallest accepted value.
 * @hi: largest accepted value.
 * @out: the value.
 *
 * Return: 0, -ENOENT when @v is NULL or null, -EINVAL when it is not an
 * integer in range.
 */
int llm_json_int(const struct llm_json *v, int64_t lo, int64_t hi,
		 int64_t *out)
{
	if (!v || v->type == LLM_JSON_NULL)
		return -ENOENT;
	if (v->type != LLM_JSON_NUMBER || v->num != floor(v->num) ||
	    v->num < (double)lo || v->num > (double)hi ||
	    fabs(v->num) > 9007199254740992.0)
		return -EINVAL;
	*out = (int64_t)v->num;
	return 0;
}
