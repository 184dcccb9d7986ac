// SPDX-License-Identifier: MIT
/*
 * profile.c - diffkv profiles: the thresholds `kvmm eval calibrate` chose,
 * in a JSON file that --policy diffkv:profile=FILE reads back.
 *
 * DOC: profile format
 *
 * One JSON object (RFC 8259), at most 64 KiB::
 *
 *   {
 *     "kvmm_profile": 1,
 *     "policy": "diffkv",
 *     "hi": "k8v4", "lo": "k4v2",
 *     "prune": 0, "quant": 1,
 *     "window": 64, "score": 64,
 *     "hadamard": 0,
 *     "sinks": 0,
 *     "calibration": { ... }
 *   }
 *
 * ``kvmm_profile`` is the format's version (1). ``hi`` and ``lo`` are
 * tiers as llm_tier_parse() reads them, ``prune`` and ``quant`` diffkv's
 * alpha_prune and alpha_quant, ``window`` and ``score`` its protected
 * window and scored prompt queries, ``hadamard`` (optional, 0 or 1, 0 when
 * absent) its rotation, ``sinks`` (optional, 0 when absent) its protected
 * first positions, ``knorm`` (optional, 0 or 1, 0 when absent) its
 * per-channel key normalization: the same ranges and rules as the knobs of
 * the same names; the writer writes ``sinks`` and ``knorm`` only when they
 * are not 0. ``calibration`` (optional, an object) records how the values were
 * found; it is not read back. Every other member is required; an unknown
 * member, a member given twice, a value of the wrong type or out of range
 * is refused, with a message that names the member.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "json.h"
#include "policy.h"

#define PROFILE_MAX (64u << 10)

static int prerr(char *err, size_t len, const char *path, const char *fmt,
		 ...) __attribute__((format(printf, 4, 5)));

static int prerr(char *err, size_t len, const char *path, const char *fmt,
		 ...)
{
	va_list ap;
	int n;

	if (err && len) {
		n = snprintf(err, len, "profile %s: ", path);
		if (n >= 0 && (size_t)n < len) {
			va_start(ap, fmt);
			vsnprintf(err + n, len - n, fmt, ap);
			va_end(ap);
		}
	}
	return -EINVAL;
}

/* the whole file into a NUL-terminated buffer; -errno with a message */
static int slurp(const char *path, char **out, size_t *n, char *err,
		 size_t len)
{
	struct stat st;
	char *buf = NULL;
	size_t got;
	FILE *f;
	int ret;

	f = fopen(path, "rb");
	if (!f) {
		ret = -errno;
		prerr(err, len, path, "%s", strerror(-ret));
		return ret;
	}
	ret = fstat(fileno(f), &st);
	if (ret || !S_ISREG(st.st_mode)) {
		ret = prerr(err, len, path, "not a regular file");
		goto out;
	}
	if (st.st_size > PROFILE_MAX) {
		ret = prerr(err, len, path, "larger than %u bytes",
			    PROFILE_MAX);
		goto out;
	}
	buf = malloc((size_t)st.st_size + 1);
	if (!buf) {
		ret = -ENOMEM;
		prerr(err, len, path, "out of memory");
		goto out;
	}
	got = fread(buf, 1, (size_t)st.st_size, f);
	if (got != (size_t)st.st_size || ferror(f)) {
		ret = -EIO;
		prerr(err, len, path, "read error");
		goto out;
	}
	buf[got] = '\0';
	*out = buf;
	*n = got;
	buf = NULL;
out:
	free(buf);
	fclose(f);
	return ret;
}

static const char *const members[] = {
	"kvmm_profile", "policy", "hi", "lo", "prune", "quant", "window",
	"score", "hadamard", "sinks", "knorm", "calibration",
};
/* the optional ones, last in members[] */
#define N_OPTIONAL 4

/* every member known and given once; the required ones there */
static int check_members(const struct llm_json *root, const char *path,
			 char *err, size_t len)
{
	const size_t nm = sizeof(members) / sizeof(members[0]);

	for (uint32_t i = 0; i < root->n; i++) {
		const struct llm_json *m = &root->kids[i];
		size_t k;

		for (k = 0; k < nm; k++)
			if (m->key_len == strlen(members[k]) &&
			    !memcmp(m->key, members[k], m->key_len))
				break;
		if (k == nm)
			return prerr(err, len, path, "unknown member '%.*s'",
				     (int)(m->key_len > 40 ? 40 : m->key_len),
				     m->key);
		for (uint32_t j = 0; j < i; j++)
			if (root->kids[j].key_len == m->key_len &&
			    !memcmp(root->kids[j].key, m->key, m->key_len))
				return prerr(err, len, path, "member '%s' "
					     "given twice", members[k]);
	}
	for (size_t k = 0; k + N_OPTIONAL < nm; k++)
		if (!llm_json_get(root, members[k]))
			return prerr(err, len, path, "member '%s' is missing",
				     members[k]);
	return 0;
}

static int get_tier(const struct llm_json *root, const char *key,
		    struct kvmm_tier *t, const char *path, char *err,
		    size_t len)
{
	const struct llm_json *v = llm_json_get(root, key);

	if (v->type != LLM_JSON_STRING || strlen(v->str) != v->n ||
	    llm_tier_parse(v->str, t))
		return prerr(err, len, path, "'%s' must be a tier such as "
			     "\"k8v4\" or \"k4g2v2g4\"", key);
	return 0;
}

static int get_num(const struct llm_json *root, const char *key, double lo,
		   double hi, double *x, const char *path, char *err,
		   size_t len)
{
	const struct llm_json *v = llm_json_get(root, key);

	if (v->type != LLM_JSON_NUMBER || !(v->num >= lo && v->num <= hi))
		return prerr(err, len, path, "'%s' must be a number in "
			     "[%g, %g]", key, lo, hi);
	*x = v->num;
	return 0;
}

static int get_u32(const struct llm_json *root, const char *key,
		   uint32_t lo, uint32_t hi, uint32_t *x, const char *path,
		   char *err, size_t len)
{
	int64_t v;

	if (llm_json_int(llm_json_get(root, key), lo, hi, &v))
		return prerr(err, len, path, "'%s' must be an integer in "
			     "[%u, %u]", key, lo, hi);
	*x = (uint32_t)v;
	return 0;
}

/* the members' values into @p, each checked */
static int read_members(const struct llm_json *root, struct llm_policy *p,
			const char *path, char *err, size_t len)
{
	const struct llm_json *v;
	double prune = 0, quant = 0;
	int64_t ver;
	int ret;

	if (llm_json_int(llm_json_get(root, "kvmm_profile"), 0, INT32_MAX,
			 &ver) || ver != 1)
		return prerr(err, len, path, "'kvmm_profile' must be 1, the "
			     "version this kvmm reads");
	if (!llm_json_str_eq(llm_json_get(root, "policy"), "diffkv"))
		return prerr(err, len, path, "'policy' must be \"diffkv\"");
	v = llm_json_get(root, "calibration");
	if (v && v->type != LLM_JSON_OBJECT)
		return prerr(err, len, path, "'calibration' must be an "
			     "object");
	llm_policy_default(LLM_POLICY_DIFFKV, p);
	ret = get_tier(root, "hi", &p->hi, path, err, len);
	ret = ret ?: get_tier(root, "lo", &p->lo, path, err, len);
	ret = ret ?: get_num(root, "prune", 0, 1, &prune, path, err, len);
	ret = ret ?: get_num(root, "quant", 0, 1e6, &quant, path, err, len);
	ret = ret ?: get_u32(root, "window", 0, 1u << 20, &p->window, path,
			     err, len);
	ret = ret ?: get_u32(root, "score", 1, 1u << 16, &p->score_window,
			     path, err, len);
	if (!ret && llm_json_get(root, "hadamard"))
		ret = get_u32(root, "hadamard", 0, 1, &p->hadamard, path, err,
			      len);
	if (!ret && llm_json_get(root, "knorm"))
		ret = get_u32(root, "knorm", 0, 1, &p->knorm, path, err, len);
	if (!ret && llm_json_get(root, "sinks"))
		ret = get_u32(root, "sinks", 0, 1u << 20, &p->sinks, path, err,
			      len);
	if (ret)
		return ret;
	p->alpha_prune = (float)prune;
	p->alpha_quant = (float)quant;
	if (p->alpha_quant < p->alpha_prune)
		return prerr(err, len, path, "'quant' (%g) is below 'prune' "
			     "(%g)", quant, prune);
	if (p->lo.kbits > p->hi.kbits || p->lo.vbits > p->hi.vbits)
		return prerr(err, len, path, "'lo' has more key or value bits "
			     "than 'hi'");
	return 0;
}

/**
 * llm_profile_read() - the diffkv policy of a profile file
 * @path: the file (see "profile format" above)
 * @out: filled only on success: a diffkv policy with the profile's tiers,
 *	thresholds, window and score window
 * @err: a one-line reason on failure, naming the file and the member
 * @errlen: bytes of @err
 *
 * Return: 0, -EINVAL for a file that is not a valid profile, or -errno
 * from opening or reading it.
 */
int llm_profile_read(const char *path, struct llm_policy *out, char *err,
		     size_t errlen)
{
	struct llm_json_doc *d = NULL;
	const struct llm_json *root;
	struct llm_policy p;
	char jerr[160] = "";
	char *text = NULL;
	size_t n = 0;
	int ret;

	if (!path || !*path)
		return prerr(err, errlen, "", "no file name");
	ret = slurp(path, &text, &n, err, errlen);
	if (ret)
		return ret;
	ret = llm_json_parse(text, n, &d, jerr, sizeof(jerr));
	if (ret) {
		ret = prerr(err, errlen, path, "not JSON: %s", jerr);
		goto out;
	}
	root = llm_json_root(d);
	if (root->type != LLM_JSON_OBJECT) {
		ret = prerr(err, errlen, path, "not a JSON object");
		goto out;
	}
	ret = check_members(root, path, err, errlen);
	ret = ret ?: read_members(root, &p, path, err, errlen);
	if (!ret)
		*out = p;
out:
	llm_json_free(d);
	free(text);
	return ret;
}

/**
 * llm_profile_write() - a diffkv policy as a profile file
 * @path: the file, replaced whole (written beside it, then renamed)
 * @p: a diffkv policy
 * @calibration: JSON text of the "calibration" object, or NULL for none;
 *	written as given
 * @err: a one-line reason on failure
 * @errlen: bytes of @err
 *
 * The thresholds are written with 9 significant digits, so that
 * llm_profile_read() gives the same floats back.
 *
 * Return: 0, -EINVAL for a policy that is not diffkv, or -errno.
 */
int llm_profile_write(const char *path, const struct llm_policy *p,
		      const char *calibration, char *err, size_t errlen)
{
	char hi[24], lo[24], *tmp;
	size_t n = strlen(path) + 8;
	FILE *f;
	int ret = 0;

	if (p->kind != LLM_POLICY_DIFFKV ||
	    llm_tier_format(&p->hi, hi, sizeof(hi)) < 0 ||
	    llm_tier_format(&p->lo, lo, sizeof(lo)) < 0)
		return prerr(err, errlen, path, "not a diffkv policy");
	tmp = malloc(n);
	if (!tmp)
		return -ENOMEM;
	snprintf(tmp, n, "%s.tmp", path);
	f = fopen(tmp, "w");
	if (!f) {
		ret = -errno;
		prerr(err, errlen, tmp, "%s", strerror(-ret));
		goto out;
	}
	fprintf(f, "{\n  \"kvmm_profile\": 1,\n  \"policy\": \"diffkv\",\n"
		"  \"hi\": \"%s\",\n  \"lo\": \"%s\",\n  \"prune\": %.9g,\n"
		"  \"quant\": %.9g,\n  \"window\": %u,\n  \"score\": %u,\n"
		"  \"hadamard\": %u", hi, lo, (double)p->alpha_prune,
		(double)p->alpha_quant, p->window, p->score_window,
		p->hadamard);
	if (p->sinks)
		fprintf(f, ",\n  \"sinks\": %u", p->sinks);
	if (p->knorm)
		fprintf(f, ",\n  \"knorm\": %u", p->knorm);
	if (calibration)
		fprintf(f, ",\n  \"calibration\": %s", calibration);
	fputs("\n}\n", f);
	if (ferror(f) | fclose(f)) {
		ret = -EIO;
		prerr(err, errlen, tmp, "write error");
		unlink(tmp);
		goto out;
	}
	if (rename(tmp, path)) {
		ret = -errno;
		prerr(err, errlen, path, "%s", strerror(-ret));
		unlink(tmp);
	}
out:
	free(tmp);
	return ret;
}
