// SPDX-License-Identifier: MIT
/*
 * tokenizer.c - byte-level BPE tokenizer from GGUF metadata.
 *
 * DOC: encoding
 *
 * 1. Special tokens (control and user-defined types) are cut out of the
 *    text as whole tokens, longest match first (LLM_TOK_PARSE_SPECIAL).
 * 2. The pieces between them are pre-tokenized: for the "digits" variant,
 *    each \p{N} code point becomes a segment of its own; every segment is
 *    then split with the GPT-2 pattern
 *
 *      's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+
 *      |\s+(?!\S)|\s+
 *
 *    implemented by hand below (gpt2_split()), one match at a time.
 * 3. Each pre-token's bytes start as single-byte tokens (the GPT-2 byte to
 *    code point map makes every byte a printable token) and the adjacent
 *    pair of lowest merge rank is merged until no pair has a rank.
 *
 * Decoding concatenates the bytes of each token, computed once at load by
 * inverting the byte map.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer.h"

/* ---- UTF-8 and Unicode categories ---- */

/**
 * llm_utf8_decode() - decode one code point.
 * @s: bytes.
 * @n: bytes available, at least 1.
 * @cp: the code point; an invalid or truncated sequence gives
 *      0x110000 + the first byte (a non-character, category other).
 *
 * Return: bytes consumed, 1 to 4.
 */
size_t llm_utf8_decode(const uint8_t *s, size_t n, uint32_t *cp)
{
	uint32_t c = s[0], min;
	size_t len, i;

	if (c < 0x80) {
		*cp = c;
		return 1;
	}
	if ((c & 0xe0) == 0xc0) {
		len = 2, c &= 0x1f, min = 0x80;
	} else if ((c & 0xf0) == 0xe0) {
		len = 3, c &= 0x0f, min = 0x800;
	} else if ((c & 0xf8) == 0xf0) {
		len = 4, c &= 0x07, min = 0x10000;
	} else {
		goto bad;
	}
	if (len > n)
		goto bad;
	for (i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			goto bad;
		c = c << 6 | (s[i] & 0x3f);
	}
	if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
		goto bad;
	*cp = c;
	return len;
bad:
	*cp = 0x110000 + s[0];
	return 1;
}

static size_t utf8_encode(uint32_t cp, char *out)
{
	if (cp < 0x80) {
		out[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		out[0] = (char)(0xc0 | cp >> 6);
		out[1] = (char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		out[0] = (char)(0xe0 | cp >> 12);
		out[1] = (char)(0x80 | (cp >> 6 & 0x3f));
		out[2] = (char)(0x80 | (cp & 0x3f));
		return 3;
	}
	out[0] = (char)(0xf0 | cp >> 18);
	out[1] = (char)(0x80 | (cp >> 12 & 0x3f));
	out[2] = (char)(0x80 | (cp >> 6 & 0x3f));
	out[3] = (char)(0x80 | (cp & 0x3f));
	return 4;
}

#define L LLM_UCAT_LETTER
#define N LLM_UCAT_NUMBER

/*
 * Letter and number ranges, sorted. Exact for ASCII, Latin-1 and the Latin,
 * Greek, Cyrillic, Armenian, Hebrew, CJK, kana, Hangul and fullwidth
 * blocks; approximate (main letters and digits only) for Arabic,
 * Devanagari, Thai, Georgian and a few others; everything not listed is
 * "other". Unassigned code points inside a range count as letters.
 */
static const struct ucat_range {
	uint32_t lo, hi;
	uint8_t cat;
} ucat_tab[] = {
	{ 0x0030, 0x0039, N }, { 0x0041, 0x005a, L }, { 0x0061, 0x007a, L },
	{ 0x00aa, 0x00aa, L }, { 0x00b2, 0x00b3, N }, { 0x00b5, 0x00b5, L },
	{ 0x00b9, 0x00b9, N }, { 0x00ba, 0x00ba, L }, { 0x00bc, 0x00be, N },
	{ 0x00c0, 0x00d6, L }, { 0x00d8, 0x00f6, L }, { 0x00f8, 0x02c1, L },
	{ 0x02c6, 0x02d1, L }, { 0x02e0, 0x02e4, L }, { 0x02ec, 0x02ec, L },
	{ 0x02ee, 0x02ee, L }, { 0x0370, 0x0374, L }, { 0x0376, 0x037d, L },
	{ 0x037f, 0x037f, L }, { 0x0386, 0x0386, L }, { 0x0388, 0x03f5, L },
	{ 0x03f7, 0x0481, L }, { 0x048a, 0x052f, L }, { 0x0531, 0x0556, L },
	{ 0x0559, 0x0559, L }, { 0x0560, 0x0588, L }, { 0x05d0, 0x05ea, L },
	{ 0x05ef, 0x05f2, L }, { 0x0620, 0x064a, L }, { 0x0660, 0x0669, N },
	{ 0x066e, 0x066f, L }, { 0x0671, 0x06d3, L }, { 0x06d5, 0x06d5, L },
	{ 0x06e5, 0x06e6, L }, { 0x06ee, 0x06ef, L }, { 0x06f0, 0x06f9, N },
	{ 0x06fa, 0x06fc, L }, { 0x06ff, 0x06ff, L }, { 0x0904, 0x0939, L },
	{ 0x093d, 0x093d, L }, { 0x0950, 0x0950, L }, { 0x0958, 0x0961, L },
	{ 0x0966, 0x096f, N }, { 0x0971, 0x0980, L }, { 0x0e01, 0x0e30, L },
	{ 0x0e32, 0x0e33, L }, { 0x0e40, 0x0e46, L }, { 0x0e50, 0x0e59, N },
	{ 0x10a0, 0x10c5, L }, { 0x10d0, 0x10fa, L }, { 0x10fc, 0x11ff, L },
	{ 0x13a0, 0x13f5, L }, { 0x1d00, 0x1dbf, L }, { 0x1e00, 0x1f15, L },
	{ 0x1f18, 0x1f1d, L }, { 0x1f20, 0x1f45, L }, { 0x1f48, 0x1f4d, L },
	{ 0x1f50, 0x1f7d, L }, { 0x1f80, 0x1fb4, L }, { 0x1fb6, 0x1fbc, L },
	{ 0x1fbe, 0x1fbe, L }, { 0x1fc2, 0x1fc4, L }, { 0x1fc6, 0x1fcc, L },
	{ 0x1fd0, 0x1fd3, L }, { 0x1fd6, 0x1fdb, L }, { 0x1fe0, 0x1fec, L },
	{ 0x1ff2, 0x1ff4, L }, { 0x1ff6, 0x1ffc, L }, { 0x2070, 0x2070, N },
	{ 0x2071, 0x2071, L }, { 0x2074, 0x2079, N }, { 0x207f, 0x207f, L },
	{ 0x2080, 0x2089, N }, { 0x2090, 0x209c, L }, { 0x2102, 0x2102, L },
	{ 0x2107, 0x2107, L }, { 0x210a, 0x2113, L }, { 0x2115, 0x2115, L },
	{ 0x2119, 0x211d, L }, { 0x2124, 0x2124, L }, { 0x2126, 0x2126, L },
	{ 0x2128, 0x2128, L }, { 0x212a, 0x212d, L }, { 0x212f, 0x2139, L },
	{ 0x213c, 0x213f, L }, { 0x2145, 0x2149, L }, { 0x214e, 0x214e, L },
	{ 0x2150, 0x2182, N }, { 0x2183, 0x2184, L }, { 0x2185, 0x2189, N },
	{ 0x2460, 0x249b, N }, { 0x24ea, 0x24ff, N }, { 0x2776, 0x2793, N },
	{ 0x2c00, 0x2ce4, L }, { 0x2d00, 0x2d25, L }, { 0x3005, 0x3006, L },
	{ 0x3007, 0x3007, N }, { 0x3021, 0x3029, N }, { 0x3031, 0x3035, L },
	{ 0x3038, 0x303a, N }, { 0x303b, 0x303c, L }, { 0x3041, 0x3096, L },
	{ 0x309d, 0x309f, L }, { 0x30a1, 0x30fa, L }, { 0x30fc, 0x30ff, L },
	{ 0x3105, 0x312f, L }, { 0x3131, 0x318e, L }, { 0x3192, 0x3195, N },
	{ 0x31a0, 0x31bf, L }, { 0x31f0, 0x31ff, L }, { 0x3220, 0x3229, N },
	{ 0x3248, 0x324f, N }, { 0x3251, 0x325f, N }, { 0x3280, 0x3289, N },
	{ 0x32b1, 0x32bf, N }, { 0x3400, 0x4dbf, L }, { 0x4e00, 0x9fff, L },
	{ 0xa000, 0xa48c, L }, { 0xa640, 0xa66e, L }, { 0xa722, 0xa788, L },
	{ 0xa78b, 0xa7ff, L }, { 0xac00, 0xd7a3, L }, { 0xf900, 0xfaff, L },
	{ 0xfb00, 0xfb06, L }, { 0xff10, 0xff19, N }, { 0xff21, 0xff3a, L },
	{ 0xff41, 0xff5a, L }, { 0xff66, 0xffbe, L }, { 0x10400, 0x1044f, L },
	{ 0x1d400, 0x1d7cb, L }, { 0x1d7ce, 0x1d7ff, N },
	{ 0x1f100, 0x1f10c, N }, { 0x20000, 0x323af, L },
};

#undef L
#undef N

static bool uc_space(uint32_t c)
{
	return (c >= 0x09 && c <= 0x0d) || c == 0x20 || c == 0x85 ||
	       c == 0xa0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200a) ||
	       c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f ||
	       c == 0x3000;
}

/**
 * llm_ucat() - the pre-tokenizer's category of a code point.
 * @cp: code point (values above 0x10ffff are "other").
 *
 * Return: letter, number, space or other (see the limits in
 * Documentation/model/index.rst).
 */
enum llm_ucat llm_ucat(uint32_t cp)
{
	size_t lo = 0, hi = ARRAY_SIZE(ucat_tab);

	if (uc_space(cp))
		return LLM_UCAT_SPACE;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;

		if (cp < ucat_tab[mid].lo)
			hi = mid;
		else if (cp > ucat_tab[mid].hi)
			lo = mid + 1;
		else
			return ucat_tab[mid].cat;
	}
	return LLM_UCAT_OTHER;
}

/* ---- the GPT-2 byte <-> code point map ---- */

static uint32_t byte_to_cp(uint8_t b)
{
	if ((b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || b >= 0xae)
		return b;
	/* the other 68 bytes map to 256.. in byte order */
	if (b <= 0x20)
		return 256 + b;
	if (b <= 0xa0)
		return 256 + 33 + (b - 0x7f);
	return 256 + 33 + 34; /* 0xad */
}

/* ---- string hash, used while loading ---- */

static uint64_t fnv1a(const void *p, size_t n)
{
	const uint8_t *s = p;
	uint64_t h = 0xcbf29ce484222325ULL;

	while (n--)
		h = (h ^ *s++) * 0x100000001b3ULL;
	return h;
}

/* token text -> id, open addressing; lives only during llm_tok_load() */
struct str_map {
	const struct llm_gguf_str *strs; /* the vocabulary */
	uint32_t *slot;			 /* id + 1, 0 when empty */
	uint64_t mask;
};

static int32_t str_map_get(const struct str_map *m, const char *p, size_t n)
{
	uint64_t i = fnv1a(p, n) & m->mask;

	for (; m->slot[i]; i = (i + 1) & m->mask) {
		const struct llm_gguf_str *s = &m->strs[m->slot[i] - 1];

		if (s->len == n && !memcmp(s->ptr, p, n))
			return (int32_t)(m->slot[i] - 1);
	}
	return -1;
}

static void str_map_add(struct str_map *m, uint32_t id)
{
	const struct llm_gguf_str *s = &m->strs[id];
	uint64_t i = fnv1a(s->ptr, s->len) & m->mask;

	for (; m->slot[i]; i = (i + 1) & m->mask) {
		const struct llm_gguf_str *o = &m->strs[m->slot[i] - 1];

		if (o->len == s->len && !memcmp(o->ptr, s->ptr, s->len))
			return; /* duplicate text: the first id wins */
	}
	m->slot[i] = id + 1;
}

static uint64_t pow2_at_least(uint64_t n)
{
	uint64_t p = 16;

	while (p < n)
		p <<= 1;
	return p;
}

/* ---- merges ---- */

static uint64_t merge_hash(uint64_t key)
{
	key ^= key >> 33;
	key *= 0xff51afd7ed558ccdULL;
	key ^= key >> 33;
	return key;
}

static const struct llm_tok_merge *merge_find(const struct llm_tok *t,
					      int32_t a, int32_t b)
{
	uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
	uint64_t i = merge_hash(key) & t->merge_mask;

	for (; t->merges[i].key != UINT64_MAX; i = (i + 1) & t->merge_mask)
		if (t->merges[i].key == key)
			return &t->merges[i];
	return NULL;
}

static void merge_add(struct llm_tok *t, int32_t a, int32_t b, uint32_t rank,
		      int32_t id)
{
	uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
	uint64_t i = merge_hash(key) & t->merge_mask;

	for (; t->merges[i].key != UINT64_MAX; i = (i + 1) & t->merge_mask)
		if (t->merges[i].key == key)
			return; /* the lower rank, added first, wins */
	t->merges[i] = (struct llm_tok_merge){ key, rank, id };
	t->n_merges++;
}

static int tok_fail(char *err, size_t errlen, int ret, const char *msg,
		    const char *key)
{
	if (err && errlen)
		snprintf(err, errlen, "tokenizer: %s%s%s", msg, key ? ": " : "",
			 key ? key : "");
	return ret;
}

static int load_merges(struct llm_tok *t, const struct llm_gguf *g,
		       const struct str_map *vm, char *err, size_t errlen)
{
	const struct llm_gguf_kv *kv;
	struct llm_gguf_str *m;
	char *buf = NULL;
	size_t bufcap = 0;
	uint64_t i;

	kv = llm_gguf_find_kv(g, "tokenizer.ggml.merges");
	if (!kv || kv->type != LLM_GGUF_ARRAY ||
	    kv->arr_type != LLM_GGUF_STRING)
		return tok_fail(err, errlen, -EBADMSG,
				"missing or bad string array",
				"tokenizer.ggml.merges");
	if (kv->arr_n > UINT32_MAX / 4)
		return tok_fail(err, errlen, -EBADMSG, "too many merges", NULL);
	m = malloc((kv->arr_n ? kv->arr_n : 1) * sizeof(*m));
	t->merge_mask = pow2_at_least(kv->arr_n * 2) - 1;
	t->merges = malloc((t->merge_mask + 1) * sizeof(*t->merges));
	if (!m || !t->merges) {
		free(m);
		return tok_fail(err, errlen, -ENOMEM, "out of memory", NULL);
	}
	memset(t->merges, 0xff, (t->merge_mask + 1) * sizeof(*t->merges));
	llm_gguf_arr_strings(kv, m);
	for (i = 0; i < kv->arr_n; i++) {
		const char *sp = memchr(m[i].ptr, ' ', m[i].len);
		size_t la, lb;
		int32_t a, b, ab;

		if (!sp || sp == m[i].ptr || sp == m[i].ptr + m[i].len - 1 ||
		    memchr(sp + 1, ' ', m[i].ptr + m[i].len - sp - 1)) {
			/* as the tokenizers library refuses it */
			if (err && errlen)
				snprintf(err, errlen, "tokenizer: "
					 "tokenizer.ggml.merges[%llu] '%.*s' "
					 "is not two tokens joined by one "
					 "space", (unsigned long long)i,
					 (int)(m[i].len > 48 ? 48 : m[i].len),
					 m[i].ptr);
			free(buf);
			free(m);
			return -EBADMSG;
		}
		la = sp - m[i].ptr;
		lb = m[i].len - la - 1;
		if (la + lb > bufcap) {
			char *nb = realloc(buf, la + lb);

			if (!nb) {
				free(buf);
				free(m);
				return tok_fail(err, errlen, -ENOMEM,
						"out of memory", NULL);
			}
			buf = nb;
			bufcap = la + lb;
		}
		a = str_map_get(vm, m[i].ptr, la);
		b = str_map_get(vm, sp + 1, lb);
		memcpy(buf, m[i].ptr, la);
		memcpy(buf + la, sp + 1, lb);
		ab = str_map_get(vm, buf, la + lb);
		if (a < 0 || b < 0 || ab < 0) {
			if (err && errlen)
				snprintf(err, errlen, "tokenizer: "
					 "tokenizer.ggml.merges[%llu] '%.*s': "
					 "%s not in the vocabulary",
					 (unsigned long long)i,
					 (int)(m[i].len > 48 ? 48 : m[i].len),
					 m[i].ptr, a < 0 ? "the first token" :
					 b < 0 ? "the second token" :
					 "the merged token");
			free(buf);
			free(m);
			return -EBADMSG;
		}
		merge_add(t, a, b, (uint32_t)i, ab);
	}
	free(buf);
	free(m);
	return 0;
}

/* "<0xAB>" -> 0xAB, or -1 */
static int spm_byte(const uint8_t *s, size_t n)
{
	int v = 0;

	if (n != 6 || memcmp(s, "<0x", 3) || s[5] != '>')
		return -1;
	for (int k = 3; k < 5; k++) {
		int c = s[k];

		v <<= 4;
		if (c >= '0' && c <= '9')
			v |= c - '0';
		else if (c >= 'A' && c <= 'F')
			v |= c - 'A' + 10;
		else if (c >= 'a' && c <= 'f')
			v |= c - 'a' + 10;
		else
			return -1;
	}
	return v;
}

/* the bytes of a SentencePiece token: U+2581 is a space, <0xAB> a byte */
static size_t spm_piece(uint8_t type, const uint8_t *s, size_t n, char *out)
{
	size_t k = 0, o = 0;
	int b;

	if (type == LLM_TOKTYPE_BYTE && (b = spm_byte(s, n)) >= 0) {
		out[0] = (char)b;
		return 1;
	}
	if (type == LLM_TOKTYPE_CONTROL || type == LLM_TOKTYPE_UNKNOWN) {
		memcpy(out, s, n);
		return n;
	}
	while (k < n) {
		if (n - k >= 3 && !memcmp(s + k, "\xe2\x96\x81", 3)) {
			out[o++] = ' ';
			k += 3;
		} else {
			out[o++] = (char)s[k++];
		}
	}
	return o;
}

/* decoded bytes of every token; control-like tokens keep their text */
static int load_pieces(struct llm_tok *t, const struct llm_gguf_str *v)
{
	int16_t inv[324];
	uint64_t total = 0;
	uint32_t i;
	char *p;

	for (i = 0; i < ARRAY_SIZE(inv); i++)
		inv[i] = -1;
	for (i = 0; i < 256; i++)
		inv[byte_to_cp(i)] = (int16_t)i;
	for (i = 0; i < t->n_vocab; i++)
		total += v[i].len; /* decoding never grows a token */
	t->piece_off = malloc((t->n_vocab + 1ULL) * sizeof(*t->piece_off));
	t->pieces = malloc(total ? total : 1);
	if (!t->piece_off || !t->pieces || total > UINT32_MAX)
		return -ENOMEM;
	p = t->pieces;
	for (i = 0; i < t->n_vocab; i++) {
		const uint8_t *s = (const uint8_t *)v[i].ptr;
		size_t k = 0;
		bool raw = t->type[i] == LLM_TOKTYPE_CONTROL ||
			   t->type[i] == LLM_TOKTYPE_USER_DEFINED;

		t->piece_off[i] = (uint32_t)(p - t->pieces);
		if (t->spm) {
			p += spm_piece(t->type[i], s, v[i].len, p);
			continue;
		}
		while (k < v[i].len) {
			uint32_t cp;
			size_t n = llm_utf8_decode(s + k, v[i].len - k, &cp);

			if (!raw && cp < ARRAY_SIZE(inv) && inv[cp] >= 0)
				*p++ = (char)inv[cp];
			else {
				memcpy(p, s + k, n);
				p += n;
			}
			k += n;
		}
	}
	t->piece_off[t->n_vocab] = (uint32_t)(p - t->pieces);
	return 0;
}

static int load_ids(struct llm_tok *t, const struct llm_gguf *g, char *err,
		    size_t errlen)
{
	static const struct {
		const char *key;
		size_t off;
	} ids[] = {
		{ "tokenizer.ggml.bos_token_id", offsetof(struct llm_tok, bos_id) },
		{ "tokenizer.ggml.eos_token_id", offsetof(struct llm_tok, eos_id) },
		{ "tokenizer.ggml.unknown_token_id", offsetof(struct llm_tok, unk_id) },
		{ "tokenizer.ggml.padding_token_id", offsetof(struct llm_tok, pad_id) },
	};
	struct llm_gguf_str pre;
	int ret;

	for (size_t i = 0; i < ARRAY_SIZE(ids); i++) {
		int32_t *dst = (int32_t *)((char *)t + ids[i].off);
		uint32_t v;

		*dst = -1;
		ret = llm_gguf_get_u32(g, ids[i].key, &v);
		if (ret == -ENOENT)
			continue;
		if (ret || v >= t->n_vocab)
			return tok_fail(err, errlen, -EBADMSG,
					"bad token id", ids[i].key);
		*dst = (int32_t)v;
	}
	ret = llm_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &t->add_bos);
	if (ret == -ENOENT)
		t->add_bos = false;
	else if (ret)
		return tok_fail(err, errlen, -EBADMSG, "not a bool",
				"tokenizer.ggml.add_bos_token");

	if (t->spm) {
		bool b = true, first = false;

		ret = llm_gguf_get_bool(g, "tokenizer.ggml.add_space_prefix",
					&b);
		if (ret && ret != -ENOENT)
			return tok_fail(err, errlen, -EBADMSG, "not a bool",
					"tokenizer.ggml.add_space_prefix");
		ret = llm_gguf_get_bool(g, "kvmm.tokenizer.prefix_first_only",
					&first);
		if (ret && ret != -ENOENT)
			return tok_fail(err, errlen, -EBADMSG, "not a bool",
					"kvmm.tokenizer.prefix_first_only");
		t->prefix = !b ? LLM_TOK_PREFIX_NONE :
			    first ? LLM_TOK_PREFIX_FIRST : LLM_TOK_PREFIX_EACH;
		return 0; /* no pre-tokenizer */
	}
	t->pre = LLM_TOK_PRE_GPT2;
	ret = llm_gguf_get_str(g, "tokenizer.ggml.pre", &pre);
	if (ret == -ENOENT)
		return 0;
	if (ret)
		return tok_fail(err, errlen, -EBADMSG, "not a string",
				"tokenizer.ggml.pre");
	if (llm_gguf_str_eq(pre, "default") || llm_gguf_str_eq(pre, "gpt2"))
		return 0;
	if (llm_gguf_str_eq(pre, "smollm") ||
	    llm_gguf_str_eq(pre, "starcoder") ||
	    llm_gguf_str_eq(pre, "refact")) {
		t->pre = LLM_TOK_PRE_GPT2_DIGITS;
		return 0;
	}
	if (llm_gguf_str_eq(pre, "llama-bpe") ||
	    llm_gguf_str_eq(pre, "llama3") ||
	    llm_gguf_str_eq(pre, "smaug-bpe")) {
		t->pre = LLM_TOK_PRE_LLAMA3;
		return 0;
	}
	if (llm_gguf_str_eq(pre, "qwen2") ||
	    llm_gguf_str_eq(pre, "deepseek-r1-qwen")) {
		t->pre = LLM_TOK_PRE_QWEN2;
		return 0;
	}
	if (err && errlen)
		snprintf(err, errlen,
			 "tokenizer: unsupported pre-tokenizer '%.*s'",
			 (int)(pre.len > 64 ? 64 : pre.len), pre.ptr);
	return -EOPNOTSUPP;
}

static int load_vocab(struct llm_tok *t, const struct llm_gguf *g,
		      struct llm_gguf_str **vocab, char *err, size_t errlen)
{
	const struct llm_gguf_kv *kv, *tt;
	int64_t ty;
	uint32_t i;

	kv = llm_gguf_find_kv(g, "tokenizer.ggml.tokens");
	if (!kv || kv->type != LLM_GGUF_ARRAY ||
	    kv->arr_type != LLM_GGUF_STRING || kv->arr_n == 0 ||
	    kv->arr_n > INT32_MAX)
		return tok_fail(err, errlen, -EBADMSG,
				"missing or bad string array",
				"tokenizer.ggml.tokens");
	t->n_vocab = (uint32_t)kv->arr_n;
	*vocab = malloc(t->n_vocab * sizeof(**vocab));
	t->type = malloc(t->n_vocab);
	if (!*vocab || !t->type)
		return tok_fail(err, errlen, -ENOMEM, "out of memory", NULL);
	llm_gguf_arr_strings(kv, *vocab);

	tt = llm_gguf_find_kv(g, "tokenizer.ggml.token_type");
	if (tt && (tt->type != LLM_GGUF_ARRAY || tt->arr_n != t->n_vocab))
		return tok_fail(err, errlen, -EBADMSG,
				"token_type length differs from tokens",
				"tokenizer.ggml.token_type");
	for (i = 0; i < t->n_vocab; i++) {
		t->type[i] = LLM_TOKTYPE_NORMAL;
		if (!tt)
			continue;
		if (llm_gguf_arr_int(tt, i, &ty) || ty < 0 ||
		    ty > LLM_TOKTYPE_BYTE)
			return tok_fail(err, errlen, -EBADMSG,
					"bad token type",
					"tokenizer.ggml.token_type");
		t->type[i] = (uint8_t)ty;
	}
	return 0;
}

static int load_specials(struct llm_tok *t, const struct llm_gguf_str *v)
{
	uint32_t i, n = 0;

	for (i = 0; i < t->n_vocab; i++)
		if ((t->type[i] == LLM_TOKTYPE_CONTROL ||
		     t->type[i] == LLM_TOKTYPE_USER_DEFINED) && v[i].len)
			n++;
	t->special = malloc((n ? n : 1) * sizeof(*t->special));
	if (!t->special)
		return -ENOMEM;
	for (i = 0; i < t->n_vocab; i++) {
		if ((t->type[i] == LLM_TOKTYPE_CONTROL ||
		     t->type[i] == LLM_TOKTYPE_USER_DEFINED) && v[i].len) {
			uint8_t c = (uint8_t)v[i].ptr[0];

			t->special[t->n_special++] = (int32_t)i;
			t->special_first[c >> 3] |= (uint8_t)(1U << (c & 7));
		}
	}
	return 0;
}

static int load_template(struct llm_tok *t, const struct llm_gguf *g)
{
	struct llm_gguf_str s;

	if (llm_gguf_get_str(g, "tokenizer.chat_template", &s))
		return 0;
	t->chat_template = malloc(s.len + 1);
	if (!t->chat_template)
		return -ENOMEM;
	memcpy(t->chat_template, s.ptr, s.len);
	t->chat_template[s.len] = 0;
	return 0;
}

static int sc_cmp(const void *a, const void *b)
{
	const struct { float s; int32_t id; } *x = a, *y = b;

	if (x->s != y->s)
		return x->s > y->s ? -1 : 1;
	return x->id < y->id ? -1 : x->id > y->id;
}

/*
 * SentencePiece merges from tokenizer.ggml.scores: every split of a token
 * into two tokens is a merge, ranked by the token's score (highest first,
 * equal scores share a rank, so they merge left to right as in llama.cpp).
 */
static int spm_merges(struct llm_tok *t, const struct llm_gguf *g,
		      const struct llm_gguf_str *v, const struct str_map *vm,
		      char *err, size_t errlen)
{
	const struct llm_gguf_kv *kv = llm_gguf_find_kv(g,
						"tokenizer.ggml.scores");
	struct { float s; int32_t id; } *ord;
	uint64_t pairs = 0;
	uint32_t rank = 0;

	if (!kv || kv->type != LLM_GGUF_ARRAY ||
	    kv->arr_type != LLM_GGUF_F32 || kv->arr_n != t->n_vocab)
		return tok_fail(err, errlen, -EBADMSG,
				"SentencePiece vocabulary needs merges or a "
				"float array of one score per token",
				"tokenizer.ggml.scores");
	ord = malloc(t->n_vocab * sizeof(*ord));
	if (!ord)
		return tok_fail(err, errlen, -ENOMEM, "out of memory", NULL);
	for (uint32_t i = 0; i < t->n_vocab; i++) {
		memcpy(&ord[i].s, (const uint8_t *)kv->data + 4ULL * i, 4);
		if (ord[i].s != ord[i].s)
			ord[i].s = -INFINITY;
		ord[i].id = (int32_t)i;
		pairs += v[i].len;
	}
	qsort(ord, t->n_vocab, sizeof(*ord), sc_cmp);
	t->merge_mask = pow2_at_least(pairs * 2) - 1;
	t->merges = malloc((t->merge_mask + 1) * sizeof(*t->merges));
	if (!t->merges) {
		free(ord);
		return tok_fail(err, errlen, -ENOMEM, "out of memory", NULL);
	}
	memset(t->merges, 0xff, (t->merge_mask + 1) * sizeof(*t->merges));
	for (uint32_t k = 0; k < t->n_vocab; k++) {
		int32_t id = ord[k].id;
		const struct llm_gguf_str *p = &v[id];

		if (k && ord[k].s != ord[k - 1].s)
			rank++;
		if (t->type[id] != LLM_TOKTYPE_NORMAL &&
		    t->type[id] != LLM_TOKTYPE_USER_DEFINED)
			continue;
		for (size_t c = 1; c < p->len; c++) {
			int32_t a, b;

			if (((uint8_t)p->ptr[c] & 0xc0) == 0x80)
				continue; /* inside a character */
			a = str_map_get(vm, p->ptr, c);
			b = str_map_get(vm, p->ptr + c, p->len - c);
			if (a >= 0 && b >= 0)
				merge_add(t, a, b, rank, id);
		}
	}
	free(ord);
	return 0;
}

static int ch_cmp(const void *a, const void *b)
{
	const struct llm_tok_char *x = a, *y = b;

	if (x->cp != y->cp)
		return x->cp < y->cp ? -1 : 1;
	return x->id < y->id ? -1 : x->id > y->id;
}

/* the single-character tokens, the initial SentencePiece symbols */
static int spm_chars(struct llm_tok *t, const struct llm_gguf_str *v,
		     char *err, size_t errlen)
{
	uint32_t n = 0, cp;

	t->chars = malloc(t->n_vocab * sizeof(*t->chars));
	if (!t->chars)
		return tok_fail(err, errlen, -ENOMEM, "out of memory", NULL);
	for (uint32_t i = 0; i < t->n_vocab; i++) {
		if (t->type[i] != LLM_TOKTYPE_NORMAL &&
		    t->type[i] != LLM_TOKTYPE_USER_DEFINED)
			continue;
		if (!v[i].len || llm_utf8_decode((const uint8_t *)v[i].ptr,
						 v[i].len, &cp) != v[i].len ||
		    cp > 0x10ffff)
			continue;
		t->chars[n++] = (struct llm_tok_char){ cp, (int32_t)i };
	}
	qsort(t->chars, n, sizeof(*t->chars), ch_cmp);
	t->n_chars = n;
	return 0;
}

/**
 * llm_tok_load() - build a tokenizer from GGUF metadata.
 * @g: the parsed file; may be closed once this returns.
 * @out: the tokenizer, to release with llm_tok_free().
 * @err: buffer for a one-line message on failure (may be NULL).
 * @errlen: bytes in @err.
 *
 * Return: 0, -EOPNOTSUPP for a tokenizer model or pre-tokenizer this code
 * does not implement, -EBADMSG for missing or inconsistent metadata,
 * -ENOMEM.
 */
int llm_tok_load(const struct llm_gguf *g, struct llm_tok **out, char *err,
		 size_t errlen)
{
	struct llm_gguf_str model, *vocab = NULL;
	struct str_map vm = { 0 };
	struct llm_tok *t;
	int ret;

	ret = llm_gguf_get_str(g, "tokenizer.ggml.model", &model);
	if (ret)
		return tok_fail(err, errlen, -EBADMSG, "missing string",
				"tokenizer.ggml.model");
	if (!llm_gguf_str_eq(model, "gpt2") &&
	    !llm_gguf_str_eq(model, "llama")) {
		if (err && errlen)
			snprintf(err, errlen,
				 "tokenizer: unsupported model '%.*s' "
				 "(byte-level BPE \"gpt2\" and "
				 "SentencePiece BPE \"llama\" are)",
				 (int)(model.len > 32 ? 32 : model.len),
				 model.ptr);
		return -EOPNOTSUPP;
	}
	t = calloc(1, sizeof(*t));
	if (!t)
		return tok_fail(err, errlen, -ENOMEM, "out of memory", NULL);
	t->spm = llm_gguf_str_eq(model, "llama");

	ret = load_vocab(t, g, &vocab, err, errlen);
	if (ret)
		goto out_free;
	ret = load_ids(t, g, err, errlen);
	if (ret)
		goto out_free;

	vm.strs = vocab;
	vm.mask = pow2_at_least(2ULL * t->n_vocab) - 1;
	vm.slot = calloc(vm.mask + 1, sizeof(*vm.slot));
	if (!vm.slot) {
		ret = tok_fail(err, errlen, -ENOMEM, "out of memory", NULL);
		goto out_free;
	}
	for (uint32_t i = 0; i < t->n_vocab; i++)
		str_map_add(&vm, i);
	for (uint32_t b = 0; b < 256; b++) {
		char u[8];

		if (t->spm) {
			snprintf(u, sizeof(u), "<0x%02X>", b);
			t->byte_id[b] = str_map_get(&vm, u, 6);
			continue;
		}
		t->byte_id[b] = str_map_get(&vm, u, utf8_encode(byte_to_cp(b), u));
	}
	if (t->spm && !llm_gguf_find_kv(g, "tokenizer.ggml.merges"))
		ret = spm_merges(t, g, vocab, &vm, err, errlen);
	else
		ret = load_merges(t, g, &vm, err, errlen);
	if (!ret && t->spm)
		ret = spm_chars(t, vocab, err, errlen);
	if (ret)
		goto out_map;
	ret = load_pieces(t, vocab);
	if (!ret)
		ret = load_specials(t, vocab);
	if (!ret)
		ret = load_template(t, g);
	if (ret) {
		tok_fail(err, errlen, ret, "out of memory", NULL);
		goto out_map;
	}
	free(vm.slot);
	free(vocab);
	if (err && errlen)
		err[0] = 0;
	*out = t;
	return 0;

out_map:
	free(vm.slot);
out_free:
	free(vocab);
	llm_tok_free(t);
	return ret;
}

/**
 * llm_tok_free() - release a tokenizer.
 * @t: from llm_tok_load(); NULL is ignored.
 */
void llm_tok_free(struct llm_tok *t)
{
	if (!t)
		return;
	free(t->type);
	free(t->piece_off);
	free(t->pieces);
	free(t->merges);
	free(t->special);
	free(t->chat_template);
	free(t->chars);
	free(t);
}

/* ---- encoding ---- */

/* output cursor of one encode call: counts past @cap for -ENOSPC */
struct tok_out {
	int32_t *ids;
	size_t cap, n;
};

static void out_push(struct tok_out *o, int32_t id)
{
	if (o->n < o->cap)
		o->ids[o->n] = id;
	o->n++;
}

/*
 * BPE over one pre-token, O(n log n): the symbols form a linked list in an
 * array, candidate pairs wait in a min-heap ordered by (rank, position).
 * An entry is checked when popped (both symbols still adjacent and
 * unchanged) and dropped if stale. Equal ranks merge left to right, which
 * gives the same result as the classic "merge every occurrence of the best
 * pair, rescan" loop.
 */
struct bpe_sym {
	int32_t id;
	int32_t prev, next; /* indices, -1 at the ends */
};

struct bpe_cand {
	uint32_t rank;
	int32_t left, right;	/* symbol indices */
	int32_t lid, rid;	/* their ids when pushed */
};

static bool cand_less(const struct bpe_cand *a, const struct bpe_cand *b)
{
	return a->rank != b->rank ? a->rank < b->rank : a->left < b->left;
}

static void heap_push(struct bpe_cand *h, size_t *n, struct bpe_cand c)
{
	size_t i = (*n)++;

	while (i && cand_less(&c, &h[(i - 1) / 2])) {
		h[i] = h[(i - 1) / 2];
		i = (i - 1) / 2;
	}
	h[i] = c;
}

static struct bpe_cand heap_pop(struct bpe_cand *h, size_t *n)
{
	struct bpe_cand top = h[0], last = h[--(*n)];
	size_t i = 0, k;

	while ((k = 2 * i + 1) < *n) {
		if (k + 1 < *n && cand_less(&h[k + 1], &h[k]))
			k++;
		if (!cand_less(&h[k], &last))
			break;
		h[i] = h[k];
		i = k;
	}
	if (*n)
		h[i] = last;
	return top;
}

static void bpe_try(const struct llm_tok *t, const struct bpe_sym *sym,
		    int32_t l, struct bpe_cand *h, size_t *nh)
{
	const struct llm_tok_merge *m;
	int32_t r;

	if (l < 0 || (r = sym[l].next) < 0)
		return;
	m = merge_find(t, sym[l].id, sym[r].id);
	if (m)
		heap_push(h, nh, (struct bpe_cand){ m->rank, l, r, sym[l].id,
						    sym[r].id });
}

/* merge the @len symbols of @sym (linked in order) until no pair merges */
static void bpe_run(const struct llm_tok *t, struct bpe_sym *sym, size_t len,
		    struct bpe_cand *h)
{
	size_t nh = 0;
	int32_t k;

	if (len)
		sym[len - 1].next = -1;
	/* n - 1 initial pairs, then at most 2 new ones per merge (n - 1) */
	for (k = 0; k + 1 < (int32_t)len; k++)
		bpe_try(t, sym, k, h, &nh);
	while (nh) {
		struct bpe_cand c = heap_pop(h, &nh);
		const struct llm_tok_merge *m;
		int32_t r = c.right;

		if (sym[c.left].id != c.lid || sym[c.left].next != r ||
		    sym[r].id != c.rid)
			continue; /* stale */
		m = merge_find(t, c.lid, c.rid);
		sym[c.left].id = m->id;
		sym[c.left].next = sym[r].next;
		if (sym[r].next >= 0)
			sym[sym[r].next].prev = c.left;
		sym[r].id = -1; /* dead: never matches a pushed id */
		bpe_try(t, sym, sym[c.left].prev, h, &nh);
		bpe_try(t, sym, c.left, h, &nh);
	}
}

static int bpe_word(const struct llm_tok *t, const uint8_t *s, size_t n,
		    struct tok_out *o)
{
	struct bpe_sym sym_stack[64], *sym = sym_stack;
	struct bpe_cand h_stack[3 * 64], *h = h_stack;
	size_t len = 0, i;
	int32_t k;

	if (n > INT32_MAX / 4)
		return -E2BIG; /* symbol indices are int32_t */
	if (n > ARRAY_SIZE(sym_stack)) {
		sym = malloc(n * sizeof(*sym));
		h = malloc(3 * n * sizeof(*h));
		if (!sym || !h) {
			free(sym);
			free(h);
			return -ENOMEM;
		}
	}
	/*
	 * A byte without a token is dropped, as Hugging Face tokenizers does
	 * for a BPE without unk token (SmolLM2 lacks 21 of the 256 bytes).
	 */
	for (i = 0; i < n; i++) {
		if (t->byte_id[s[i]] < 0)
			continue;
		sym[len] = (struct bpe_sym){ t->byte_id[s[i]], (int32_t)len - 1,
					     (int32_t)len + 1 };
		len++;
	}
	bpe_run(t, sym, len, h);
	for (k = len ? 0 : -1; k >= 0; k = sym[k].next)
		out_push(o, sym[k].id);
	if (sym != sym_stack) {
		free(sym);
		free(h);
	}
	return 0;
}

static int32_t spm_char_id(const struct llm_tok *t, uint32_t cp)
{
	uint32_t lo = 0, hi = t->n_chars;

	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;

		if (t->chars[mid].cp < cp)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < t->n_chars && t->chars[lo].cp == cp ? t->chars[lo].id :
							   -1;
}

/*
 * SentencePiece BPE over one text fragment: spaces become U+2581 (and one
 * is put first when @lead), the symbols are its characters, merged by
 * rank; a character without a token is written as its <0xXX> byte tokens
 * (or unk, or dropped, when the vocabulary lacks them).
 */
static int spm_encode(const struct llm_tok *t, const uint8_t *s, size_t n,
		      bool lead, struct tok_out *o)
{
	struct bpe_sym *sym;
	struct bpe_cand *h;
	uint32_t *off;
	uint8_t *buf;
	size_t bl = 0, len = 0, i;
	int32_t k;

	if (!n)
		return 0;
	if (n > INT32_MAX / 8)
		return -E2BIG;
	buf = malloc(3 * (n + 1));
	sym = malloc((n + 1) * 3 * sizeof(*sym));
	h = malloc(3 * (n + 1) * 3 * sizeof(*h));
	off = malloc((n + 1) * 3 * sizeof(*off) + sizeof(*off));
	if (!buf || !sym || !h || !off) {
		free(buf);
		free(sym);
		free(h);
		free(off);
		return -ENOMEM;
	}
	if (lead) {
		memcpy(buf, "\xe2\x96\x81", 3);
		bl = 3;
	}
	for (i = 0; i < n; i++) {
		if (s[i] == ' ') {
			memcpy(buf + bl, "\xe2\x96\x81", 3);
			bl += 3;
		} else {
			buf[bl++] = s[i];
		}
	}
	for (i = 0; i < bl;) {
		uint32_t cp;
		size_t l = llm_utf8_decode(buf + i, bl - i, &cp);

		off[len] = (uint32_t)i;
		sym[len] = (struct bpe_sym){ cp <= 0x10ffff ?
					     spm_char_id(t, cp) : -1,
					     (int32_t)len - 1,
					     (int32_t)len + 1 };
		len++;
		i += l;
	}
	off[len] = (uint32_t)bl;
	bpe_run(t, sym, len, h);
	for (k = 0; k >= 0; k = sym[k].next) {
		if (sym[k].id >= 0) {
			out_push(o, sym[k].id);
			continue;
		}
		/* never merged: one character, bytes off[k] .. off[k + 1] */
		for (uint32_t b = off[k]; b < off[k + 1]; b++) {
			if (t->byte_id[buf[b]] >= 0)
				out_push(o, t->byte_id[buf[b]]);
			else if (t->unk_id >= 0)
				out_push(o, t->unk_id);
		}
	}
	free(buf);
	free(sym);
	free(h);
	free(off);
	return 0;
}

static enum llm_ucat cat_at(const uint8_t *s, size_t i, size_t end,
			    uint32_t *cp, size_t *len)
{
	*len = llm_utf8_decode(s + i, end - i, cp);
	return llm_ucat(*cp);
}

/* length of the run of code points of category @c (or not-@c) from @i */
static size_t run_of(const uint8_t *s, size_t i, size_t end, int want)
{
	size_t start = i, l;
	uint32_t cp;

	while (i < end) {
		enum llm_ucat c = cat_at(s, i, end, &cp, &l);
		bool ok = want >= 0 ? (int)c == want :
			  (c == LLM_UCAT_OTHER);

		if (!ok)
			break;
		i += l;
	}
	return i - start;
}

/* one GPT-2 pattern match at @i in [@i, @end): its length in bytes */
static size_t gpt2_match(const uint8_t *s, size_t i, size_t end)
{
	size_t l0, l1 = 0, j, last;
	enum llm_ucat c0, c1 = LLM_UCAT_OTHER;
	uint32_t cp0, cp1 = 0;

	c0 = cat_at(s, i, end, &cp0, &l0);
	if (cp0 == '\'' && i + 1 < end) {
		uint8_t a = s[i + 1], b = i + 2 < end ? s[i + 2] : 0;

		if (a == 's' || a == 't' || a == 'm' || a == 'd')
			return 2;
		if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') ||
		    (a == 'l' && b == 'l'))
			return 3;
	}
	if (i + l0 < end)
		c1 = cat_at(s, i + l0, end, &cp1, &l1);
	/* ' ?\p{L}+', ' ?\p{N}+', ' ?[^\s\p{L}\p{N}]+' */
	if (c0 == LLM_UCAT_LETTER || c0 == LLM_UCAT_NUMBER)
		return run_of(s, i, end, c0);
	if (c0 == LLM_UCAT_OTHER)
		return run_of(s, i, end, -1);
	if (cp0 == ' ' && l1 && c1 != LLM_UCAT_SPACE)
		return l0 + run_of(s, i + l0, end,
				   c1 == LLM_UCAT_OTHER ? -1 : (int)c1);
	/* '\s+(?!\S)', then '\s+' */
	j = i;
	last = i;
	while (j < end) {
		uint32_t cp;
		size_t l;

		if (cat_at(s, j, end, &cp, &l) != LLM_UCAT_SPACE)
			break;
		last = j;
		j += l;
	}
	if (j == end || last == i)
		return j - i; /* to the end, or a single space before \S */
	return last - i; /* leave the last space to the next match */
}

static bool is_nl(uint32_t cp)
{
	return cp == '\r' || cp == '\n';
}

/*
 * one match of the Llama-3 pattern (Qwen2's when @maxdig is 1):
 *   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}
 *   | ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
 */
static size_t llama3_match(const uint8_t *s, size_t i, size_t end,
			   int maxdig)
{
	size_t l0, l1 = 0, j, k, last;
	enum llm_ucat c0, c1 = LLM_UCAT_OTHER;
	uint32_t cp0, cp1 = 0;

	c0 = cat_at(s, i, end, &cp0, &l0);
	if (cp0 == '\'' && i + 1 < end) {
		uint8_t a = s[i + 1] | 0x20;
		uint8_t b = i + 2 < end ? s[i + 2] | 0x20 : 0;

		if (a == 's' || a == 't' || a == 'm' || a == 'd')
			return 2;
		if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') ||
		    (a == 'l' && b == 'l'))
			return 3;
	}
	if (i + l0 < end)
		c1 = cat_at(s, i + l0, end, &cp1, &l1);
	if (c0 == LLM_UCAT_LETTER)
		return run_of(s, i, end, LLM_UCAT_LETTER);
	if (c0 != LLM_UCAT_NUMBER && !is_nl(cp0) && l1 &&
	    c1 == LLM_UCAT_LETTER)
		return l0 + run_of(s, i + l0, end, LLM_UCAT_LETTER);
	if (c0 == LLM_UCAT_NUMBER) {
		j = i;
		for (int d = 0; d < maxdig && j < end; d++) {
			uint32_t cp;
			size_t l;

			if (cat_at(s, j, end, &cp, &l) != LLM_UCAT_NUMBER)
				break;
			j += l;
		}
		return j - i;
	}
	j = 0;
	if (c0 == LLM_UCAT_OTHER)
		j = i + run_of(s, i, end, -1);
	else if (cp0 == ' ' && l1 && c1 == LLM_UCAT_OTHER)
		j = i + l0 + run_of(s, i + l0, end, -1);
	if (j) {
		while (j < end && (s[j] == '\r' || s[j] == '\n'))
			j++;
		return j - i;
	}
	/* whitespace: \s*[\r\n]+ up to the run's last newline, else GPT-2's */
	j = i;
	last = i;
	k = 0; /* 0: no newline in the run */
	while (j < end) {
		uint32_t cp;
		size_t l;

		if (cat_at(s, j, end, &cp, &l) != LLM_UCAT_SPACE)
			break;
		if (is_nl(cp))
			k = j + l;
		last = j;
		j += l;
	}
	if (k)
		return k - i;
	if (j == end || last == i)
		return j - i;
	return last - i;
}

static int encode_segment(const struct llm_tok *t, const uint8_t *s,
			  size_t n, struct tok_out *o)
{
	size_t i = 0, l;
	int ret;

	while (i < n) {
		if (t->pre == LLM_TOK_PRE_LLAMA3)
			l = llama3_match(s, i, n, 3);
		else if (t->pre == LLM_TOK_PRE_QWEN2)
			l = llama3_match(s, i, n, 1);
		else
			l = gpt2_match(s, i, n);
		ret = bpe_word(t, s + i, l, o);
		if (ret)
			return ret;
		i += l;
	}
	return 0;
}

/*
 * ordinary text: the digit split, then the GPT-2 pattern; or SentencePiece,
 * with a space first when @first (the text starts the input) or the
 * tokenizer puts one after every special token
 */
static int encode_text(const struct llm_tok *t, const uint8_t *s, size_t n,
		       bool first, struct tok_out *o)
{
	size_t i = 0, start = 0, l;
	uint32_t cp;
	int ret;

	if (t->spm)
		return spm_encode(t, s, n, t->prefix == LLM_TOK_PREFIX_EACH ||
				  (t->prefix == LLM_TOK_PREFIX_FIRST && first),
				  o);
	if (t->pre != LLM_TOK_PRE_GPT2_DIGITS)
		return encode_segment(t, s, n, o);
	while (i < n) {
		if (cat_at(s, i, n, &cp, &l) != LLM_UCAT_NUMBER) {
			i += l;
			continue;
		}
		ret = encode_segment(t, s + start, i - start, o);
		if (!ret)
			ret = encode_segment(t, s + i, l, o);
		if (ret)
			return ret;
		i += l;
		start = i;
	}
	return encode_segment(t, s + start, n - start, o);
}

/* longest special token at @s, or -1 */
static int32_t special_at(const struct llm_tok *t, const uint8_t *s,
			  size_t n, size_t *len)
{
	int32_t best = -1;
	size_t blen = 0;

	if (!(t->special_first[s[0] >> 3] & (1U << (s[0] & 7))))
		return -1;
	for (uint32_t k = 0; k < t->n_special; k++) {
		int32_t id = t->special[k];
		size_t pl = t->piece_off[id + 1] - t->piece_off[id];

		if (pl > blen && pl <= n &&
		    !memcmp(s, t->pieces + t->piece_off[id], pl)) {
			best = id;
			blen = pl;
		}
	}
	*len = blen;
	return best;
}

/**
 * llm_tok_encode() - text to token ids.
 * @t: the tokenizer.
 * @text: UTF-8 text (invalid sequences are encoded byte by byte).
 * @len: bytes of @text.
 * @flags: LLM_TOK_ADD_BOS, LLM_TOK_PARSE_SPECIAL.
 * @ids: output, @cap entries (may be NULL when @cap is 0).
 * @cap: entries available in @ids.
 * @n_out: the number of tokens of the whole text, also when it exceeds
 *         @cap (so a first call with @cap 0 sizes the buffer).
 *
 * Return: 0, -ENOSPC when the tokens did not fit in @cap (the first @cap
 * are stored), -ENOMEM, -E2BIG for a single pre-token (word or space run)
 * of 512 MiB or more.
 */
int llm_tok_encode(const struct llm_tok *t, const char *text, size_t len,
		   unsigned int flags, int32_t *ids, size_t cap,
		   size_t *n_out)
{
	const uint8_t *s = (const uint8_t *)text;
	struct tok_out o = { ids, cap, 0 };
	size_t i = 0, start = 0, sl;
	int32_t sp;
	int ret;

	if ((flags & LLM_TOK_ADD_BOS) && t->bos_id >= 0)
		out_push(&o, t->bos_id);
	while ((flags & LLM_TOK_PARSE_SPECIAL) && i < len) {
		sp = special_at(t, s + i, len - i, &sl);
		if (sp < 0) {
			i++;
			continue;
		}
		ret = encode_text(t, s + start, i - start, start == 0, &o);
		if (ret)
			return ret;
		out_push(&o, sp);
		i += sl;
		start = i;
	}
	ret = encode_text(t, s + start, len - start, start == 0, &o);
	if (ret)
		return ret;
	*n_out = o.n;
	return o.n > cap ? -ENOSPC : 0;
}

/**
 * llm_tok_piece() - the bytes a token decodes to.
 * @t: the tokenizer.
 * @id: token id.
 * @len: bytes at the returned pointer (not NUL-terminated; a token may
 *       hold part of a UTF-8 sequence).
 *
 * Return: the bytes, or NULL for an id out of range.
 */
const char *llm_tok_piece(const struct llm_tok *t, int32_t id, size_t *len)
{
	if (id < 0 || (uint32_t)id >= t->n_vocab)
		return NULL;
	*len = t->piece_off[id + 1] - t->piece_off[id];
	return t->pieces + t->piece_off[id];
}

/**
 * llm_tok_decode() - token ids to text.
 * @t: the tokenizer.
 * @ids: tokens.
 * @n: entries in @ids.
 * @flags: LLM_TOK_SKIP_SPECIAL drops control tokens.
 * @buf: output; NUL-terminated when @cap > 0, truncated if need be.
 * @cap: bytes in @buf.
 * @len: bytes of the whole text (without the NUL), also when it does not
 *       fit.
 *
 * Return: 0, -ENOSPC if the text and its NUL did not fit, -EINVAL for an id
 * out of range.
 */
int llm_tok_decode(const struct llm_tok *t, const int32_t *ids, size_t n,
		   unsigned int flags, char *buf, size_t cap, size_t *len)
{
	size_t total = 0, pl;
	const char *p;

	for (size_t i = 0; i < n; i++) {
		p = llm_tok_piece(t, ids[i], &pl);
		if (!p)
			return -EINVAL;
		if ((flags & LLM_TOK_SKIP_SPECIAL) &&
		    t->type[ids[i]] == LLM_TOKTYPE_CONTROL)
			continue;
		if (total < cap)
			memcpy(buf + total, p,
			       pl < cap - total ? pl : cap - total);
		total += pl;
	}
	if (cap)
		buf[total < cap ? total : cap - 1] = 0;
	*len = total;
	return total < cap ? 0 : -ENOSPC;
}

/**
 * llm_tok_lookup() - the token whose text is exactly @text.
 * @t: the tokenizer.
 * @text: e.g. "<|im_end|>".
 *
 * Special tokens are preferred over ordinary tokens of the same text.
 * Linear in the vocabulary: for setup, not for the decode loop.
 *
 * Return: the id, or -1.
 */
int32_t llm_tok_lookup(const struct llm_tok *t, const char *text)
{
	size_t n = strlen(text), pl = 0;
	int32_t found = -1;

	for (uint32_t k = 0; k < t->n_special; k++) {
		const char *p = llm_tok_piece(t, t->special[k], &pl);

		if (pl == n && !memcmp(p, text, n))
			return t->special[k];
	}
	for (uint32_t i = 0; i < t->n_vocab && found < 0; i++) {
		const char *p = llm_tok_piece(t, (int32_t)i, &pl);

		if (pl == n && !memcmp(p, text, n))
			found = (int32_t)i;
	}
	return found;
}

/* ---- chat templates ---- */

/**
 * llm_chat_detect() - recognise a model's chat template.
 * @tmpl: tokenizer.chat_template text (Jinja).
 * @style: the template family.
 * @sys: set to the default system prompt written literally in the template
 *       (SmolLM2 adds one when the first message is not a system message),
 *       pointing into @tmpl, or NULL.
 * @sys_len: bytes at @sys.
 *
 * Return: 0, or -EOPNOTSUPP for a template of another family.
 */
int llm_chat_detect(const char *tmpl, enum llm_chat_tmpl *style,
		    const char **sys, size_t *sys_len)
{
	static const char hdr[] = "<|im_start|>system\n";
	const char *a, *b;

	*sys = NULL;
	*sys_len = 0;
	if (strstr(tmpl, "<|start_header_id|>")) {
		*style = LLM_CHAT_LLAMA3;
		return 0;
	}
	if (!strstr(tmpl, "<|im_start|>"))
		return -EOPNOTSUPP;
	*style = LLM_CHAT_CHATML;
	a = strstr(tmpl, hdr);
	if (!a)
		return 0;
	a += sizeof(hdr) - 1;
	b = strstr(a, "<|im_end|>");
	/* a literal: no Jinja expression or string boundary inside */
	if (b && b > a && !memchr(a, '{', b - a) && !memchr(a, '\'', b - a) &&
	    !memchr(a, '"', b - a)) {
		*sys = a;
		*sys_len = b - a;
	}
	return 0;
}

struct chat_out {
	char *buf;
	size_t cap, n;
};

static void chat_put(struct chat_out *o, const char *s, size_t n)
{
	if (o->n < o->cap)
		memcpy(o->buf + o->n, s, n < o->cap - o->n ? n : o->cap - o->n);
	o->n += n;
}

static void chat_puts(struct chat_out *o, const char *s)
{
	chat_put(o, s, strlen(s));
}

static void chat_msg(struct chat_out *o, enum llm_chat_tmpl style,
		     const char *role, const char *content, size_t clen)
{
	if (style == LLM_CHAT_CHATML) {
		chat_puts(o, "<|im_start|>");
		chat_puts(o, role);
		chat_puts(o, "\n");
		chat_put(o, content, clen);
		chat_puts(o, "<|im_end|>\n");
	} else {
		chat_puts(o, "<|start_header_id|>");
		chat_puts(o, role);
		chat_puts(o, "<|end_header_id|>\n\n");
		chat_put(o, content, clen);
		chat_puts(o, "<|eot_id|>");
	}
}

/**
 * llm_chat_format() - render a conversation with a chat template.
 * @style: LLM_CHAT_CHATML or LLM_CHAT_LLAMA3.
 * @default_system: system prompt inserted when the first message is not
 *                  from "system" (NULL for none).
 * @default_system_len: bytes of @default_system.
 * @msgs: the messages.
 * @n: number of messages.
 * @add_assistant: end with the header of an assistant turn.
 * @buf: output, NUL-terminated when @cap > 0 (truncated if need be).
 * @cap: bytes in @buf.
 * @len: bytes of the whole text, without the NUL, also when it does not fit.
 *
 * Llama-3 output starts with <|begin_of_text|>; encode it with
 * LLM_TOK_PARSE_SPECIAL and without LLM_TOK_ADD_BOS.
 *
 * Return: 0, -ENOSPC if the text and its NUL did not fit, -EINVAL for an
 * unknown style or a message without role or content.
 */
int llm_chat_format(enum llm_chat_tmpl style, const char *default_system,
		    size_t default_system_len, const struct llm_chat_msg *msgs,
		    size_t n, bool add_assistant, char *buf, size_t cap,
		    size_t *len)
{
	struct chat_out o = { buf, cap, 0 };
	size_t i;

	if (style != LLM_CHAT_CHATML && style != LLM_CHAT_LLAMA3)
		return -EINVAL;
	for (i = 0; i < n; i++)
		if (!msgs[i].role || !msgs[i].content || !*msgs[i].role)
			return -EINVAL;
	if (style == LLM_CHAT_LLAMA3)
		chat_puts(&o, "<|begin_of_text|>");
	if (default_system && (n == 0 || strcmp(msgs[0].role, "system")))
		chat_msg(&o, style, "system", default_system,
			 default_system_len);
	for (i = 0; i < n; i++)
		chat_msg(&o, style, msgs[i].role, msgs[i].content,
			 strlen(msgs[i].content));
	if (add_assistant)
		chat_puts(&o, style == LLM_CHAT_CHATML ?
				      "<|im_start|>assistant\n" :
				      "<|start_header_id|>assistant"
				      "<|end_header_id|>\n\n");
	if (cap)
		buf[o.n < cap ? o.n : cap - 1] = 0;
	*len = o.n;
	return o.n < cap ? 0 : -ENOSPC;
}

/**
 * llm_text_append() - append @n bytes of @p to a NUL-terminated text
 * @text: the text (grown with realloc; NULL at first)
 * @len: its length in bytes
 * @cap: bytes allocated
 * @p: bytes to append
 * @n: how many
 *
 * Return: 0, or -ENOMEM with the text unchanged.
 */
int llm_text_append(char **text, size_t *len, size_t *cap, const char *p,
		    size_t n)
{
	if (*len + n + 1 > *cap) {
		size_t c = (*len + n + 1) * 2;
		char *t = realloc(*text, c);

		if (!t)
			return -ENOMEM;
		*text = t;
		*cap = c;
	}
	memcpy(*text + *len, p, n);
	*len += n;
	(*text)[*len] = 0;
	return 0;
}

/**
 * llm_utf8_whole() - bytes of @s[0..n) that end on a whole UTF-8 character
 * @s: text
 * @n: bytes of it
 *
 * Return: @n, or less by the bytes of a character not yet complete.
 */
size_t llm_utf8_whole(const char *s, size_t n)
{
	size_t i = n, k = 0;

	while (i > 0 && k < 4 && ((unsigned char)s[i - 1] & 0xc0) == 0x80) {
		i--;
		k++;
	}
	if (i > 0) {
		unsigned char c = s[i - 1];
		size_t need = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;

		if (need > k + 1)
			return i - 1;
	}
	return n;
}

/**
 * llm_text_stop() - cut a text at the first of its stop strings
 * @text: NUL-terminated text, or NULL (nothing yet)
 * @len: its length; cut where a stop string begins
 * @stop: stop strings, none empty
 * @n_stop: how many
 * @from: bytes of the text already searched (a match can only end past it)
 * @hold: receives, when none is found, the length of the longest tail that
 *	may begin one (to hold back from the reader until it is decided)
 *
 * Return: true when the text was cut.
 */
bool llm_text_stop(char *text, size_t *len, const char *const *stop,
		   int n_stop, size_t from, size_t *hold)
{
	*hold = 0;
	if (!text)
		return false;
	for (int i = 0; i < n_stop; i++) {
		size_t sl = strlen(stop[i]);
		char *p = strstr(text + (from > sl ? from - sl : 0), stop[i]);

		if (p) {
			*len = p - text;
			text[*len] = 0;
			return true;
		}
		for (size_t k = sl - 1; k > *hold; k--)
			if (k <= *len && !memcmp(text + *len - k, stop[i], k))
				*hold = k;
	}
	return false;
}
