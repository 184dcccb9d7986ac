// SPDX-License-Identifier: MIT
/*
 * model.c - open a model in any supported format (see model.h).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "hf.h"
#include "model.h"

static void gguf_gen(struct llm_model *m)
{
	const struct llm_tok *t = m->tok;

	m->gen.bos = t->bos_id;
	if (t->eos_id >= 0)
		m->gen.eos[m->gen.n_eos++] = t->eos_id;
}

static int open_gguf(const char *path, struct llm_model *m, char *err,
		     size_t errlen)
{
	char e2[LLM_GGUF_ERR_MAX];
	int ret;

	ret = llm_gguf_open(path, &m->src, err, errlen);
	if (ret)
		return ret;
	ret = llm_config_load(m->src, &m->cfg, e2, sizeof(e2));
	if (!ret)
		ret = llm_tok_load(m->src, &m->tok, e2, sizeof(e2));
	if (ret)
		snprintf(err, errlen, "%s: %s", path, e2);
	if (!ret)
		gguf_gen(m);
	return ret;
}

/**
 * llm_model_open() - open a GGUF file or a Hugging Face model directory.
 * @path: a .gguf file, or a directory with config.json, tokenizer.json and
 *	model.safetensors (or model.safetensors.index.json and its shards).
 * @out: the model, released with llm_model_close().
 * @err: one-line message on failure naming the file and the problem.
 * @errlen: bytes of @err (LLM_GGUF_ERR_MAX is enough).
 *
 * Every tensor's offset, size, dtype and shape is checked; the weights are
 * bound (llm_weights_bind()) and the tokenizer loaded. A Hugging Face
 * directory without tokenizer.json opens with m->tok NULL (weights only).
 *
 * Return: 0, -ENOENT (missing file), -EBADMSG (truncated, corrupt or
 * mismatched), -EOPNOTSUPP (unknown architecture, dtype or tokenizer),
 * -ENOMEM, or the errno of open/stat/mmap.
 */
int llm_model_open(const char *path, struct llm_model **out, char *err,
		   size_t errlen)
{
	char e2[LLM_GGUF_ERR_MAX];
	struct llm_model *m;
	struct stat st;
	int ret;

	if (!path || !out)
		return -EINVAL;
	m = calloc(1, sizeof(*m));
	if (!m) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	snprintf(m->path, sizeof(m->path), "%s", path);
	m->gen.bos = -1;
	m->gen.temperature = -1;
	m->gen.top_k = -1;
	m->gen.top_p = -1;
	if (stat(path, &st)) {
		ret = -errno;
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		goto fail;
	}
	if (S_ISDIR(st.st_mode)) {
		m->format = LLM_FORMAT_HF;
		ret = llm_hf_open(path, m, err, errlen);
	} else {
		m->format = LLM_FORMAT_GGUF;
		ret = open_gguf(path, m, err, errlen);
	}
	if (ret)
		goto fail;
	ret = llm_weights_bind(m->src, &m->cfg, &m->w, e2, sizeof(e2));
	if (ret) {
		snprintf(err, errlen, "%s: %s", path, e2);
		goto fail;
	}
	for (int i = 0; i < m->gen.n_eos; i++) {
		if ((uint32_t)m->gen.eos[i] < m->cfg.n_vocab)
			continue;
		snprintf(err, errlen, "%s: eos_token_id %d is past the "
			 "vocabulary (%u)", path, m->gen.eos[i],
			 m->cfg.n_vocab);
		ret = -EBADMSG;
		goto fail;
	}
	if (m->gen.bos >= 0 && (uint32_t)m->gen.bos >= m->cfg.n_vocab) {
		snprintf(err, errlen, "%s: bos_token_id %d is past the "
			 "vocabulary (%u)", path, m->gen.bos, m->cfg.n_vocab);
		ret = -EBADMSG;
		goto fail;
	}
	if (m->tok && m->tok->n_vocab > m->cfg.n_vocab) {
		snprintf(err, errlen, "%s: tokenizer has %u tokens, the model "
			 "%u", path, m->tok->n_vocab, m->cfg.n_vocab);
		ret = -EBADMSG;
		goto fail;
	}
	*out = m;
	return 0;
fail:
	llm_model_close(m);
	return ret;
}

/**
 * llm_model_close() - release a model and unmap its files.
 * @m: from llm_model_open(); NULL is ignored.
 */
void llm_model_close(struct llm_model *m)
{
	if (!m)
		return;
	llm_weights_fini(&m->w);
	llm_tok_free(m->tok);
	llm_gguf_close(m->src);
	llm_st_free(m->st);
	free(m);
}
