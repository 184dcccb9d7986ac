/* SPDX-License-Identifier: MIT */
/*
 * gguf.h - GGUF (v2, v3) model file reader over mmap.
 *
 * The whole file is mapped read-only; every string, array and tensor of the
 * parsed view points into the mapping, and every offset, size, count, dtype
 * and shape has been checked against the file size before llm_gguf_open()
 * returns. After a successful open nothing reads outside the mapping.
 *
 * Errors are -errno with a one-line message in the caller's buffer:
 *   -EBADMSG     truncated or corrupt file (bad magic, count, offset, shape)
 *   -EOPNOTSUPP  unsupported version or tensor type
 *   -ENOMEM      out of memory
 *   other        from open(2), fstat(2), mmap(2)
 */
#ifndef LLM_GGUF_H
#define LLM_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kvmm_base.h"

#define LLM_GGUF_MAGIC 0x46554747U /* "GGUF" little-endian */
#define LLM_GGUF_DEFAULT_ALIGNMENT 32
#define LLM_GGUF_MAX_DIMS 4
#define LLM_GGUF_NAME_MAX 128 /* tensor name bytes, NUL included */
#define LLM_GGUF_ERR_MAX 256  /* suggested size of error buffers */

/* metadata value types, as numbered in the file */
enum llm_gguf_vtype {
	LLM_GGUF_U8 = 0,
	LLM_GGUF_I8 = 1,
	LLM_GGUF_U16 = 2,
	LLM_GGUF_I16 = 3,
	LLM_GGUF_U32 = 4,
	LLM_GGUF_I32 = 5,
	LLM_GGUF_F32 = 6,
	LLM_GGUF_BOOL = 7,
	LLM_GGUF_STRING = 8,
	LLM_GGUF_ARRAY = 9,
	LLM_GGUF_U64 = 10,
	LLM_GGUF_I64 = 11,
	LLM_GGUF_F64 = 12,
	LLM_GGUF_VTYPE_COUNT
};

/*
 * tensor types (ggml numbering); only these are accepted: the block
 * layouts and their arithmetic are kernels/qdot.h's (enum kvk_qtype)
 */
enum llm_gguf_ttype {
	LLM_GGML_F32 = 0,
	LLM_GGML_F16 = 1,
	LLM_GGML_Q4_0 = 2,
	LLM_GGML_Q4_1 = 3,
	LLM_GGML_Q5_0 = 6,
	LLM_GGML_Q5_1 = 7,
	LLM_GGML_Q8_0 = 8,
	LLM_GGML_Q4_K = 12,
	LLM_GGML_Q5_K = 13,
	LLM_GGML_Q6_K = 14,
	LLM_GGML_BF16 = 30,
};

#define LLM_QK 32    /* elements per block of Q4_0 .. Q8_0 */
#define LLM_QK_K 256 /* elements per super-block of the K-quants */

/* A string inside the mapping: not NUL-terminated. */
struct llm_gguf_str {
	const char *ptr;
	uint64_t len; /* bytes */
};

/*
 * One metadata key/value. Owned by its struct llm_gguf; points into the
 * mapping. Scalars are decoded into @v; for arrays @data is the first raw
 * element (possibly unaligned: read elements with the accessors).
 */
struct llm_gguf_kv {
	struct llm_gguf_str key;
	uint32_t type;	   /* enum llm_gguf_vtype */
	uint32_t arr_type; /* element type when @type is LLM_GGUF_ARRAY */
	uint64_t arr_n;	   /* element count when @type is LLM_GGUF_ARRAY */
	const void *data;  /* raw value (array: first element) */
	uint64_t size;	   /* raw value bytes */
	union {
		uint64_t u;
		int64_t i;
		double f;
		bool b;
		struct llm_gguf_str s;
	} v; /* decoded scalar: u for unsigned, i for signed, f for floats */
};

/*
 * One tensor. Owned by its struct llm_gguf; @data points into the mapping
 * and @nbytes bytes from it lie inside the file.
 */
struct llm_gguf_tensor {
	char name[LLM_GGUF_NAME_MAX];
	uint32_t n_dims;
	uint64_t ne[LLM_GGUF_MAX_DIMS]; /* elements per dim, ne[0] fastest;
					 * unused dims are 1 */
	uint32_t type;	  /* enum llm_gguf_ttype */
	uint64_t offset;  /* bytes from the start of the data section */
	uint64_t nelem;	  /* elements */
	uint64_t nbytes;  /* bytes */
	const void *data; /* in the mapping */
};

/*
 * A parsed GGUF file. Owned by the caller of llm_gguf_open(), released with
 * llm_gguf_close(). Read-only after open, so any number of threads may read
 * it without locking.
 */
struct llm_gguf {
	const uint8_t *base; /* mapping (or caller's buffer) */
	uint64_t size;	     /* bytes */
	bool mapped;	     /* base is ours to munmap */
	uint32_t version;
	uint64_t alignment; /* bytes, general.alignment or 32 */
	uint64_t data_off;  /* bytes from the file start to tensor data */
	uint64_t n_kv;
	struct llm_gguf_kv *kv;
	uint64_t n_tensors;
	struct llm_gguf_tensor *tensors;
	int refs; /* llm_gguf_get() + 1; atomic; the last close frees */
};

int llm_gguf_open(const char *path, struct llm_gguf **out, char *err,
		  size_t errlen);
int llm_gguf_open_mem(const void *buf, size_t size, struct llm_gguf **out,
		      char *err, size_t errlen);
void llm_gguf_close(struct llm_gguf *g);

const struct llm_gguf_kv *llm_gguf_find_kv(const struct llm_gguf *g,
					   const char *key);
int llm_gguf_get_u32(const struct llm_gguf *g, const char *key,
		     uint32_t *out);
int llm_gguf_get_u64(const struct llm_gguf *g, const char *key,
		     uint64_t *out);
int llm_gguf_get_f32(const struct llm_gguf *g, const char *key, float *out);
int llm_gguf_get_bool(const struct llm_gguf *g, const char *key, bool *out);
int llm_gguf_get_str(const struct llm_gguf *g, const char *key,
		     struct llm_gguf_str *out);
bool llm_gguf_str_eq(struct llm_gguf_str s, const char *c);
struct llm_gguf *llm_gguf_get(const struct llm_gguf *g);

int llm_gguf_arr_int(const struct llm_gguf_kv *kv, uint64_t idx,
		     int64_t *out);
int llm_gguf_arr_strings(const struct llm_gguf_kv *kv,
			 struct llm_gguf_str *out);

const struct llm_gguf_tensor *llm_gguf_find_tensor(const struct llm_gguf *g,
						   const char *name);
int llm_gguf_tensor_row(const struct llm_gguf_tensor *t, uint64_t row,
			float *dst);

const char *llm_gguf_type_name(uint32_t type);
int llm_gguf_type_layout(uint32_t type, uint32_t *blck, uint32_t *bytes);
int llm_gguf_row_bytes(uint32_t type, uint64_t n, uint64_t *bytes);
int llm_gguf_dequant_row(uint32_t type, const void *src, float *dst,
			 uint64_t n);


#endif /* LLM_GGUF_H */
