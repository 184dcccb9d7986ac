// SPDX-License-Identifier: MIT
/*
 * policy.c - parsing, defaults and validation of KV memory policies
 * (policy.h).
 */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "kvmm_lib.h"
#include "policy.h"
#include "select.h"

static const char *const policy_names[LLM_POLICY_NR] = {
	[LLM_POLICY_FULL] = "full",
	[LLM_POLICY_UNIFORM] = "uniform",
	[LLM_POLICY_DIFFKV] = "diffkv",
	[LLM_POLICY_KVCOMPRESS] = "kvcompress",
};

static const struct kvmm_tier tier_fp16 = { 16, 16, 1, 1 };

/**
 * llm_policy_name() - a policy kind's name
 * @kind: kind
 *
 * Return: the name, or "?" for a value out of range.
 */
const char *llm_policy_name(enum llm_policy_kind kind)
{
	return (unsigned)kind < LLM_POLICY_NR ? policy_names[kind] : "?";
}

/**
 * llm_policy_default() - a policy with its published defaults
 * @kind: which policy
 * @out: filled
 *
 * diffkv: K8V4 high, K4V2 low, alpha_prune 0.02, alpha_quant 1.0 (DiffKV's
 * Llama-3-8B runs), window 64, 64 scored prompt queries. kvcompress: rate
 * 2, window 64, 32 scored prompt queries (KV-Compress's defaults), an
 * eviction every 16 decode steps, no sinks. uniform: K4V4.
 *
 * Return: 0 or -EINVAL.
 */
int llm_policy_default(enum llm_policy_kind kind, struct llm_policy *out)
{
	if ((unsigned)kind >= LLM_POLICY_NR)
		return -EINVAL;
	memset(out, 0, sizeof(*out));
	out->kind = kind;
	out->hi = tier_fp16;
	out->window = 64;
	out->score_window = 64;
	out->rate = 1.0f;
	out->interval = 1;
	switch (kind) {
	case LLM_POLICY_UNIFORM:
		out->hi = (struct kvmm_tier){ 4, 4, 1, 1 };
		break;
	case LLM_POLICY_DIFFKV:
		out->hi = (struct kvmm_tier){ 8, 4, 1, 1 };
		out->lo = (struct kvmm_tier){ 4, 2, 1, 1 };
		out->alpha_prune = 0.02f;
		out->alpha_quant = 1.0f;
		return 0;
	case LLM_POLICY_KVCOMPRESS:
		out->rate = 2.0f;
		out->score_window = 32;
		out->interval = 16;
		break;
	default:
		break;
	}
	out->lo = out->hi;
	return 0;
}

/**
 * llm_tier_parse() - a tier written as k<bits>[g<groups>]v<bits>[g<groups>]
 * @s: e.g. "k8v4", "k4g2v2g4", or "fp16" (k16v16)
 * @out: filled
 *
 * Case-insensitive. Groups default to 1.
 *
 * Return: 0, or -EINVAL for anything kvmm_tier_valid() refuses or that does
 * not parse.
 */
int llm_tier_parse(const char *s, struct kvmm_tier *out)
{
	unsigned long v[4] = { 0, 1, 0, 1 };
	const char *p = s;
	struct kvmm_tier t;

	if (!s)
		return -EINVAL;
	if (!strcasecmp(s, "fp16")) {
		*out = tier_fp16;
		return 0;
	}
	for (int side = 0; side < 2; side++) {
		char *end;

		if (tolower((unsigned char)*p) != (side ? 'v' : 'k'))
			return -EINVAL;
		p++;
		if (*p < '0' || *p > '9')
			return -EINVAL;
		v[2 * side] = strtoul(p, &end, 10);
		p = end;
		if (tolower((unsigned char)*p) == 'g') {
			p++;
			if (*p < '0' || *p > '9')
				return -EINVAL;
			v[2 * side + 1] = strtoul(p, &end, 10);
			p = end;
		}
	}
	if (*p || v[0] > 16 || v[1] > 4 || v[2] > 16 || v[3] > 4)
		return -EINVAL;
	t = (struct kvmm_tier){ (uint8_t)v[0], (uint8_t)v[2], (uint8_t)v[1],
			       (uint8_t)v[3] };
	if (kvmm_tier_valid(&t))
		return -EINVAL;
	*out = t;
	return 0;
}

/**
 * llm_tier_format() - the inverse of llm_tier_parse()
 * @t: tier
 * @buf: out
 * @len: bytes of @buf
 *
 * Return: characters written (snprintf), or -EINVAL.
 */
int llm_tier_format(const struct kvmm_tier *t, char *buf, size_t len)
{
	if (kvmm_tier_valid(t))
		return -EINVAL;
	if (t->kbits == 16 && t->vbits == 16)
		return snprintf(buf, len, "fp16");
	if (t->kgroups == 1 && t->vgroups == 1)
		return snprintf(buf, len, "k%uv%u", t->kbits, t->vbits);
	return snprintf(buf, len, "k%ug%uv%ug%u", t->kbits, t->kgroups,
			t->vbits, t->vgroups);
}

static int perr(char *err, size_t len, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int perr(char *err, size_t len, const char *fmt, ...)
{
	va_list ap;

	if (err && len) {
		va_start(ap, fmt);
		vsnprintf(err, len, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

static int parse_float(const char *v, float lo, float hi, float *out)
{
	char *end;
	double d;

	errno = 0;
	d = strtod(v, &end);
	if (errno || end == v || *end || !(d >= lo && d <= hi))
		return -EINVAL;
	*out = (float)d;
	return 0;
}

static int parse_u32(const char *v, uint32_t lo, uint32_t hi, uint32_t *out)
{
	unsigned long long x;
	char *end;

	if (*v < '0' || *v > '9')
		return -EINVAL;
	errno = 0;
	x = strtoull(v, &end, 10);
	if (errno || *end || x < lo || x > hi)
		return -EINVAL;
	*out = (uint32_t)x;
	return 0;
}

/* knobs each policy accepts, as a bit set over the names below */
enum {
	K_HI = 1, K_LO = 2, K_PRUNE = 4, K_QUANT = 8, K_WINDOW = 16,
	K_SCORE = 32, K_RATE = 64, K_INTERVAL = 128, K_SINKS = 256,
	K_TIER = 512, K_PROFILE = 1024, K_HADAMARD = 2048, K_TOPK = 4096,
	K_KNORM = 8192, K_DENSE = 16384,
	/* what a profile sets */
	K_FROM_PROFILE = K_HI | K_LO | K_PRUNE | K_QUANT | K_WINDOW | K_SCORE |
			 K_HADAMARD | K_SINKS | K_KNORM,
};

static const unsigned policy_knobs[LLM_POLICY_NR] = {
	[LLM_POLICY_FULL] = K_TOPK | K_DENSE,
	[LLM_POLICY_UNIFORM] = K_TIER | K_HADAMARD | K_KNORM,
	[LLM_POLICY_DIFFKV] = K_HI | K_LO | K_PRUNE | K_QUANT | K_WINDOW |
			      K_SCORE | K_PROFILE | K_HADAMARD | K_SINKS |
			      K_KNORM,
	[LLM_POLICY_KVCOMPRESS] = K_RATE | K_WINDOW | K_SCORE | K_INTERVAL |
				  K_SINKS,
};

static const struct {
	const char *name;
	unsigned bit;
} knob_names[] = {
	{ "hi", K_HI }, { "lo", K_LO }, { "prune", K_PRUNE },
	{ "quant", K_QUANT }, { "window", K_WINDOW }, { "score", K_SCORE },
	{ "rate", K_RATE }, { "interval", K_INTERVAL }, { "sinks", K_SINKS },
	{ "tier", K_TIER }, { "profile", K_PROFILE },
	{ "hadamard", K_HADAMARD }, { "topk", K_TOPK }, { "knorm", K_KNORM },
	{ "dense", K_DENSE },
};

/* one KEY=VALUE into @p; 0 or -EINVAL with a message */
static int parse_knob(struct llm_policy *p, char *kv, unsigned *seen,
		      char *err, size_t len)
{
	char *val = strchr(kv, '=');
	unsigned bit = 0;
	int ret = 0;

	if (!val || val == kv || !val[1])
		return perr(err, len, "policy %s: '%s' is not KEY=VALUE",
			    llm_policy_name(p->kind), kv);
	*val++ = '\0';
	for (size_t i = 0; i < sizeof(knob_names) / sizeof(knob_names[0]); i++)
		if (!strcmp(kv, knob_names[i].name))
			bit = knob_names[i].bit;
	if (!(bit & policy_knobs[p->kind]))
		return perr(err, len, "policy %s has no knob '%s'",
			    llm_policy_name(p->kind), kv);
	if ((bit == K_PROFILE && (*seen & K_FROM_PROFILE)) ||
	    ((bit & K_FROM_PROFILE) && (*seen & K_PROFILE)))
		return perr(err, len, "policy %s: knob '%s' and profile= "
			    "both given (the profile sets hi, lo, prune, "
			    "quant, window, score, hadamard, sinks and "
			    "knorm)",
			    llm_policy_name(p->kind), kv);
	if (bit & *seen)
		return perr(err, len, "policy %s: knob '%s' given twice",
			    llm_policy_name(p->kind), kv);
	*seen |= bit;
	switch (bit) {
	case K_PROFILE: {
		char why[240];

		if (llm_profile_read(val, p, why, sizeof(why)))
			return perr(err, len, "policy %s: %s",
				    llm_policy_name(p->kind), why);
		return 0;
	}
	case K_TIER:
	case K_HI:
		ret = llm_tier_parse(val, &p->hi);
		break;
	case K_LO:
		ret = llm_tier_parse(val, &p->lo);
		break;
	case K_PRUNE:
		ret = parse_float(val, 0.0f, 1.0f, &p->alpha_prune);
		break;
	case K_QUANT:
		ret = parse_float(val, 0.0f, 1e6f, &p->alpha_quant);
		break;
	case K_WINDOW:
		ret = parse_u32(val, 0, 1u << 20, &p->window);
		break;
	case K_SCORE:
		ret = parse_u32(val, 1, 1u << 16, &p->score_window);
		break;
	case K_RATE:
		ret = parse_float(val, 1.0f, 1e4f, &p->rate);
		break;
	case K_INTERVAL:
		ret = parse_u32(val, 1, 1u << 20, &p->interval);
		break;
	case K_SINKS:
		ret = parse_u32(val, 0, 1u << 20, &p->sinks);
		break;
	case K_TOPK:
		ret = parse_u32(val, 1, KVK_SELECT_MAX_PAGES, &p->topk);
		break;
	case K_HADAMARD:
		ret = parse_u32(val, 0, 1, &p->hadamard);
		break;
	case K_KNORM:
		ret = parse_u32(val, 0, 1, &p->knorm);
		break;
	case K_DENSE:
		ret = parse_u32(val, 0, 1024, &p->dense);
		break;
	}
	if (ret) {
		if (bit & (K_TIER | K_HI | K_LO))
			return perr(err, len, "policy %s: %s=%s: not a tier "
				    "(k<bits>[g<groups>]v<bits>[g<groups>], "
				    "bits 1, 2, 4, 8 or 16, groups 1, 2 or 4, "
				    "or fp16)", llm_policy_name(p->kind), kv,
				    val);
		return perr(err, len, "policy %s: %s=%s is out of range",
			    llm_policy_name(p->kind), kv, val);
	}
	return 0;
}

/* rules between knobs (DiffKV's vllm/sequence.py, and ours) */
static int policy_valid(const struct llm_policy *p, char *err, size_t len)
{
	if (p->kind == LLM_POLICY_DIFFKV) {
		if (p->alpha_quant < p->alpha_prune)
			return perr(err, len, "policy diffkv: quant=%g is "
				    "below prune=%g", p->alpha_quant,
				    p->alpha_prune);
		if (p->lo.kbits > p->hi.kbits || p->lo.vbits > p->hi.vbits)
			return perr(err, len, "policy diffkv: the low tier "
				    "has more key or value bits than the high "
				    "tier");
	}
	if (p->dense && !p->topk)
		return perr(err, len, "policy full: dense=%u needs topk (the "
			    "layers that attend densely while the others "
			    "select)", p->dense);
	if (p->kind == LLM_POLICY_UNIFORM && p->hi.kbits == 16 &&
	    p->hi.vbits == 16)
		return perr(err, len, "policy uniform: fp16 is the full "
			    "policy");
	return 0;
}

/**
 * llm_policy_parse() - a policy from NAME[:KEY=VALUE,...]
 * @spec: e.g. "diffkv:prune=0.05,quant=1.5", "uniform:tier=k4v4",
 *	"kvcompress:rate=4"
 * @out: filled only on success
 * @err: a one-line reason on failure (may be NULL)
 * @errlen: bytes of @err
 *
 * Knobs: diffkv hi, lo, prune, quant, window, score, hadamard, sinks,
 * knorm, or profile=FILE for all of these from a profile
 * (llm_profile_read(); FILE without ','); uniform tier, hadamard, knorm;
 * kvcompress rate, window, score, interval, sinks; full topk, dense. Unknown names
 * and knobs, empty or repeated knobs, values out of range and inconsistent
 * knobs are refused.
 *
 * Return: 0 or -EINVAL.
 */
int llm_policy_parse(const char *spec, struct llm_policy *out, char *err,
		     size_t errlen)
{
	char buf[LLM_POLICY_SPEC_MAX + 1], *knobs, *kv, *next;
	struct llm_policy p;
	unsigned seen = 0;
	int kind = -1, ret;

	if (!spec || strlen(spec) > LLM_POLICY_SPEC_MAX)
		return perr(err, errlen, "policy: missing or longer than %d "
			    "characters", LLM_POLICY_SPEC_MAX);
	strcpy(buf, spec);
	knobs = strchr(buf, ':');
	if (knobs)
		*knobs++ = '\0';
	for (int k = 0; k < LLM_POLICY_NR; k++)
		if (!strcmp(buf, policy_names[k]))
			kind = k;
	if (kind < 0)
		return perr(err, errlen, "unknown policy '%s' (full, uniform, "
			    "diffkv, kvcompress)", buf);
	llm_policy_default(kind, &p);
	if (knobs) {
		if (!*knobs)
			return perr(err, errlen, "policy %s: empty knob list",
				    buf);
		for (kv = knobs; kv; kv = next) {
			next = strchr(kv, ',');
			if (next)
				*next++ = '\0';
			if (!*kv)
				return perr(err, errlen, "policy %s: empty "
					    "knob in '%s'", buf, spec);
			ret = parse_knob(&p, kv, &seen, err, errlen);
			if (ret)
				return ret;
		}
		if (p.kind != LLM_POLICY_DIFFKV)
			p.lo = p.hi;
	}
	ret = policy_valid(&p, err, errlen);
	if (ret)
		return ret;
	*out = p;
	return 0;
}

/**
 * llm_policy_format() - the canonical spec of @p, every knob written (but
 * hadamard, knorm and diffkv's sinks, written only when set, so that
 * specs without them read as before)
 * @p: policy
 * @buf: out
 * @len: bytes of @buf
 *
 * llm_policy_parse() of the result gives @p back.
 *
 * Return: characters written (snprintf), or -EINVAL.
 */
int llm_policy_format(const struct llm_policy *p, char *buf, size_t len)
{
	char hi[24], lo[24], rot[40] = "", snk[24] = "";

	if ((unsigned)p->kind >= LLM_POLICY_NR ||
	    llm_tier_format(&p->hi, hi, sizeof(hi)) < 0 ||
	    llm_tier_format(&p->lo, lo, sizeof(lo)) < 0)
		return -EINVAL;
	snprintf(rot, sizeof(rot), "%s%s", p->hadamard ? ",hadamard=1" : "",
		 p->knorm ? ",knorm=1" : "");
	if (p->sinks)
		snprintf(snk, sizeof(snk), ",sinks=%u", p->sinks);
	switch (p->kind) {
	case LLM_POLICY_UNIFORM:
		return snprintf(buf, len, "uniform:tier=%s%s", hi, rot);
	case LLM_POLICY_DIFFKV:
		return snprintf(buf, len, "diffkv:hi=%s,lo=%s,prune=%g,"
				"quant=%g,window=%u,score=%u%s%s", hi, lo,
				p->alpha_prune, p->alpha_quant, p->window,
				p->score_window, rot, snk);
	case LLM_POLICY_KVCOMPRESS:
		return snprintf(buf, len, "kvcompress:rate=%g,window=%u,"
				"score=%u,interval=%u,sinks=%u", p->rate,
				p->window, p->score_window, p->interval,
				p->sinks);
	default:
		if (p->topk && p->dense)
			return snprintf(buf, len, "full:topk=%u,dense=%u",
					p->topk, p->dense);
		if (p->topk)
			return snprintf(buf, len, "full:topk=%u", p->topk);
		return snprintf(buf, len, "full");
	}
}
