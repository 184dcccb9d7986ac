// SPDX-License-Identifier: MIT
/*
 * evalstat.c - spread over chunks and calibration / evaluation split
 * (evalstat.h).
 *
 * DOC: split
 *
 * One text serves both calibration and evaluation only split: with
 * --split S, its first floor(n * S / 100) tokens are the calibration part
 * and the rest the evaluation part. Chunks are read consecutively from the
 * start of a part and never cross its end, so no token a calibration
 * scored is scored by an evaluation of the same split.
 */
#include <errno.h>
#include <math.h>

#include "evalstat.h"

/* Student's t, two-sided 95% (0.975 quantile), 1..30 degrees of freedom */
static const double t975[30] = {
	12.7062047, 4.30265273, 3.18244631, 2.77644511, 2.57058184,
	2.44691185, 2.36462425, 2.30600414, 2.26215716, 2.22813885,
	2.20098516, 2.17881283, 2.16036866, 2.14478669, 2.13144955,
	2.11990530, 2.10981558, 2.10092204, 2.09302405, 2.08596345,
	2.07961384, 2.07387307, 2.06865761, 2.06389856, 2.05953855,
	2.05552944, 2.05183052, 2.04840714, 2.04522964, 2.04227246,
};

/**
 * llm_eval_t975() - the 0.975 quantile of Student's t
 * @df: degrees of freedom, >= 1
 *
 * Tabulated to 30 degrees of freedom; beyond, the Cornish-Fisher expansion
 * about the normal quantile (within 1e-4 of the exact value).
 *
 * Return: the quantile, or NAN for @df 0.
 */
double llm_eval_t975(uint32_t df)
{
	const double z = 1.959963985;
	double z3 = z * z * z, z5 = z3 * z * z, d = df;

	if (!df)
		return NAN;
	if (df <= 30)
		return t975[df - 1];
	return z + (z3 + z) / (4 * d) + (5 * z5 + 16 * z3 + 3 * z) /
		   (96 * d * d);
}

/**
 * llm_eval_spread() - mean and 95% interval of @n values
 * @x: the values (each chunk's perplexity change, say)
 * @n: how many, >= 1
 * @s: filled
 *
 * Return: 0, or -EINVAL for no values or one that is not finite.
 */
int llm_eval_spread(const double *x, uint32_t n, struct llm_eval_spread *s)
{
	double sum = 0, ss = 0;

	if (!x || !n || !s)
		return -EINVAL;
	for (uint32_t i = 0; i < n; i++) {
		if (!isfinite(x[i]))
			return -EINVAL;
		sum += x[i];
	}
	s->n = n;
	s->mean = sum / n;
	for (uint32_t i = 0; i < n; i++)
		ss += (x[i] - s->mean) * (x[i] - s->mean);
	s->sd = n > 1 ? sqrt(ss / (n - 1)) : 0;
	s->half = n > 1 ? llm_eval_t975(n - 1) * s->sd / sqrt((double)n)
			: NAN;
	s->lo = s->mean - s->half;
	s->hi = s->mean + s->half;
	return 0;
}

/**
 * llm_eval_split() - the tokens of one part of a text
 * @ntok: tokens of the whole text
 * @split_pct: percent of them in the calibration part, 1..99; ignored for
 *	LLM_EVAL_ALL
 * @part: which part
 * @r: filled: calibration [0, b), evaluation [b, @ntok), b = floor(@ntok *
 *	@split_pct / 100); all [0, @ntok)
 *
 * Return: 0, or -EINVAL for a split out of range or an unknown part.
 */
int llm_eval_split(size_t ntok, uint32_t split_pct, enum llm_eval_part part,
		   struct llm_eval_range *r)
{
	size_t b;

	if (part == LLM_EVAL_ALL) {
		*r = (struct llm_eval_range){ 0, ntok };
		return 0;
	}
	if (split_pct < 1 || split_pct > 99 ||
	    (part != LLM_EVAL_CALIB && part != LLM_EVAL_TEST))
		return -EINVAL;
	b = (size_t)((uint64_t)ntok * split_pct / 100);
	if (part == LLM_EVAL_CALIB)
		*r = (struct llm_eval_range){ 0, b };
	else
		*r = (struct llm_eval_range){ b, ntok - b };
	return 0;
}

/**
 * llm_eval_chunks_fit() - consecutive chunks of @context tokens that fit in
 * @r
 * @r: the part
 * @context: tokens per chunk, >= 1
 *
 * Return: how many; 0 for a zero @context.
 */
uint64_t llm_eval_chunks_fit(const struct llm_eval_range *r,
			     uint64_t context)
{
	return context ? r->n / context : 0;
}

/**
 * llm_eval_part_name() - "all", "calibration" or "evaluation"
 * @part: part
 *
 * Return: the name, "?" for an unknown part.
 */
const char *llm_eval_part_name(enum llm_eval_part part)
{
	switch (part) {
	case LLM_EVAL_ALL:
		return "all";
	case LLM_EVAL_CALIB:
		return "calibration";
	case LLM_EVAL_TEST:
		return "evaluation";
	}
	return "?";
}
