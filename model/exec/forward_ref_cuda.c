// SPDX-License-Identifier: MIT
/*
 * forward_ref_cuda.c - CPU references of the CUDA executor's own kernels
 * (forward_cuda.cu), same signatures, host pointers. Built with CUDA only,
 * for the GPU suite that compares the two.
 */
#include <errno.h>
#include <math.h>
#include <string.h>

#include "forward_cuda.h"

#define HD_MAX 256

static uint8_t *page_at(const struct llm_kvpages *p, uint32_t list,
			uint32_t tok)
{
	uint32_t pg = p->tables[(size_t)list * p->width + tok / p->tokens];

	return (uint8_t *)(uintptr_t)(p->pool +
				      (uint64_t)(pg / p->ppg) * (2ULL << 20) +
				      (uint64_t)(pg % p->ppg) * p->page_size);
}

static int kvpages_check(const struct llm_kvpages *p)
{
	if (!p || !p->pool || !p->tables || !p->tokens || !p->ppg ||
	    !p->width || !p->n_kv || !p->head_dim || p->head_dim % 32 ||
	    p->head_dim > HD_MAX)
		return -EINVAL;
	return 0;
}

/* rotate the pairs (x[i], x[i + hd/2]) of one head by pos * inv_freq[i] */
static void rope_head(const float *x, float *out, int hd, int32_t pos,
		      const float *inv_freq)
{
	int half = hd / 2;

	for (int i = 0; i < half; i++) {
		float ang = (float)pos * inv_freq[i];
		float c = cosf(ang), sn = sinf(ang);
		float x0 = x[i], x1 = x[i + half];

		out[i] = x0 * c - x1 * sn;
		out[i + half] = x1 * c + x0 * sn;
	}
}

/**
 * llm_kv_store_cpu() - reference of llm_kv_store_cuda(), host memory
 * @p: the pages
 * @k: keys, [ntok] rows, @ld floats apart
 * @v: values
 * @ld: row stride, floats
 * @pos: [ntok] positions
 * @list: [ntok] list of kv-head 0, less @list_add
 * @list_add: added to each @list entry
 * @ntok: tokens
 * @q: NULL or [ntok][n_heads][head_dim] fp32 queries: converted to fp16
 *	into @qh, else rotated in place
 * @qh: NULL or the fp16 queries out
 * @n_heads: query heads
 * @inv_freq: NULL or [head_dim / 2] rotary frequencies: keys and queries
 *	rotated first
 * @stream: ignored
 *
 * Return: 0 or -EINVAL.
 */
int llm_kv_store_cpu(const struct llm_kvpages *p, const float *k,
		     const float *v, long ld, const int32_t *pos,
		     const uint32_t *list, uint32_t list_add, int ntok,
		     float *q, void *qh, int n_heads, const float *inv_freq,
		     void *stream)
{
	float kr[HD_MAX], qr[HD_MAX];
	uint32_t hd;
	int ret = kvpages_check(p);

	(void)stream;
	if (ret || ntok < 0 || !k || !v || !pos || !list)
		return ret ? ret : -EINVAL;
	if (q && ((!qh && !inv_freq) || n_heads < 1 || n_heads % p->n_kv))
		return -EINVAL;
	hd = p->head_dim;
	for (int t = 0; q && t < ntok; t++)
		for (int h = 0; h < n_heads; h++) {
			size_t o = ((size_t)t * n_heads + h) * hd;

			if (inv_freq)
				rope_head(q + o, qr, hd, pos[t], inv_freq);
			else
				memcpy(qr, q + o, hd * 4);
			if (qh)
				kvk_convert_from_f32((uint8_t *)qh + o * 2, qr,
						     hd, KVK_F16);
			else
				memcpy(q + o, qr, hd * 4);
		}
	for (int t = 0; t < ntok; t++) {
		uint32_t ps = (uint32_t)pos[t], slot = ps % p->tokens;
		float zero = 0.0f;

		for (uint32_t h = 0; h < p->n_kv; h++) {
			uint8_t *pg = page_at(p, list[t] + list_add + h, ps);
			const float *ks = k + t * ld + h * hd;

			if (inv_freq)
				rope_head(ks, kr, hd, pos[t], inv_freq);
			else
				memcpy(kr, ks, hd * 4);
			kvk_convert_from_f32(pg + p->k_off + (size_t)slot *
						     hd * 2, kr, hd, KVK_F16);
			kvk_convert_from_f32(pg + p->v_off + (size_t)slot *
						     hd * 2,
					     v + t * ld + h * hd, hd, KVK_F16);
			memcpy(pg + p->pos_off + 4 * slot, &pos[t], 4);
			memcpy(pg + p->score_off + 4 * slot, &zero, 4);
		}
	}
	return 0;
}

/**
 * llm_attn_prefill_cpu() - reference of llm_attn_prefill_cuda(), host
 * memory: a plain two-pass softmax in fp32
 * @p: the pages
 * @q: [ntok][n_heads][head_dim] fp32
 * @pos: [ntok] positions
 * @list: [ntok] list of kv-head 0, less @list_add
 * @list_add: added to each @list entry
 * @ntok: tokens
 * @n_heads: query heads, a multiple of p->n_kv
 * @scale: softmax scale
 * @out: [ntok][n_heads][head_dim] of @dt
 * @dt: dtype of @out
 * @stream: ignored
 *
 * Return: 0 or -EINVAL.
 */
int llm_attn_prefill_cpu(const struct llm_kvpages *p, const float *q,
			 const int32_t *pos, const uint32_t *list,
			 uint32_t list_add, int ntok, int n_heads, float scale,
			 void *out, enum kvk_dtype dt, void *stream)
{
	float kf[HD_MAX], vf[HD_MAX], o[HD_MAX];
	int ret = kvpages_check(p);
	size_t es = kvk_dtype_size(dt);

	(void)stream;
	if (ret)
		return ret;
	if (ntok < 0 || n_heads < 1 || n_heads % p->n_kv || !q || !pos ||
	    !list || !out || !es)
		return -EINVAL;
	for (int t = 0; t < ntok; t++) {
		for (int h = 0; h < n_heads; h++) {
			uint32_t hd = p->head_dim, n = pos[t] + 1;
			uint32_t li = list[t] + list_add +
				      h / (n_heads / p->n_kv);
			const float *qr = q + ((size_t)t * n_heads + h) * hd;
			float mx = -INFINITY, sum = 0.0f;

			for (uint32_t j = 0; j < n; j++) {
				const uint8_t *pg = page_at(p, li, j);
				float s = 0.0f;

				kvk_convert_to_f32(kf, pg + p->k_off +
						   (size_t)(j % p->tokens) *
							   hd * 2, hd, KVK_F16);
				for (uint32_t i = 0; i < hd; i++)
					s += qr[i] * kf[i];
				s *= scale;
				mx = s > mx ? s : mx;
			}
			memset(o, 0, sizeof(o));
			for (uint32_t j = 0; j < n; j++) {
				const uint8_t *pg = page_at(p, li, j);
				size_t off = (size_t)(j % p->tokens) * hd * 2;
				float s = 0.0f, e;

				kvk_convert_to_f32(kf, pg + p->k_off + off, hd,
						   KVK_F16);
				kvk_convert_to_f32(vf, pg + p->v_off + off, hd,
						   KVK_F16);
				for (uint32_t i = 0; i < hd; i++)
					s += qr[i] * kf[i];
				e = expf(s * scale - mx);
				sum += e;
				for (uint32_t i = 0; i < hd; i++)
					o[i] += e * vf[i];
			}
			for (uint32_t i = 0; i < hd; i++)
				o[i] /= sum;
			kvk_convert_from_f32((uint8_t *)out +
					     ((size_t)t * n_heads + h) * hd * es,
					     o, hd, dt);
		}
	}
	return 0;
}

/**
 * llm_convert_cpu() - reference of llm_convert_cuda()
 * @dst: @n elements of @ddt
 * @ddt: destination dtype
 * @src: @n elements of @sdt
 * @sdt: source dtype
 * @n: elements
 * @stream: ignored
 *
 * Return: 0 or -EINVAL.
 */
int llm_convert_cpu(void *dst, enum kvk_dtype ddt, const void *src,
		    enum kvk_dtype sdt, size_t n, void *stream)
{
	float buf[256];
	size_t ds = kvk_dtype_size(ddt), ss = kvk_dtype_size(sdt);

	(void)stream;
	if (!dst || !src || !ds || !ss)
		return -EINVAL;
	for (size_t i = 0; i < n; i += 256) {
		size_t c = n - i < 256 ? n - i : 256;

		kvk_convert_to_f32(buf, (const uint8_t *)src + i * ss, c, sdt);
		kvk_convert_from_f32((uint8_t *)dst + i * ds, buf, c, ddt);
	}
	return 0;
}

/**
 * llm_split_cpu() - reference of llm_split_cuda()
 * @hi: @n elements of @dt
 * @lo: @n elements of @dt
 * @dt: KVK_F16 or KVK_BF16
 * @src: @n fp32
 * @n: elements
 * @stream: ignored
 *
 * Return: 0 or -EINVAL.
 */
int llm_split_cpu(void *hi, void *lo, enum kvk_dtype dt, const float *src,
		  size_t n, void *stream)
{
	(void)stream;
	if (!hi || !lo || !src || (dt != KVK_F16 && dt != KVK_BF16))
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		float h, r;

		kvk_convert_from_f32((uint8_t *)hi + 2 * i, &src[i], 1, dt);
		kvk_convert_to_f32(&h, (uint8_t *)hi + 2 * i, 1, dt);
		r = src[i] - h;
		kvk_convert_from_f32((uint8_t *)lo + 2 * i, &r, 1, dt);
	}
	return 0;
}

/**
 * llm_bias_add_cpu() - reference of llm_bias_add_cuda()
 * @y: [rows][n]
 * @b: [n]
 * @rows: rows
 * @n: row length; > 0
 * @stream: ignored
 *
 * Return: 0 or -EINVAL.
 */
int llm_bias_add_cpu(float *y, const float *b, int rows, int n, void *stream)
{
	(void)stream;
	if (!y || !b || rows < 0 || n < 1)
		return -EINVAL;
	for (size_t r = 0; r < (size_t)rows; r++)
		for (int i = 0; i < n; i++)
			y[r * n + i] += b[i];
	return 0;
}

/* row @r of the GEMV for token @t: the lane sums, then the butterfly */
static float gemv_row(const uint8_t *wr, enum kvk_dtype wdt, const void *x,
		      enum kvk_dtype xdt, long off, int k, const float *nw,
		      float eps)
{
	float f[8], lane[32], ss[32], xe[8];

	for (int l = 0; l < 32; l++) {
		lane[l] = ss[l] = 0.0f;
		for (int c = l * 8; c < k; c += 256) {
			kvk_convert_to_f32(f, wr + c * 2, 8, wdt);
			kvk_convert_to_f32(xe, (const uint8_t *)x +
					       (off + c) * kvk_dtype_size(xdt),
					   8, xdt);
			for (int i = 0; i < 8; i++) {
				if (nw) {
					ss[l] += xe[i] * xe[i];
					xe[i] *= nw[c + i];
				}
			}
			lane[l] += f[0] * xe[0] + f[1] * xe[1] +
				   f[2] * xe[2] + f[3] * xe[3] +
				   f[4] * xe[4] + f[5] * xe[5] +
				   f[6] * xe[6] + f[7] * xe[7];
		}
	}
	for (int d = 16; d > 0; d /= 2) {
		float nl[32], ns[32];

		for (int l = 0; l < 32; l++) {
			nl[l] = lane[l] + lane[l ^ d];
			ns[l] = ss[l] + ss[l ^ d];
		}
		memcpy(lane, nl, sizeof(nl));
		memcpy(ss, ns, sizeof(ns));
	}
	return nw ? lane[0] * (1.0f / sqrtf(ss[0] / k + eps)) : lane[0];
}

/**
 * llm_gemv_cpu() - reference of llm_gemv_cuda(), host memory, the same
 * order of fp32 additions (lane slices, then a butterfly over 32 lanes)
 * @w: [n][k] weights of @wdt
 * @wdt: KVK_F16 or KVK_BF16
 * @x: [ntok][k] activations of @xdt, @ldx elements apart
 * @xdt: KVK_F32 or KVK_F16
 * @ldx: elements between tokens
 * @ntok: tokens, 0..LLM_GEMV_MAX_TOK
 * @n: rows
 * @k: columns, a multiple of 8
 * @nw: NULL or [k] RMSNorm weights applied to x first
 * @eps: RMSNorm epsilon
 * @o: outputs per row segment; with @o->glu, silu(row i) * row (n/2 + i)
 * @beta: 0 or the factor of the old outputs
 * @stream: ignored
 *
 * Return: 0 or -EINVAL.
 */
int llm_gemv_cpu(const void *w, enum kvk_dtype wdt, const void *x,
		 enum kvk_dtype xdt, long ldx, int ntok, int n, int k,
		 const float *nw, float eps, const struct llm_gemv_out *o,
		 float beta, void *stream)
{
	int prev = 0, rows;

	(void)stream;
	if (!w || !x || !o || (wdt != KVK_F16 && wdt != KVK_BF16) ||
	    (xdt != KVK_F32 && xdt != KVK_F16) || ntok < 0 ||
	    ntok > LLM_GEMV_MAX_TOK || n < 1 || k < 8 || k % 8 || ldx < k ||
	    ldx % (xdt == KVK_F32 ? 4 : 8) || o->n_seg < 1 ||
	    o->n_seg > LLM_GEMV_MAX_SEG ||
	    o->end[o->n_seg - 1] != (o->glu ? n / 2 : n) ||
	    (o->glu && (n % 2 || o->n_seg != 1)))
		return -EINVAL;
	for (int s = 0; s < o->n_seg; s++) {
		if (!o->y[s] || o->end[s] <= prev ||
		    o->ld[s] < o->end[s] - prev)
			return -EINVAL;
		prev = o->end[s];
	}
	rows = o->glu ? n / 2 : n;
	for (int r = 0, s = 0, r0 = 0; r < rows; r++) {
		const uint8_t *wr = (const uint8_t *)w + (size_t)r * k * 2;

		while (r >= o->end[s])
			r0 = o->end[s++];
		for (int t = 0; t < ntok; t++) {
			float *y = o->y[s] + (r - r0) + t * o->ld[s];
			float v = gemv_row(wr, wdt, x, xdt, t * ldx, k, nw,
					   eps);

			if (o->glu) {
				float up = gemv_row(wr + (size_t)rows * k * 2,
						    wdt, x, xdt, t * ldx, k,
						    nw, eps);

				v = v / (1.0f + expf(-v)) * up;
			}
			*y = beta == 0.0f ? v : v + beta * *y;
		}
	}
	return 0;
}
