// SPDX-License-Identifier: MIT
/*
 * hf.c - Hugging Face model directories.
 *
 * DOC: safetensors
 *
 * A safetensors file is an 8-byte little-endian header length N, N bytes
 * of JSON { name: { "dtype", "shape", "data_offsets": [begin, end] }, ...,
 * "__metadata__": {...} }, then the data section; offsets are relative to
 * its start. Checked for every entry: the dtype is known, the shape has 1
 * to 4 positive dimensions, begin <= end <= data bytes, end - begin equals
 * the element count times the dtype size (no overflow), no two entries
 * overlap. Only F32, F16 and BF16 tensors can be bound as weights.
 *
 * The directory's metadata is rewritten as an in-memory GGUF image (the
 * keys config.c and tokenizer.c read), parsed by llm_gguf_open_mem(); the
 * mapped tensors are then attached to that struct llm_gguf under their
 * GGUF names.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hf.h"
#include "json.h"

#define HF_JSON_MAX (512ULL << 20) /* biggest JSON file read */
#define ST_HDR_MAX (100ULL << 20)  /* biggest safetensors header */
#define ST_MAX_FILES 1024

struct st_map {
	void *base;
	size_t size;
};

struct llm_st {
	int n_maps;
	struct st_map maps[ST_MAX_FILES];
	uint8_t *meta; /* the GGUF image of the metadata */
};

static int __attribute__((format(printf, 4, 5)))
hf_fail(char *err, size_t errlen, int ret, const char *fmt, ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return ret;
}

/* ---- files ---- */

/* what a non-regular file is, for the message that refuses it */
static const char *ftype(mode_t mode)
{
	if (S_ISDIR(mode))
		return "a directory";
	if (S_ISFIFO(mode))
		return "a FIFO";
	if (S_ISSOCK(mode))
		return "a socket";
	if (S_ISCHR(mode))
		return "a character device";
	if (S_ISBLK(mode))
		return "a block device";
	return "not a regular file";
}

/*
 * Open @path for reading without blocking (a FIFO would block in open()
 * until a writer came) and refuse anything but a regular file. O_NONBLOCK
 * does not change how a regular file reads.
 */
static int open_regular(const char *path, struct stat *st, char *err,
			size_t errlen)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK), ret;

	if (fd < 0) {
		ret = -errno;
		return hf_fail(err, errlen, ret, "hf: %s: %s", path,
			       strerror(-ret));
	}
	if (fstat(fd, st)) {
		ret = -errno;
		close(fd);
		return hf_fail(err, errlen, ret, "hf: %s: %s", path,
			       strerror(-ret));
	}
	if (!S_ISREG(st->st_mode)) {
		close(fd);
		return hf_fail(err, errlen, -EBADMSG,
			       "hf: %s: %s, not a regular file", path,
			       ftype(st->st_mode));
	}
	return fd;
}

static int read_all(const char *path, char **buf, size_t *len, char *err,
		    size_t errlen)
{
	struct stat st;
	ssize_t r;
	size_t got = 0;
	int fd;

	fd = open_regular(path, &st, err, errlen);
	if (fd < 0)
		return fd;
	if ((uint64_t)st.st_size > HF_JSON_MAX) {
		close(fd);
		return hf_fail(err, errlen, -EBADMSG,
			       "hf: %s: larger than 512 MiB", path);
	}
	*buf = malloc((size_t)st.st_size + 1);
	if (!*buf) {
		close(fd);
		return hf_fail(err, errlen, -ENOMEM, "hf: out of memory");
	}
	while (got < (size_t)st.st_size) {
		r = read(fd, *buf + got, (size_t)st.st_size - got);
		if (r <= 0)
			break;
		got += (size_t)r;
	}
	close(fd);
	if (got != (size_t)st.st_size) {
		free(*buf);
		return hf_fail(err, errlen, -EIO, "hf: %s: short read", path);
	}
	(*buf)[got] = 0;
	*len = got;
	return 0;
}

/* read and parse @dir/@name; -ENOENT (no message) when absent and @opt */
static int load_json(const char *dir, const char *name, bool opt,
		     struct llm_json_doc **doc, char *err, size_t errlen)
{
	char path[PATH_MAX], jerr[160];
	char *buf = NULL;
	size_t len = 0;
	int ret;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	if (opt && access(path, F_OK))
		return -ENOENT;
	ret = read_all(path, &buf, &len, err, errlen);
	if (ret)
		return ret;
	ret = llm_json_parse(buf, len, doc, jerr, sizeof(jerr));
	free(buf);
	if (ret)
		return hf_fail(err, errlen, ret, "hf: %s: %s", path, jerr);
	return 0;
}

static int map_file(const char *path, struct st_map *m, char *err,
		    size_t errlen)
{
	struct stat st;
	int fd, ret;

	fd = open_regular(path, &st, err, errlen);
	if (fd < 0)
		return fd;
	if (st.st_size < 8) {
		close(fd);
		return hf_fail(err, errlen, -EBADMSG,
			       "hf: %s: truncated safetensors file (%lld "
			       "bytes)", path, (long long)st.st_size);
	}
	m->size = (size_t)st.st_size;
	m->base = mmap(NULL, m->size, PROT_READ, MAP_PRIVATE, fd, 0);
	ret = -errno;
	close(fd);
	if (m->base == MAP_FAILED) {
		m->base = NULL;
		return hf_fail(err, errlen, ret, "hf: %s: mmap: %s", path,
			       strerror(-ret));
	}
	return 0;
}

/**
 * llm_st_free() - unmap every safetensors file and free the metadata image.
 * @st: NULL is ignored.
 */
void llm_st_free(struct llm_st *st)
{
	if (!st)
		return;
	for (int i = 0; i < st->n_maps; i++)
		munmap(st->maps[i].base, st->maps[i].size);
	free(st->meta);
	free(st);
}

/* ---- safetensors headers ---- */

static const struct {
	const char *name;
	uint32_t size;
	int ggml; /* -1: not bindable */
} st_dtypes[] = {
	{ "F32", 4, LLM_GGML_F32 },  { "F16", 2, LLM_GGML_F16 },
	{ "BF16", 2, LLM_GGML_BF16 }, { "F64", 8, -1 },
	{ "I64", 8, -1 },	     { "I32", 4, -1 },
	{ "I16", 2, -1 },	     { "I8", 1, -1 },
	{ "U8", 1, -1 },	     { "BOOL", 1, -1 },
	{ "U16", 2, -1 },	     { "U32", 4, -1 },
	{ "U64", 8, -1 },	     { "F8_E4M3", 1, -1 },
	{ "F8_E5M2", 1, -1 },
};

struct st_ent {
	const struct llm_json *name;
	int dtype; /* index into st_dtypes */
	uint32_t n_dims;
	uint64_t ne[LLM_GGUF_MAX_DIMS]; /* GGUF order: fastest first */
	uint64_t begin, end;
};

static int ent_cmp(const void *a, const void *b)
{
	const struct st_ent *x = a, *y = b;

	return x->begin < y->begin ? -1 : x->begin > y->begin;
}

/*
 * Parse and check the header of a safetensors image. On success *doc holds
 * the JSON (the entries' names point into it) and *ents n entries.
 */
static int st_parse(const uint8_t *buf, size_t size, const char *fname,
		    struct llm_json_doc **doc, struct st_ent **ents,
		    size_t *n, uint64_t *data_off, char *err, size_t errlen)
{
	const struct llm_json *root;
	struct st_ent *e = NULL;
	uint64_t hlen = 0, room;
	char jerr[160];
	size_t k = 0;
	int ret;

	*doc = NULL;
	if (size < 8)
		return hf_fail(err, errlen, -EBADMSG,
			       "hf: %s: truncated safetensors file", fname);
	for (int i = 7; i >= 0; i--)
		hlen = hlen << 8 | buf[i];
	if (hlen < 2 || hlen > ST_HDR_MAX || hlen > size - 8)
		return hf_fail(err, errlen, -EBADMSG,
			       "hf: %s: header length %llu does not fit the "
			       "file (%zu bytes)", fname,
			       (unsigned long long)hlen, size);
	*data_off = 8 + hlen;
	room = size - *data_off;
	ret = llm_json_parse((const char *)buf + 8, hlen, doc, jerr,
			     sizeof(jerr));
	if (ret)
		return hf_fail(err, errlen, ret, "hf: %s: header: %s", fname,
			       jerr);
	root = llm_json_root(*doc);
	if (root->type != LLM_JSON_OBJECT) {
		ret = hf_fail(err, errlen, -EBADMSG,
			      "hf: %s: header is not an object", fname);
		goto fail;
	}
	e = calloc(root->n ? root->n : 1, sizeof(*e));
	if (!e) {
		ret = hf_fail(err, errlen, -ENOMEM, "hf: out of memory");
		goto fail;
	}
	for (uint32_t i = 0; i < root->n; i++) {
		const struct llm_json *v = &root->kids[i], *dt, *sh, *off;
		struct st_ent *t = &e[k];
		uint64_t nel = 1;
		int64_t x;
		size_t d;

		if (v->key_len == 12 && !memcmp(v->key, "__metadata__", 12))
			continue;
		t->name = v;
		dt = llm_json_get(v, "dtype");
		sh = llm_json_get(v, "shape");
		off = llm_json_get(v, "data_offsets");
		if (!dt || dt->type != LLM_JSON_STRING || !sh ||
		    sh->type != LLM_JSON_ARRAY || !off ||
		    off->type != LLM_JSON_ARRAY || off->n != 2) {
			ret = hf_fail(err, errlen, -EBADMSG,
				      "hf: %s: tensor '%.64s': needs dtype, "
				      "shape and two data_offsets", fname,
				      v->key);
			goto fail;
		}
		for (d = 0; d < ARRAY_SIZE(st_dtypes); d++)
			if (llm_json_str_eq(dt, st_dtypes[d].name))
				break;
		if (d == ARRAY_SIZE(st_dtypes)) {
			ret = hf_fail(err, errlen, -EOPNOTSUPP,
				      "hf: %s: tensor '%.64s': unknown dtype "
				      "'%.16s'", fname, v->key, dt->str);
			goto fail;
		}
		t->dtype = (int)d;
		if (sh->n > LLM_GGUF_MAX_DIMS) {
			ret = hf_fail(err, errlen, -EOPNOTSUPP,
				      "hf: %s: tensor '%.64s': %u dimensions "
				      "(at most 4)", fname, v->key, sh->n);
			goto fail;
		}
		t->n_dims = sh->n ? sh->n : 1;
		for (uint32_t j = 0; j < LLM_GGUF_MAX_DIMS; j++)
			t->ne[j] = 1;
		for (uint32_t j = 0; j < sh->n; j++) {
			if (llm_json_int(&sh->kids[j], 0, INT64_MAX, &x)) {
				ret = hf_fail(err, errlen, -EBADMSG,
					      "hf: %s: tensor '%.64s': bad "
					      "shape", fname, v->key);
				goto fail;
			}
			t->ne[sh->n - 1 - j] = (uint64_t)x;
			if (x && nel > (UINT64_MAX >> 4) / (uint64_t)x) {
				ret = hf_fail(err, errlen, -EBADMSG,
					      "hf: %s: tensor '%.64s': shape "
					      "overflows", fname, v->key);
				goto fail;
			}
			nel *= (uint64_t)x;
		}
		if (llm_json_int(&off->kids[0], 0, INT64_MAX, &x)) {
			ret = -EBADMSG;
			goto bad_off;
		}
		t->begin = (uint64_t)x;
		if (llm_json_int(&off->kids[1], 0, INT64_MAX, &x)) {
			ret = -EBADMSG;
			goto bad_off;
		}
		t->end = (uint64_t)x;
		if (t->begin > t->end) {
			ret = hf_fail(err, errlen, -EBADMSG,
				      "hf: %s: tensor '%.64s': data_offsets "
				      "[%llu, %llu] begin after end", fname,
				      v->key, (unsigned long long)t->begin,
				      (unsigned long long)t->end);
			goto fail;
		}
		if (t->end > room) {
			ret = hf_fail(err, errlen, -EBADMSG,
				      "hf: %s: tensor '%.64s': data [%llu, "
				      "%llu) beyond end of file (%llu data "
				      "bytes)", fname, v->key,
				      (unsigned long long)t->begin,
				      (unsigned long long)t->end,
				      (unsigned long long)room);
			goto fail;
		}
		if (t->end - t->begin != nel * st_dtypes[d].size) {
			ret = hf_fail(err, errlen, -EBADMSG,
				      "hf: %s: tensor '%.64s': %llu bytes for "
				      "%llu elements of %s", fname, v->key,
				      (unsigned long long)(t->end - t->begin),
				      (unsigned long long)nel,
				      st_dtypes[d].name);
			goto fail;
		}
		k++;
	}
	qsort(e, k, sizeof(*e), ent_cmp);
	for (size_t i = 1; i < k; i++) {
		if (e[i].begin < e[i - 1].end) {
			ret = hf_fail(err, errlen, -EBADMSG,
				      "hf: %s: tensors '%.64s' and '%.64s' "
				      "overlap", fname, e[i - 1].name->key,
				      e[i].name->key);
			goto fail;
		}
	}
	*ents = e;
	*n = k;
	return 0;

bad_off:
	ret = hf_fail(err, errlen, ret, "hf: %s: bad data_offsets", fname);
fail:
	free(e);
	llm_json_free(*doc);
	*doc = NULL;
	return ret;
}

/**
 * llm_st_check() - parse and check a safetensors image in memory.
 * @buf: the image.
 * @size: bytes of @buf.
 * @n_tensors: tensors it holds.
 * @err: one-line message on failure.
 * @errlen: bytes of @err.
 *
 * Return: 0, -EBADMSG (truncated or corrupt), -EOPNOTSUPP (unknown dtype,
 * more than 4 dimensions), -ENOMEM.
 */
int llm_st_check(const void *buf, size_t size, size_t *n_tensors, char *err,
		 size_t errlen)
{
	struct llm_json_doc *doc;
	struct st_ent *e;
	uint64_t off;
	int ret;

	ret = st_parse(buf, size, "image", &doc, &e, n_tensors, &off, err,
		       errlen);
	if (ret)
		return ret;
	free(e);
	llm_json_free(doc);
	return 0;
}

/* ---- tensor names ---- */

/* Hugging Face name -> GGUF name; false when the tensor is not a weight */
static bool hf_name(const char *hf, size_t len, char *out, size_t cap)
{
	static const struct {
		const char *hf, *gg;
	} top[] = {
		{ "model.embed_tokens.weight", "token_embd.weight" },
		{ "model.norm.weight", "output_norm.weight" },
		{ "lm_head.weight", "output.weight" },
	}, blk[] = {
		{ "input_layernorm.weight", "attn_norm.weight" },
		{ "self_attn.q_proj.weight", "attn_q.weight" },
		{ "self_attn.k_proj.weight", "attn_k.weight" },
		{ "self_attn.v_proj.weight", "attn_v.weight" },
		{ "self_attn.o_proj.weight", "attn_output.weight" },
		{ "self_attn.q_proj.bias", "attn_q.bias" },
		{ "self_attn.k_proj.bias", "attn_k.bias" },
		{ "self_attn.v_proj.bias", "attn_v.bias" },
		{ "self_attn.o_proj.bias", "attn_output.bias" },
		{ "self_attn.q_norm.weight", "attn_q_norm.weight" },
		{ "self_attn.k_norm.weight", "attn_k_norm.weight" },
		{ "post_attention_layernorm.weight", "ffn_norm.weight" },
		{ "mlp.gate_proj.weight", "ffn_gate.weight" },
		{ "mlp.up_proj.weight", "ffn_up.weight" },
		{ "mlp.down_proj.weight", "ffn_down.weight" },
	};
	const char *p = "model.layers.";
	size_t pl = strlen(p), i;
	unsigned long l = 0;

	for (i = 0; i < ARRAY_SIZE(top); i++)
		if (len == strlen(top[i].hf) && !memcmp(hf, top[i].hf, len)) {
			snprintf(out, cap, "%s", top[i].gg);
			return true;
		}
	if (len <= pl || memcmp(hf, p, pl))
		return false;
	for (i = pl; i < len && hf[i] >= '0' && hf[i] <= '9' && i < pl + 6;
	     i++)
		l = l * 10 + (unsigned long)(hf[i] - '0');
	if (i == pl || i >= len || hf[i] != '.' ||
	    (hf[pl] == '0' && i > pl + 1))
		return false;
	i++;
	for (size_t k = 0; k < ARRAY_SIZE(blk); k++)
		if (len - i == strlen(blk[k].hf) &&
		    !memcmp(hf + i, blk[k].hf, len - i)) {
			snprintf(out, cap, "blk.%lu.%s", l, blk[k].gg);
			return true;
		}
	return false;
}

/* ---- the GGUF image of the metadata ---- */

struct gimg {
	uint8_t *p;
	size_t len, cap;
	uint64_t n_kv;
	bool oom;
};

static void gi_put(struct gimg *b, const void *d, size_t n)
{
	if (b->oom)
		return;
	if (b->len + n > b->cap) {
		size_t nc = b->cap ? b->cap : 4096;
		uint8_t *np;

		while (nc < b->len + n)
			nc *= 2;
		np = realloc(b->p, nc);
		if (!np) {
			b->oom = true;
			return;
		}
		b->p = np;
		b->cap = nc;
	}
	memcpy(b->p + b->len, d, n);
	b->len += n;
}

static void gi_u32(struct gimg *b, uint32_t v)
{
	uint8_t x[4] = { v, v >> 8, v >> 16, v >> 24 };

	gi_put(b, x, 4);
}

static void gi_u64(struct gimg *b, uint64_t v)
{
	gi_u32(b, (uint32_t)v);
	gi_u32(b, (uint32_t)(v >> 32));
}

static void gi_str(struct gimg *b, const char *s, size_t n)
{
	gi_u64(b, n);
	gi_put(b, s, n);
}

static void gi_key(struct gimg *b, const char *k, uint32_t type)
{
	gi_str(b, k, strlen(k));
	gi_u32(b, type);
	b->n_kv++;
}

static void gi_kv_u32(struct gimg *b, const char *k, uint32_t v)
{
	gi_key(b, k, LLM_GGUF_U32);
	gi_u32(b, v);
}

static void gi_kv_f32(struct gimg *b, const char *k, float v)
{
	uint32_t u;

	memcpy(&u, &v, 4);
	gi_key(b, k, LLM_GGUF_F32);
	gi_u32(b, u);
}

static void gi_kv_str(struct gimg *b, const char *k, const char *s, size_t n)
{
	gi_key(b, k, LLM_GGUF_STRING);
	gi_str(b, s, n);
}

static void gi_kv_bool(struct gimg *b, const char *k, bool v)
{
	uint8_t x = v;

	gi_key(b, k, LLM_GGUF_BOOL);
	gi_put(b, &x, 1);
}

/* ---- config.json ---- */

static const struct {
	const char *hf;
	const char *gg;
} arch_tab[] = {
	{ "LlamaForCausalLM", "llama" },
	{ "MistralForCausalLM", "mistral" },
	{ "Qwen2ForCausalLM", "qwen2" },
	{ "Qwen3ForCausalLM", "qwen3" },
};

static int cfg_u32(const struct llm_json *cfg, const char *key, bool req,
		   struct gimg *b, const char *arch, const char *gkey,
		   const char *path, char *err, size_t errlen)
{
	const struct llm_json *v = llm_json_get(cfg, key);
	char full[96];
	int64_t x;
	int ret = llm_json_int(v, 0, UINT32_MAX, &x);

	if (ret == -ENOENT && !req)
		return 0;
	if (ret == -ENOENT)
		return hf_fail(err, errlen, -EBADMSG, "hf: %s: missing %s",
			       path, key);
	if (ret)
		return hf_fail(err, errlen, -EBADMSG,
			       "hf: %s: %s is not an integer in [0, 2^32)",
			       path, key);
	snprintf(full, sizeof(full), "%s.%s", arch, gkey);
	gi_kv_u32(b, full, (uint32_t)x);
	return 0;
}

static int cfg_num(const struct llm_json *cfg, const char *key,
		   double *out, const char *path, char *err, size_t errlen)
{
	const struct llm_json *v = llm_json_get(cfg, key);

	if (!v || v->type == LLM_JSON_NULL)
		return -ENOENT;
	if (v->type != LLM_JSON_NUMBER)
		return hf_fail(err, errlen, -EBADMSG,
			       "hf: %s: %s is not a number", path, key);
	*out = v->num;
	return 0;
}

struct hf_cfg {
	const char *arch;
	bool tied;
	bool has_scaling;
	float factor, lo, hi;
	uint32_t orig;
	uint32_t sliding;
};

static int hf_config(const char *dir, const struct llm_json *cfg,
		     struct gimg *b, struct hf_cfg *hc, char *err,
		     size_t errlen)
{
	const struct llm_json *ar = llm_json_get(cfg, "architectures");
	const struct llm_json *v, *rs;
	char path[PATH_MAX];
	int64_t x64;
	double x;
	int ret;
	size_t i;

	snprintf(path, sizeof(path), "%s/config.json", dir);
	if (cfg->type != LLM_JSON_OBJECT)
		return hf_fail(err, errlen, -EBADMSG,
			       "hf: %s: not a JSON object", path);
	if (!ar || ar->type != LLM_JSON_ARRAY || ar->n < 1 ||
	    ar->kids[0].type != LLM_JSON_STRING)
		return hf_fail(err, errlen, -EBADMSG,
			       "hf: %s: missing architectures", path);
	for (i = 0; i < ARRAY_SIZE(arch_tab); i++)
		if (llm_json_str_eq(&ar->kids[0], arch_tab[i].hf))
			break;
	if (i == ARRAY_SIZE(arch_tab))
		return hf_fail(err, errlen, -EOPNOTSUPP,
			       "hf: %s: unsupported architecture '%.48s'",
			       path, ar->kids[0].str);
	hc->arch = arch_tab[i].gg;
	gi_kv_str(b, "general.architecture", hc->arch, strlen(hc->arch));
	ret = cfg_u32(cfg, "max_position_embeddings", true, b, hc->arch,
		      "context_length", path, err, errlen);
	if (!ret)
		ret = cfg_u32(cfg, "hidden_size", true, b, hc->arch,
			      "embedding_length", path, err, errlen);
	if (!ret)
		ret = cfg_u32(cfg, "num_hidden_layers", true, b, hc->arch,
			      "block_count", path, err, errlen);
	if (!ret)
		ret = cfg_u32(cfg, "intermediate_size", true, b, hc->arch,
			      "feed_forward_length", path, err, errlen);
	if (!ret)
		ret = cfg_u32(cfg, "num_attention_heads", true, b, hc->arch,
			      "attention.head_count", path, err, errlen);
	if (!ret)
		ret = cfg_u32(cfg, "num_key_value_heads", false, b, hc->arch,
			      "attention.head_count_kv", path, err, errlen);
	if (!ret)
		ret = cfg_u32(cfg, "head_dim", false, b, hc->arch,
			      "attention.key_length", path, err, errlen);
	if (!ret)
		ret = cfg_u32(cfg, "vocab_size", true, b, hc->arch,
			      "vocab_size", path, err, errlen);
	if (ret)
		return ret;
	if (!llm_json_int(llm_json_get(cfg, "vocab_size"), 0, 0, &x64))
		return hf_fail(err, errlen, -EBADMSG,
			       "hf: %s: vocab_size is 0", path);
	ret = cfg_num(cfg, "rms_norm_eps", &x, path, err, errlen);
	if (ret == -ENOENT)
		return hf_fail(err, errlen, -EBADMSG,
			       "hf: %s: missing rms_norm_eps", path);
	if (ret)
		return ret;
	{
		char full[96];

		snprintf(full, sizeof(full), "%s.attention.layer_norm_rms_"
			 "epsilon", hc->arch);
		gi_kv_f32(b, full, (float)x);
		ret = cfg_num(cfg, "rope_theta", &x, path, err, errlen);
		if (ret && ret != -ENOENT)
			return ret;
		if (!ret) {
			snprintf(full, sizeof(full), "%s.rope.freq_base",
				 hc->arch);
			gi_kv_f32(b, full, (float)x);
		}
	}
	v = llm_json_get(cfg, "tie_word_embeddings");
	hc->tied = v && v->type == LLM_JSON_BOOL ? v->b : false;
	v = llm_json_get(cfg, "attention_bias");
	if (v && v->type == LLM_JSON_BOOL && v->b &&
	    strcmp(hc->arch, "qwen2"))
		return hf_fail(err, errlen, -EOPNOTSUPP,
			       "hf: %s: attention_bias is not supported for "
			       "%s", path, hc->arch);
	v = llm_json_get(cfg, "sliding_window");
	hc->sliding = 0;
	ret = llm_json_int(v, 1, UINT32_MAX, &x64);
	if (ret && ret != -ENOENT)
		return hf_fail(err, errlen, -EBADMSG,
			       "hf: %s: sliding_window is not null nor an "
			       "integer in [1, 2^32)", path);
	if (!ret && !strcmp(hc->arch, "mistral"))
		hc->sliding = (uint32_t)x64;
	rs = llm_json_get(cfg, "rope_scaling");
	if (rs && rs->type == LLM_JSON_OBJECT) {
		const struct llm_json *ty = llm_json_get(rs, "rope_type");
		double f, lo, hi, orig;

		if (!ty)
			ty = llm_json_get(rs, "type");
		if (llm_json_str_eq(ty, "default"))
			return 0;
		if (!llm_json_str_eq(ty, "llama3"))
			return hf_fail(err, errlen, -EOPNOTSUPP,
				       "hf: %s: unsupported rope_scaling type "
				       "'%.32s'", path,
				       ty && ty->type == LLM_JSON_STRING ?
				       ty->str : "?");
		if (cfg_num(rs, "factor", &f, path, err, errlen) ||
		    cfg_num(rs, "low_freq_factor", &lo, path, err, errlen) ||
		    cfg_num(rs, "high_freq_factor", &hi, path, err, errlen) ||
		    cfg_num(rs, "original_max_position_embeddings", &orig,
			    path, err, errlen) ||
		    !(f >= 1 && f < 1e6) || !(lo > 0) || !(hi > lo) ||
		    !(hi < 1e6) || !(orig >= 1 && orig <= LLM_MAX_CTX))
			return hf_fail(err, errlen, -EBADMSG,
				       "hf: %s: bad llama3 rope_scaling", path);
		hc->has_scaling = true;
		hc->factor = (float)f;
		hc->lo = (float)lo;
		hc->hi = (float)hi;
		hc->orig = (uint32_t)orig;
	} else if (rs && rs->type != LLM_JSON_NULL) {
		return hf_fail(err, errlen, -EBADMSG,
			       "hf: %s: rope_scaling is not an object", path);
	}
	return 0;
}

/* ---- tokenizer.json ---- */

/* a string of the tokenizer, kept for the GGUF arrays */
struct tstr {
	const char *s;
	uint32_t n;
};

static int tok_fail(const char *path, const char *what, char *err,
		    size_t errlen, int ret)
{
	return hf_fail(err, errlen, ret, "hf: %s: %s", path, what);
}

/* the Split patterns of Llama 3 and Qwen2 tokenizer.json files */
#define LLAMA3_RE "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?" \
	"\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|" \
	"\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define QWEN2_RE "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?" \
	"\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|" \
	"\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

/* which GGUF pre-tokenizer name matches the pre_tokenizer object */
static int tok_pre(const struct llm_json *pre, const char **name)
{
	const struct llm_json *ty = llm_json_get(pre, "type"), *seq;
	bool digits = false, bytelevel = false;
	const char *split = NULL;

	if (!pre || pre->type == LLM_JSON_NULL) {
		*name = NULL;
		return 0;
	}
	if (llm_json_str_eq(ty, "ByteLevel")) {
		*name = "gpt2";
		return 0;
	}
	if (llm_json_str_eq(ty, "Metaspace")) {
		*name = NULL; /* SentencePiece: no pre-tokenizer */
		return 0;
	}
	if (!llm_json_str_eq(ty, "Sequence"))
		return -EOPNOTSUPP;
	seq = llm_json_get(pre, "pretokenizers");
	if (!seq || seq->type != LLM_JSON_ARRAY)
		return -EOPNOTSUPP;
	for (uint32_t i = 0; i < seq->n; i++) {
		const struct llm_json *e = &seq->kids[i];
		const struct llm_json *t = llm_json_get(e, "type");
		const struct llm_json *id;

		if (llm_json_str_eq(t, "ByteLevel")) {
			bytelevel = true;
		} else if (llm_json_str_eq(t, "Split") && !split) {
			const struct llm_json *re = llm_json_get(
				llm_json_get(e, "pattern"), "Regex");

			if (llm_json_str_eq(re, LLAMA3_RE))
				split = "llama-bpe";
			else if (llm_json_str_eq(re, QWEN2_RE))
				split = "qwen2";
			else
				return -EOPNOTSUPP;
			if (!llm_json_str_eq(llm_json_get(e, "behavior"),
					     "Isolated"))
				return -EOPNOTSUPP;
		} else if (llm_json_str_eq(t, "Digits")) {
			id = llm_json_get(e, "individual_digits");
			if (!id || id->type != LLM_JSON_BOOL || !id->b)
				return -EOPNOTSUPP;
			digits = true;
		} else {
			return -EOPNOTSUPP;
		}
	}
	if (!bytelevel || (split && digits))
		return -EOPNOTSUPP;
	*name = split ? split : digits ? "smollm" : "gpt2";
	return 0;
}

static bool is_spm(const struct llm_json *tj)
{
	const struct llm_json *model = llm_json_get(tj, "model");
	const struct llm_json *bf = llm_json_get(model, "byte_fallback");
	const struct llm_json *pre = llm_json_get(tj, "pre_tokenizer");
	const struct llm_json *dec = llm_json_get(tj, "decoder");

	if (bf && bf->type == LLM_JSON_BOOL && bf->b)
		return true;
	if (llm_json_str_eq(llm_json_get(pre, "type"), "Metaspace"))
		return true;
	return llm_json_str_eq(llm_json_get(dec, "type"), "Metaspace");
}

/* SentencePiece: where a space goes before the text (tokenizer.h) */
static enum llm_tok_prefix spm_prefix(const struct llm_json *tj)
{
	const struct llm_json *pre = llm_json_get(tj, "pre_tokenizer");
	const struct llm_json *nm = llm_json_get(tj, "normalizer");
	const struct llm_json *v;

	if (llm_json_str_eq(llm_json_get(pre, "type"), "Metaspace")) {
		v = llm_json_get(pre, "prepend_scheme");
		if (llm_json_str_eq(v, "first"))
			return LLM_TOK_PREFIX_FIRST;
		if (llm_json_str_eq(v, "never"))
			return LLM_TOK_PREFIX_NONE;
		if (llm_json_str_eq(v, "always"))
			return LLM_TOK_PREFIX_EACH;
		v = llm_json_get(pre, "add_prefix_space");
		return v && v->type == LLM_JSON_BOOL && !v->b ?
		       LLM_TOK_PREFIX_NONE : LLM_TOK_PREFIX_EACH;
	}
	if (llm_json_str_eq(llm_json_get(nm, "type"), "Prepend"))
		return LLM_TOK_PREFIX_EACH;
	v = llm_json_get(nm, "normalizers");
	for (uint32_t i = 0; v && v->type == LLM_JSON_ARRAY && i < v->n; i++)
		if (llm_json_str_eq(llm_json_get(&v->kids[i], "type"),
				    "Prepend"))
			return LLM_TOK_PREFIX_EACH;
	return LLM_TOK_PREFIX_NONE;
}

/*
 * tokenizer_config.json's bos_token (a string, an AddedToken object with
 * its content, or null) must name a token of the vocabulary
 */
static int tcfg_bos(const char *tcpath, const struct llm_json *tcfg,
		    const struct tstr *tok, uint32_t n, char *err,
		    size_t errlen)
{
	const struct llm_json *v = llm_json_get(tcfg, "bos_token");

	if (v && v->type == LLM_JSON_OBJECT)
		v = llm_json_get(v, "content");
	else if (!v || v->type == LLM_JSON_NULL)
		return 0;
	if (!v || v->type != LLM_JSON_STRING)
		return hf_fail(err, errlen, -EBADMSG,
			       "hf: %s: bos_token is not a string, an object "
			       "with a content string, or null", tcpath);
	for (uint32_t i = 0; i < n; i++)
		if (tok[i].n == v->n && !memcmp(tok[i].s, v->str, v->n))
			return 0;
	return hf_fail(err, errlen, -EBADMSG,
		       "hf: %s: bos_token '%.48s' is not in the vocabulary",
		       tcpath, v->str);
}

static int hf_tokenizer(const char *path, const struct llm_json *tj,
			const struct llm_json *tcfg, const char *tcpath,
			struct gimg *b, int32_t *bos_out, char *err,
			size_t errlen)
{
	const struct llm_json *model = llm_json_get(tj, "model");
	const struct llm_json *vocab = llm_json_get(model, "vocab");
	const struct llm_json *merges = llm_json_get(model, "merges");
	const struct llm_json *added = llm_json_get(tj, "added_tokens");
	const struct llm_json *pp, *v;
	struct tstr *tok = NULL;
	uint8_t *type = NULL;
	const struct llm_json *unk = llm_json_get(model, "unk_token");
	char *mbuf = NULL;
	const char *pre = NULL;
	int32_t unk_id = -1;
	uint32_t n = 0;
	bool spm;
	int ret;

	if (!llm_json_str_eq(llm_json_get(model, "type"), "BPE"))
		return tok_fail(path, "unsupported tokenizer model (only "
				"BPE)", err, errlen, -EOPNOTSUPP);
	if (!vocab || vocab->type != LLM_JSON_OBJECT || !vocab->n ||
	    !merges || merges->type != LLM_JSON_ARRAY)
		return tok_fail(path, "model.vocab or model.merges missing",
				err, errlen, -EBADMSG);
	spm = is_spm(tj);
	if (!spm && tok_pre(llm_json_get(tj, "pre_tokenizer"), &pre))
		return tok_fail(path, "unsupported pre_tokenizer", err,
				errlen, -EOPNOTSUPP);
	/* the vocabulary size: one past the largest id */
	for (uint32_t i = 0; i < vocab->n; i++) {
		int64_t id;

		if (llm_json_int(&vocab->kids[i], 0, LLM_MAX_VOCAB - 1, &id))
			return tok_fail(path, "bad token id in model.vocab",
					err, errlen, -EBADMSG);
		if ((uint32_t)id >= n)
			n = (uint32_t)id + 1;
	}
	if (added && added->type != LLM_JSON_ARRAY)
		return tok_fail(path, "added_tokens is not an array", err,
				errlen, -EBADMSG);
	for (uint32_t i = 0; added && i < added->n; i++) {
		const struct llm_json *c = llm_json_get(&added->kids[i],
							"content");
		int64_t id;

		if (llm_json_int(llm_json_get(&added->kids[i], "id"), 0,
				 LLM_MAX_VOCAB - 1, &id) ||
		    !c || c->type != LLM_JSON_STRING || !c->n)
			return tok_fail(path, "bad entry in added_tokens", err,
					errlen, -EBADMSG);
		if ((uint32_t)id >= n)
			n = (uint32_t)id + 1;
	}
	tok = calloc(n, sizeof(*tok));
	type = calloc(n, 1);
	if (!tok || !type) {
		ret = tok_fail(path, "out of memory", err, errlen, -ENOMEM);
		goto out;
	}
	for (uint32_t i = 0; i < vocab->n; i++) {
		int64_t id;
		const struct llm_json *e = &vocab->kids[i];

		llm_json_int(e, 0, LLM_MAX_VOCAB - 1, &id);
		if (tok[id].s) {
			ret = tok_fail(path, "two tokens share an id", err,
				       errlen, -EBADMSG);
			goto out;
		}
		tok[id] = (struct tstr){ e->key, e->key_len };
		type[id] = LLM_TOKTYPE_NORMAL;
		if (spm && e->key_len == 6 && !memcmp(e->key, "<0x", 3) &&
		    e->key[5] == '>')
			type[id] = LLM_TOKTYPE_BYTE;
	}
	for (uint32_t i = 0; added && i < added->n; i++) {
		const struct llm_json *a = &added->kids[i];
		const struct llm_json *c = llm_json_get(a, "content");
		const struct llm_json *sp = llm_json_get(a, "special");
		int64_t id;

		llm_json_int(llm_json_get(a, "id"), 0, LLM_MAX_VOCAB - 1, &id);
		if (tok[id].s && (tok[id].n != c->n ||
				  memcmp(tok[id].s, c->str, c->n))) {
			ret = tok_fail(path, "added token differs from the "
				       "vocabulary entry of its id", err,
				       errlen, -EBADMSG);
			goto out;
		}
		tok[id] = (struct tstr){ c->str, c->n };
		type[id] = sp && sp->type == LLM_JSON_BOOL && sp->b ?
			   LLM_TOKTYPE_CONTROL : LLM_TOKTYPE_USER_DEFINED;
	}
	for (uint32_t i = 0; i < n; i++) {
		if (!tok[i].s) {
			tok[i] = (struct tstr){ "", 0 };
			type[i] = LLM_TOKTYPE_UNUSED;
		}
		if (unk && unk->type == LLM_JSON_STRING && unk_id < 0 &&
		    tok[i].n == unk->n && !memcmp(tok[i].s, unk->str, unk->n)) {
			unk_id = (int32_t)i;
			type[i] = LLM_TOKTYPE_UNKNOWN;
		}
	}
	if (unk_id >= 0)
		gi_kv_u32(b, "tokenizer.ggml.unknown_token_id",
			  (uint32_t)unk_id);
	ret = tcfg_bos(tcpath, tcfg, tok, n, err, errlen);
	if (ret)
		goto out;

	gi_kv_str(b, "tokenizer.ggml.model", spm ? "llama" : "gpt2",
		  spm ? 5 : 4);
	if (pre)
		gi_kv_str(b, "tokenizer.ggml.pre", pre, strlen(pre));
	gi_key(b, "tokenizer.ggml.tokens", LLM_GGUF_ARRAY);
	gi_u32(b, LLM_GGUF_STRING);
	gi_u64(b, n);
	for (uint32_t i = 0; i < n; i++)
		gi_str(b, tok[i].s, tok[i].n);
	gi_key(b, "tokenizer.ggml.token_type", LLM_GGUF_ARRAY);
	gi_u32(b, LLM_GGUF_I32);
	gi_u64(b, n);
	for (uint32_t i = 0; i < n; i++)
		gi_u32(b, type[i]);
	gi_key(b, "tokenizer.ggml.merges", LLM_GGUF_ARRAY);
	gi_u32(b, LLM_GGUF_STRING);
	gi_u64(b, merges->n);
	for (uint32_t i = 0; i < merges->n; i++) {
		const struct llm_json *m = &merges->kids[i];

		if (m->type == LLM_JSON_STRING) {
			gi_str(b, m->str, m->n);
		} else if (m->type == LLM_JSON_ARRAY && m->n == 2 &&
			   m->kids[0].type == LLM_JSON_STRING &&
			   m->kids[1].type == LLM_JSON_STRING) {
			size_t la = m->kids[0].n, lb = m->kids[1].n;
			char *nb = realloc(mbuf, la + lb + 1);

			if (!nb) {
				ret = tok_fail(path, "out of memory", err,
					       errlen, -ENOMEM);
				goto out;
			}
			mbuf = nb;
			memcpy(mbuf, m->kids[0].str, la);
			mbuf[la] = ' ';
			memcpy(mbuf + la + 1, m->kids[1].str, lb);
			gi_str(b, mbuf, la + lb + 1);
		} else {
			ret = tok_fail(path, "bad entry in model.merges", err,
				       errlen, -EBADMSG);
			goto out;
		}
	}
	/* BOS added by the post-processor's single template */
	*bos_out = -1;
	pp = llm_json_get(tj, "post_processor");
	v = llm_json_get(pp, "single");
	if (v && v->type == LLM_JSON_ARRAY && v->n >= 1) {
		const struct llm_json *st = llm_json_get(&v->kids[0],
							 "SpecialToken");
		const struct llm_json *id = llm_json_get(st, "id");

		for (uint32_t i = 0; id && i < n; i++)
			if (type[i] == LLM_TOKTYPE_CONTROL &&
			    tok[i].n == id->n && !memcmp(tok[i].s, id->str,
							 id->n)) {
				*bos_out = (int32_t)i;
				break;
			}
	}
	gi_kv_bool(b, "tokenizer.ggml.add_bos_token", *bos_out >= 0);
	if (spm) {
		enum llm_tok_prefix pf = spm_prefix(tj);

		gi_kv_bool(b, "tokenizer.ggml.add_space_prefix",
			   pf != LLM_TOK_PREFIX_NONE);
		gi_kv_bool(b, "kvmm.tokenizer.prefix_first_only",
			   pf == LLM_TOK_PREFIX_FIRST);
	}
	v = llm_json_get(tcfg, "chat_template");
	if (v && v->type == LLM_JSON_STRING)
		gi_kv_str(b, "tokenizer.chat_template", v->str, v->n);
	ret = 0;
out:
	free(mbuf);
	free(tok);
	free(type);
	return ret;
}

/*
 * eos_token_id of generation_config.json or config.json: an id or a list
 * of ids; null or absent leaves @g as it is
 */
static int gen_ids(const struct llm_json *v, const char *path,
		   int64_t n_vocab, struct llm_gen_defaults *g, char *err,
		   size_t errlen)
{
	int64_t x;

	if (!v || v->type == LLM_JSON_NULL)
		return 0;
	if (v->type == LLM_JSON_ARRAY) {
		if (v->n > LLM_MODEL_MAX_EOS)
			return hf_fail(err, errlen, -EBADMSG,
				       "hf: %s: eos_token_id lists %u ids "
				       "(at most %d)", path, v->n,
				       LLM_MODEL_MAX_EOS);
		g->n_eos = 0;
		for (uint32_t i = 0; i < v->n; i++) {
			if (llm_json_int(&v->kids[i], 0, LLM_MAX_VOCAB - 1,
					 &x))
				goto bad;
			if (x >= n_vocab)
				goto past;
			g->eos[g->n_eos++] = (int32_t)x;
		}
		return 0;
	}
	if (llm_json_int(v, 0, LLM_MAX_VOCAB - 1, &x))
		goto bad;
	if (x >= n_vocab)
		goto past;
	g->n_eos = 1;
	g->eos[0] = (int32_t)x;
	return 0;
past:
	return hf_fail(err, errlen, -EBADMSG,
		       "hf: %s: eos_token_id %lld is past the vocabulary "
		       "(%lld)", path, (long long)x, (long long)n_vocab);
bad:
	return hf_fail(err, errlen, -EBADMSG,
		       "hf: %s: eos_token_id is not a token id nor a list of "
		       "them", path);
}

/* a number of generation_config.json in [@lo, @hi]; null or absent: -1 */
static int gen_num(const struct llm_json *gen, const char *key, double lo,
		   double hi, bool integer, double *out, const char *path,
		   char *err, size_t errlen)
{
	const struct llm_json *v = llm_json_get(gen, key);

	*out = -1;
	if (!v || v->type == LLM_JSON_NULL)
		return 0;
	if (v->type != LLM_JSON_NUMBER || !(v->num >= lo && v->num <= hi) ||
	    (integer && v->num != (double)(int64_t)v->num))
		return hf_fail(err, errlen, -EBADMSG,
			       "hf: %s: %s is not %s in [%g, %g]", path, key,
			       integer ? "an integer" : "a number", lo, hi);
	*out = v->num;
	return 0;
}

/*
 * The generation defaults: eos ids from config.json, then from
 * generation_config.json; a mistyped or out-of-range value is refused
 * with its file and key named.
 */
static int hf_gen(const char *dir, const struct llm_json *cfg,
		  const struct llm_json *gen, struct llm_gen_defaults *g,
		  char *err, size_t errlen)
{
	char cpath[PATH_MAX], gpath[PATH_MAX];
	int64_t nv = LLM_MAX_VOCAB;
	double x;
	int ret;

	snprintf(cpath, sizeof(cpath), "%s/config.json", dir);
	snprintf(gpath, sizeof(gpath), "%s/generation_config.json", dir);
	llm_json_int(llm_json_get(cfg, "vocab_size"), 1, LLM_MAX_VOCAB, &nv);
	ret = gen_ids(llm_json_get(cfg, "eos_token_id"), cpath, nv, g, err,
		      errlen);
	if (ret || !gen)
		return ret;
	if (gen->type != LLM_JSON_OBJECT)
		return hf_fail(err, errlen, -EBADMSG,
			       "hf: %s: not a JSON object", gpath);
	ret = gen_ids(llm_json_get(gen, "eos_token_id"), gpath, nv, g, err,
		      errlen);
	if (!ret)
		ret = gen_num(gen, "bos_token_id", 0, (double)nv - 1, true,
			      &x, gpath, err, errlen);
	if (ret)
		return ret;
	if (x >= 0)
		g->bos = (int32_t)x;
	ret = gen_num(gen, "temperature", 0, 100, false, &x, gpath, err,
		      errlen);
	if (ret)
		return ret;
	if (x >= 0)
		g->temperature = (float)x;
	ret = gen_num(gen, "top_k", 0, INT32_MAX, true, &x, gpath, err,
		      errlen);
	if (ret)
		return ret;
	if (x >= 0)
		g->top_k = (int)x;
	ret = gen_num(gen, "top_p", 0, 1, false, &x, gpath, err, errlen);
	if (ret)
		return ret;
	if (x == 0)
		return hf_fail(err, errlen, -EBADMSG,
			       "hf: %s: top_p is 0 (in (0, 1])", gpath);
	if (x > 0)
		g->top_p = (float)x;
	return 0;
}

/* ---- tensors ---- */

struct tbl {
	struct llm_gguf_tensor *t;
	size_t n, cap;
};

static int add_file(struct llm_st *st, struct tbl *tb, const char *dir,
		    const char *fname, size_t flen, const struct llm_json *wm,
		    bool tied, char *err, size_t errlen)
{
	char path[PATH_MAX];
	struct llm_json_doc *doc;
	struct st_ent *e;
	struct st_map *m;
	uint64_t off;
	size_t n;
	int ret;

	if (st->n_maps == ST_MAX_FILES)
		return hf_fail(err, errlen, -EBADMSG, "hf: %s: too many "
			       "shards", dir);
	if (!flen || memchr(fname, '/', flen) || (fname[0] == '.'))
		return hf_fail(err, errlen, -EBADMSG,
			       "hf: %s: bad shard name '%.64s'", dir, fname);
	snprintf(path, sizeof(path), "%s/%.*s", dir, (int)flen, fname);
	m = &st->maps[st->n_maps];
	ret = map_file(path, m, err, errlen);
	if (ret)
		return ret;
	st->n_maps++;
	ret = st_parse(m->base, m->size, path, &doc, &e, &n, &off, err,
		       errlen);
	if (ret)
		return ret;
	/* every tensor the index places in this shard must be here */
	for (uint32_t i = 0; wm && i < wm->n; i++) {
		const struct llm_json *w = &wm->kids[i];
		bool found = false;

		if (w->type != LLM_JSON_STRING || w->n != flen ||
		    memcmp(w->str, fname, flen))
			continue;
		for (size_t k = 0; k < n && !found; k++)
			found = e[k].name->key_len == w->key_len &&
				!memcmp(e[k].name->key, w->key, w->key_len);
		if (!found) {
			ret = hf_fail(err, errlen, -EBADMSG,
				      "hf: %s: tensor '%.64s' named by the "
				      "index is missing", path, w->key);
			goto out;
		}
	}
	for (size_t k = 0; k < n; k++) {
		struct llm_gguf_tensor *t;
		char name[LLM_GGUF_NAME_MAX];

		if (!hf_name(e[k].name->key, e[k].name->key_len, name,
			     sizeof(name)))
			continue;
		if (tied && !strcmp(name, "output.weight"))
			continue;
		if (st_dtypes[e[k].dtype].ggml < 0) {
			ret = hf_fail(err, errlen, -EOPNOTSUPP,
				      "hf: %s: tensor '%.64s' has dtype %s "
				      "(F32, F16 or BF16 supported)", path,
				      e[k].name->key,
				      st_dtypes[e[k].dtype].name);
			goto out;
		}
		for (size_t j = 0; j < tb->n; j++)
			if (!strcmp(tb->t[j].name, name)) {
				ret = hf_fail(err, errlen, -EBADMSG,
					      "hf: %s: tensor '%.64s' appears "
					      "twice", path, e[k].name->key);
				goto out;
			}
		if (tb->n == tb->cap) {
			size_t nc = tb->cap ? tb->cap * 2 : 64;
			void *nt = realloc(tb->t, nc * sizeof(*tb->t));

			if (!nt) {
				ret = hf_fail(err, errlen, -ENOMEM,
					      "hf: out of memory");
				goto out;
			}
			tb->t = nt;
			tb->cap = nc;
		}
		t = &tb->t[tb->n++];
		memset(t, 0, sizeof(*t));
		snprintf(t->name, sizeof(t->name), "%s", name);
		t->n_dims = e[k].n_dims;
		memcpy(t->ne, e[k].ne, sizeof(t->ne));
		t->type = (uint32_t)st_dtypes[e[k].dtype].ggml;
		t->offset = e[k].begin;
		t->nbytes = e[k].end - e[k].begin;
		t->nelem = t->nbytes / st_dtypes[e[k].dtype].size;
		t->data = (const uint8_t *)m->base + off + e[k].begin;
	}
	ret = 0;
out:
	free(e);
	llm_json_free(doc);
	return ret;
}

static int hf_tensors(struct llm_st *st, struct tbl *tb, const char *dir,
		      bool tied, char *err, size_t errlen)
{
	struct llm_json_doc *idx = NULL;
	const struct llm_json *wm;
	char path[PATH_MAX];
	int ret;

	ret = load_json(dir, "model.safetensors.index.json", true, &idx, err,
			errlen);
	if (ret == -ENOENT) {
		snprintf(path, sizeof(path), "%s/model.safetensors", dir);
		if (access(path, F_OK))
			return hf_fail(err, errlen, -ENOENT,
				       "hf: %s: no model.safetensors nor "
				       "model.safetensors.index.json", dir);
		return add_file(st, tb, dir, "model.safetensors", 17, NULL,
				tied, err, errlen);
	}
	if (ret)
		return ret;
	wm = llm_json_get(llm_json_root(idx), "weight_map");
	if (!wm || wm->type != LLM_JSON_OBJECT || !wm->n) {
		ret = hf_fail(err, errlen, -EBADMSG,
			      "hf: %s/model.safetensors.index.json: missing "
			      "weight_map", dir);
		goto out;
	}
	for (uint32_t i = 0; i < wm->n; i++) {
		const struct llm_json *f = &wm->kids[i];
		bool seen = false;

		if (f->type != LLM_JSON_STRING) {
			ret = hf_fail(err, errlen, -EBADMSG,
				      "hf: %s/model.safetensors.index.json: "
				      "bad weight_map entry", dir);
			goto out;
		}
		for (uint32_t j = 0; j < i && !seen; j++)
			seen = wm->kids[j].n == f->n &&
			       !memcmp(wm->kids[j].str, f->str, f->n);
		if (seen)
			continue;
		ret = add_file(st, tb, dir, f->str, f->n, wm, tied, err,
			       errlen);
		if (ret)
			goto out;
	}
out:
	llm_json_free(idx);
	return ret;
}

/**
 * llm_hf_open() - open a Hugging Face model directory into @m.
 * @dir: the directory.
 * @m: zeroed model; on success cfg, w, gen, src and st are set, and tok
 *	unless the directory has no tokenizer.json.
 * @err: one-line message on failure.
 * @errlen: bytes of @err.
 *
 * Return: 0 or negative errno (see model.h); on failure what was set in
 * @m is released by the caller's llm_model_close().
 */
int llm_hf_open(const char *dir, struct llm_model *m, char *err,
		size_t errlen)
{
	struct llm_json_doc *cfg = NULL, *tj = NULL, *gen = NULL, *tc = NULL;
	struct gimg b = { 0 };
	struct tbl tb = { 0 };
	struct hf_cfg hc = { 0 };
	struct llm_st *st;
	int32_t bos = -1;
	char gerr[LLM_GGUF_ERR_MAX], path[PATH_MAX], tcpath[PATH_MAX];
	uint64_t nkv_pos;
	int ret;

	st = calloc(1, sizeof(*st));
	if (!st)
		return hf_fail(err, errlen, -ENOMEM, "hf: out of memory");
	m->st = st;
	ret = load_json(dir, "config.json", false, &cfg, err, errlen);
	if (ret)
		goto out;
	/* optional: a weights-only directory opens without a tokenizer */
	ret = load_json(dir, "tokenizer.json", true, &tj, err, errlen);
	if (ret && ret != -ENOENT)
		goto out;
	ret = load_json(dir, "generation_config.json", true, &gen, err,
			errlen);
	if (ret && ret != -ENOENT)
		goto out;
	ret = load_json(dir, "tokenizer_config.json", true, &tc, err, errlen);
	if (ret && ret != -ENOENT)
		goto out;

	gi_u32(&b, LLM_GGUF_MAGIC);
	gi_u32(&b, 3);
	gi_u64(&b, 0); /* tensors */
	nkv_pos = b.len;
	gi_u64(&b, 0); /* kv count, patched below */
	ret = hf_config(dir, llm_json_root(cfg), &b, &hc, err, errlen);
	snprintf(tcpath, sizeof(tcpath), "%s/tokenizer_config.json", dir);
	if (!ret && tc && llm_json_root(tc)->type != LLM_JSON_OBJECT)
		ret = hf_fail(err, errlen, -EBADMSG,
			      "hf: %s: not a JSON object", tcpath);
	snprintf(path, sizeof(path), "%s/tokenizer.json", dir);
	if (!ret && tj)
		ret = hf_tokenizer(path, llm_json_root(tj),
				   tc ? llm_json_root(tc) : NULL, tcpath, &b,
				   &bos, err, errlen);
	if (ret)
		goto out;
	if (bos >= 0)
		gi_kv_u32(&b, "tokenizer.ggml.bos_token_id", (uint32_t)bos);
	m->gen.n_eos = 0;
	m->gen.bos = bos;
	ret = hf_gen(dir, llm_json_root(cfg), gen ? llm_json_root(gen) : NULL,
		     &m->gen, err, errlen);
	if (ret)
		goto out;
	if (m->gen.n_eos)
		gi_kv_u32(&b, "tokenizer.ggml.eos_token_id",
			  (uint32_t)m->gen.eos[0]);
	while (!b.oom && b.len % 32) {
		uint8_t z = 0;

		gi_put(&b, &z, 1);
	}
	if (b.oom) {
		ret = hf_fail(err, errlen, -ENOMEM, "hf: out of memory");
		goto out;
	}
	for (int i = 0; i < 8; i++)
		b.p[nkv_pos + i] = (uint8_t)(b.n_kv >> (8 * i));
	st->meta = b.p;
	b.p = NULL;
	ret = llm_gguf_open_mem(st->meta, b.len, &m->src, gerr, sizeof(gerr));
	if (ret) {
		hf_fail(err, errlen, ret, "hf: %s: %s", dir, gerr);
		goto out;
	}
	ret = hf_tensors(st, &tb, dir, hc.tied, err, errlen);
	if (ret)
		goto out;
	free(m->src->tensors); /* the parser's empty table */
	m->src->tensors = tb.t;
	m->src->n_tensors = tb.n;
	tb.t = NULL;
	if (!hc.tied && !llm_gguf_find_tensor(m->src, "output.weight")) {
		ret = hf_fail(err, errlen, -EBADMSG,
			      "hf: %s: missing tensor 'lm_head.weight' "
			      "(output.weight; tie_word_embeddings is false)",
			      dir);
		goto out;
	}
	ret = llm_config_load(m->src, &m->cfg, gerr, sizeof(gerr));
	if (ret) {
		hf_fail(err, errlen, ret, "hf: %s: %s", dir, gerr);
		goto out;
	}
	m->cfg.qk_interleaved = false;
	if (hc.sliding && hc.sliding < m->cfg.n_ctx)
		m->cfg.n_ctx = hc.sliding; /* no sliding-window attention */
	if (hc.has_scaling) {
		m->cfg.rope_factor = hc.factor;
		m->cfg.rope_low_freq = hc.lo;
		m->cfg.rope_high_freq = hc.hi;
		m->cfg.rope_orig_ctx = hc.orig;
	}
	ret = tj ? llm_tok_load(m->src, &m->tok, gerr, sizeof(gerr)) : 0;
	if (ret)
		hf_fail(err, errlen, ret, "hf: %s/tokenizer.json: %s", dir,
			gerr);
out:
	free(tb.t);
	free(b.p);
	llm_json_free(cfg);
	llm_json_free(tj);
	llm_json_free(gen);
	llm_json_free(tc);
	return ret;
}

/**
 * llm_hf_tokenizer() - load a tokenizer.json alone.
 * @path: the tokenizer.json file.
 * @out: the tokenizer, released with llm_tok_free().
 * @err: one-line message on failure.
 * @errlen: bytes of @err.
 *
 * Return: 0 or negative errno, as llm_model_open().
 */
int llm_hf_tokenizer(const char *path, struct llm_tok **out, char *err,
		     size_t errlen)
{
	struct llm_json_doc *tj = NULL;
	struct llm_gguf *g = NULL;
	struct gimg b = { 0 };
	char gerr[LLM_GGUF_ERR_MAX], jerr[160];
	char *buf = NULL;
	size_t len = 0;
	int32_t bos;
	int ret;

	ret = read_all(path, &buf, &len, err, errlen);
	if (ret)
		return ret;
	ret = llm_json_parse(buf, len, &tj, jerr, sizeof(jerr));
	free(buf);
	if (ret)
		return hf_fail(err, errlen, ret, "hf: %s: %s", path, jerr);
	gi_u32(&b, LLM_GGUF_MAGIC);
	gi_u32(&b, 3);
	gi_u64(&b, 0);
	gi_u64(&b, 0);
	ret = hf_tokenizer(path, llm_json_root(tj), NULL, NULL, &b, &bos, err,
			   errlen);
	llm_json_free(tj);
	if (ret)
		goto out;
	if (bos >= 0)
		gi_kv_u32(&b, "tokenizer.ggml.bos_token_id", (uint32_t)bos);
	if (b.oom) {
		ret = hf_fail(err, errlen, -ENOMEM, "hf: out of memory");
		goto out;
	}
	for (int i = 0; i < 8; i++)
		b.p[16 + i] = (uint8_t)(b.n_kv >> (8 * i));
	ret = llm_gguf_open_mem(b.p, b.len, &g, gerr, sizeof(gerr));
	if (!ret)
		ret = llm_tok_load(g, out, gerr, sizeof(gerr));
	if (ret)
		hf_fail(err, errlen, ret, "hf: %s: %s", path, gerr);
	llm_gguf_close(g);
out:
	free(b.p);
	return ret;
}
