// SPDX-License-Identifier: MIT
/*
 * check_tools.c - the kvmm tool as a user runs it: the built binary (next
 * to this runner) on a tiny model written here, its exit status, stdout,
 * stderr and the files it leaves.
 *
 * The tiny model is a one-layer llama of dim 128 with a byte-level
 * tokenizer: token 0 is <|endoftext|> (eos), tokens 1..256 the 256 bytes
 * in GPT-2's byte map, no merges, so every byte is one token (as in a
 * random Hugging Face test model). Its output norm is zero, so all logits
 * are equal and greedy decoding picks token 0, eos, at every step: a
 * generation ends at once unless eos is ignored.
 *
 * Every nonzero exit must come with a message on stderr.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gguf.h"
#include "gguf_writer.h"
#include "kvmm_base.h"
#include "kvrt.h"
#include "kvtest.h"
#include "tokenizer.h"

#define TM_DIM 128
#define TM_HD 64
#define TM_FFN 128
#define TM_VOCAB 257
#define TM_CTX 512

static char tdir[64];			/* the test's scratch directory */
static char model[128], text[128];	/* files in it */
static char out_s[65536], err_s[65536];	/* the last run's streams */

static void gb_kv_u32(struct gbuf *b, const char *k, uint32_t v)
{
	gb_key(b, k, LLM_GGUF_U32);
	gb_u32(b, v);
}

static void gb_kv_f32(struct gbuf *b, const char *k, float v)
{
	gb_key(b, k, LLM_GGUF_F32);
	gb_put(b, &v, 4);
}

/* the GPT-2 byte map of byte @i, UTF-8 encoded into @u; its length */
static size_t byte_piece(uint32_t i, char *u)
{
	uint32_t cp = i, k = 0;

	if (!((i >= 0x21 && i <= 0x7e) || (i >= 0xa1 && i <= 0xac) ||
	      i >= 0xae)) {
		for (uint32_t j = 0; j < i; j++)
			if (!((j >= 0x21 && j <= 0x7e) ||
			      (j >= 0xa1 && j <= 0xac) || j >= 0xae))
				k++;
		cp = 256 + k;
	}
	if (cp < 0x80) {
		u[0] = (char)cp;
		return 1;
	}
	u[0] = (char)(0xc0 | cp >> 6);
	u[1] = (char)(0x80 | (cp & 0x3f));
	return 2;
}

struct tm_tensor {
	const char *name;
	uint64_t ne0, ne1;	/* ne1 0: a vector */
	int fill;		/* 0 random, 1 ones, 2 zeros */
};

static void tiny_model(const char *path)
{
	static const struct tm_tensor t[] = {
		{ "token_embd.weight", TM_DIM, TM_VOCAB, 0 },
		{ "output_norm.weight", TM_DIM, 0, 2 },
		{ "blk.0.attn_norm.weight", TM_DIM, 0, 1 },
		{ "blk.0.attn_q.weight", TM_DIM, 2 * TM_HD, 0 },
		{ "blk.0.attn_k.weight", TM_DIM, TM_HD, 0 },
		{ "blk.0.attn_v.weight", TM_DIM, TM_HD, 0 },
		{ "blk.0.attn_output.weight", 2 * TM_HD, TM_DIM, 0 },
		{ "blk.0.ffn_norm.weight", TM_DIM, 0, 1 },
		{ "blk.0.ffn_gate.weight", TM_DIM, TM_FFN, 0 },
		{ "blk.0.ffn_up.weight", TM_DIM, TM_FFN, 0 },
		{ "blk.0.ffn_down.weight", TM_FFN, TM_DIM, 0 },
	};
	struct gbuf b = { 0 };
	uint64_t off = 0, s = 0x12345;
	char u[4];
	FILE *f;

	gb_u32(&b, LLM_GGUF_MAGIC);
	gb_u32(&b, 3);
	gb_u64(&b, ARRAY_SIZE(t));
	gb_u64(&b, 15);
	gb_key(&b, "general.architecture", LLM_GGUF_STRING);
	gb_str(&b, "llama");
	gb_kv_u32(&b, "llama.context_length", TM_CTX);
	gb_kv_u32(&b, "llama.embedding_length", TM_DIM);
	gb_kv_u32(&b, "llama.block_count", 1);
	gb_kv_u32(&b, "llama.feed_forward_length", TM_FFN);
	gb_kv_u32(&b, "llama.attention.head_count", 2);
	gb_kv_u32(&b, "llama.attention.head_count_kv", 1);
	gb_kv_f32(&b, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
	gb_key(&b, "tokenizer.ggml.model", LLM_GGUF_STRING);
	gb_str(&b, "gpt2");
	gb_key(&b, "tokenizer.ggml.tokens", LLM_GGUF_ARRAY);
	gb_u32(&b, LLM_GGUF_STRING);
	gb_u64(&b, TM_VOCAB);
	gb_str(&b, "<|endoftext|>");
	for (uint32_t i = 0; i < 256; i++) {
		size_t l = byte_piece(i, u);

		gb_u64(&b, l);
		gb_put(&b, u, l);
	}
	gb_key(&b, "tokenizer.ggml.token_type", LLM_GGUF_ARRAY);
	gb_u32(&b, LLM_GGUF_I32);
	gb_u64(&b, TM_VOCAB);
	for (uint32_t i = 0; i < TM_VOCAB; i++)
		gb_u32(&b, i ? LLM_TOKTYPE_NORMAL : LLM_TOKTYPE_CONTROL);
	gb_key(&b, "tokenizer.ggml.merges", LLM_GGUF_ARRAY);
	gb_u32(&b, LLM_GGUF_STRING);
	gb_u64(&b, 0);
	gb_kv_u32(&b, "tokenizer.ggml.eos_token_id", 0);
	gb_key(&b, "tokenizer.ggml.add_bos_token", LLM_GGUF_BOOL);
	gb_put(&b, "", 1);
	gb_key(&b, "tokenizer.chat_template", LLM_GGUF_STRING);
	gb_str(&b, "{% for message in messages %}{{'<|im_start|>' + "
		   "message['role'] + '\n' + message['content'] + "
		   "'<|im_end|>' + '\n'}}{% endfor %}");
	for (size_t i = 0; i < ARRAY_SIZE(t); i++) {
		gb_str(&b, t[i].name);
		gb_u32(&b, t[i].ne1 ? 2 : 1);
		gb_u64(&b, t[i].ne0);
		if (t[i].ne1)
			gb_u64(&b, t[i].ne1);
		gb_u32(&b, LLM_GGML_F32);
		gb_u64(&b, off);
		off += kvmm_round_up(t[i].ne0 * (t[i].ne1 ? t[i].ne1 : 1) * 4,
				     32);
	}
	gb_pad(&b, 32);
	for (size_t i = 0; i < ARRAY_SIZE(t); i++) {
		uint64_t n = t[i].ne0 * (t[i].ne1 ? t[i].ne1 : 1);

		for (uint64_t k = 0; k < n; k++) {
			float v = t[i].fill == 1 ? 1.0f : t[i].fill == 2 ?
				  0.0f : (float)((int64_t)(kvtest_rand(&s) %
							    2001) - 1000) *
				  1e-4f;

			gb_put(&b, &v, 4);
		}
		gb_pad(&b, 32);
	}
	f = fopen(path, "wb");
	ck_assert_ptr_nonnull(f);
	ck_assert_uint_eq(fwrite(b.p, 1, b.len, f), b.len);
	fclose(f);
	free(b.p);
}

static void put(const char *path, const char *s)
{
	FILE *f = fopen(path, "wb");

	ck_assert_ptr_nonnull(f);
	fputs(s, f);
	fclose(f);
}

static size_t slurp(const char *path, char *buf, size_t cap)
{
	FILE *f = fopen(path, "rb");
	size_t n = 0;

	if (f) {
		n = fread(buf, 1, cap - 1, f);
		fclose(f);
	}
	buf[n] = 0;
	return n;
}

static void setup(void)
{
	char words[2048];

	strcpy(tdir, "/tmp/kvmm-tools-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(tdir));
	snprintf(model, sizeof(model), "%s/tiny.gguf", tdir);
	snprintf(text, sizeof(text), "%s/text.txt", tdir);
	tiny_model(model);
	/* about 1.5 KB: one token a byte */
	words[0] = 0;
	for (int i = 0; i < 40; i++)
		strcat(words, "The quick brown fox jumps. ");
	put(text, words);
}

static void teardown(void)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tdir);
	if (system(cmd))
		fprintf(stderr, "could not remove %s\n", tdir);
}

/*
 * Run the kvmm binary next to this runner with the NULL-terminated
 * arguments; stdout and stderr into out_s and err_s. Return: the exit
 * status.
 */
static int tty_err = -1; /* kvmm_tty(): the pty master stderr goes to */

static int kvmm(const char *a0, ...)
{
	char self[PATH_MAX], bin[PATH_MAX + 8], op[128], ep[128];
	const char *argv[32];
	int n = 0, st, tty_slave = -1;
	va_list ap;
	ssize_t l;
	pid_t pid;

	l = readlink("/proc/self/exe", self, sizeof(self) - 1);
	ck_assert_int_gt(l, 0);
	self[l] = 0;
	*strrchr(self, '/') = 0;
	snprintf(bin, sizeof(bin), "%s/kvmm", self);
	argv[n++] = bin;
	va_start(ap, a0);
	for (const char *a = a0; a && n < 31; a = va_arg(ap, const char *))
		argv[n++] = a;
	va_end(ap);
	argv[n] = NULL;
	snprintf(op, sizeof(op), "%s/stdout", tdir);
	snprintf(ep, sizeof(ep), "%s/stderr", tdir);
	if (tty_err >= 0) {
		tty_slave = open(ptsname(tty_err), O_RDWR | O_NOCTTY);
		ck_assert_int_ge(tty_slave, 0);
	}
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (!pid) {
		int in = open("/dev/null", O_RDONLY);
		int o = open(op, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		int e = open(ep, O_WRONLY | O_CREAT | O_TRUNC, 0600);

		dup2(in, 0);
		dup2(o, 1);
		dup2(tty_slave >= 0 ? tty_slave : e, 2);
		execv(bin, (char *const *)argv);
		_exit(127);
	}
	if (tty_slave >= 0) {
		/* drain the pty while the child writes, or it blocks */
		size_t got = 0;

		close(tty_slave);
		for (;;) {
			ssize_t r = read(tty_err, err_s + got,
					 sizeof(err_s) - 1 - got);

			if (r <= 0)
				break;
			got += (size_t)r;
		}
		err_s[got] = 0;
		ck_assert_int_eq(waitpid(pid, &st, 0), pid);
		slurp(op, out_s, sizeof(out_s));
	} else {
		ck_assert_int_eq(waitpid(pid, &st, 0), pid);
		slurp(op, out_s, sizeof(out_s));
		slurp(ep, err_s, sizeof(err_s));
	}
	ck_assert_msg(WIFEXITED(st), "kvmm %s: killed by signal %d", a0,
		      WTERMSIG(st));
	st = WEXITSTATUS(st);
	ck_assert_msg(st != 127, "%s did not start", bin);
	/* the rule: a failure says why */
	ck_assert_msg(!st || strlen(err_s) > 0,
		      "kvmm %s: exit %d with nothing on stderr", a0, st);
	return st;
}

/* generate on the CPU executor, on a GPU machine too */
#define GEN "generate", "--device", "cpu", "--model", model

#define EXPECT_ERR(s) \
	ck_assert_msg(strstr(err_s, s), "stderr lacks '%s':\n%s", s, err_s)

/* a refused sweep leaves --out as it was; a finished one replaces it */
START_TEST(test_sweep_keeps_out)
{
	char out[128], buf[8192], more[128];
	int lines = 0;

	snprintf(out, sizeof(out), "%s/sweep.jsonl", tdir);
	put(out, "KEEP\n");
	ck_assert_int_eq(kvmm("eval", "sweep", "--model", model, "--text",
			      text, "--out", out, "--policy", "diffkv:x=1",
			      NULL), 2);
	EXPECT_ERR("--policy: policy diffkv has no knob 'x'");
	slurp(out, buf, sizeof(buf));
	ck_assert_str_eq(buf, "KEEP\n");
	ck_assert_int_ne(kvmm("eval", "sweep", "--model", "/nonexistent",
			      "--text", text, "--out", out, NULL), 0);
	EXPECT_ERR("/nonexistent");
	ck_assert_int_ne(kvmm("eval", "sweep", "--model", model, "--text",
			      "/nonexistent.txt", "--out", out, "--context",
			      "96", NULL), 0);
	EXPECT_ERR("/nonexistent.txt");
	ck_assert_int_eq(kvmm("eval", "sweep", "--model", model, "--text",
			      text, "--out", out, "--context", "256",
			      "--chunks", "20", NULL), 2);
	EXPECT_ERR("shorter than --chunks 20 x --context 256");
	/* a FIFO as --text is refused, not waited on */
	snprintf(more, sizeof(more), "%s/fifo", tdir);
	ck_assert_int_eq(mkfifo(more, 0600), 0);
	ck_assert_int_ne(kvmm("eval", "sweep", "--model", model, "--text",
			      more, "--out", out, "--context", "96", NULL), 0);
	EXPECT_ERR("a FIFO, not a regular file");
	slurp(out, buf, sizeof(buf));
	ck_assert_str_eq(buf, "KEEP\n");
	/* a directory as --out: refused before the run, not after */
	ck_assert_int_eq(kvmm("eval", "sweep", "--model", model, "--text",
			      text, "--out", tdir, NULL), 2);
	EXPECT_ERR("not a regular file");
	/* a run that finishes: one JSON line per point, no temp left */
	ck_assert_int_eq(kvmm("eval", "sweep", "--model", model, "--text",
			      text, "--out", out, "--context", "96",
			      "--prefix", "64", "--policy",
			      "diffkv:prune=0.1,quant=2", "--policy",
			      "kvcompress:rate=2", "--threads", "1", NULL), 0);
	slurp(out, buf, sizeof(buf));
	for (char *p = buf; (p = strchr(p, '\n')); p++)
		lines++;
	ck_assert_int_eq(lines, 3);
	ck_assert_msg(!strncmp(buf, "{\"model\": ", 10), "%s", buf);
	ck_assert_ptr_nonnull(strstr(buf, "\"policy\": \"kvcompress:"));
	snprintf(more, sizeof(more), "ls '%s' | grep -q 'sweep.jsonl.'",
		 tdir);
	ck_assert_int_ne(system(more), 0);
}
END_TEST

/* a sweep killed while it runs removes its temporary file */
START_TEST(test_sweep_killed)
{
	char self[PATH_MAX], bin[PATH_MAX + 8], out[128], buf[192];
	const char *argv[] = { bin, "eval", "sweep", "--model", model,
			       "--text", "tests/data/declaration.txt",
			       "--out", out, "--context", "512", "--chunks",
			       "15", "--threads", "1", NULL };
	bool seen = false;
	ssize_t l;
	pid_t pid;
	int st;

	l = readlink("/proc/self/exe", self, sizeof(self) - 1);
	ck_assert_int_gt(l, 0);
	self[l] = 0;
	*strrchr(self, '/') = 0;
	snprintf(bin, sizeof(bin), "%s/kvmm", self);
	snprintf(out, sizeof(out), "%s/k.jsonl", tdir);
	put(out, "KEEP\n");
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (!pid) {
		int nul = open("/dev/null", O_WRONLY);

		dup2(nul, 1);
		dup2(nul, 2);
		execv(bin, (char *const *)argv);
		_exit(127);
	}
	/* wait for the temporary file, then stop the run */
	for (int i = 0; i < 20000 && !seen; i++) {
		char cmd[192];

		snprintf(cmd, sizeof(cmd), "ls '%s' | grep -q 'k.jsonl.'",
			 tdir);
		seen = !system(cmd);
		if (!seen)
			usleep(1000);
	}
	kill(pid, SIGTERM);
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	ck_assert_msg(seen, "no temporary file appeared");
	ck_assert_msg(WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM,
		      "the sweep ended before it was stopped (status %#x)",
		      st);
	slurp(out, buf, sizeof(buf));
	ck_assert_str_eq(buf, "KEEP\n");
	snprintf(buf, sizeof(buf), "ls '%s' | grep -q 'k.jsonl.'", tdir);
	ck_assert_msg(system(buf) != 0, "the temporary file is left");
}
END_TEST

/*
 * needle with a byte-level tokenizer: the prompt's parts are longer than
 * a subword tokenizer's, and either the table comes or a message says why
 */
START_TEST(test_needle_byte_level)
{
	ck_assert_int_eq(kvmm("eval", "needle", "--model", model, "--lengths",
			      "420", "--depths", "50", "--trials", "1",
			      "--threads", "1", NULL), 0);
	ck_assert_ptr_nonnull(strstr(out_s, "full"));
	ck_assert_ptr_nonnull(strstr(out_s, "420"));
	ck_assert_int_eq(kvmm("eval", "needle", "--model", model, "--lengths",
			      "100", NULL), 2);
	EXPECT_ERR("--lengths 100: too short for the prompt");
	ck_assert_ptr_null(strstr(out_s, "accuracy"));
	ck_assert_int_eq(kvmm("eval", "needle", "--model", model, "--lengths",
			      "4096", NULL), 2);
	EXPECT_ERR("longer than the model's context");
	ck_assert_int_eq(kvmm("eval", "needle", "--model", model, "--out",
			      "x", NULL), 2);
	EXPECT_ERR("--out is not an option of needle");
}
END_TEST

/*
 * ppl's chunks: 8 by default, all that fit in a shorter text (said so),
 * --chunks refused when they do not fit; --split reads the evaluation
 * part only and prints both parts' ranges; the spread in the table and
 * the JSON
 */
START_TEST(test_eval_chunks_split)
{
	ck_assert_int_eq(kvmm("eval", "ppl", "--model", model, "--text", text,
			      "--context", "96", "--prefix", "88", "--json",
			      "--policy", "uniform:tier=k4v2", NULL), 0);
	ck_assert_msg(strstr(out_s, "\"chunks\": 8,") &&
		      strstr(out_s, "\"first_token\": 0,") &&
		      strstr(out_s, "\"delta_ci95_pct\": [") &&
		      strstr(out_s, "\"delta_mean_pct\": "), "%s", out_s);
	/* 1080 tokens; --split 50: evaluation [540, 1080), 5 chunks of 96 */
	ck_assert_int_eq(kvmm("eval", "ppl", "--model", model, "--text", text,
			      "--context", "96", "--prefix", "88", "--split",
			      "50", "--policy", "uniform:tier=k4v2", NULL), 0);
	ck_assert_msg(strstr(out_s, "1080 tokens; read [540, 1020), in its "
			     "evaluation part [540, 1080) of --split 50 "
			     "(calibration [0, 540), evaluation [540, 1080)); "
			     "5 chunks of 96 tokens, 88 prefilled (all that "
			     "fit)"), "%s", out_s);
	ck_assert_msg(strstr(out_s, "95% interval"), "%s", out_s);
	ck_assert_int_eq(kvmm("eval", "ppl", "--model", model, "--text", text,
			      "--context", "96", "--split", "50", "--chunks",
			      "6", NULL), 2);
	EXPECT_ERR("its evaluation part (--split 50) has 540 tokens, shorter "
		   "than --chunks 6 x --context 96");
	ck_assert_int_eq(kvmm("eval", "ppl", "--model", model, "--text", text,
			      "--context", "96", "--split", "100", NULL), 2);
	ck_assert_int_eq(kvmm("eval", "ppl", "--model", model, "--text", text,
			      "--calib", text, NULL), 2);
	EXPECT_ERR("--calib is not an option of ppl");
}
END_TEST

/*
 * calibrate end to end on the tiny model (all its logits are equal, so
 * every setting is within the target and the most compressing wins): a
 * profile that ppl and generate take as diffkv:profile=FILE, refusals
 */
START_TEST(test_eval_calibrate)
{
	char prof[128], spec[192], buf[4096];

	snprintf(prof, sizeof(prof), "%s/prof.json", tdir);
	snprintf(spec, sizeof(spec), "diffkv:profile=%s", prof);
	ck_assert_int_eq(kvmm("eval", "calibrate", "--model", model, "--text",
			      text, "--split", "50", "--context", "96",
			      "--prefix", "80", "--chunks", "2", "--out", prof,
			      "--threads", "1", NULL), 0);
	ck_assert_msg(strstr(out_s, "in its calibration part [0, 540) of "
			     "--split 50") && strstr(out_s, "round 2:") &&
		      strstr(out_s, "chosen: diffkv:"), "%s", out_s);
	slurp(prof, buf, sizeof(buf));
	ck_assert_msg(strstr(buf, "\"kvmm_profile\": 1") &&
		      strstr(buf, "\"tokens\": [0, 192]") &&
		      strstr(buf, "\"target_pct\": 2"), "%s", buf);
	ck_assert_int_eq(kvmm("eval", "ppl", "--model", model, "--text", text,
			      "--split", "50", "--context", "96", "--prefix",
			      "88", "--chunks", "1", "--policy", spec, NULL),
			 0);
	ck_assert_msg(strstr(out_s, "diffkv:hi=k8v4,lo=k4v2,"), "%s", out_s);
	ck_assert_int_eq(kvmm(GEN, "--prompt", "hi", "--max-tokens", "4",
			      "--policy", spec, NULL), 0);
	/* a bad profile: exit 2, the member named */
	put(prof, "{\"kvmm_profile\": 1}");
	ck_assert_int_eq(kvmm("eval", "ppl", "--model", model, "--text", text,
			      "--context", "96", "--policy", spec, NULL), 2);
	EXPECT_ERR("member 'policy' is missing");
	ck_assert_int_eq(kvmm(GEN, "--prompt", "hi", "--policy", spec, NULL),
			 2);
	EXPECT_ERR("member 'policy' is missing");
	/* which text: --calib alone, or --text with --split */
	ck_assert_int_eq(kvmm("eval", "calibrate", "--model", model, "--text",
			      text, "--out", prof, NULL), 2);
	EXPECT_ERR("--calib FILE, or --text FILE with --split S, is required");
	ck_assert_int_eq(kvmm("eval", "calibrate", "--model", model, "--calib",
			      text, "--split", "50", "--out", prof, NULL), 2);
	ck_assert_int_eq(kvmm("eval", "calibrate", "--model", model, "--calib",
			      text, "--policy", "uniform", "--out", prof,
			      NULL), 2);
	EXPECT_ERR("only diffkv is calibrated");
	ck_assert_int_eq(kvmm("eval", "calibrate", "--model", model, "--calib",
			      text, "--target", "0", "--out", prof, NULL), 2);
	ck_assert_int_eq(kvmm("eval", "calibrate", "--model", model, "--calib",
			      text, NULL), 2);
	EXPECT_ERR("--out is required");
}
END_TEST

/* each eval subcommand has its own --help; sweep lists its grid */
START_TEST(test_eval_help)
{
	ck_assert_int_eq(kvmm("eval", "sweep", "--help", NULL), 0);
	ck_assert_ptr_nonnull(strstr(out_s, "kvmm eval sweep"));
	ck_assert_ptr_nonnull(strstr(out_s, "kvcompress:rate=6"));
	ck_assert_ptr_nonnull(strstr(out_s, "diffkv:prune=0.2,quant=5"));
	ck_assert_ptr_null(strstr(out_s, "--lengths"));
	ck_assert_int_eq(kvmm("eval", "needle", "--help", NULL), 0);
	ck_assert_ptr_nonnull(strstr(out_s, "--lengths"));
	ck_assert_ptr_null(strstr(out_s, "--out"));
	ck_assert_ptr_null(strstr(out_s, "--context"));
	ck_assert_int_eq(kvmm("eval", "calibrate", "--help", NULL), 0);
	ck_assert_ptr_nonnull(strstr(out_s, "--target PCT"));
	ck_assert_ptr_nonnull(strstr(out_s, "--split S"));
	ck_assert_ptr_null(strstr(out_s, "--lengths"));
	ck_assert_int_eq(kvmm("eval", "ppl", "--help", NULL), 0);
	ck_assert_ptr_nonnull(strstr(out_s, "--context"));
	ck_assert_ptr_null(strstr(out_s, "--target"));
	ck_assert_ptr_null(strstr(out_s, "--lengths"));
	ck_assert_ptr_null(strstr(out_s, "--out"));
	ck_assert_int_eq(kvmm("generate", "--help", NULL), 0);
	ck_assert_ptr_nonnull(strstr(out_s, "--ignore-eos"));
	ck_assert_ptr_nonnull(strstr(out_s, "Hugging Face"));
	ck_assert_int_eq(kvmm("help", NULL), 0);
	ck_assert_ptr_null(strstr(out_s, "from a GGUF model"));
}
END_TEST

/* command lines that were taken and did something else */
START_TEST(test_generate_refused)
{
	char why[256];

	ck_assert_int_eq(kvmm(GEN, "--prompt", "hi",
			      "--system", "be brief", NULL), 2);
	EXPECT_ERR("--system needs --chat");
	ck_assert_int_eq(kvmm(GEN, "--prompt", "",
			      NULL), 2);
	EXPECT_ERR("the prompt is empty");
	/* without a GPU (or CUDA), as kvmm bench says it */
	if (kvrt_cuda_probe(why, sizeof(why))) {
		ck_assert_int_ne(kvmm("generate", "--model", model, "--prompt",
				      "hi", "--device", "cuda", NULL), 0);
		EXPECT_ERR("--device cuda: no GPU: ");
	}
}
END_TEST

/* --batch-file lines are whole JSON objects of strings in UTF-8 */
START_TEST(test_generate_batch_lines)
{
	static const struct {
		const char *line, *msg;
	} bad[] = {
		{ "{\"prompt\": \"a\"} x\n", "after the object" },
		{ "{\"prompt\": \"a\"}}\n", "after the object" },
		{ "{\"prompt\": \"a\", \"policy\": 3}\n",
		  "\"policy\" is not a string" },
		{ "{\"prompt\": 3}\n", "\"prompt\" is not a string" },
		{ "{\"prompt\": \"a\xff\"}\n", "invalid UTF-8" },
		{ "{\"prompt\": \"a\\ud800\"}\n", "lone surrogate" },
		{ "{\"prompt\": \"a\", \"prompt\": \"b\"}\n",
		  "\"prompt\" given twice" },
	};
	char bf[128];

	snprintf(bf, sizeof(bf), "%s/batch.jsonl", tdir);
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		char all[256];

		snprintf(all, sizeof(all), "{\"prompt\": \"ok\"}\n%s",
			 bad[i].line);
		put(bf, all);
		ck_assert_int_eq(kvmm(GEN,
				      "--batch-file", bf, "--policy", "full",
				      NULL), 2);
		ck_assert_msg(strstr(err_s, ":2: ") &&
			      strstr(err_s, bad[i].msg), "line '%s': %s",
			      bad[i].line, err_s);
	}
	put(bf, "{\"prompt\": \"ok\"}\n\n{\"prompt\": \"caf\\u00e9\", "
		"\"x\": [1, {\"y\": null}]}\n");
	ck_assert_int_eq(kvmm(GEN, "--batch-file",
			      bf, "--json", NULL), 0);
	ck_assert_ptr_nonnull(strstr(out_s, "\"stop\": \"eos\""));
}
END_TEST

/*
 * --ignore-eos runs to --max-tokens; a --max-tokens past the context is
 * said, and the stop reason is the context, not max-tokens
 */
START_TEST(test_generate_lengths)
{
	ck_assert_int_eq(kvmm(GEN, "--prompt", "hi",
			      "--max-tokens", "8", "--json", NULL), 0);
	ck_assert_msg(strstr(out_s, "\"stop\": \"eos\""), "%s", out_s);
	ck_assert_int_eq(kvmm(GEN, "--prompt", "hi",
			      "--max-tokens", "8", "--json", "--ignore-eos",
			      NULL), 0);
	ck_assert_msg(strstr(out_s, "\"stop\": \"max-tokens\"") &&
		      strstr(out_s, "\"generated_tokens\": 8"), "%s", out_s);
	/* the weights: the tiny file's F32, read in place */
	ck_assert_msg(strstr(out_s, "\"weight_bytes\": 526336") &&
		      strstr(out_s, "\"weight_format\": \"F32 0.5 MB "
			     "(mapped, "), "%s", out_s);
	/* the summary: tokens held next to what the pages can hold */
	{
		const char *k = strstr(out_s, "\"kv_tokens\": [");
		unsigned long long hi = 0, lo = 0, slots = 0;

		ck_assert_msg(k && sscanf(k, "\"kv_tokens\": [%llu, %llu], "
					  "\"kv_token_slots\": %llu", &hi,
					  &lo, &slots) == 3, "%s", out_s);
		/* full: every token high, the pages' slack at most a page
		 * less one token per list */
		ck_assert_uint_gt(hi, 0);
		ck_assert_uint_eq(lo, 0);
		ck_assert_uint_ge(slots, hi);
	}
	ck_assert_int_eq(kvmm(GEN, "--prompt", "hi",
			      "--max-tokens", "1000", "--json", "--ignore-eos",
			      "--kv", "contig", NULL), 0);
	EXPECT_ERR("--max-tokens 1000: the context of 512 tokens leaves "
		   "room for 510");
	ck_assert_msg(strstr(out_s, "\"stop\": \"context\"") &&
		      strstr(out_s, "\"generated_tokens\": 510"), "%s", out_s);
}
END_TEST

/*
 * a progress line (tokens, rate, time left) when stderr is a terminal,
 * none in a pipe or with --json
 */
START_TEST(test_progress_line)
{
	ck_assert_int_eq(kvmm("eval", "ppl", "--model", model, "--text", text,
			      "--context", "96", "--prefix", "64", NULL), 0);
	ck_assert_ptr_null(strchr(err_s, '\r'));
	ck_assert_ptr_nonnull(strstr(out_s, "full"));
	tty_err = posix_openpt(O_RDWR | O_NOCTTY);
	if (tty_err < 0 || grantpt(tty_err) || unlockpt(tty_err)) {
		kvtest_skip(__func__, "no pseudo-terminal: %s",
			    strerror(errno));
		return;
	}
	ck_assert_int_eq(kvmm("eval", "ppl", "--model", model, "--text", text,
			      "--context", "96", "--prefix", "64", NULL), 0);
	ck_assert_msg(strstr(err_s, "\r  ppl: ") &&
		      strstr(err_s, "/256 tokens, ") &&
		      strstr(err_s, " tokens/s") && strstr(err_s, "ETA "),
		      "no progress line: '%s'", err_s);
	ck_assert_int_eq(kvmm("eval", "needle", "--model", model, "--lengths",
			      "420", "--depths", "0,100", "--trials", "1",
			      NULL), 0);
	ck_assert_msg(strstr(err_s, "needle: ") &&
		      strstr(err_s, "/2 prompts"), "'%s'", err_s);
	ck_assert_int_eq(kvmm("eval", "ppl", "--model", model, "--text", text,
			      "--context", "96", "--prefix", "64", "--json",
			      NULL), 0);
	ck_assert_msg(!strstr(err_s, "tokens/s"), "'%s'", err_s);
	close(tty_err);
	tty_err = -1;
}
END_TEST

/* a JSON number field of out_s */
static double json_num(const char *key)
{
	char k[64];
	const char *p;

	snprintf(k, sizeof(k), "\"%s\":", key);
	p = strstr(out_s, k);
	ck_assert_msg(p, "no %s in %s", key, out_s);
	return strtod(p + strlen(k), NULL);
}

/* host-backend figures: what was asked for is measured and reported */
START_TEST(test_bench_host)
{
	ck_assert_int_eq(kvmm("bench", "mem", "--backend", "host",
			      "--device-mib", "8", "--host-mib", "64",
			      "--reps", "1", "--json", NULL), 0);
	ck_assert_msg(json_num("host_numa_bytes") == 64 << 20, "%s", out_s);
	ck_assert_msg(json_num("host_numa_read") > 0, "%s", out_s);
	ck_assert_int_eq(kvmm("bench", "mem", "--backend", "host",
			      "--device-mib", "8", "--host-mib", "64",
			      "--reps", "1", NULL), 0);
	ck_assert_msg(strstr(out_s, "64 MiB host-NUMA"), "%s", out_s);
	/* the copy ceiling copies the bytes the pass moved, like for like */
	ck_assert_int_eq(kvmm("bench", "compact", "--backend", "host",
			      "--granules", "8", "--reps", "1", "--json",
			      NULL), 0);
	ck_assert_msg(json_num("ceiling_bytes") == json_num("bytes_moved"),
		      "%s", out_s);
	ck_assert_msg(json_num("device_copy_gbs") > 0, "%s", out_s);
}
END_TEST

/* kvmm bench gemv: each format asked for, beside the ceiling */
START_TEST(test_bench_gemv)
{
	ck_assert_int_eq(kvmm("bench", "gemv", "--rows", "64", "--k", "512",
			      "--tokens", "3", "--threads", "1", "--reps", "1",
			      "--ceiling-mib", "8", "--formats", "q4_1,Q6_K",
			      "--json", NULL), 0);
	ck_assert_msg(strstr(out_s, "\"what\":\"read_ceiling\"") &&
		      strstr(out_s, "\"format\":\"Q4_1\"") &&
		      strstr(out_s, "\"format\":\"Q6_K\"") &&
		      !strstr(out_s, "\"format\":\"Q8_0\""), "%s", out_s);
	ck_assert_msg(json_num("gbs") > 0 && json_num("ceiling_gbs") > 0 &&
		      json_num("cpu_gops") > 0, "%s", out_s);
	/* 64 rows of 2 Q6_K super-blocks of 210 bytes */
	ck_assert_msg(strstr(out_s, "\"format\":\"Q6_K\",\"isa\"") &&
		      strstr(out_s, "\"bytes\":26880,"), "%s", out_s);
	ck_assert_int_eq(kvmm("bench", "gemv", "--rows", "8", "--k", "256",
			      "--reps", "1", "--ceiling-mib", "8", "--formats",
			      "q8_0", "--isa", "c", NULL), 0);
	ck_assert_msg(strstr(out_s, "isa c") && strstr(out_s, "Q8_0"), "%s",
		      out_s);
	ck_assert_int_eq(kvmm("bench", "gemv", "--formats", "q2_k", NULL), 2);
	EXPECT_ERR("unknown format 'q2_k'");
	ck_assert_int_eq(kvmm("bench", "gemv", "--k", "100", NULL), 2);
	EXPECT_ERR("multiple of 256");
	ck_assert_int_eq(kvmm("bench", "gemv", "--isa", "sse9", NULL), 2);
	EXPECT_ERR("--isa sse9");
}
END_TEST

/* a JSON line set without the time fields (they vary run to run) */
static void strip_cpu_times(char *s)
{
	static const char *const keys[] = { "\"cpu_", "\"plan_us\"" };
	char *p;

	for (int k = 0; k < 2; k++)
		while ((p = strstr(s, keys[k]))) {
			char *e = strchr(p, ',');

			ck_assert_ptr_nonnull(e);
			memmove(p, e + 1, strlen(e + 1) + 1);
		}
}

/*
 * kvmm bench place: phase one on several threads gives the same trace,
 * hence the same lines; --backend cuda says why it cannot run here
 */
START_TEST(test_bench_place)
{
	static char one[65536];
	char why[256];

	ck_assert_int_eq(kvmm("bench", "place", "--batch", "3", "--ctx",
			      "1024", "--hbm", "0.5", "--steps", "3", "--warm",
			      "1", "--check", "--json", NULL), 0);
	strip_cpu_times(out_s);
	snprintf(one, sizeof(one), "%s", out_s);
	ck_assert_msg(strstr(one, "\"policy\":\"importance\""), "%s", one);
	ck_assert_int_eq(kvmm("bench", "place", "--batch", "3", "--ctx",
			      "1024", "--hbm", "0.5", "--steps", "3", "--warm",
			      "1", "--check", "--json", "--threads", "3",
			      NULL), 0);
	strip_cpu_times(out_s);
	ck_assert_str_eq(out_s, one);
	/*
	 * the host tier has room for what the policies plan: static's
	 * placement at prefill moves half the pages of 4K tokens, which
	 * stopped at a full host tier before the replay grew one
	 */
	ck_assert_int_eq(kvmm("bench", "place", "--batch", "2", "--ctx",
			      "4096", "--hbm", "0.5", "--steps", "3", "--warm",
			      "1", "--json", NULL), 0);
	{
		const char *p = out_s;
		int lines = 0;

		while ((p = strstr(p, "\"no_room\":"))) {
			p += strlen("\"no_room\":");
			ck_assert_msg(*p == '0' && p[1] == ',', "%s", out_s);
			lines++;
		}
		ck_assert_int_eq(lines, 4);	/* every policy at 0.5 */
		/* the default budget: 128 KiB per list, 8 lists a sequence */
		ck_assert_msg(strstr(out_s, "\"budget_bytes\":2097152,"),
			      "%s", out_s);
	}
	ck_assert_int_eq(kvmm("bench", "place", "--batch", "1", "--ctx",
			      "1024", "--hbm", "0.5", "--steps", "1", "--warm",
			      "0", "--budget-mib", "3", "--json", NULL), 0);
	ck_assert_msg(strstr(out_s, "\"budget_bytes\":3145728,"), "%s", out_s);
	ck_assert_msg(strstr(out_s, "\"plan_at\":\"select\","), "%s", out_s);
	ck_assert_int_eq(kvmm("bench", "place", "--batch", "1", "--ctx",
			      "1024", "--hbm", "0.5", "--steps", "1", "--warm",
			      "0", "--plan-at", "end", "--json", NULL), 0);
	ck_assert_msg(strstr(out_s, "\"plan_at\":\"end\","), "%s", out_s);
	ck_assert_int_eq(kvmm("bench", "place", "--plan-at", "before", NULL),
			 2);
	EXPECT_ERR("--plan-at wants select or end");
	ck_assert_int_eq(kvmm("bench", "place", "--batch", "1", "--ctx",
			      "1024", "--hbm", "0.5", "--steps", "2", "--warm",
			      "0", "--host-copy", "off", "--check", "--json",
			      NULL), 0);
	ck_assert_msg(strstr(out_s, "\"host_copy\":false,"), "%s", out_s);
	ck_assert_int_eq(kvmm("bench", "place", "--host-copy", "yes", NULL),
			 2);
	EXPECT_ERR("--host-copy wants on or off");
	ck_assert_int_eq(kvmm("bench", "place", "--backend", "gpu", NULL), 2);
	EXPECT_ERR("--backend wants host or cuda");
	ck_assert_int_eq(kvmm("bench", "place", "--threads", "0", NULL), 2);
	/* where a device answers the CUDA path would run: not here */
	if (kvrt_cuda_probe(why, sizeof(why)))
		ck_assert_int_eq(kvmm("bench", "place", "--backend", "cuda",
				      "--batch", "1", "--ctx", "1024", "--steps",
				      "1", "--warm", "0", NULL), 1);
#ifdef KVMM_HAVE_CUDA
	if (kvrt_cuda_probe(why, sizeof(why)))
		EXPECT_ERR("no context");
#else
	EXPECT_ERR("this build has no CUDA");
#endif
}
END_TEST

/* command lines that fail: each exits nonzero with a line saying why */
START_TEST(test_failures_say_why)
{
	char fifo[128];

	snprintf(fifo, sizeof(fifo), "%s/m.fifo", tdir);
	ck_assert_int_eq(mkfifo(fifo, 0600), 0);
	ck_assert_int_eq(kvmm("nosuch", NULL), 2);
	ck_assert_int_eq(kvmm("eval", "nosuch", NULL), 2);
	ck_assert_int_eq(kvmm("bench", "nosuch", NULL), 2);
	ck_assert_int_eq(kvmm("eval", "ppl", NULL), 2);
	ck_assert_int_eq(kvmm("eval", "ppl", "--model", model, NULL), 2);
	EXPECT_ERR("--text is required");
	ck_assert_int_ne(kvmm("eval", "ppl", "--model", fifo, "--text", text,
			      "--context", "96", NULL), 0);
	EXPECT_ERR("a FIFO");
	ck_assert_int_eq(kvmm("eval", "ppl", "--model", model, "--text", text,
			      "--context", "96", "--prefix", "96", NULL), 2);
	ck_assert_int_eq(kvmm("eval", "needle", "--model", model, "--lengths",
			      "64,,128", NULL), 2);
	ck_assert_int_eq(kvmm("eval", "sweep", "--model", model, "--text",
			      text, NULL), 2);
	EXPECT_ERR("--out is required");
	ck_assert_int_eq(kvmm("generate", NULL), 2);
	ck_assert_int_ne(kvmm(GEN, "--prompt", "hi", "--top-p", "2", NULL), 0);
	ck_assert_int_ne(kvmm("generate", "--model", fifo, "--prompt", "hi",
			      NULL), 0);
	EXPECT_ERR("a FIFO");
	ck_assert_int_ne(kvmm(GEN, "--batch-file", fifo, NULL), 0);
	EXPECT_ERR("a FIFO, not a regular file");
	ck_assert_int_ne(kvmm(GEN, "--batch-file", "/nonexistent", NULL), 0);
	ck_assert_int_ne(kvmm("bench", "mem", "--reps", "0", NULL), 0);
	ck_assert_int_ne(kvmm("bench", "vmm", "--backend", "x", NULL), 0);
	ck_assert_int_ne(kvmm("bench", "compact", "--granules", "1", NULL), 0);
	ck_assert_int_ne(kvmm("bench", "alloc", "--bogus", NULL), 0);
	ck_assert_int_ne(kvmm("bench", "evict", "x", NULL), 0);
	unlink(fifo);
}
END_TEST

/* kvmm serve and bench serve --url refuse bad options, saying why */
START_TEST(test_serve_refused)
{
	ck_assert_int_eq(kvmm("serve", NULL), 2);
	EXPECT_ERR("--model is required");
	ck_assert_int_eq(kvmm("serve", "--model", model, "--port", "70000",
			      NULL), 2);
	ck_assert_int_eq(kvmm("serve", "--model", model, "--reserve", "2",
			      NULL), 2);
	ck_assert_int_eq(kvmm("serve", "--model", model, "--kv-budget", "x",
			      NULL), 2);
	/* preemption: a bad mode, and swap where the cache cannot */
	ck_assert_int_eq(kvmm("serve", "--model", model, "--preempt", "evict",
			      NULL), 2);
	EXPECT_ERR("--preempt: 'evict' is not recompute, swap or auto");
	ck_assert_int_eq(kvmm("bench", "serve", "--model", model, "--preempt",
			      "Swap", NULL), 2);
	EXPECT_ERR("--preempt: 'Swap' is not recompute, swap or auto");
	ck_assert_int_eq(kvmm("bench", "serve", "--model", model, "--order",
			      "shortest", NULL), 2);
	EXPECT_ERR("--order: 'shortest' is not fcfs or longest");
	ck_assert_int_eq(kvmm("bench", "serve", "--url", "http://127.0.0.1:1",
			      "--order", "longest", NULL), 2);
	EXPECT_ERR("--order and --swap-dir are the server's");
	ck_assert_int_eq(kvmm("serve", "--model", model, "--device", "cuda",
			      "--preempt", "swap", NULL), 2);
	EXPECT_ERR("CUDA device cache cannot swap yet");
	ck_assert_int_eq(kvmm("bench", "serve", "--model", model, "--device",
			      "cuda", "--preempt", "swap", NULL), 2);
	EXPECT_ERR("CUDA device cache cannot swap yet");
	ck_assert_int_eq(kvmm("serve", "--model", model, "--device", "tpu",
			      NULL), 2);
	ck_assert_int_eq(kvmm("serve", "--model", model, "--policy", "bogus",
			      "--port", "0", NULL), 2);
	ck_assert_int_eq(kvmm("serve", "--model", model, "--max-model-len",
			      "100000", "--port", "0", NULL), 2);
	EXPECT_ERR("out of range");
	ck_assert_int_ne(kvmm("serve", "--model", "/nonexistent", NULL), 0);
	ck_assert_int_eq(kvmm("serve", "--help", NULL), 0);
	ck_assert_ptr_nonnull(strstr(out_s, "/v1/chat/completions"));
	ck_assert_int_eq(kvmm("bench", "serve", "--url", "ftp://x", NULL), 2);
	EXPECT_ERR("not http://HOST:PORT");
	ck_assert_int_eq(kvmm("bench", "serve", "--url", "http://127.0.0.1:1",
			      "--requests", "1", NULL), 1);
	EXPECT_ERR("/v1/models");
	ck_assert_int_eq(kvmm("bench", "serve", "--url", "http://127.0.0.1:1",
			      "--policy", "full", "--policy", "diffkv", NULL),
			 2);
}
END_TEST

static char doc_s[262144];

/* a file of the tree, from the directory make check runs in */
static void read_doc(const char *path)
{
	ck_assert_msg(slurp(path, doc_s, sizeof(doc_s)) > 0,
		      "%s: not found (make check runs in the tree's root)",
		      path);
}

/*
 * what the pages say agrees with what the tool does: the sweep grid as
 * `eval sweep --help` prints it, which benches need a GPU, the status
 */
START_TEST(test_docs_agree)
{
	char *line, *save = NULL;
	int n = 0;

	ck_assert_int_eq(kvmm("eval", "sweep", "--help", NULL), 0);
	read_doc("Documentation/policies/index.rst");
	line = strstr(out_s, "the grid (full is always run):\n");
	ck_assert_ptr_nonnull(line);
	line = strchr(line, '\n') + 1;
	for (line = strtok_r(line, "\n", &save); line;
	     line = strtok_r(NULL, "\n", &save)) {
		char want[96];

		snprintf(want, sizeof(want), "``%s``", line + 2);
		ck_assert_msg(strstr(doc_s, want), "policies page lacks the "
			      "grid's %s", want);
		n++;
	}
	ck_assert_int_eq(n, 17);
	read_doc("Documentation/index.rst");
	ck_assert_ptr_null(strstr(doc_s, "Not yet: the CUDA"));
	read_doc("README.md");
	ck_assert_ptr_nonnull(strstr(doc_s, "| `attn`, `prefill`, `decode` | "
				     "need a GPU"));
	ck_assert_ptr_nonnull(strstr(doc_s, "tests/data/declaration.txt"));
	read_doc("tests/data/declaration.txt");
	ck_assert_uint_gt(strlen(doc_s), 8000);
#ifndef KVMM_HAVE_CUDA
	/* the benches the README says need a GPU do say so */
	ck_assert_int_eq(kvmm("bench", "attn", NULL), 1);
	ck_assert_msg(strstr(err_s, "built without CUDA"), "%s", err_s);
	ck_assert_int_eq(kvmm("bench", "prefill", NULL), 1);
	ck_assert_msg(strstr(err_s, "built without CUDA"), "%s", err_s);
	/* --cpu runs without one; it is fp32 only */
	ck_assert_int_eq(kvmm("bench", "prefill", "--cpu", "--bf16", NULL), 2);
	ck_assert_msg(strstr(err_s, "--cpu is fp32"), "%s", err_s);
	ck_assert_int_eq(kvmm("bench", "decode", "--model", "x", NULL), 1);
	ck_assert_msg(strstr(err_s, "built without CUDA"), "%s", err_s);
#endif
}
END_TEST

Suite *suite_tools(void)
{
	Suite *s = suite_create("tools");
	TCase *tc = tcase_create("kvmm");

	/* KVMM_KEEP=1: the scratch directory stays, for a look */
	tcase_add_checked_fixture(tc, setup,
				  getenv("KVMM_KEEP") ? NULL : teardown);
	tcase_set_timeout(tc, 60);
	KV_ADD(tc, test_sweep_keeps_out);
	KV_ADD(tc, test_sweep_killed);
	KV_ADD(tc, test_needle_byte_level);
	KV_ADD(tc, test_eval_help);
	KV_ADD(tc, test_eval_chunks_split);
	KV_ADD(tc, test_eval_calibrate);
	KV_ADD(tc, test_generate_refused);
	KV_ADD(tc, test_serve_refused);
	KV_ADD(tc, test_generate_batch_lines);
	KV_ADD(tc, test_generate_lengths);
	KV_ADD(tc, test_progress_line);
	KV_ADD(tc, test_bench_host);
	KV_ADD(tc, test_bench_gemv);
	KV_ADD(tc, test_bench_place);
	KV_ADD(tc, test_docs_agree);
	KV_ADD(tc, test_failures_say_why);
	suite_add_tcase(s, tc);
	return s;
}
