// SPDX-License-Identifier: MIT
/*
 * gguf.c - GGUF v2/v3 reader and fp32 dequantisation (kernels/qdot.c).
 *
 * DOC: file layout
 *
 *   u32 magic "GGUF", u32 version (2 or 3), u64 tensor_count, u64 kv_count
 *   kv_count x { string key, u32 vtype, value }
 *   tensor_count x { string name, u32 n_dims, u64 ne[n_dims], u32 ttype,
 *                    u64 offset }
 *   padding to general.alignment (default 32)
 *   tensor data; each tensor at data_off + offset, offset aligned
 *
 * A string is u64 length + bytes; an array is u32 element vtype + u64 count
 * + elements. All integers are little-endian.
 *
 * The parser walks the file through a bounds-checked cursor: every read
 * checks what is left before touching memory, every count is checked
 * against the bytes that could hold it before anything is allocated, so a
 * hostile file costs at most O(file size) memory and never reads outside
 * the mapping.
 */
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gguf.h"
#include "kvk.h"
#include "qdot.h"

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "gguf.c assumes a little-endian host"
#endif

/* bounds-checked cursor over the file; lives on the parser's stack */
struct gg_cur {
	const uint8_t *base;
	uint64_t size; /* bytes */
	uint64_t pos;  /* bytes from base */
	char *err;
	size_t errlen;
};

static int __attribute__((format(printf, 3, 4)))
gg_fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (!err || !errlen)
		return 0;
	n = snprintf(err, errlen, "gguf: ");
	if (n < 0 || (size_t)n >= errlen)
		return 0;
	va_start(ap, fmt);
	vsnprintf(err + n, errlen - n, fmt, ap);
	va_end(ap);
	return 0;
}

static int gg_take(struct gg_cur *c, uint64_t n, const void **p,
		   const char *what)
{
	if (n > c->size - c->pos) {
		gg_fail(c->err, c->errlen,
			"truncated file: %s at offset %llu needs %llu bytes, "
			"%llu left", what, (unsigned long long)c->pos,
			(unsigned long long)n,
			(unsigned long long)(c->size - c->pos));
		return -EBADMSG;
	}
	if (p)
		*p = c->base + c->pos;
	c->pos += n;
	return 0;
}

static int gg_u32(struct gg_cur *c, uint32_t *v, const char *what)
{
	const void *p;
	int ret = gg_take(c, 4, &p, what);

	if (!ret)
		memcpy(v, p, 4);
	return ret;
}

static int gg_u64(struct gg_cur *c, uint64_t *v, const char *what)
{
	const void *p;
	int ret = gg_take(c, 8, &p, what);

	if (!ret)
		memcpy(v, p, 8);
	return ret;
}

static int gg_str(struct gg_cur *c, struct llm_gguf_str *s, const char *what)
{
	const void *p;
	uint64_t len;
	int ret;

	ret = gg_u64(c, &len, what);
	if (ret)
		return ret;
	ret = gg_take(c, len, &p, what);
	if (ret)
		return ret;
	s->ptr = p;
	s->len = len;
	return 0;
}

/* bytes of one scalar of @t; 0 for string, array and unknown */
static uint32_t gg_scalar_size(uint32_t t)
{
	static const uint8_t sz[LLM_GGUF_VTYPE_COUNT] = {
		[LLM_GGUF_U8] = 1,  [LLM_GGUF_I8] = 1,	 [LLM_GGUF_U16] = 2,
		[LLM_GGUF_I16] = 2, [LLM_GGUF_U32] = 4,	 [LLM_GGUF_I32] = 4,
		[LLM_GGUF_F32] = 4, [LLM_GGUF_BOOL] = 1, [LLM_GGUF_U64] = 8,
		[LLM_GGUF_I64] = 8, [LLM_GGUF_F64] = 8,
	};

	return t < LLM_GGUF_VTYPE_COUNT ? sz[t] : 0;
}

/* decode a scalar of type @t at @p into @kv->v */
static void gg_decode(struct llm_gguf_kv *kv, uint32_t t, const void *p)
{
	union {
		uint8_t u8;
		int8_t i8;
		uint16_t u16;
		int16_t i16;
		uint32_t u32;
		int32_t i32;
		float f32;
		uint64_t u64;
		int64_t i64;
		double f64;
	} x;

	memcpy(&x, p, gg_scalar_size(t));
	switch (t) {
	case LLM_GGUF_U8: kv->v.u = x.u8; break;
	case LLM_GGUF_I8: kv->v.i = x.i8; break;
	case LLM_GGUF_U16: kv->v.u = x.u16; break;
	case LLM_GGUF_I16: kv->v.i = x.i16; break;
	case LLM_GGUF_U32: kv->v.u = x.u32; break;
	case LLM_GGUF_I32: kv->v.i = x.i32; break;
	case LLM_GGUF_F32: kv->v.f = x.f32; break;
	case LLM_GGUF_BOOL: kv->v.b = x.u8 != 0; break;
	case LLM_GGUF_U64: kv->v.u = x.u64; break;
	case LLM_GGUF_I64: kv->v.i = x.i64; break;
	case LLM_GGUF_F64: kv->v.f = x.f64; break;
	}
}

static int gg_read_kv(struct gg_cur *c, struct llm_gguf_kv *kv, uint64_t i)
{
	char what[64];
	const void *p;
	uint32_t esz;
	uint64_t j;
	int ret;

	snprintf(what, sizeof(what), "key of metadata entry %llu",
		 (unsigned long long)i);
	ret = gg_str(c, &kv->key, what);
	if (ret)
		return ret;
	/* the key is not NUL-terminated: print at most its length */
	snprintf(what, sizeof(what), "value of '%.*s'",
		 (int)(kv->key.len < 40 ? kv->key.len : 40), kv->key.ptr);
	ret = gg_u32(c, &kv->type, what);
	if (ret)
		return ret;
	kv->data = c->base + c->pos;
	if (kv->type == LLM_GGUF_STRING) {
		ret = gg_str(c, &kv->v.s, what);
		kv->data = kv->v.s.ptr;
		kv->size = kv->v.s.len;
		return ret;
	}
	if (kv->type != LLM_GGUF_ARRAY) {
		esz = gg_scalar_size(kv->type);
		if (!esz) {
			gg_fail(c->err, c->errlen,
				"%s: unknown value type %u at offset %llu",
				what, kv->type, (unsigned long long)(c->pos - 4));
			return -EBADMSG;
		}
		ret = gg_take(c, esz, &p, what);
		if (ret)
			return ret;
		kv->size = esz;
		gg_decode(kv, kv->type, p);
		return 0;
	}

	ret = gg_u32(c, &kv->arr_type, what);
	if (!ret)
		ret = gg_u64(c, &kv->arr_n, what);
	if (ret)
		return ret;
	kv->data = c->base + c->pos;
	if (kv->arr_type == LLM_GGUF_STRING) {
		/* each string takes at least its 8-byte length */
		if (kv->arr_n > (c->size - c->pos) / 8) {
			gg_fail(c->err, c->errlen,
				"%s: string array count %llu exceeds the file (truncated or corrupt)",
				what, (unsigned long long)kv->arr_n);
			return -EBADMSG;
		}
		for (j = 0; j < kv->arr_n; j++) {
			struct llm_gguf_str s;

			ret = gg_str(c, &s, what);
			if (ret)
				return ret;
		}
		kv->size = c->base + c->pos - (const uint8_t *)kv->data;
		return 0;
	}
	esz = gg_scalar_size(kv->arr_type);
	if (!esz) {
		gg_fail(c->err, c->errlen, "%s: %s element type %u", what,
			kv->arr_type == LLM_GGUF_ARRAY ? "nested array" :
							 "unknown array",
			kv->arr_type);
		return -EBADMSG;
	}
	if (kv->arr_n > (c->size - c->pos) / esz) {
		gg_fail(c->err, c->errlen,
			"%s: array count %llu exceeds the file (truncated or corrupt)", what,
			(unsigned long long)kv->arr_n);
		return -EBADMSG;
	}
	kv->size = kv->arr_n * esz;
	return gg_take(c, kv->size, NULL, what);
}

/**
 * llm_gguf_type_name() - printable name of a tensor type.
 * @type: ggml type number, supported or not.
 *
 * Return: "F32", "Q4_1", "IQ2_XXS", ..., or "unknown".
 */
const char *llm_gguf_type_name(uint32_t type)
{
	return kvk_qtype_name(type);
}

/**
 * llm_gguf_type_layout() - block layout of a tensor type.
 * @type: enum llm_gguf_ttype value.
 * @blck: elements per block (1 for float types).
 * @bytes: bytes per block.
 *
 * Return: 0, or -EOPNOTSUPP for a type this reader does not support.
 */
int llm_gguf_type_layout(uint32_t type, uint32_t *blck, uint32_t *bytes)
{
	if (type == KVK_QT_Q8_K) /* an activation format, not in files */
		return -EOPNOTSUPP;
	return kvk_qtype_layout(type, blck, bytes);
}

/**
 * llm_gguf_row_bytes() - bytes taken by @n consecutive elements of @type.
 * @type: enum llm_gguf_ttype value.
 * @n: elements; a multiple of the type's block size.
 * @bytes: the result.
 *
 * Return: 0, -EOPNOTSUPP for an unknown type, -EINVAL if @n is not a whole
 * number of blocks, -EOVERFLOW if the size does not fit in 64 bits.
 */
int llm_gguf_row_bytes(uint32_t type, uint64_t n, uint64_t *bytes)
{
	uint32_t blck, bsz;
	int ret = llm_gguf_type_layout(type, &blck, &bsz);

	if (ret)
		return ret;
	if (n % blck)
		return -EINVAL;
	if (n / blck > UINT64_MAX / bsz)
		return -EOVERFLOW;
	*bytes = n / blck * bsz;
	return 0;
}

static int gg_read_tensor(struct gg_cur *c, struct llm_gguf_tensor *t,
			  uint64_t i)
{
	struct llm_gguf_str name;
	char what[64];
	uint32_t d, blck, bsz;
	int ret;

	snprintf(what, sizeof(what), "name of tensor %llu",
		 (unsigned long long)i);
	ret = gg_str(c, &name, what);
	if (ret)
		return ret;
	if (name.len == 0 || name.len >= LLM_GGUF_NAME_MAX ||
	    memchr(name.ptr, 0, name.len)) {
		gg_fail(c->err, c->errlen,
			"tensor %llu: bad name (length %llu, max %d)",
			(unsigned long long)i, (unsigned long long)name.len,
			LLM_GGUF_NAME_MAX - 1);
		return -EBADMSG;
	}
	memcpy(t->name, name.ptr, name.len);
	t->name[name.len] = 0;
	snprintf(what, sizeof(what), "info of tensor '%.40s'", t->name);

	ret = gg_u32(c, &t->n_dims, what);
	if (ret)
		return ret;
	if (t->n_dims == 0 || t->n_dims > LLM_GGUF_MAX_DIMS) {
		gg_fail(c->err, c->errlen, "tensor '%s': %u dims (1..%d)",
			t->name, t->n_dims, LLM_GGUF_MAX_DIMS);
		return -EBADMSG;
	}
	t->nelem = 1;
	for (d = 0; d < LLM_GGUF_MAX_DIMS; d++) {
		t->ne[d] = 1;
		if (d >= t->n_dims)
			continue;
		ret = gg_u64(c, &t->ne[d], what);
		if (ret)
			return ret;
		if (t->ne[d] == 0 || t->ne[d] > INT64_MAX / t->nelem) {
			gg_fail(c->err, c->errlen,
				"tensor '%s': bad dim %u = %llu", t->name, d,
				(unsigned long long)t->ne[d]);
			return -EBADMSG;
		}
		t->nelem *= t->ne[d];
	}
	ret = gg_u32(c, &t->type, what);
	if (!ret)
		ret = gg_u64(c, &t->offset, what);
	if (ret)
		return ret;
	if (llm_gguf_type_layout(t->type, &blck, &bsz)) {
		gg_fail(c->err, c->errlen,
			"tensor '%s': tensor type %s (%u) is not supported "
			"(F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, "
			"Q5_K, Q6_K)", t->name, llm_gguf_type_name(t->type),
			t->type);
		return -EOPNOTSUPP;
	}
	if (t->ne[0] % blck) {
		gg_fail(c->err, c->errlen,
			"tensor '%s': row of %llu elements is not a multiple "
			"of the %s block (%u)", t->name,
			(unsigned long long)t->ne[0],
			llm_gguf_type_name(t->type), blck);
		return -EBADMSG;
	}
	/* nelem < 2^63 and bsz / blck <= 4: cannot overflow */
	t->nbytes = t->nelem / blck * bsz;
	return 0;
}

static int gg_cmp_name(const void *a, const void *b)
{
	const struct llm_gguf_tensor *x = *(struct llm_gguf_tensor *const *)a;
	const struct llm_gguf_tensor *y = *(struct llm_gguf_tensor *const *)b;

	return strcmp(x->name, y->name);
}

static int gg_cmp_off(const void *a, const void *b)
{
	const struct llm_gguf_tensor *x = *(struct llm_gguf_tensor *const *)a;
	const struct llm_gguf_tensor *y = *(struct llm_gguf_tensor *const *)b;

	return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* every tensor inside the file, aligned, no two overlapping or same-named */
static int gg_check_tensors(struct llm_gguf *g, char *err, size_t errlen)
{
	struct llm_gguf_tensor **ord;
	uint64_t i, room = g->size - g->data_off;
	int ret = 0;

	for (i = 0; i < g->n_tensors; i++) {
		struct llm_gguf_tensor *t = &g->tensors[i];

		if (t->offset % g->alignment) {
			gg_fail(err, errlen,
				"tensor '%s': offset %llu not aligned to %llu",
				t->name, (unsigned long long)t->offset,
				(unsigned long long)g->alignment);
			return -EBADMSG;
		}
		if (t->offset > room || t->nbytes > room - t->offset) {
			gg_fail(err, errlen,
				"tensor '%s': data [%llu, +%llu) beyond end of "
				"file (%llu data bytes)", t->name,
				(unsigned long long)t->offset,
				(unsigned long long)t->nbytes,
				(unsigned long long)room);
			return -EBADMSG;
		}
		t->data = g->base + g->data_off + t->offset;
	}
	if (g->n_tensors < 2)
		return 0;
	ord = malloc(g->n_tensors * sizeof(*ord));
	if (!ord) {
		gg_fail(err, errlen, "out of memory");
		return -ENOMEM;
	}
	for (i = 0; i < g->n_tensors; i++)
		ord[i] = &g->tensors[i];
	qsort(ord, g->n_tensors, sizeof(*ord), gg_cmp_off);
	for (i = 1; i < g->n_tensors; i++) {
		if (ord[i - 1]->offset + ord[i - 1]->nbytes > ord[i]->offset) {
			gg_fail(err, errlen, "tensors '%s' and '%s' overlap",
				ord[i - 1]->name, ord[i]->name);
			ret = -EBADMSG;
			break;
		}
	}
	if (!ret) {
		qsort(ord, g->n_tensors, sizeof(*ord), gg_cmp_name);
		for (i = 1; i < g->n_tensors; i++) {
			if (!strcmp(ord[i - 1]->name, ord[i]->name)) {
				gg_fail(err, errlen, "duplicate tensor '%s'",
					ord[i]->name);
				ret = -EBADMSG;
				break;
			}
		}
	}
	free(ord);
	return ret;
}

static int gg_cmp_key(const void *a, const void *b)
{
	const struct llm_gguf_kv *x = *(const struct llm_gguf_kv *const *)a;
	const struct llm_gguf_kv *y = *(const struct llm_gguf_kv *const *)b;
	uint64_t n = x->key.len < y->key.len ? x->key.len : y->key.len;
	int c = n ? memcmp(x->key.ptr, y->key.ptr, n) : 0;

	if (c)
		return c;
	return x->key.len < y->key.len ? -1 : x->key.len > y->key.len;
}

/* no two metadata entries with the same key */
static int gg_check_keys(struct llm_gguf *g, char *err, size_t errlen)
{
	const struct llm_gguf_kv **ord;
	int ret = 0;
	uint64_t i;

	if (g->n_kv < 2)
		return 0;
	ord = malloc(g->n_kv * sizeof(*ord));
	if (!ord) {
		gg_fail(err, errlen, "out of memory");
		return -ENOMEM;
	}
	for (i = 0; i < g->n_kv; i++)
		ord[i] = &g->kv[i];
	qsort(ord, g->n_kv, sizeof(*ord), gg_cmp_key);
	for (i = 1; i < g->n_kv; i++) {
		if (!gg_cmp_key(&ord[i - 1], &ord[i])) {
			gg_fail(err, errlen, "duplicate metadata key '%.*s'",
				(int)(ord[i]->key.len < 64 ? ord[i]->key.len :
							     64),
				ord[i]->key.ptr);
			ret = -EBADMSG;
			break;
		}
	}
	free(ord);
	return ret;
}

static int gg_parse(struct llm_gguf *g, char *err, size_t errlen)
{
	struct gg_cur c = { g->base, g->size, 0, err, errlen };
	const struct llm_gguf_kv *al;
	uint32_t magic;
	uint64_t i;
	int ret;

	ret = gg_u32(&c, &magic, "magic");
	if (ret)
		return ret;
	if (magic != LLM_GGUF_MAGIC) {
		gg_fail(err, errlen, "bad magic 0x%08x, not a GGUF file",
			magic);
		return -EBADMSG;
	}
	ret = gg_u32(&c, &g->version, "version");
	if (ret)
		return ret;
	if (g->version != 2 && g->version != 3) {
		gg_fail(err, errlen, "unsupported version %u (2 or 3)",
			g->version);
		return -EOPNOTSUPP;
	}
	ret = gg_u64(&c, &g->n_tensors, "tensor count");
	if (!ret)
		ret = gg_u64(&c, &g->n_kv, "metadata count");
	if (ret)
		return ret;
	/* a kv takes >= 13 bytes, a tensor info >= 32: bound before malloc */
	if (g->n_kv > (c.size - c.pos) / 13) {
		gg_fail(err, errlen, "metadata count %llu exceeds the file (truncated or corrupt)",
			(unsigned long long)g->n_kv);
		return -EBADMSG;
	}
	if (g->n_tensors > (c.size - c.pos) / 32) {
		gg_fail(err, errlen, "tensor count %llu exceeds the file (truncated or corrupt)",
			(unsigned long long)g->n_tensors);
		return -EBADMSG;
	}
	g->kv = calloc(g->n_kv ? g->n_kv : 1, sizeof(*g->kv));
	g->tensors = calloc(g->n_tensors ? g->n_tensors : 1,
			    sizeof(*g->tensors));
	if (!g->kv || !g->tensors) {
		gg_fail(err, errlen, "out of memory");
		return -ENOMEM;
	}
	for (i = 0; i < g->n_kv; i++) {
		ret = gg_read_kv(&c, &g->kv[i], i);
		if (ret)
			return ret;
	}
	for (i = 0; i < g->n_tensors; i++) {
		ret = gg_read_tensor(&c, &g->tensors[i], i);
		if (ret)
			return ret;
	}
	ret = gg_check_keys(g, err, errlen);
	if (ret)
		return ret;

	g->alignment = LLM_GGUF_DEFAULT_ALIGNMENT;
	al = llm_gguf_find_kv(g, "general.alignment");
	if (al) {
		if (al->type != LLM_GGUF_U32 || al->v.u == 0 ||
		    (al->v.u & (al->v.u - 1))) {
			gg_fail(err, errlen,
				"general.alignment must be a u32 power of two");
			return -EBADMSG;
		}
		g->alignment = al->v.u;
	}
	g->data_off = kvmm_round_up(c.pos, g->alignment);
	if (g->data_off > g->size) {
		if (!g->n_tensors) {
			g->data_off = g->size;
			return 0;
		}
		gg_fail(err, errlen,
			"truncated file: data section at %llu beyond end %llu",
			(unsigned long long)g->data_off,
			(unsigned long long)g->size);
		return -EBADMSG;
	}
	return gg_check_tensors(g, err, errlen);
}

static int gg_open_common(struct llm_gguf *g, struct llm_gguf **out,
			  char *err, size_t errlen)
{
	int ret = gg_parse(g, err, errlen);

	if (ret) {
		llm_gguf_close(g);
		return ret;
	}
	if (err && errlen)
		err[0] = 0;
	*out = g;
	return 0;
}

/**
 * llm_gguf_open_mem() - parse a GGUF image already in memory.
 * @buf: the image; must outlive the returned struct, which points into it.
 * @size: bytes in @buf.
 * @out: the parsed file, to release with llm_gguf_close().
 * @err: buffer for a one-line message on failure (may be NULL).
 * @errlen: bytes in @err.
 *
 * Return: 0, or -EBADMSG (truncated or corrupt), -EOPNOTSUPP (version or
 * tensor type), -ENOMEM.
 */
int llm_gguf_open_mem(const void *buf, size_t size, struct llm_gguf **out,
		      char *err, size_t errlen)
{
	struct llm_gguf *g = calloc(1, sizeof(*g));

	if (!g) {
		gg_fail(err, errlen, "out of memory");
		return -ENOMEM;
	}
	g->base = buf;
	g->size = size;
	g->refs = 1;
	return gg_open_common(g, out, err, errlen);
}

/**
 * llm_gguf_open() - map and parse a GGUF file.
 * @path: the file.
 * @out: the parsed file, to release with llm_gguf_close().
 * @err: buffer for a one-line message on failure (may be NULL), which
 *       names the file and what was wrong.
 * @errlen: bytes in @err.
 *
 * Return: 0, or -errno from open/fstat/mmap, -EBADMSG (truncated or
 * corrupt), -EOPNOTSUPP (version or tensor type), -ENOMEM.
 */
int llm_gguf_open(const char *path, struct llm_gguf **out, char *err,
		  size_t errlen)
{
	char msg[LLM_GGUF_ERR_MAX];
	struct llm_gguf *g;
	struct stat st;
	void *map;
	int fd, ret;

	/* O_NONBLOCK: a FIFO must not block open(); refused below */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0) {
		ret = -errno;
		gg_fail(err, errlen, "%s: %s", path, strerror(-ret));
		return ret;
	}
	if (fstat(fd, &st)) {
		ret = -errno;
		gg_fail(err, errlen, "%s: %s", path, strerror(-ret));
		goto out_close;
	}
	if (!S_ISREG(st.st_mode) || st.st_size == 0) {
		ret = -EBADMSG;
		gg_fail(err, errlen, "%s: %s", path,
			S_ISREG(st.st_mode) ? "empty file" :
			S_ISFIFO(st.st_mode) ? "a FIFO, not a regular file" :
			"not a regular file");
		goto out_close;
	}
	map = mmap(NULL, st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	if (map == MAP_FAILED) {
		ret = -errno;
		gg_fail(err, errlen, "%s: mmap: %s", path, strerror(-ret));
		goto out_close;
	}
	close(fd);
	g = calloc(1, sizeof(*g));
	if (!g) {
		munmap(map, st.st_size);
		gg_fail(err, errlen, "out of memory");
		return -ENOMEM;
	}
	g->base = map;
	g->size = st.st_size;
	g->mapped = true;
	g->refs = 1;
	ret = gg_open_common(g, out, msg, sizeof(msg));
	if (ret)
		gg_fail(err, errlen, "%s: %s", path,
			strncmp(msg, "gguf: ", 6) ? msg : msg + 6);
	else if (err && errlen)
		err[0] = 0;
	return ret;

out_close:
	close(fd);
	return ret;
}

/**
 * llm_gguf_get() - take a reference on a parsed file
 * @g: an open file
 *
 * The file (its mapping and tensor table) stays until as many
 * llm_gguf_close() calls as references plus one: an executor that reads
 * its weights in place keeps the mapping while its loader closes.
 *
 * Return: @g.
 */
struct llm_gguf *llm_gguf_get(const struct llm_gguf *g)
{
	struct llm_gguf *m = (struct llm_gguf *)g;

	__atomic_add_fetch(&m->refs, 1, __ATOMIC_RELAXED);
	return m;
}

/**
 * llm_gguf_close() - drop a reference; the last releases the parsed file
 * and its mapping.
 * @g: from llm_gguf_open(), llm_gguf_open_mem() or llm_gguf_get(); NULL
 *	is ignored.
 */
void llm_gguf_close(struct llm_gguf *g)
{
	if (!g)
		return;
	if (__atomic_sub_fetch(&g->refs, 1, __ATOMIC_ACQ_REL) > 0)
		return;
	if (g->mapped)
		munmap((void *)g->base, g->size);
	free(g->kv);
	free(g->tensors);
	free(g);
}

/**
 * llm_gguf_str_eq() - compare a file string with a C string.
 * @s: string in the file.
 * @c: NUL-terminated string.
 *
 * Return: true when equal.
 */
bool llm_gguf_str_eq(struct llm_gguf_str s, const char *c)
{
	size_t n = strlen(c);

	return s.len == n && !memcmp(s.ptr, c, n);
}

/**
 * llm_gguf_find_kv() - look up a metadata key.
 * @g: parsed file.
 * @key: the key, e.g. "llama.block_count".
 *
 * Return: the first entry with that key, or NULL.
 */
const struct llm_gguf_kv *llm_gguf_find_kv(const struct llm_gguf *g,
					   const char *key)
{
	for (uint64_t i = 0; i < g->n_kv; i++)
		if (llm_gguf_str_eq(g->kv[i].key, key))
			return &g->kv[i];
	return NULL;
}

static bool gg_is_uint(uint32_t t)
{
	return t == LLM_GGUF_U8 || t == LLM_GGUF_U16 || t == LLM_GGUF_U32 ||
	       t == LLM_GGUF_U64;
}

static bool gg_is_sint(uint32_t t)
{
	return t == LLM_GGUF_I8 || t == LLM_GGUF_I16 || t == LLM_GGUF_I32 ||
	       t == LLM_GGUF_I64;
}

/**
 * llm_gguf_get_u64() - read an integer key as u64.
 * @g: parsed file.
 * @key: the key.
 * @out: the value.
 *
 * Any integer type is accepted when the value is not negative.
 *
 * Return: 0, -ENOENT if absent, -EINVAL for another type or a negative value.
 */
int llm_gguf_get_u64(const struct llm_gguf *g, const char *key,
		     uint64_t *out)
{
	const struct llm_gguf_kv *kv = llm_gguf_find_kv(g, key);

	if (!kv)
		return -ENOENT;
	if (gg_is_uint(kv->type)) {
		*out = kv->v.u;
		return 0;
	}
	if (gg_is_sint(kv->type) && kv->v.i >= 0) {
		*out = kv->v.i;
		return 0;
	}
	return -EINVAL;
}

/**
 * llm_gguf_get_u32() - read an integer key as u32.
 * @g: parsed file.
 * @key: the key.
 * @out: the value.
 *
 * Return: 0, -ENOENT if absent, -EINVAL for another type, -ERANGE if the
 * value does not fit.
 */
int llm_gguf_get_u32(const struct llm_gguf *g, const char *key,
		     uint32_t *out)
{
	uint64_t v;
	int ret = llm_gguf_get_u64(g, key, &v);

	if (ret)
		return ret;
	if (v > UINT32_MAX)
		return -ERANGE;
	*out = v;
	return 0;
}

/**
 * llm_gguf_get_f32() - read a floating-point key.
 * @g: parsed file.
 * @key: the key.
 * @out: the value (f64 values are rounded).
 *
 * Return: 0, -ENOENT if absent, -EINVAL for a non-float type.
 */
int llm_gguf_get_f32(const struct llm_gguf *g, const char *key, float *out)
{
	const struct llm_gguf_kv *kv = llm_gguf_find_kv(g, key);

	if (!kv)
		return -ENOENT;
	if (kv->type != LLM_GGUF_F32 && kv->type != LLM_GGUF_F64)
		return -EINVAL;
	*out = (float)kv->v.f;
	return 0;
}

/**
 * llm_gguf_get_bool() - read a boolean key.
 * @g: parsed file.
 * @key: the key.
 * @out: the value.
 *
 * Return: 0, -ENOENT if absent, -EINVAL for another type.
 */
int llm_gguf_get_bool(const struct llm_gguf *g, const char *key, bool *out)
{
	const struct llm_gguf_kv *kv = llm_gguf_find_kv(g, key);

	if (!kv)
		return -ENOENT;
	if (kv->type != LLM_GGUF_BOOL)
		return -EINVAL;
	*out = kv->v.b;
	return 0;
}

/**
 * llm_gguf_get_str() - read a string key.
 * @g: parsed file.
 * @key: the key.
 * @out: the string, pointing into the file (not NUL-terminated).
 *
 * Return: 0, -ENOENT if absent, -EINVAL for another type.
 */
int llm_gguf_get_str(const struct llm_gguf *g, const char *key,
		     struct llm_gguf_str *out)
{
	const struct llm_gguf_kv *kv = llm_gguf_find_kv(g, key);

	if (!kv)
		return -ENOENT;
	if (kv->type != LLM_GGUF_STRING)
		return -EINVAL;
	*out = kv->v.s;
	return 0;
}

/**
 * llm_gguf_arr_int() - read one element of an integer array.
 * @kv: an array entry.
 * @idx: element index.
 * @out: the element, widened (u64 values above INT64_MAX are refused).
 *
 * Return: 0, -EINVAL if @kv is not an integer array, -ERANGE for @idx out of
 * range or a value that does not fit.
 */
int llm_gguf_arr_int(const struct llm_gguf_kv *kv, uint64_t idx,
		     int64_t *out)
{
	struct llm_gguf_kv tmp;
	uint32_t esz;

	if (kv->type != LLM_GGUF_ARRAY ||
	    !(gg_is_uint(kv->arr_type) || gg_is_sint(kv->arr_type)))
		return -EINVAL;
	if (idx >= kv->arr_n)
		return -ERANGE;
	esz = gg_scalar_size(kv->arr_type);
	gg_decode(&tmp, kv->arr_type, (const uint8_t *)kv->data + idx * esz);
	if (gg_is_uint(kv->arr_type)) {
		if (tmp.v.u > INT64_MAX)
			return -ERANGE;
		*out = (int64_t)tmp.v.u;
	} else {
		*out = tmp.v.i;
	}
	return 0;
}

/**
 * llm_gguf_arr_strings() - all elements of a string array.
 * @kv: a string array entry (checked at open).
 * @out: @kv->arr_n entries, filled with strings pointing into the file.
 *
 * Return: 0, or -EINVAL if @kv is not a string array.
 */
int llm_gguf_arr_strings(const struct llm_gguf_kv *kv,
			 struct llm_gguf_str *out)
{
	const uint8_t *p = kv->data;

	if (kv->type != LLM_GGUF_ARRAY || kv->arr_type != LLM_GGUF_STRING)
		return -EINVAL;
	for (uint64_t i = 0; i < kv->arr_n; i++) {
		memcpy(&out[i].len, p, 8);
		out[i].ptr = (const char *)p + 8;
		p += 8 + out[i].len;
	}
	return 0;
}

/**
 * llm_gguf_find_tensor() - look up a tensor by name.
 * @g: parsed file.
 * @name: e.g. "blk.0.attn_q.weight".
 *
 * Return: the tensor, or NULL.
 */
const struct llm_gguf_tensor *llm_gguf_find_tensor(const struct llm_gguf *g,
						   const char *name)
{
	for (uint64_t i = 0; i < g->n_tensors; i++)
		if (!strcmp(g->tensors[i].name, name))
			return &g->tensors[i];
	return NULL;
}

/**
 * llm_gguf_tensor_row() - dequantise one row (ne[0] elements) of a tensor.
 * @t: the tensor.
 * @row: row index, below nelem / ne[0].
 * @dst: ne[0] floats.
 *
 * Return: 0, or -ERANGE for a row out of range.
 */
int llm_gguf_tensor_row(const struct llm_gguf_tensor *t, uint64_t row,
			float *dst)
{
	uint64_t rb;
	int ret;

	if (row >= t->nelem / t->ne[0])
		return -ERANGE;
	ret = llm_gguf_row_bytes(t->type, t->ne[0], &rb);
	if (ret)
		return ret;
	return llm_gguf_dequant_row(t->type, (const uint8_t *)t->data + row * rb,
				    dst, t->ne[0]);
}


/**
 * llm_gguf_dequant_row() - convert @n elements of @type to fp32.
 * @type: enum llm_gguf_ttype value.
 * @src: the raw data (any alignment).
 * @dst: @n floats.
 * @n: elements, a multiple of the type's block size.
 *
 * The block layouts and values are ggml's, computed by
 * kvk_qdot_dequant() (kernels/qdot.h).
 *
 * Return: 0, -EOPNOTSUPP for an unknown type, -EINVAL if @n is not a whole
 * number of blocks.
 */
int llm_gguf_dequant_row(uint32_t type, const void *src, float *dst,
			 uint64_t n)
{
	uint32_t blck, bsz;
	int ret = llm_gguf_type_layout(type, &blck, &bsz);

	if (ret)
		return ret;
	if (n % blck)
		return -EINVAL;
	return kvk_qdot_dequant(type, src, dst, n);
}
