/* SPDX-License-Identifier: MIT */
/*
 * evalstat.h - what an evaluation can claim: the spread of a policy's
 * perplexity change over chunks (mean and 95% interval), and text kept
 * apart for calibration and for evaluation.
 *
 * Used by `kvmm eval ppl|sweep|calibrate` (tools/eval.c); see
 * Documentation/policies/index.rst, "Evaluations".
 */
#ifndef LLM_EVALSTAT_H
#define LLM_EVALSTAT_H

#include <stddef.h>
#include <stdint.h>

/**
 * struct llm_eval_spread - mean and 95% interval of per-chunk values
 * @n: values (chunks)
 * @mean: their mean
 * @sd: their sample standard deviation (n - 1 in the denominator); 0 when
 *	@n < 2
 * @half: half width of the two-sided 95% interval of the mean, Student's
 *	t with @n - 1 degrees of freedom times sd / sqrt(n); NAN when @n < 2
 * @lo: @mean - @half
 * @hi: @mean + @half
 *
 * Plain value. The chunks are taken as independent draws of the text, so
 * the interval says how far the mean over this text may be from the mean
 * over text like it.
 */
struct llm_eval_spread {
	uint32_t n;
	double mean;
	double sd;
	double half;
	double lo;
	double hi;
};

int llm_eval_spread(const double *x, uint32_t n, struct llm_eval_spread *s);
double llm_eval_t975(uint32_t df);

/* which part of a text an evaluation reads (llm_eval_split()) */
enum llm_eval_part {
	LLM_EVAL_ALL = 0,	/* the whole text */
	LLM_EVAL_CALIB,		/* calibration: the first split % */
	LLM_EVAL_TEST,		/* the evaluation part: the rest */
};

/**
 * struct llm_eval_range - tokens [@first, @first + @n) of a text
 * @first: index of the first token
 * @n: tokens
 */
struct llm_eval_range {
	size_t first;
	size_t n;
};

int llm_eval_split(size_t ntok, uint32_t split_pct, enum llm_eval_part part,
		   struct llm_eval_range *r);
uint64_t llm_eval_chunks_fit(const struct llm_eval_range *r,
			     uint64_t context);
const char *llm_eval_part_name(enum llm_eval_part part);

#endif /* LLM_EVALSTAT_H */
