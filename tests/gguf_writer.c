// SPDX-License-Identifier: MIT
/*
 * gguf_writer.c - the model tests' GGUF writer and default model path.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "gguf_writer.h"

const char *model_path(void)
{
	const char *p = getenv("KVMM_MODEL");

	return p && *p ? p : KVTEST_MODEL_DEFAULT;
}

void gb_put(struct gbuf *b, const void *d, size_t n)
{
	if (b->len + n > b->cap) {
		b->cap = (b->len + n) * 2 + 64;
		b->p = realloc(b->p, b->cap);
		ck_assert_ptr_nonnull(b->p);
	}
	if (d)
		memcpy(b->p + b->len, d, n);
	else
		memset(b->p + b->len, 0, n);
	b->len += n;
}

void gb_u32(struct gbuf *b, uint32_t v)
{
	gb_put(b, &v, 4);
}

void gb_u64(struct gbuf *b, uint64_t v)
{
	gb_put(b, &v, 8);
}

void gb_str(struct gbuf *b, const char *s)
{
	gb_u64(b, strlen(s));
	gb_put(b, s, strlen(s));
}

void gb_key(struct gbuf *b, const char *k, uint32_t type)
{
	gb_str(b, k);
	gb_u32(b, type);
}

void gb_pad(struct gbuf *b, size_t align)
{
	gb_put(b, NULL, (align - b->len % align) % align);
}
