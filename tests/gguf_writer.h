/* SPDX-License-Identifier: MIT */
/*
 * gguf_writer.h - shared by the model tests: where the default model is, and
 * a tiny GGUF writer for synthetic (and deliberately broken) files.
 */
#ifndef GGUF_WRITER_H
#define GGUF_WRITER_H

#include <stddef.h>
#include <stdint.h>

#define KVTEST_MODEL_DEFAULT "models/SmolLM2-135M-Instruct.Q4_1.gguf"

/* $KVMM_MODEL, else the default model under models/ */
const char *model_path(void);

/* struct gbuf - a growing byte buffer. Owner: the test; free(p) after. */
struct gbuf {
	uint8_t *p;
	size_t len, cap;
};

void gb_put(struct gbuf *b, const void *d, size_t n); /* d NULL: zeros */
void gb_u32(struct gbuf *b, uint32_t v);
void gb_u64(struct gbuf *b, uint64_t v);
void gb_str(struct gbuf *b, const char *s);		/* GGUF string */
void gb_key(struct gbuf *b, const char *k, uint32_t type); /* key, type */
void gb_pad(struct gbuf *b, size_t align);		/* zeros to align */

#endif /* GGUF_WRITER_H */
