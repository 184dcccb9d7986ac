// SPDX-License-Identifier: MIT
/*
 * check_gguf.c - the GGUF reader: half-precision conversion, dequantisation
 * against the block formulas on hand-made blocks, a synthetic file with every
 * value type, hostile variants of it (truncated at every offset, bad magic,
 * huge counts, tensor beyond the end, unknown types, random corruption), and
 * the default model when models/ has it.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gguf.h"
#include "kvk.h"
#include "gguf_writer.h"
#include "kvtest.h"

/* ---- a tiny GGUF writer, for synthetic files ---- */

/* offsets of interesting fields in the synthetic file, for corruption */
struct synth {
	struct gbuf b;
	size_t off_ntensors, off_nkv, off_arrcount, off_strlen;
	size_t off_t0_type, off_t0_offset, off_t1_ndims, off_t1_ne0;
	size_t off_t1_name, off_align_val, off_key_i8;
	size_t data_off;
};

#define SYN_ALIGN 64
#define SYN_NT 6

static const struct {
	const char *name;
	uint32_t type;
	uint64_t ne0, ne1;
} syn_t[SYN_NT] = {
	{ "f32", LLM_GGML_F32, 3, 2 },	{ "f16", LLM_GGML_F16, 4, 1 },
	{ "bf16", LLM_GGML_BF16, 2, 2 }, { "q8", LLM_GGML_Q8_0, 32, 2 },
	{ "q40", LLM_GGML_Q4_0, 64, 1 }, { "q41", LLM_GGML_Q4_1, 32, 1 },
};

/* deterministic tensor bytes: byte i of tensor t */
static uint8_t syn_byte(int t, size_t i)
{
	return (uint8_t)(i * 7 + t * 31 + 1);
}

static void synth_build(struct synth *s)
{
	struct gbuf *b = &s->b;
	uint64_t off = 0, sz[SYN_NT], offs[SYN_NT];
	int i;

	memset(s, 0, sizeof(*s));
	gb_u32(b, LLM_GGUF_MAGIC);
	gb_u32(b, 3);
	s->off_ntensors = b->len;
	gb_u64(b, SYN_NT);
	s->off_nkv = b->len;
	gb_u64(b, 16);

	gb_key(b, "general.architecture", LLM_GGUF_STRING);
	s->off_strlen = b->len;
	gb_str(b, "llama");
	gb_key(b, "k.u8", LLM_GGUF_U8);
	gb_put(b, "\xfe", 1);
	s->off_key_i8 = b->len + 8;
	gb_key(b, "k.i8", LLM_GGUF_I8);
	gb_put(b, "\xfe", 1);
	gb_key(b, "k.u16", LLM_GGUF_U16);
	gb_put(b, "\x34\x12", 2);
	gb_key(b, "k.i16", LLM_GGUF_I16);
	gb_put(b, "\xff\xff", 2);
	gb_key(b, "k.u32", LLM_GGUF_U32);
	gb_u32(b, 4000000000U);
	gb_key(b, "k.i32", LLM_GGUF_I32);
	gb_u32(b, (uint32_t)-5);
	{
		float f = 1.5f;
		double d = -2.25;

		gb_key(b, "k.f32", LLM_GGUF_F32);
		gb_put(b, &f, 4);
		gb_key(b, "k.f64", LLM_GGUF_F64);
		gb_put(b, &d, 8);
	}
	gb_key(b, "k.bool", LLM_GGUF_BOOL);
	gb_put(b, "\x01", 1);
	gb_key(b, "k.u64", LLM_GGUF_U64);
	gb_u64(b, 1ULL << 40);
	gb_key(b, "k.i64", LLM_GGUF_I64);
	gb_u64(b, (uint64_t)-7);
	gb_key(b, "k.arr_i32", LLM_GGUF_ARRAY);
	gb_u32(b, LLM_GGUF_I32);
	s->off_arrcount = b->len;
	gb_u64(b, 3);
	gb_u32(b, 10);
	gb_u32(b, (uint32_t)-20);
	gb_u32(b, 30);
	gb_key(b, "k.arr_str", LLM_GGUF_ARRAY);
	gb_u32(b, LLM_GGUF_STRING);
	gb_u64(b, 3);
	gb_str(b, "a");
	gb_str(b, "");
	gb_str(b, "\xc4\xa0hello");
	gb_key(b, "k.arr_empty", LLM_GGUF_ARRAY);
	gb_u32(b, LLM_GGUF_U8);
	gb_u64(b, 0);
	gb_key(b, "general.alignment", LLM_GGUF_U32);
	s->off_align_val = b->len;
	gb_u32(b, SYN_ALIGN);

	for (i = 0; i < SYN_NT; i++) {
		ck_assert_int_eq(llm_gguf_row_bytes(syn_t[i].type,
						    syn_t[i].ne0 * syn_t[i].ne1,
						    &sz[i]), 0);
		offs[i] = off;
		off = kvmm_round_up(off + sz[i], SYN_ALIGN);
	}
	for (i = 0; i < SYN_NT; i++) {
		if (i == 1)
			s->off_t1_name = b->len;
		gb_str(b, syn_t[i].name);
		if (i == 1)
			s->off_t1_ndims = b->len;
		gb_u32(b, 2);
		if (i == 1)
			s->off_t1_ne0 = b->len;
		gb_u64(b, syn_t[i].ne0);
		gb_u64(b, syn_t[i].ne1);
		if (i == 0)
			s->off_t0_type = b->len;
		gb_u32(b, syn_t[i].type);
		if (i == 0)
			s->off_t0_offset = b->len;
		gb_u64(b, offs[i]);
	}
	gb_pad(b, SYN_ALIGN);
	s->data_off = b->len;
	for (i = 0; i < SYN_NT; i++) {
		uint8_t buf[256];

		ck_assert_uint_le(sz[i], sizeof(buf));
		for (size_t j = 0; j < sz[i]; j++)
			buf[j] = syn_byte(i, j);
		if (syn_t[i].type != LLM_GGML_F32 &&
		    syn_t[i].type != LLM_GGML_F16 &&
		    syn_t[i].type != LLM_GGML_BF16) {
			/* keep the block scales finite: small fp16 values */
			uint32_t blck, bsz;

			llm_gguf_type_layout(syn_t[i].type, &blck, &bsz);
			for (size_t j = 0; j < sz[i]; j += bsz) {
				buf[j + 1] = 0x2c;
				if (syn_t[i].type == LLM_GGML_Q4_1)
					buf[j + 3] = 0xb0;
			}
		} else {
			for (size_t j = 1; j < sz[i]; j += 2)
				buf[j] &= 0x3f; /* finite F16/BF16/F32 */
		}
		gb_pad(b, SYN_ALIGN);
		gb_put(b, buf, sz[i]);
	}
	/* the file ends with the last tensor: any truncation must fail */
}

static int synth_open(const struct synth *s, struct llm_gguf **g, char *err)
{
	return llm_gguf_open_mem(s->b.p, s->b.len, g, err, LLM_GGUF_ERR_MAX);
}

/* ---- half precision ---- */

START_TEST(test_fp16_convert)
{
	ck_assert_float_eq(kvk_f16_to_f32(0x3c00), 1.0f);
	ck_assert_float_eq(kvk_f16_to_f32(0xc000), -2.0f);
	ck_assert_float_eq(kvk_f16_to_f32(0x7bff), 65504.0f);
	ck_assert_float_eq(kvk_f16_to_f32(0x0001), ldexpf(1.0f, -24));
	ck_assert_float_eq(kvk_f16_to_f32(0x0400), ldexpf(1.0f, -14));
	ck_assert(isinf(kvk_f16_to_f32(0x7c00)));
	ck_assert(isnan(kvk_f16_to_f32(0x7e00)));
	ck_assert(signbit(kvk_f16_to_f32(0x8000)));
	ck_assert_float_eq(kvk_bf16_to_f32(0x3f80), 1.0f);
	ck_assert_float_eq(kvk_bf16_to_f32(0xc040), -3.0f);
	ck_assert_uint_eq(kvk_f32_to_f16(65520.0f), 0x7c00);
	ck_assert_uint_eq(kvk_f32_to_f16(1.0f + ldexpf(1.0f, -11)), 0x3c00);
	ck_assert_uint_eq(kvk_f32_to_f16(ldexpf(1.0f, -25)), 0x0000);
	ck_assert_uint_eq(kvk_f32_to_f16(ldexpf(3.0f, -25)), 0x0002);
	/* every finite half survives a round trip */
	for (uint32_t h = 0; h < 0x10000; h++) {
		if ((h & 0x7c00) == 0x7c00)
			continue;
		ck_assert_uint_eq(kvk_f32_to_f16(kvk_f16_to_f32(h)), h);
	}
}
END_TEST

/* ---- dequantisation against the formulas ---- */

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = v & 0xff;
	p[1] = v >> 8;
}

START_TEST(test_dequant_q8_0)
{
	uint64_t s = kvtest_seed("test_dequant_q8_0");
	uint8_t blk[2 * 34];
	float out[64];
	int b, j;

	for (b = 0; b < 2; b++) {
		put16(blk + 34 * b, b ? 0xb800 : 0x3400); /* -0.5, 0.25 */
		for (j = 0; j < 32; j++)
			blk[34 * b + 2 + j] = (uint8_t)kvtest_rand(&s);
	}
	blk[2] = 0x80; /* -128 */
	blk[3] = 0x7f; /* 127 */
	ck_assert_int_eq(llm_gguf_dequant_row(LLM_GGML_Q8_0, blk, out, 64), 0);
	for (b = 0; b < 2; b++) {
		float d = b ? -0.5f : 0.25f;

		for (j = 0; j < 32; j++)
			ck_assert_float_eq(out[32 * b + j],
					   (int8_t)blk[34 * b + 2 + j] * d);
	}
	ck_assert_float_eq(out[0], -32.0f);
	ck_assert_float_eq(out[1], 31.75f);
	ck_assert_int_eq(llm_gguf_dequant_row(LLM_GGML_Q8_0, blk, out, 33),
			 -EINVAL);
}
END_TEST

START_TEST(test_dequant_q4_0)
{
	uint8_t blk[18];
	float out[32];
	int j;

	put16(blk, 0x4000); /* d = 2 */
	for (j = 0; j < 16; j++)
		blk[2 + j] = (uint8_t)(j | (15 - j) << 4);
	ck_assert_int_eq(llm_gguf_dequant_row(LLM_GGML_Q4_0, blk, out, 32), 0);
	for (j = 0; j < 16; j++) {
		ck_assert_float_eq(out[j], 2.0f * (j - 8));
		ck_assert_float_eq(out[j + 16], 2.0f * ((15 - j) - 8));
	}
	ck_assert_float_eq(out[0], -16.0f);
	ck_assert_float_eq(out[16], 14.0f);
}
END_TEST

START_TEST(test_dequant_q4_1)
{
	uint64_t s = kvtest_seed("test_dequant_q4_1");
	uint8_t blk[3 * 20];
	float out[96];
	int b, j;

	for (b = 0; b < 3; b++) {
		uint8_t *p = blk + 20 * b;

		put16(p, kvk_f32_to_f16(0.125f * (b + 1)));
		put16(p + 2, kvk_f32_to_f16(-1.5f + b));
		for (j = 0; j < 16; j++)
			p[4 + j] = (uint8_t)kvtest_rand(&s);
	}
	ck_assert_int_eq(llm_gguf_dequant_row(LLM_GGML_Q4_1, blk, out, 96), 0);
	for (b = 0; b < 3; b++) {
		const uint8_t *p = blk + 20 * b;
		float d = 0.125f * (b + 1), m = -1.5f + b;

		for (j = 0; j < 16; j++) {
			ck_assert_float_eq(out[32 * b + j], (p[4 + j] & 15) * d + m);
			ck_assert_float_eq(out[32 * b + j + 16],
					   (p[4 + j] >> 4) * d + m);
		}
	}
}
END_TEST

START_TEST(test_dequant_float)
{
	uint8_t h[6] = { 0x00, 0x3c, 0x00, 0xc0, 0x00, 0x38 };
	uint8_t bf[4] = { 0x80, 0x3f, 0x40, 0xc0 };
	float f[3] = { 1.25f, -0.0f, 3e38f }, out[3];
	uint32_t blck, bsz;

	ck_assert_int_eq(llm_gguf_dequant_row(LLM_GGML_F16, h, out, 3), 0);
	ck_assert_float_eq(out[0], 1.0f);
	ck_assert_float_eq(out[1], -2.0f);
	ck_assert_float_eq(out[2], 0.5f);
	ck_assert_int_eq(llm_gguf_dequant_row(LLM_GGML_BF16, bf, out, 2), 0);
	ck_assert_float_eq(out[0], 1.0f);
	ck_assert_float_eq(out[1], -3.0f);
	ck_assert_int_eq(llm_gguf_dequant_row(LLM_GGML_F32, f, out, 3), 0);
	ck_assert_mem_eq(out, f, sizeof(f));
	ck_assert_int_eq(llm_gguf_dequant_row(10, f, out, 256), -EOPNOTSUPP);
	ck_assert_int_eq(llm_gguf_dequant_row(LLM_GGML_Q4_K, f, out, 32),
			 -EINVAL);
	ck_assert_int_eq(llm_gguf_type_layout(LLM_GGML_Q4_1, &blck, &bsz), 0);
	ck_assert_uint_eq(blck, 32);
	ck_assert_uint_eq(bsz, 20);
	ck_assert_str_eq(llm_gguf_type_name(LLM_GGML_BF16), "BF16");
	ck_assert_str_eq(llm_gguf_type_name(99), "unknown");
}
END_TEST

/* ---- the synthetic file ---- */

static void check_synth(const struct llm_gguf *g, const struct synth *s)
{
	const struct llm_gguf_kv *kv;
	struct llm_gguf_str str, strs[3];
	uint32_t u32;
	uint64_t u64;
	int64_t v;
	float f;
	bool bo;
	int i;

	ck_assert_uint_eq(g->version, 3);
	ck_assert_uint_eq(g->n_kv, 16);
	ck_assert_uint_eq(g->n_tensors, SYN_NT);
	ck_assert_uint_eq(g->alignment, SYN_ALIGN);
	ck_assert_uint_eq(g->data_off, s->data_off);

	ck_assert_int_eq(llm_gguf_get_str(g, "general.architecture", &str), 0);
	ck_assert(llm_gguf_str_eq(str, "llama"));
	ck_assert_int_eq(llm_gguf_get_u32(g, "k.u8", &u32), 0);
	ck_assert_uint_eq(u32, 254);
	ck_assert_int_eq(llm_gguf_find_kv(g, "k.i8")->v.i, -2);
	ck_assert_int_eq(llm_gguf_get_u32(g, "k.i8", &u32), -EINVAL);
	ck_assert_int_eq(llm_gguf_get_u32(g, "k.u16", &u32), 0);
	ck_assert_uint_eq(u32, 0x1234);
	ck_assert_int_eq(llm_gguf_find_kv(g, "k.i16")->v.i, -1);
	ck_assert_int_eq(llm_gguf_get_u32(g, "k.u32", &u32), 0);
	ck_assert_uint_eq(u32, 4000000000U);
	ck_assert_int_eq(llm_gguf_find_kv(g, "k.i32")->v.i, -5);
	ck_assert_int_eq(llm_gguf_get_f32(g, "k.f32", &f), 0);
	ck_assert_float_eq(f, 1.5f);
	ck_assert_int_eq(llm_gguf_get_f32(g, "k.f64", &f), 0);
	ck_assert_float_eq(f, -2.25f);
	ck_assert_int_eq(llm_gguf_get_bool(g, "k.bool", &bo), 0);
	ck_assert(bo);
	ck_assert_int_eq(llm_gguf_get_u32(g, "k.u64", &u32), -ERANGE);
	ck_assert_int_eq(llm_gguf_get_u64(g, "k.u64", &u64), 0);
	ck_assert_uint_eq(u64, 1ULL << 40);
	ck_assert_int_eq(llm_gguf_find_kv(g, "k.i64")->v.i, -7);
	ck_assert_int_eq(llm_gguf_get_u32(g, "nope", &u32), -ENOENT);
	ck_assert_int_eq(llm_gguf_get_f32(g, "k.u8", &f), -EINVAL);
	ck_assert_int_eq(llm_gguf_get_str(g, "k.u8", &str), -EINVAL);
	ck_assert_int_eq(llm_gguf_get_bool(g, "k.u8", &bo), -EINVAL);

	kv = llm_gguf_find_kv(g, "k.arr_i32");
	ck_assert_ptr_nonnull(kv);
	ck_assert_uint_eq(kv->arr_n, 3);
	ck_assert_int_eq(llm_gguf_arr_int(kv, 1, &v), 0);
	ck_assert_int_eq(v, -20);
	ck_assert_int_eq(llm_gguf_arr_int(kv, 2, &v), 0);
	ck_assert_int_eq(v, 30);
	ck_assert_int_eq(llm_gguf_arr_int(kv, 3, &v), -ERANGE);
	ck_assert_int_eq(llm_gguf_arr_strings(kv, strs), -EINVAL);
	kv = llm_gguf_find_kv(g, "k.arr_str");
	ck_assert_int_eq(llm_gguf_arr_strings(kv, strs), 0);
	ck_assert(llm_gguf_str_eq(strs[0], "a"));
	ck_assert(llm_gguf_str_eq(strs[1], ""));
	ck_assert(llm_gguf_str_eq(strs[2], "\xc4\xa0hello"));
	ck_assert_int_eq(llm_gguf_arr_int(kv, 0, &v), -EINVAL);
	ck_assert_uint_eq(llm_gguf_find_kv(g, "k.arr_empty")->arr_n, 0);

	for (i = 0; i < SYN_NT; i++) {
		const struct llm_gguf_tensor *t;
		float row[64], ref[64];
		uint64_t rb;

		t = llm_gguf_find_tensor(g, syn_t[i].name);
		ck_assert_ptr_nonnull(t);
		ck_assert_uint_eq(t->type, syn_t[i].type);
		ck_assert_uint_eq(t->n_dims, 2);
		ck_assert_uint_eq(t->ne[0], syn_t[i].ne0);
		ck_assert_uint_eq(t->ne[1], syn_t[i].ne1);
		ck_assert_uint_eq(t->ne[2], 1);
		ck_assert_uint_eq(t->nelem, syn_t[i].ne0 * syn_t[i].ne1);
		ck_assert_uint_eq(t->offset % SYN_ALIGN, 0);
		ck_assert_ptr_eq(t->data, g->base + g->data_off + t->offset);
		ck_assert_uint_eq(((const uint8_t *)t->data)[2],
				  syn_byte(i, 2));
		llm_gguf_row_bytes(t->type, t->ne[0], &rb);
		/* last row through the tensor API == the row function */
		ck_assert_int_eq(llm_gguf_tensor_row(t, t->ne[1] - 1, row), 0);
		ck_assert_int_eq(llm_gguf_dequant_row(t->type,
				(const uint8_t *)t->data + rb * (t->ne[1] - 1),
				ref, t->ne[0]), 0);
		ck_assert_mem_eq(row, ref, t->ne[0] * sizeof(float));
		for (uint64_t j = 0; j < t->ne[0]; j++)
			ck_assert(isfinite(row[j]));
		ck_assert_int_eq(llm_gguf_tensor_row(t, t->ne[1], row),
				 -ERANGE);
	}
	ck_assert_ptr_null(llm_gguf_find_tensor(g, "missing"));
}

START_TEST(test_synthetic_mem)
{
	char err[LLM_GGUF_ERR_MAX];
	struct llm_gguf *g;
	struct synth s;

	synth_build(&s);
	ck_assert_int_eq(synth_open(&s, &g, err), 0);
	ck_assert_str_eq(err, "");
	check_synth(g, &s);
	llm_gguf_close(g);
	free(s.b.p);
}
END_TEST

static void write_file(const char *path, const void *p, size_t n)
{
	FILE *f = fopen(path, "wb");

	ck_assert_ptr_nonnull(f);
	ck_assert_uint_eq(fwrite(p, 1, n, f), n);
	ck_assert_int_eq(fclose(f), 0);
}

START_TEST(test_synthetic_file)
{
	char path[] = "/tmp/kvmm-gguf-XXXXXX", err[LLM_GGUF_ERR_MAX];
	int fds = kvtest_open_fds(), fd;
	struct llm_gguf *g;
	struct synth s;
	size_t cuts[] = { 0, 3, 8, 23, 100, 0 };

	synth_build(&s);
	cuts[ARRAY_SIZE(cuts) - 1] = s.b.len - 1;
	fd = mkstemp(path);
	ck_assert_int_ge(fd, 0);
	close(fd);
	write_file(path, s.b.p, s.b.len);
	ck_assert_int_eq(llm_gguf_open(path, &g, err, sizeof(err)), 0);
	check_synth(g, &s);
	llm_gguf_close(g);
	ck_assert_int_eq(kvtest_open_fds(), fds);

	for (size_t i = 0; i < ARRAY_SIZE(cuts); i++) {
		const char *what = i == 0 ? "empty" :
				   i == ARRAY_SIZE(cuts) - 1 ?
					   "beyond end of file" : "truncated";

		write_file(path, s.b.p, cuts[i]);
		ck_assert_int_eq(llm_gguf_open(path, &g, err, sizeof(err)),
				 -EBADMSG);
		/* the message names the file and what is wrong */
		ck_assert_ptr_nonnull(strstr(err, path));
		ck_assert_msg(strstr(err, what), "'%s' lacks '%s'", err, what);
		ck_assert_ptr_null(strchr(err, '\n'));
	}
	ck_assert_int_eq(kvtest_open_fds(), fds);
	unlink(path);
	ck_assert_int_eq(llm_gguf_open(path, &g, err, sizeof(err)), -ENOENT);
	ck_assert_ptr_nonnull(strstr(err, path));
	ck_assert_int_eq(llm_gguf_open("/tmp", &g, err, sizeof(err)),
			 -EBADMSG);
	free(s.b.p);
}
END_TEST

/* every proper prefix of the file is refused, with a message */
START_TEST(test_truncated_everywhere)
{
	char err[LLM_GGUF_ERR_MAX];
	struct llm_gguf *g;
	struct synth s;
	uint8_t *copy;

	synth_build(&s);
	for (size_t n = 0; n < s.b.len; n++) {
		/* a fresh heap copy of exactly n bytes: ASan sees overreads */
		copy = malloc(n ? n : 1);
		memcpy(copy, s.b.p, n);
		g = NULL;
		err[0] = 0;
		ck_assert_msg(llm_gguf_open_mem(copy, n, &g, err,
						sizeof(err)) == -EBADMSG,
			      "prefix of %zu bytes accepted", n);
		ck_assert_ptr_null(g);
		ck_assert_msg(!strncmp(err, "gguf: ", 6) && strlen(err) > 12,
			      "no message for prefix %zu", n);
		free(copy);
	}
	free(s.b.p);
}
END_TEST

/* patch @n bytes at @off in a fresh synthetic file; expect @want and @msg */
static void expect_bad(size_t off, const void *val, size_t n, int want,
		       const char *msg)
{
	char err[LLM_GGUF_ERR_MAX];
	struct llm_gguf *g = NULL;
	struct synth s;

	synth_build(&s);
	memcpy(s.b.p + off, val, n);
	ck_assert_int_eq(synth_open(&s, &g, err), want);
	ck_assert_ptr_null(g);
	ck_assert_msg(strstr(err, msg), "message '%s' lacks '%s'", err, msg);
	free(s.b.p);
}

START_TEST(test_corrupt_variants)
{
	uint64_t huge = 1ULL << 60, max = UINT64_MAX, one = 1;
	uint32_t u;
	struct synth s;

	synth_build(&s); /* for the offsets only */
	free(s.b.p);
	expect_bad(0, "GGUX", 4, -EBADMSG, "bad magic");
	u = 1;
	expect_bad(4, &u, 4, -EOPNOTSUPP, "unsupported version 1");
	u = 4;
	expect_bad(4, &u, 4, -EOPNOTSUPP, "unsupported version 4");
	expect_bad(s.off_ntensors, &huge, 8, -EBADMSG, "tensor count");
	expect_bad(s.off_ntensors, &max, 8, -EBADMSG, "tensor count");
	expect_bad(s.off_nkv, &huge, 8, -EBADMSG, "metadata count");
	expect_bad(s.off_nkv, &max, 8, -EBADMSG, "metadata count");
	expect_bad(s.off_strlen, &max, 8, -EBADMSG, "truncated");
	expect_bad(s.off_arrcount, &huge, 8, -EBADMSG, "array count");
	expect_bad(s.off_arrcount, &max, 8, -EBADMSG, "array count");
	u = 13;
	expect_bad(s.off_strlen - 4, &u, 4, -EBADMSG, "unknown value type");
	u = LLM_GGUF_ARRAY;
	expect_bad(s.off_arrcount - 4, &u, 4, -EBADMSG, "nested array");
	u = 10; /* Q2_K: not supported, named */
	expect_bad(s.off_t0_type, &u, 4, -EOPNOTSUPP,
		   "tensor type Q2_K (10) is not supported");
	u = 16;
	expect_bad(s.off_t0_type, &u, 4, -EOPNOTSUPP, "type IQ2_XXS (16)");
	u = 15; /* Q8_K is an activation format only */
	expect_bad(s.off_t0_type, &u, 4, -EOPNOTSUPP, "type Q8_K (15)");
	u = 1000;
	expect_bad(s.off_t0_type, &u, 4, -EOPNOTSUPP,
		   "tensor type unknown (1000)");
	expect_bad(s.off_t0_offset, &huge, 8, -EBADMSG, "beyond end of file");
	huge = 1ULL << 20;
	expect_bad(s.off_t0_offset, &huge, 8, -EBADMSG, "beyond end of file");
	expect_bad(s.off_t0_offset, &max, 8, -EBADMSG, "not aligned");
	expect_bad(s.off_t0_offset, &one, 8, -EBADMSG, "not aligned");
	huge = SYN_ALIGN;
	expect_bad(s.off_t0_offset, &huge, 8, -EBADMSG, "overlap");
	u = 5;
	expect_bad(s.off_t1_ndims, &u, 4, -EBADMSG, "5 dims");
	u = 0;
	expect_bad(s.off_t1_ndims, &u, 4, -EBADMSG, "0 dims");
	huge = 0;
	expect_bad(s.off_t1_ne0, &huge, 8, -EBADMSG, "bad dim 0");
	expect_bad(s.off_t1_ne0, &max, 8, -EBADMSG, "bad dim 0");
	huge = 1ULL << 40; /* elements fit, bytes lie beyond the end */
	expect_bad(s.off_t1_ne0, &huge, 8, -EBADMSG, "beyond end of file");
	expect_bad(s.off_t1_name + 8, "f32", 3, -EBADMSG,
		   "duplicate tensor 'f32'");
	expect_bad(s.off_key_i8, "k.u8", 4, -EBADMSG,
		   "duplicate metadata key 'k.u8'");
	expect_bad(s.off_t1_name, &max, 8, -EBADMSG, "truncated");
	huge = 0;
	expect_bad(s.off_t1_name, &huge, 8, -EBADMSG, "bad name");
	u = 3;
	expect_bad(s.off_align_val, &u, 4, -EBADMSG, "alignment");
	u = 0;
	expect_bad(s.off_align_val, &u, 4, -EBADMSG, "alignment");
	u = 1U << 30;
	expect_bad(s.off_align_val, &u, 4, -EBADMSG, "beyond end");
}
END_TEST

/* Q4_0 row not a whole number of blocks */
START_TEST(test_bad_block_row)
{
	char err[LLM_GGUF_ERR_MAX];
	struct gbuf b = { 0 };
	struct llm_gguf *g;

	gb_u32(&b, LLM_GGUF_MAGIC);
	gb_u32(&b, 2);
	gb_u64(&b, 1);
	gb_u64(&b, 0);
	gb_str(&b, "w");
	gb_u32(&b, 1);
	gb_u64(&b, 48);
	gb_u32(&b, LLM_GGML_Q4_0);
	gb_u64(&b, 0);
	gb_pad(&b, 32);
	gb_pad(&b, 1024);
	ck_assert_int_eq(llm_gguf_open_mem(b.p, b.len, &g, err, sizeof(err)),
			 -EBADMSG);
	ck_assert_ptr_nonnull(strstr(err, "not a multiple of the Q4_0 block"));
	/* the same file with 64 elements is fine (v2, no metadata) */
	{
		uint64_t ne0 = 64;

		memcpy(b.p + 24 + 8 + 1 + 4, &ne0, 8);
	}
	ck_assert_int_eq(llm_gguf_open_mem(b.p, b.len, &g, err, sizeof(err)),
			 0);
	ck_assert_uint_eq(g->version, 2);
	ck_assert_uint_eq(g->tensors[0].nbytes, 36);
	llm_gguf_close(g);
	free(b.p);
}
END_TEST

/* random byte corruption: accepted or refused cleanly, never a crash */
START_TEST(test_random_corruption)
{
	uint64_t seed = kvtest_seed("test_random_corruption");
	char err[LLM_GGUF_ERR_MAX];
	struct synth s;
	uint8_t *copy;
	int refused = 0;

	synth_build(&s);
	copy = malloc(s.b.len);
	for (int it = 0; it < 20000; it++) {
		struct llm_gguf *g = NULL;
		int nflip = 1 + kvtest_rand(&seed) % 4, ret;

		memcpy(copy, s.b.p, s.b.len);
		for (int k = 0; k < nflip; k++) {
			/* favour the header and metadata, where parsing is */
			size_t at = kvtest_rand(&seed) % s.data_off;

			copy[at] = (uint8_t)kvtest_rand(&seed);
		}
		ret = llm_gguf_open_mem(copy, s.b.len, &g, err, sizeof(err));
		if (ret) {
			ck_assert_ptr_null(g);
			ck_assert(ret == -EBADMSG || ret == -EOPNOTSUPP);
			ck_assert_uint_gt(strlen(err), 6);
			refused++;
			continue;
		}
		/* whatever was accepted must be readable in full */
		for (uint64_t i = 0; i < g->n_tensors; i++) {
			const struct llm_gguf_tensor *t = &g->tensors[i];
			const uint8_t *end = g->base + g->size;

			ck_assert((const uint8_t *)t->data + t->nbytes <= end);
		}
		for (uint64_t i = 0; i < g->n_kv; i++) {
			const struct llm_gguf_kv *kv = &g->kv[i];

			ck_assert((const uint8_t *)kv->data + kv->size <=
				  g->base + g->size);
		}
		llm_gguf_close(g);
	}
	ck_assert_int_gt(refused, 100);
	free(copy);
	free(s.b.p);
}
END_TEST

/* ---- the default model ---- */

/* produced by tests/ref/gguf_ref.py */
static const struct {
	const char *name;
	uint32_t type;
	uint64_t ne0, rows;
	float first[4];
	double sum0, sum_last;
} model_ref[] = {
	{ "token_embd.weight", 8, 576, 49152, { -0.106544495f, 0.0329780579f, 0.0481987f, -0.0228309631f }, -2.25410938, -0.466220856 },
	{ "blk.0.attn_q.weight", 3, 576, 576, { -0.0963134766f, 0.157348633f, -0.0963134766f, -0.73046875f }, 1.00726318, -4.73495483 },
	{ "blk.0.attn_norm.weight", 0, 576, 1, { 0.0139770508f, 0.0238037109f, -0.0197753906f, -0.0302734375f }, 0.612943649, 0.612943649 },
	{ "blk.29.ffn_down.weight", 3, 1536, 576, { -0.27331543f, 0.186279297f, 0.186279297f, 0.0484008789f }, -10.8383179, -5.22994995 },
	{ "output_norm.weight", 0, 576, 1, { 1.7578125f, 1.8203125f, 1.78125f, 1.6015625f }, 1038.33203, 1038.33203 },
};

static double row_sum(const float *r, uint64_t n)
{
	double s = 0;

	for (uint64_t i = 0; i < n; i++)
		s += r[i];
	return s;
}

START_TEST(test_real_model)
{
	char err[LLM_GGUF_ERR_MAX];
	struct llm_gguf_str arch;
	struct llm_gguf *g;
	uint32_t nl;
	float row[1536];
	int ret;

	if (access(model_path(), R_OK)) {
		kvtest_skip(__func__, "%s absent (make model fetches it)",
			    model_path());
		return;
	}
	ret = llm_gguf_open(model_path(), &g, err, sizeof(err));
	ck_assert_msg(ret == 0, "%s", err);
	ck_assert_uint_eq(g->version, 3);
	ck_assert_uint_eq(g->n_kv, 33);
	ck_assert_uint_eq(g->n_tensors, 272);
	ck_assert_uint_eq(g->alignment, 32);
	ck_assert_int_eq(llm_gguf_get_str(g, "general.architecture", &arch), 0);
	ck_assert(llm_gguf_str_eq(arch, "llama"));
	ck_assert_int_eq(llm_gguf_get_u32(g, "llama.block_count", &nl), 0);
	ck_assert_uint_eq(nl, 30);
	ck_assert_uint_eq(llm_gguf_find_kv(g, "tokenizer.ggml.tokens")->arr_n,
			  49152);
	for (size_t i = 0; i < ARRAY_SIZE(model_ref); i++) {
		const struct llm_gguf_tensor *t;

		t = llm_gguf_find_tensor(g, model_ref[i].name);
		ck_assert_ptr_nonnull(t);
		ck_assert_uint_eq(t->type, model_ref[i].type);
		ck_assert_uint_eq(t->ne[0], model_ref[i].ne0);
		ck_assert_uint_eq(t->nelem / t->ne[0], model_ref[i].rows);
		ck_assert_int_eq(llm_gguf_tensor_row(t, 0, row), 0);
		for (int j = 0; j < 4; j++)
			ck_assert_float_eq_tol(row[j], model_ref[i].first[j],
					       1e-6);
		ck_assert_double_eq_tol(row_sum(row, t->ne[0]),
					model_ref[i].sum0,
					1e-5 * (1 + fabs(model_ref[i].sum0)));
		ck_assert_int_eq(llm_gguf_tensor_row(t, model_ref[i].rows - 1,
						     row), 0);
		ck_assert_double_eq_tol(row_sum(row, t->ne[0]),
					model_ref[i].sum_last,
					1e-5 * (1 + fabs(model_ref[i].sum_last)));
	}
	llm_gguf_close(g);
}
END_TEST

Suite *suite_gguf(void)
{
	Suite *s = suite_create("gguf");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, 30);
	KV_ADD(tc, test_fp16_convert);
	KV_ADD(tc, test_dequant_q8_0);
	KV_ADD(tc, test_dequant_q4_0);
	KV_ADD(tc, test_dequant_q4_1);
	KV_ADD(tc, test_dequant_float);
	KV_ADD(tc, test_synthetic_mem);
	KV_ADD(tc, test_synthetic_file);
	KV_ADD(tc, test_truncated_everywhere);
	KV_ADD(tc, test_corrupt_variants);
	KV_ADD(tc, test_bad_block_row);
	KV_ADD(tc, test_random_corruption);
	KV_ADD(tc, test_real_model);
	suite_add_tcase(s, tc);
	return s;
}
