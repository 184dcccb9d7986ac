/* SPDX-License-Identifier: MIT */
/*
 * json.h - a small strict JSON (RFC 8259) parser for model metadata:
 * config.json, generation_config.json, tokenizer.json, the safetensors
 * header and its index.
 *
 * The whole text is parsed into a tree before anything is returned. The
 * parser refuses invalid UTF-8, control characters in strings, bad escapes
 * and lone surrogates, leading zeros, trailing garbage, and nesting deeper
 * than LLM_JSON_MAX_DEPTH. Strings are decoded (escapes resolved) into one
 * buffer owned by the document; they may hold NUL bytes, so use @len.
 */
#ifndef LLM_JSON_H
#define LLM_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LLM_JSON_MAX_DEPTH 64

enum llm_json_type {
	LLM_JSON_NULL,
	LLM_JSON_BOOL,
	LLM_JSON_NUMBER,
	LLM_JSON_STRING,
	LLM_JSON_ARRAY,
	LLM_JSON_OBJECT,
};

/**
 * struct llm_json - one value. Owned by its document.
 * @type: enum llm_json_type
 * @n: bytes of @str (STRING), elements of @kids (ARRAY, OBJECT)
 * @key: member name when the parent is an object, else NULL
 * @key_len: bytes of @key
 * @b: BOOL value
 * @num: NUMBER value
 * @str: STRING value, NUL-terminated (may also contain NULs)
 * @kids: ARRAY elements or OBJECT members, in file order
 */
struct llm_json {
	uint32_t type;
	uint32_t n;
	const char *key;
	uint32_t key_len;
	union {
		bool b;
		double num;
		const char *str;
		struct llm_json *kids;
	};
};

struct llm_json_doc;

int llm_json_parse(const char *text, size_t len, struct llm_json_doc **out,
		   char *err, size_t errlen);
void llm_json_free(struct llm_json_doc *d);
const struct llm_json *llm_json_root(const struct llm_json_doc *d);

const struct llm_json *llm_json_get(const struct llm_json *obj,
				    const char *key);
bool llm_json_str_eq(const struct llm_json *v, const char *s);
int llm_json_int(const struct llm_json *v, int64_t lo, int64_t hi,
		 int64_t *out);

#endif /* LLM_JSON_H */
