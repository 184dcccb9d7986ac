/* SPDX-License-Identifier: MIT */
/*
 * tokenizer.h - byte-level BPE tokenizer (GPT-2 / SmolLM2 style) loaded
 * from GGUF metadata, and chat templates.
 *
 * Supported: tokenizer.ggml.model = "gpt2" with tokenizer.ggml.pre absent,
 * "default" or "gpt2" (the GPT-2 pre-tokenizer regex) or "smollm",
 * "starcoder", "refact" (every digit split off first, then the GPT-2 regex);
 * and "llama", SentencePiece-style BPE (Llama 2, Mistral): spaces become
 * U+2581, a space is put before the text (tokenizer.ggml.add_space_prefix),
 * the symbols are UTF-8 characters merged by tokenizer.ggml.merges ranks or,
 * without merges, by tokenizer.ggml.scores (highest first), and a character
 * without a token falls back to its <0xXX> byte tokens.
 * Control and user-defined tokens are matched as whole tokens in the text
 * when LLM_TOK_PARSE_SPECIAL is given. See Documentation/model/index.rst for
 * the Unicode limits of the pre-tokenizer.
 */
#ifndef LLM_TOKENIZER_H
#define LLM_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gguf.h"

/* tokenizer.ggml.token_type values */
enum llm_tok_type {
	LLM_TOKTYPE_UNDEFINED = 0,
	LLM_TOKTYPE_NORMAL = 1,
	LLM_TOKTYPE_UNKNOWN = 2,
	LLM_TOKTYPE_CONTROL = 3,
	LLM_TOKTYPE_USER_DEFINED = 4,
	LLM_TOKTYPE_UNUSED = 5,
	LLM_TOKTYPE_BYTE = 6,
};

/* pre-tokenizer variants */
enum llm_tok_pre {
	LLM_TOK_PRE_GPT2,	 /* GPT-2 regex */
	LLM_TOK_PRE_GPT2_DIGITS, /* each \p{N} alone, then the GPT-2 regex */
	LLM_TOK_PRE_LLAMA3,	 /* Llama 3 regex ("llama-bpe") */
	LLM_TOK_PRE_QWEN2,	 /* Qwen2 regex: Llama 3's, one digit a time */
};

/* flags of llm_tok_encode() and llm_tok_decode() */
#define LLM_TOK_ADD_BOS BIT(0)	     /* encode: prepend bos_id */
#define LLM_TOK_PARSE_SPECIAL BIT(1) /* encode: match special tokens */
#define LLM_TOK_SKIP_SPECIAL BIT(2)  /* decode: drop control tokens */

/* where SentencePiece puts a space before the text */
enum llm_tok_prefix {
	LLM_TOK_PREFIX_NONE,  /* never */
	LLM_TOK_PREFIX_FIRST, /* before the first text fragment only */
	LLM_TOK_PREFIX_EACH,  /* at the start and after each special token */
};

/* one single-character token (SentencePiece symbols) */
struct llm_tok_char {
	uint32_t cp;
	int32_t id;
};

/* one entry of the merge table: pair (left, right) -> merged token */
struct llm_tok_merge {
	uint64_t key;  /* left << 32 | right; UINT64_MAX when empty */
	uint32_t rank; /* merge priority, lower first */
	int32_t id;    /* merged token */
};

/*
 * A loaded tokenizer. Owned by the caller of llm_tok_load(), released with
 * llm_tok_free(). Holds copies of everything it needs (the GGUF file may be
 * closed after loading). Read-only after load: any number of threads may
 * encode and decode at once.
 */
struct llm_tok {
	uint32_t n_vocab;
	enum llm_tok_pre pre;
	int32_t bos_id, eos_id, unk_id, pad_id; /* -1 when absent */
	bool add_bos; /* tokenizer.ggml.add_bos_token */
	int32_t byte_id[256]; /* token of each single byte, -1 if none
			       * (spm: the <0xXX> tokens) */
	uint8_t *type;	      /* n_vocab enum llm_tok_type */
	uint32_t *piece_off;  /* n_vocab + 1 offsets into @pieces */
	char *pieces;	      /* decoded bytes of every token */
	struct llm_tok_merge *merges;
	uint64_t merge_mask; /* table size - 1 (power of two) */
	uint32_t n_merges;   /* merges usable (all parts in the vocab) */
	int32_t *special;    /* ids matched as whole tokens in text */
	uint32_t n_special;
	uint8_t special_first[32]; /* bitmap: first bytes of specials */
	char *chat_template;	   /* tokenizer.chat_template or NULL */
	bool spm;		   /* SentencePiece-style ("llama") */
	enum llm_tok_prefix prefix; /* spm: space before the text */
	struct llm_tok_char *chars; /* spm: sorted by cp */
	uint32_t n_chars;
};

int llm_tok_load(const struct llm_gguf *g, struct llm_tok **out, char *err,
		 size_t errlen);
void llm_tok_free(struct llm_tok *t);
int llm_tok_encode(const struct llm_tok *t, const char *text, size_t len,
		   unsigned int flags, int32_t *ids, size_t cap,
		   size_t *n_out);
int llm_tok_decode(const struct llm_tok *t, const int32_t *ids, size_t n,
		   unsigned int flags, char *buf, size_t cap, size_t *len);
const char *llm_tok_piece(const struct llm_tok *t, int32_t id, size_t *len);
int32_t llm_tok_lookup(const struct llm_tok *t, const char *text);

/* Unicode helpers used by the pre-tokenizer, exposed for tests */
enum llm_ucat {
	LLM_UCAT_OTHER,
	LLM_UCAT_LETTER, /* \p{L}, approximated: see the documentation */
	LLM_UCAT_NUMBER, /* \p{N} */
	LLM_UCAT_SPACE,	 /* \s */
};

size_t llm_utf8_decode(const uint8_t *s, size_t n, uint32_t *cp);
enum llm_ucat llm_ucat(uint32_t cp);

/* chat templates */
enum llm_chat_tmpl {
	LLM_CHAT_CHATML, /* <|im_start|>role\n...<|im_end|>\n */
	LLM_CHAT_LLAMA3, /* <|start_header_id|>role<|end_header_id|>\n\n... */
};

/* one chat message; the strings belong to the caller */
struct llm_chat_msg {
	const char *role; /* "system", "user", "assistant" */
	const char *content;
};

int llm_chat_detect(const char *tmpl, enum llm_chat_tmpl *style,
		    const char **sys, size_t *sys_len);
int llm_chat_format(enum llm_chat_tmpl style, const char *default_system,
		    size_t default_system_len, const struct llm_chat_msg *msgs,
		    size_t n, bool add_assistant, char *buf, size_t cap,
		    size_t *len);

/* the text a generation builds token by token (generate, serve) */
int llm_text_append(char **text, size_t *len, size_t *cap, const char *p,
		    size_t n);
size_t llm_utf8_whole(const char *s, size_t n);
bool llm_text_stop(char *text, size_t *len, const char *const *stop,
		   int n_stop, size_t from, size_t *hold);

#endif /* LLM_TOKENIZER_H */
