// SPDX-License-Identifier: MIT
/*
 * check_tokenizer.c - the byte-level BPE tokenizer and chat templates.
 *
 * Without the model: UTF-8 decoding, categories, and a tiny synthetic
 * vocabulary written as GGUF by the test (merge order, special tokens,
 * refused metadata). With the default model (models/, fetched by
 * tools/model-fetch.sh): exact ids against tests/ref/tokenizer_ref.py,
 * all of wikitext-2 valid.txt, random round trips, chat formatting.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gguf.h"
#include "gguf_writer.h"
#include "kvtest.h"
#include "tokenizer.h"

#include "../model/load/hf.h"
#include "ref/spm_ref.h"
#include "ref/pretok_ref.h"

/* ../shared beside the checkout; tests run from the repository root */
#define WIKI_PATH "../shared/data/wikitext-2/valid.txt"

/* the default model's tokenizer, or NULL (and a SKIP line) without it */
static struct llm_tok *model_tok(void)
{
	char err[LLM_GGUF_ERR_MAX];
	struct llm_gguf *g;
	struct llm_tok *t;
	int ret;

	if (access(model_path(), R_OK)) {
		kvtest_skip(__func__, "%s absent (make model fetches it)",
			    model_path());
		return NULL;
	}
	ret = llm_gguf_open(model_path(), &g, err, sizeof(err));
	ck_assert_msg(ret == 0, "%s", err);
	ret = llm_tok_load(g, &t, err, sizeof(err));
	ck_assert_msg(ret == 0, "%s", err);
	llm_gguf_close(g); /* the tokenizer keeps its own copies */
	return t;
}

/* ids produced by tests/ref/tokenizer_ref.py (same strings, same order) */
static const struct {
	const char *text;
	size_t n;
	int32_t ids[64];
} ref[] = {
	{ "Hello world",
	  2, { 19556, 905 } },
	{ "Hello, world! How's it going? I'm fine, we'll see; they've gone, you're right, he'd go.",
	  29, { 19556, 28, 905, 17, 1073, 506, 357, 2045, 47, 339, 5248, 4979, 28, 392, 3060, 963, 43, 502, 3543, 7270, 28, 346, 2316, 1048, 28, 384, 6737, 685, 30 } },
	{ "  leading and trailing spaces   ",
	  6, { 216, 2899, 284, 35079, 5600, 333 } },
	{ "line one\012line two\012\012\011indented\015\012end",
	  12, { 1311, 582, 198, 1311, 827, 1116, 197, 526, 6574, 201, 198, 486 } },
	{ "The year 2024 had 365 days, 12 months and 3.14159 pies.",
	  29, { 504, 713, 216, 34, 32, 34, 36, 761, 216, 35, 38, 37, 2009, 28, 216, 33, 34, 2704, 284, 216, 35, 30, 33, 36, 33, 37, 41, 42801, 30 } },
	{ "caf\303\251 na\303\257ve \303\274ber Stra\303\237e \303\205ngstr\303\266m \305\223uvre",
	  19, { 83, 1939, 2756, 15486, 46494, 5549, 137, 593, 19144, 34878, 85, 5549, 223, 863, 1321, 45682, 18811, 237, 36874 } },
	{ "\316\272\316\261\316\273\316\267\316\274\316\255\317\201\316\261 \320\277\321\200\320\270\320\262\320\265\321\202 \344\275\240\345\245\275\344\270\226\347\225\214 \343\201\223\343\202\223\343\201\253\343\201\241\343\201\257 \355\225\234\352\265\255\354\226\264",
	  40, { 21118, 8998, 17162, 25723, 16674, 34075, 13583, 8998, 21985, 46879, 16464, 32547, 216, 18645, 250, 48392, 138, 7906, 240, 178, 239, 230, 46673, 237, 10391, 237, 41152, 7365, 111, 7365, 124, 216, 33085, 246, 181, 130, 251, 183, 240, 129 } },
	{ "emoji \360\237\230\200\360\237\232\200 and symbols \342\202\254100 \302\251 \342\200\224 \342\206\222 \302\275",
	  18, { 391, 33777, 40303, 218, 10813, 244, 218, 284, 7349, 24927, 33, 32, 32, 11435, 1841, 17822, 216, 16738 } },
	{ "<|im_start|>user\012What is 2+2?<|im_end|>\012<|im_start|>assistant\012",
	  16, { 1, 4093, 198, 1780, 314, 216, 34, 27, 34, 47, 2, 198, 1, 520, 9531, 198 } },
	{ "not special: <|im_start without end, <repo_name> is",
	  14, { 1766, 1767, 42, 2067, 108, 306, 79, 3738, 1355, 1112, 28, 216, 3, 314 } },
	{ "don't DON'T it'S 'quoted' ''double'' x'y",
	  19, { 12420, 982, 422, 2154, 23, 68, 357, 23, 67, 637, 385, 5036, 23, 10922, 21414, 3816, 1792, 23, 105 } },
	{ "a  b   c    d\012\012\012e",
	  10, { 81, 216, 278, 256, 265, 333, 287, 1116, 198, 85 } },
	{ "int main(void) { return a->b[0] != 0x1f; } // C++ == fun",
	  26, { 591, 1085, 24, 32439, 25, 1662, 1003, 253, 22690, 82, 75, 32, 77, 6541, 216, 32, 104, 33, 86, 43, 4029, 13241, 340, 11444, 1758, 1037 } },
	{ "   \012  \012",
	  3, { 333, 11181, 198 } },
	{ "\302\240nbsp\342\200\211thin\343\200\200ideo",
	  9, { 15442, 94, 32093, 321, 227, 39200, 12109, 218, 8496 } },
	{ "ctrl\004byte \303\200 and \177 del\037",
	  9, { 39673, 26846, 5549, 218, 284, 216, 217, 1347, 215 } },
};

/* wikitext valid.txt: 1121681 bytes */
#define WIKI_NTOK 273868
#define WIKI_FNV 0xc0e8ed8b21fbd11eULL

static uint64_t fnv_ids(const int32_t *ids, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	for (size_t i = 0; i < n; i++)
		h = (h ^ (uint32_t)ids[i]) * 0x100000001b3ULL;
	return h;
}

static int32_t *encode_all(const struct llm_tok *t, const char *s, size_t n,
			   unsigned int flags, size_t *nt)
{
	int32_t *ids;
	size_t need;

	ck_assert_int_eq(llm_tok_encode(t, s, n, flags, NULL, 0, &need),
			 need ? -ENOSPC : 0);
	ids = malloc((need + 1) * sizeof(*ids));
	ck_assert_ptr_nonnull(ids);
	ck_assert_int_eq(llm_tok_encode(t, s, n, flags, ids, need, nt), 0);
	ck_assert_uint_eq(*nt, need);
	return ids;
}

static void check_roundtrip(const struct llm_tok *t, const char *s, size_t n,
			    unsigned int flags)
{
	size_t nt, len;
	int32_t *ids = encode_all(t, s, n, flags, &nt);
	char *out = malloc(n + 1);

	ck_assert_int_eq(llm_tok_decode(t, ids, nt, 0, out, n + 1, &len), 0);
	ck_assert_uint_eq(len, n);
	ck_assert_msg(!memcmp(out, s, n), "round trip differs");
	free(out);
	free(ids);
}

/* ---- without the model ---- */

START_TEST(test_utf8_decode)
{
	static const struct {
		const char *s;
		size_t n, len;
		uint32_t cp;
	} v[] = {
		{ "A", 1, 1, 'A' },
		{ "\xc3\xa9", 2, 2, 0xe9 },
		{ "\xe2\x82\xac", 3, 3, 0x20ac },
		{ "\xf0\x9f\x98\x80", 4, 4, 0x1f600 },
		{ "\xc0\xaf", 2, 1, 0x110000 + 0xc0 },	   /* overlong */
		{ "\xed\xa0\x80", 3, 1, 0x110000 + 0xed }, /* surrogate */
		{ "\xe2\x82", 2, 1, 0x110000 + 0xe2 },	   /* truncated */
		{ "\xe2\x28\xa1", 3, 1, 0x110000 + 0xe2 }, /* bad continuation */
		{ "\x80", 1, 1, 0x110000 + 0x80 },
		{ "\xf4\x90\x80\x80", 4, 1, 0x110000 + 0xf4 }, /* > 10ffff */
		{ "\xff", 1, 1, 0x110000 + 0xff },
	};
	uint32_t cp;

	for (size_t i = 0; i < ARRAY_SIZE(v); i++) {
		ck_assert_uint_eq(llm_utf8_decode((const uint8_t *)v[i].s,
						  v[i].n, &cp), v[i].len);
		ck_assert_uint_eq(cp, v[i].cp);
	}
}
END_TEST

START_TEST(test_ucat)
{
	static const struct {
		uint32_t cp;
		enum llm_ucat cat;
	} v[] = {
		{ 'a', LLM_UCAT_LETTER },    { 'Z', LLM_UCAT_LETTER },
		{ '0', LLM_UCAT_NUMBER },    { ' ', LLM_UCAT_SPACE },
		{ '\n', LLM_UCAT_SPACE },    { '\'', LLM_UCAT_OTHER },
		{ '_', LLM_UCAT_OTHER },     { 0xa0, LLM_UCAT_SPACE },
		{ 0xa9, LLM_UCAT_OTHER },    { 0xb2, LLM_UCAT_NUMBER },
		{ 0xbd, LLM_UCAT_NUMBER },   { 0xd7, LLM_UCAT_OTHER },
		{ 0xe9, LLM_UCAT_LETTER },   { 0x153, LLM_UCAT_LETTER },
		{ 0x301, LLM_UCAT_OTHER },   { 0x3bb, LLM_UCAT_LETTER },
		{ 0x43f, LLM_UCAT_LETTER },  { 0x5d0, LLM_UCAT_LETTER },
		{ 0x663, LLM_UCAT_NUMBER },  { 0x2009, LLM_UCAT_SPACE },
		{ 0x2014, LLM_UCAT_OTHER },  { 0x20ac, LLM_UCAT_OTHER },
		{ 0x2167, LLM_UCAT_NUMBER }, { 0x3000, LLM_UCAT_SPACE },
		{ 0x3053, LLM_UCAT_LETTER }, { 0x4f60, LLM_UCAT_LETTER },
		{ 0xd55c, LLM_UCAT_LETTER }, { 0xff11, LLM_UCAT_NUMBER },
		{ 0x1f600, LLM_UCAT_OTHER }, { 0x20000, LLM_UCAT_LETTER },
		{ 0x110041, LLM_UCAT_OTHER },
	};

	for (size_t i = 0; i < ARRAY_SIZE(v); i++)
		ck_assert_msg(llm_ucat(v[i].cp) == v[i].cat, "U+%04X: %d",
			      v[i].cp, llm_ucat(v[i].cp));
}
END_TEST

/* a GGUF image holding only tokenizer metadata */
/*
 * Vocabulary: the 256 byte tokens (GPT-2 map), then "ab", "abc", "ĠĠ",
 * "<|sp|>", "<|spx|>" (controls), "bc". Merges: "a b" (rank 0),
 * "ab c" (1), "b c" (2), "Ġ Ġ" (3). Variant knobs break it on purpose.
 */
struct tiny_opts {
	const char *model, *pre;
	int bad_types; /* token_type array one short */
	const char *bad_merge; /* a fifth merge, or NULL */
};

static const char *tiny_extra[] = { "ab", "abc", "\xc4\xa0\xc4\xa0",
				    "<|sp|>", "<|spx|>", "bc" };

static void tiny_build(struct gbuf *b, const struct tiny_opts *o)
{
	uint32_t n = 256 + ARRAY_SIZE(tiny_extra), i;
	char u[4];

	gb_u32(b, LLM_GGUF_MAGIC);
	gb_u32(b, 3);
	gb_u64(b, 0);
	gb_u64(b, o->pre ? 6 : 5);
	gb_key(b, "tokenizer.ggml.model", LLM_GGUF_STRING);
	gb_str(b, o->model);
	if (o->pre) {
		gb_key(b, "tokenizer.ggml.pre", LLM_GGUF_STRING);
		gb_str(b, o->pre);
	}
	gb_key(b, "tokenizer.ggml.tokens", LLM_GGUF_ARRAY);
	gb_u32(b, LLM_GGUF_STRING);
	gb_u64(b, n);
	for (i = 0; i < 256; i++) {
		uint32_t cp = i;
		size_t l;

		/* the GPT-2 byte map, written out independently */
		if (!((i >= 0x21 && i <= 0x7e) || (i >= 0xa1 && i <= 0xac) ||
		      i >= 0xae)) {
			uint32_t k = 0;

			for (uint32_t j = 0; j < i; j++)
				if (!((j >= 0x21 && j <= 0x7e) ||
				      (j >= 0xa1 && j <= 0xac) || j >= 0xae))
					k++;
			cp = 256 + k;
		}
		if (cp < 0x80) {
			u[0] = (char)cp;
			l = 1;
		} else {
			u[0] = (char)(0xc0 | cp >> 6);
			u[1] = (char)(0x80 | (cp & 0x3f));
			l = 2;
		}
		gb_u64(b, l);
		gb_put(b, u, l);
	}
	for (i = 0; i < ARRAY_SIZE(tiny_extra); i++)
		gb_str(b, tiny_extra[i]);
	gb_key(b, "tokenizer.ggml.token_type", LLM_GGUF_ARRAY);
	gb_u32(b, LLM_GGUF_I32);
	gb_u64(b, n - (o->bad_types ? 1 : 0));
	for (i = 0; i < n - (o->bad_types ? 1 : 0); i++)
		gb_u32(b, i == 259 || i == 260 ? LLM_TOKTYPE_CONTROL :
						 LLM_TOKTYPE_NORMAL);
	gb_key(b, "tokenizer.ggml.merges", LLM_GGUF_ARRAY);
	gb_u32(b, LLM_GGUF_STRING);
	gb_u64(b, o->bad_merge ? 5 : 4);
	gb_str(b, "a b");
	gb_str(b, "ab c");
	gb_str(b, "b c");
	gb_str(b, "\xc4\xa0 \xc4\xa0");
	if (o->bad_merge)
		gb_str(b, o->bad_merge);
	gb_key(b, "tokenizer.ggml.bos_token_id", LLM_GGUF_U32);
	gb_u32(b, 259);
}

static int tiny_load(const struct tiny_opts *o, struct llm_tok **t,
		     char *err)
{
	struct gbuf b = { 0 };
	struct llm_gguf *g;
	int ret;

	tiny_build(&b, o);
	ret = llm_gguf_open_mem(b.p, b.len, &g, err, LLM_GGUF_ERR_MAX);
	ck_assert_msg(ret == 0, "%s", err);
	ret = llm_tok_load(g, t, err, LLM_GGUF_ERR_MAX);
	llm_gguf_close(g);
	free(b.p);
	return ret;
}

static void expect_ids(const struct llm_tok *t, const char *s,
		       unsigned int flags, const int32_t *want, size_t n)
{
	int32_t ids[64];
	size_t nt;

	ck_assert_int_eq(llm_tok_encode(t, s, strlen(s), flags, ids,
					ARRAY_SIZE(ids), &nt), 0);
	ck_assert_msg(nt == n, "'%s': %zu tokens, want %zu", s, nt, n);
	for (size_t i = 0; i < n; i++)
		ck_assert_msg(ids[i] == want[i], "'%s': token %zu is %d, not %d",
			      s, i, ids[i], want[i]);
}

#define IDS(...) (const int32_t[]){ __VA_ARGS__ }, \
	ARRAY_SIZE(((const int32_t[]){ __VA_ARGS__ }))

START_TEST(test_tiny_bpe)
{
	struct tiny_opts o = { "gpt2", NULL, 0 };
	char err[LLM_GGUF_ERR_MAX], out[64];
	struct llm_tok *t;
	size_t len;

	ck_assert_int_eq(tiny_load(&o, &t, err), 0);
	ck_assert_uint_eq(t->n_vocab, 262);
	ck_assert_uint_eq(t->n_merges, 4);
	ck_assert_int_eq(t->pre, LLM_TOK_PRE_GPT2);
	ck_assert_int_eq(t->bos_id, 259);
	ck_assert_int_eq(t->eos_id, -1);
	ck_assert_int_eq(t->byte_id['a'], 'a');
	ck_assert_int_eq(t->byte_id[' '], 32);
	/* ranks decide: a b (0) before b c (2), then ab c (1) */
	expect_ids(t, "abc", 0, IDS(257));
	expect_ids(t, "abab", 0, IDS(256, 256));
	expect_ids(t, "bc", 0, IDS(261));
	expect_ids(t, "xy", 0, IDS('x', 'y'));
	/* "  abc": the space run leaves one space for " abc" */
	expect_ids(t, "  abc", 0, IDS(' ', ' ', 257));
	expect_ids(t, "abc   ", 0, IDS(257, 258, ' '));
	/* specials only with PARSE_SPECIAL; the longest one wins */
	expect_ids(t, "a<|spx|>b", LLM_TOK_PARSE_SPECIAL, IDS('a', 260, 'b'));
	expect_ids(t, "<|sp|><|sp|>", LLM_TOK_PARSE_SPECIAL, IDS(259, 259));
	expect_ids(t, "<|sp|>", 0, IDS('<', '|', 's', 'p', '|', '>'));
	expect_ids(t, "ab", LLM_TOK_ADD_BOS, IDS(259, 256));
	ck_assert_int_eq(llm_tok_decode(t, IDS(259, 257, 258), 0, out,
					sizeof(out), &len), 0);
	ck_assert_str_eq(out, "<|sp|>abc  ");
	ck_assert_int_eq(llm_tok_decode(t, IDS(259, 257),
					LLM_TOK_SKIP_SPECIAL, out, sizeof(out),
					&len), 0);
	ck_assert_str_eq(out, "abc");
	ck_assert_int_eq(llm_tok_decode(t, IDS(300), 0, out, sizeof(out),
					&len), -EINVAL);
	ck_assert_int_eq(llm_tok_decode(t, IDS(257, 257), 0, out, 6, &len),
			 -ENOSPC);
	ck_assert_uint_eq(len, 6);
	ck_assert_str_eq(out, "abcab");
	ck_assert_int_eq(llm_tok_lookup(t, "<|spx|>"), 260);
	ck_assert_int_eq(llm_tok_lookup(t, "abc"), 257);
	ck_assert_int_eq(llm_tok_lookup(t, "zzz"), -1);
	ck_assert_ptr_null(t->chat_template);
	llm_tok_free(t);

	/* digit splitting with the "smollm" pre-tokenizer */
	o.pre = "smollm";
	ck_assert_int_eq(tiny_load(&o, &t, err), 0);
	ck_assert_int_eq(t->pre, LLM_TOK_PRE_GPT2_DIGITS);
	expect_ids(t, "a12", 0, IDS('a', '1', '2'));
	llm_tok_free(t);
}
END_TEST

START_TEST(test_tiny_refused)
{
	struct tiny_opts o = { "bert", NULL, 0 };
	char err[LLM_GGUF_ERR_MAX];
	struct llm_tok *t = NULL;

	ck_assert_int_eq(tiny_load(&o, &t, err), -EOPNOTSUPP);
	ck_assert_ptr_nonnull(strstr(err, "unsupported model 'bert'"));
	o.model = "gpt2";
	o.pre = "falcon";
	ck_assert_int_eq(tiny_load(&o, &t, err), -EOPNOTSUPP);
	ck_assert_ptr_nonnull(strstr(err, "unsupported pre-tokenizer 'falcon'"));
	o.pre = NULL;
	o.bad_types = 1;
	ck_assert_int_eq(tiny_load(&o, &t, err), -EBADMSG);
	ck_assert_ptr_nonnull(strstr(err, "token_type"));
	ck_assert_ptr_null(t);
	/* malformed merges, refused as the tokenizers library does */
	o.bad_types = 0;
	o.bad_merge = "x y"; /* "xy" is not in the vocabulary */
	ck_assert_int_eq(tiny_load(&o, &t, err), -EBADMSG);
	ck_assert_msg(strstr(err, "merges[4] 'x y': the merged token not in "
			      "the vocabulary"), "%s", err);
	o.bad_merge = "q\xc3\xa9 a";
	ck_assert_int_eq(tiny_load(&o, &t, err), -EBADMSG);
	ck_assert_msg(strstr(err, "the first token not in"), "%s", err);
	static const char *const split[] = { "nospace", " a", "a ", "a b c",
					     "a  b", "" };
	for (size_t i = 0; i < ARRAY_SIZE(split); i++) {
		o.bad_merge = split[i];
		ck_assert_int_eq(tiny_load(&o, &t, err), -EBADMSG);
		ck_assert_msg(strstr(err, "is not two tokens joined by one "
				      "space"), "'%s': %s", split[i], err);
		ck_assert_ptr_null(t);
	}
}
END_TEST

START_TEST(test_chat_format)
{
	static const struct llm_chat_msg m[] = {
		{ "user", "Hi" }, { "assistant", "Hello!" }, { "user", "2+2?" },
	};
	static const struct llm_chat_msg ms[] = {
		{ "system", "Be brief." }, { "user", "Hi" },
	};
	const char *tmpl = "{% if x %}{{ '<|im_start|>system\nYou are X<|im_end|>\n' }}"
			   "{% endif %}{{'<|im_start|>' + message['role']}}";
	enum llm_chat_tmpl st;
	const char *sys;
	size_t sl, len;
	char buf[512];

	ck_assert_int_eq(llm_chat_detect(tmpl, &st, &sys, &sl), 0);
	ck_assert_int_eq(st, LLM_CHAT_CHATML);
	ck_assert_uint_eq(sl, 9);
	ck_assert(!memcmp(sys, "You are X", 9));
	ck_assert_int_eq(llm_chat_format(st, sys, sl, m, 3, true, buf,
					 sizeof(buf), &len), 0);
	ck_assert_str_eq(buf, "<|im_start|>system\nYou are X<|im_end|>\n"
			      "<|im_start|>user\nHi<|im_end|>\n"
			      "<|im_start|>assistant\nHello!<|im_end|>\n"
			      "<|im_start|>user\n2+2?<|im_end|>\n"
			      "<|im_start|>assistant\n");
	ck_assert_uint_eq(len, strlen(buf));
	/* a system message of the caller replaces the default */
	ck_assert_int_eq(llm_chat_format(st, sys, sl, ms, 2, false, buf,
					 sizeof(buf), &len), 0);
	ck_assert_str_eq(buf, "<|im_start|>system\nBe brief.<|im_end|>\n"
			      "<|im_start|>user\nHi<|im_end|>\n");
	ck_assert_int_eq(llm_chat_format(LLM_CHAT_LLAMA3, NULL, 0, ms, 2, true,
					 buf, sizeof(buf), &len), 0);
	ck_assert_str_eq(buf, "<|begin_of_text|><|start_header_id|>system"
			      "<|end_header_id|>\n\nBe brief.<|eot_id|>"
			      "<|start_header_id|>user<|end_header_id|>\n\n"
			      "Hi<|eot_id|><|start_header_id|>assistant"
			      "<|end_header_id|>\n\n");
	ck_assert_int_eq(llm_chat_format(st, NULL, 0, ms, 2, false, buf, 10,
					 &len), -ENOSPC);
	ck_assert_uint_eq(strlen(buf), 9);
	ck_assert_int_eq(llm_chat_format(7, NULL, 0, ms, 2, false, buf, 10,
					 &len), -EINVAL);
	ck_assert_int_eq(llm_chat_detect("{{ messages }}", &st, &sys, &sl),
			 -EOPNOTSUPP);
	ck_assert_int_eq(llm_chat_detect("<|start_header_id|>", &st, &sys,
					 &sl), 0);
	ck_assert_int_eq(st, LLM_CHAT_LLAMA3);
}
END_TEST

/* ---- with the model ---- */

START_TEST(test_model_ref_ids)
{
	struct llm_tok *t = model_tok();

	if (!t)
		return;
	ck_assert_uint_eq(t->n_vocab, 49152);
	ck_assert_int_eq(t->pre, LLM_TOK_PRE_GPT2_DIGITS);
	ck_assert_int_eq(t->bos_id, 1);
	ck_assert_int_eq(t->eos_id, 2);
	ck_assert(!t->add_bos);
	ck_assert_uint_eq(t->n_special, 17);
	/* SmolLM2 has no token for 21 bytes, e.g. 0x04 and 0xc0 */
	for (int b = 0, missing = 0; b < 256; b++) {
		missing += t->byte_id[b] < 0;
		if (b == 255)
			ck_assert_int_eq(missing, 21);
	}
	ck_assert_int_eq(t->byte_id[4], -1);
	ck_assert_int_eq(t->byte_id[0xc0], -1);
	for (size_t i = 0; i < ARRAY_SIZE(ref); i++) {
		expect_ids(t, ref[i].text, LLM_TOK_PARSE_SPECIAL, ref[i].ids,
			   ref[i].n);
		if (strchr(ref[i].text, 4))
			continue; /* bytes without a token are dropped */
		check_roundtrip(t, ref[i].text, strlen(ref[i].text),
				LLM_TOK_PARSE_SPECIAL);
		check_roundtrip(t, ref[i].text, strlen(ref[i].text), 0);
	}
	llm_tok_free(t);
}
END_TEST

START_TEST(test_model_wikitext)
{
	struct llm_tok *t;
	size_t n, nt, len;
	int32_t *ids;
	const char *path = getenv("KVMM_WIKITEXT");
	char *text, *out;
	FILE *f;

	path = path && *path ? path : WIKI_PATH;
	f = fopen(path, "rb");
	if (!f) {
		kvtest_skip(__func__, "%s absent (set KVMM_WIKITEXT)", path);
		return;
	}
	t = model_tok();
	if (!t) {
		fclose(f);
		return;
	}
	fseek(f, 0, SEEK_END);
	n = (size_t)ftell(f);
	rewind(f);
	text = malloc(n + 1);
	out = malloc(n + 1);
	ck_assert_uint_eq(fread(text, 1, n, f), n);
	fclose(f);

	ids = encode_all(t, text, n, LLM_TOK_PARSE_SPECIAL, &nt);
	ck_assert_uint_eq(n, 1121681);
	ck_assert_uint_eq(nt, WIKI_NTOK);
	ck_assert_uint_eq(fnv_ids(ids, nt), WIKI_FNV);
	ck_assert_int_eq(llm_tok_decode(t, ids, nt, 0, out, n + 1, &len), 0);
	ck_assert_uint_eq(len, n);
	ck_assert(!memcmp(out, text, n));
	free(ids);
	free(out);
	free(text);
	llm_tok_free(t);
}
END_TEST

/* random bytes, invalid UTF-8 included: decode(encode(x)) == x */
START_TEST(test_model_random_roundtrip)
{
	static const char *parts[] = { " ", "  ", "\n", "\t", "a", "Z", "7",
				       "'s", "'ll", "\xc3\xa9", "\xe4\xbd\xa0",
				       "\xf0\x9f\x98\x80", "<|im_end|>", ".",
				       "\xe2\x80\x89", "\xc2\xa0", "the" };
	uint64_t seed = kvtest_seed("test_model_random_roundtrip");
	struct llm_tok *t = model_tok();
	char s[512];

	if (!t)
		return;
	for (int it = 0; it < 2000; it++) {
		size_t n = 0, want = kvtest_rand(&seed) % 200;

		while (n < want) {
			uint64_t r = kvtest_rand(&seed);

			if (r % 4 == 0) {
				/* any byte that has a token */
				if (t->byte_id[(r >> 8) & 0xff] >= 0)
					s[n++] = (char)(r >> 8);
			} else {
				const char *p = parts[(r >> 8) %
						      ARRAY_SIZE(parts)];
				size_t l = strlen(p);

				memcpy(s + n, p, l);
				n += l;
			}
		}
		check_roundtrip(t, s, n, kvtest_rand(&seed) & 1 ?
					  LLM_TOK_PARSE_SPECIAL : 0);
	}
	llm_tok_free(t);
}
END_TEST

START_TEST(test_model_special_and_chat)
{
	static const struct llm_chat_msg m[] = { { "user", "What is 2+2?" } };
	struct llm_tok *t = model_tok();
	enum llm_chat_tmpl st;
	int32_t ids[64];
	const char *sys;
	size_t sl, len, nt;
	char buf[512];

	if (!t)
		return;
	ck_assert_ptr_nonnull(t->chat_template);
	ck_assert_int_eq(llm_chat_detect(t->chat_template, &st, &sys, &sl), 0);
	ck_assert_int_eq(st, LLM_CHAT_CHATML);
	ck_assert_uint_eq(sl, strlen("You are a helpful AI assistant named "
				     "SmolLM, trained by Hugging Face"));
	ck_assert(!memcmp(sys, "You are a helpful AI assistant named SmolLM",
			  43));
	ck_assert_int_eq(llm_chat_format(st, NULL, 0, m, 1, true, buf,
					 sizeof(buf), &len), 0);
	/* the reference string of tokenizer_ref.py, ids included */
	ck_assert_str_eq(buf, ref[8].text);
	expect_ids(t, buf, LLM_TOK_PARSE_SPECIAL, ref[8].ids, ref[8].n);
	/* without PARSE_SPECIAL the markers are plain text */
	ck_assert_int_eq(llm_tok_encode(t, "<|im_end|>", 10, 0, ids,
					ARRAY_SIZE(ids), &nt), 0);
	ck_assert_uint_gt(nt, 1);
	for (size_t i = 0; i < nt; i++)
		ck_assert_int_gt(ids[i], 16);
	ck_assert_int_eq(llm_tok_lookup(t, "<|im_end|>"), 2);
	ck_assert_int_eq(llm_tok_lookup(t, "<|im_start|>"), 1);
	/* -ENOSPC still counts every token */
	ck_assert_int_eq(llm_tok_encode(t, ref[1].text, strlen(ref[1].text),
					LLM_TOK_ADD_BOS, ids, 3, &nt),
			 -ENOSPC);
	ck_assert_uint_eq(nt, ref[1].n + 1);
	ck_assert_int_eq(ids[0], 1);
	ck_assert_int_eq(ids[1], ref[1].ids[0]);
	ck_assert_int_eq(llm_tok_decode(t, ids, 3, LLM_TOK_SKIP_SPECIAL, buf,
					sizeof(buf), &len), 0);
	ck_assert_str_eq(buf, "Hello,");
	llm_tok_free(t);
}
END_TEST

/* a 256 KiB word and space run: BPE is O(n log n), not O(n^2) */
START_TEST(test_model_long_word)
{
	uint64_t seed = kvtest_seed("test_model_long_word");
	struct llm_tok *t = model_tok();
	size_t n = 1 << 18;
	char *s;

	if (!t)
		return;
	s = malloc(n);
	for (size_t i = 0; i < n; i++)
		s[i] = (char)('a' + kvtest_rand(&seed) % 26);
	check_roundtrip(t, s, n, 0);
	memset(s, ' ', n);
	s[n - 1] = 'x';
	check_roundtrip(t, s, n, 0);
	free(s);
	llm_tok_free(t);
}
END_TEST

/* ---- Llama-3 and Qwen2 pre-tokenizers ---- */

/*
 * The default model's vocabulary with the Llama-3 and Qwen2 patterns, as
 * tests/ref/pretok_ref.py builds it with Hugging Face tokenizers: the test
 * strings, and all of WikiText-2 valid through a hash.
 */
START_TEST(test_model_pretok_llama3_qwen2)
{
	const struct pretok_case *cases[2] = { pretok_llama3, pretok_qwen2 };
	const enum llm_tok_pre pre[2] = { LLM_TOK_PRE_LLAMA3,
					  LLM_TOK_PRE_QWEN2 };
	const uint64_t fnv[2] = { PRETOK_LLAMA3_WIKI_FNV,
				  PRETOK_QWEN2_WIKI_FNV };
	const size_t ntok[2] = { PRETOK_LLAMA3_WIKI_NTOK,
				 PRETOK_QWEN2_WIKI_NTOK };
	const char *path = getenv("KVMM_WIKITEXT");
	struct llm_tok *t = model_tok();
	char *text = NULL;
	size_t n = 0, nt;
	int differ = 0;
	FILE *f;

	if (!t)
		return;
	path = path && *path ? path : WIKI_PATH;
	f = fopen(path, "rb");
	if (f) {
		fseek(f, 0, SEEK_END);
		n = (size_t)ftell(f);
		rewind(f);
		text = malloc(n + 1);
		ck_assert_uint_eq(fread(text, 1, n, f), n);
		fclose(f);
	}
	for (int k = 0; k < 2; k++) {
		t->pre = pre[k];
		for (size_t i = 0; i < ARRAY_SIZE(ref); i++) {
			expect_ids(t, cases[k][i].text, LLM_TOK_PARSE_SPECIAL,
				   cases[k][i].ids, cases[k][i].n);
			differ += cases[k][i].n != ref[i].n ||
				  memcmp(cases[k][i].ids, ref[i].ids,
					 ref[i].n * sizeof(int32_t));
		}
		if (text) {
			int32_t *ids = encode_all(t, text, n,
						  LLM_TOK_PARSE_SPECIAL, &nt);

			ck_assert_uint_eq(nt, ntok[k]);
			ck_assert_uint_eq(fnv_ids(ids, nt), fnv[k]);
			free(ids);
		}
	}
	/* the patterns split some strings differently from GPT-2's */
	printf("pretok: %d of %zu cases differ from the GPT-2 pattern\n",
	       differ, 2 * ARRAY_SIZE(ref));
	ck_assert_int_gt(differ, 0);
	free(text);
	llm_tok_free(t);
}
END_TEST

/* ---- SentencePiece BPE ---- */

/*
 * A "llama" tokenizer GGUF image: @n pieces with scores and types; @prefix
 * -1 leaves add_space_prefix out, @first sets the first-only variant.
 */
static void spm_image(struct gbuf *b, const char *const *pieces,
		      const float *scores, const uint8_t *types, uint32_t n,
		      int prefix, bool first)
{
	gb_u32(b, LLM_GGUF_MAGIC);
	gb_u32(b, 3);
	gb_u64(b, 0);
	gb_u64(b, 6 + (prefix >= 0) + first);
	gb_key(b, "tokenizer.ggml.model", LLM_GGUF_STRING);
	gb_str(b, "llama");
	gb_key(b, "tokenizer.ggml.tokens", LLM_GGUF_ARRAY);
	gb_u32(b, LLM_GGUF_STRING);
	gb_u64(b, n);
	for (uint32_t i = 0; i < n; i++)
		gb_str(b, pieces[i]);
	gb_key(b, "tokenizer.ggml.scores", LLM_GGUF_ARRAY);
	gb_u32(b, LLM_GGUF_F32);
	gb_u64(b, n);
	gb_put(b, scores, 4ULL * n);
	gb_key(b, "tokenizer.ggml.token_type", LLM_GGUF_ARRAY);
	gb_u32(b, LLM_GGUF_I32);
	gb_u64(b, n);
	for (uint32_t i = 0; i < n; i++)
		gb_u32(b, types[i]);
	gb_key(b, "tokenizer.ggml.bos_token_id", LLM_GGUF_U32);
	gb_u32(b, 1);
	gb_key(b, "tokenizer.ggml.unknown_token_id", LLM_GGUF_U32);
	gb_u32(b, 0);
	if (prefix >= 0) {
		uint8_t v = (uint8_t)prefix;

		gb_key(b, "tokenizer.ggml.add_space_prefix", LLM_GGUF_BOOL);
		gb_put(b, &v, 1);
	}
	if (first) {
		uint8_t v = 1;

		gb_key(b, "kvmm.tokenizer.prefix_first_only", LLM_GGUF_BOOL);
		gb_put(b, &v, 1);
	}
}

static struct llm_tok *spm_load(struct gbuf *b)
{
	char err[LLM_GGUF_ERR_MAX];
	struct llm_gguf *g;
	struct llm_tok *t;

	ck_assert_msg(!llm_gguf_open_mem(b->p, b->len, &g, err, sizeof(err)),
		      "%s", err);
	ck_assert_msg(!llm_tok_load(g, &t, err, sizeof(err)), "%s", err);
	llm_gguf_close(g);
	free(b->p);
	return t;
}

static void spm_check_cases(const struct llm_tok *t, const char *what)
{
	int32_t ids[256];
	char text[1024];
	size_t n, len;

	for (size_t c = 0; c < ARRAY_SIZE(spm_cases); c++) {
		const char *s = spm_cases[c].text;

		ck_assert_int_eq(llm_tok_encode(t, s, strlen(s), 0, ids, 256,
						&n), 0);
		ck_assert_msg(n == (size_t)spm_cases[c].n, "%s: case %zu: %zu "
			      "tokens, sentencepiece %d", what, c, n,
			      spm_cases[c].n);
		for (size_t i = 0; i < n; i++)
			ck_assert_msg(ids[i] == spm_cases[c].ids[i],
				      "%s: case %zu: token %zu is %d, "
				      "sentencepiece %d", what, c, i, ids[i],
				      spm_cases[c].ids[i]);
		/* decoding gives the text back, after the added space */
		ck_assert_int_eq(llm_tok_decode(t, ids, n, 0, text,
						sizeof(text), &len), 0);
		if (*s)
			ck_assert_msg(len == strlen(s) + 1 && text[0] == ' ' &&
				      !strcmp(text + 1, s), "%s: case %zu: "
				      "decodes to '%s'", what, c, text);
	}
}

/* scores-based merges (GGUF) against sentencepiece itself */
START_TEST(test_spm_gguf_ref)
{
	struct gbuf b = { 0 };
	struct llm_tok *t;

	spm_image(&b, spm_pieces, spm_scores, spm_types, SPM_NVOCAB, 1, false);
	t = spm_load(&b);
	ck_assert(t->spm);
	ck_assert_int_eq(t->prefix, LLM_TOK_PREFIX_EACH);
	ck_assert_int_eq(t->byte_id[0x41], 3 + 0x41);
	spm_check_cases(t, "gguf scores");
	llm_tok_free(t);
}
END_TEST

/* the same vocabulary as tokenizer.json (merges, byte_fallback) */
START_TEST(test_spm_json_ref)
{
	const char *path = "tests/ref/spm_tokenizer.json";
	char err[LLM_GGUF_ERR_MAX + 64];
	struct llm_tok *t;

	ck_assert_msg(!llm_hf_tokenizer(path, &t, err, sizeof(err)), "%s",
		      err);
	ck_assert(t->spm);
	ck_assert_uint_eq(t->n_vocab, SPM_NVOCAB);
	ck_assert_int_eq(t->unk_id, 0);
	ck_assert_int_eq(t->type[5], LLM_TOKTYPE_BYTE);
	spm_check_cases(t, "tokenizer.json merges");
	llm_tok_free(t);
}
END_TEST

/*
 * A hand-made vocabulary: score order decides (not the order of the
 * table), equal scores merge left first, a character without a token
 * falls back to bytes or unk, and where the space prefix goes.
 */
START_TEST(test_spm_tiny)
{
	static const char *const p[] = {
		"<unk>", "<s>", "</s>", "<0xC3>", "<0xA9>",
		"\xe2\x96\x81", "a", "b", "c", "ab", "bc", "abc",
		"\xe2\x96\x81" "a", "x",
	};
	/* bc beats ab; abc best; ▁a as good as bc */
	static const float sc[] = { 0, 0, 0, 0, 0, -100, -100, -100, -100,
				    -10, -5, -1, -5, -100 };
	static const uint8_t ty[] = { 2, 3, 3, 6, 6, 1, 1, 1, 1, 1, 1, 1, 1,
				      1 };
	static const struct {
		const char *text;
		unsigned int flags;
		int prefix;
		bool first;
		int n;
		int32_t ids[8];
	} cases[] = {
		/* ▁ a b c: ▁a (-5, left) before bc (-5); then ▁a bc */
		{ "abc", 0, 1, false, 2, { 12, 10 } },
		/* no prefix: bc (-5) first, then a bc -> abc via (a, bc) */
		{ "abc", 0, 0, false, 1, { 11 } },
		/* absent key: llama.cpp's default, a prefix */
		{ "abc", 0, -1, false, 2, { 12, 10 } },
		/* é has no token: its two byte tokens; 'z' no byte: unk */
		{ "x\xc3\xa9z", 0, 0, false, 4, { 13, 3, 4, 0 } },
		/* a special token, then a prefixed fragment again */
		{ "ab<s>ab", LLM_TOK_PARSE_SPECIAL, 1, false, 5,
		  { 12, 7, 1, 12, 7 } },
		/* first-only: no prefix after the special token */
		{ "ab<s>ab", LLM_TOK_PARSE_SPECIAL, 1, true, 4, { 12, 7, 1, 9 } },
		/* spaces are U+2581 */
		{ "a a", 0, 0, false, 2, { 6, 12 } },
	};
	int32_t ids[16];
	size_t n;

	for (size_t c = 0; c < ARRAY_SIZE(cases); c++) {
		struct gbuf b = { 0 };
		struct llm_tok *t;

		spm_image(&b, p, sc, ty, ARRAY_SIZE(p), cases[c].prefix,
			  cases[c].first);
		t = spm_load(&b);
		ck_assert_int_eq(llm_tok_encode(t, cases[c].text,
						strlen(cases[c].text),
						cases[c].flags, ids, 16, &n), 0);
		ck_assert_msg(n == (size_t)cases[c].n, "case %zu: %zu tokens",
			      c, n);
		for (size_t i = 0; i < n; i++)
			ck_assert_msg(ids[i] == cases[c].ids[i],
				      "case %zu: token %zu is %d, want %d", c,
				      i, ids[i], cases[c].ids[i]);
		llm_tok_free(t);
	}
}
END_TEST

/* missing scores without merges is refused */
START_TEST(test_spm_refused)
{
	static const char *const p[] = { "<unk>", "<s>", "a" };
	char err[LLM_GGUF_ERR_MAX];
	struct gbuf b = { 0 };
	struct llm_gguf *g;
	struct llm_tok *t = NULL;

	gb_u32(&b, LLM_GGUF_MAGIC);
	gb_u32(&b, 3);
	gb_u64(&b, 0);
	gb_u64(&b, 2);
	gb_key(&b, "tokenizer.ggml.model", LLM_GGUF_STRING);
	gb_str(&b, "llama");
	gb_key(&b, "tokenizer.ggml.tokens", LLM_GGUF_ARRAY);
	gb_u32(&b, LLM_GGUF_STRING);
	gb_u64(&b, 3);
	for (int i = 0; i < 3; i++)
		gb_str(&b, p[i]);
	ck_assert_int_eq(llm_gguf_open_mem(b.p, b.len, &g, err, sizeof(err)),
			 0);
	ck_assert_int_eq(llm_tok_load(g, &t, err, sizeof(err)), -EBADMSG);
	ck_assert_ptr_nonnull(strstr(err, "tokenizer.ggml.scores"));
	ck_assert_ptr_null(t);
	llm_gguf_close(g);
	free(b.p);
}
END_TEST

Suite *suite_tokenizer(void)
{
	Suite *s = suite_create("tokenizer");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, 60);
	KV_ADD(tc, test_utf8_decode);
	KV_ADD(tc, test_ucat);
	KV_ADD(tc, test_tiny_bpe);
	KV_ADD(tc, test_tiny_refused);
	KV_ADD(tc, test_spm_gguf_ref);
	KV_ADD(tc, test_spm_json_ref);
	KV_ADD(tc, test_spm_tiny);
	KV_ADD(tc, test_spm_refused);
	KV_ADD(tc, test_model_pretok_llama3_qwen2);
	KV_ADD(tc, test_chat_format);
	KV_ADD(tc, test_model_ref_ids);
	KV_ADD(tc, test_model_wikitext);
	KV_ADD(tc, test_model_random_roundtrip);
	KV_ADD(tc, test_model_special_and_chat);
	KV_ADD(tc, test_model_long_word);
	suite_add_tcase(s, tc);
	return s;
}
