/* SPDX-License-Identifier: MIT */
/*
 * hf.h - Hugging Face model directories (private to model/): config.json,
 * safetensors (one file or shards with model.safetensors.index.json),
 * tokenizer.json, generation_config.json.
 *
 * The directory is turned into what the GGUF path gives: a struct llm_gguf
 * whose metadata (built in memory) holds the configuration and tokenizer
 * under their GGUF keys, and whose tensors carry GGUF names and point into
 * read-only mappings of the safetensors files. config.c and tokenizer.c
 * then load it unchanged.
 */
#ifndef LLM_HF_H
#define LLM_HF_H

#include <stddef.h>

#include "model.h"

int llm_hf_open(const char *dir, struct llm_model *m, char *err,
		size_t errlen);
void llm_st_free(struct llm_st *st);
int llm_hf_tokenizer(const char *path, struct llm_tok **out, char *err,
		     size_t errlen);

/* the safetensors header of one file image, for tests: tensors found */
int llm_st_check(const void *buf, size_t size, size_t *n_tensors, char *err,
		 size_t errlen);

#endif /* LLM_HF_H */
