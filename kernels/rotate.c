// SPDX-License-Identifier: MIT
/*
 * rotate.c - the normalised Walsh-Hadamard rotation of rows, CPU reference
 * of kvk_hadamard_cuda() (rotate.cu).
 *
 * DOC: Hadamard rotation
 *
 * H_d / sqrt(d) (d a power of two) is orthogonal and its own inverse, so
 * rotating a head's keys and its queries leaves every q.k unchanged, and
 * rotating its values rotates the attention output, which the same
 * rotation undoes. Outlier channels of K and V are spread over all d
 * coordinates, so a per-token quantizer's scale follows the whole row
 * rather than its largest channel (QuaRot, arXiv 2404.00456). The fast
 * transform runs log2(d) butterfly stages; stage h pairs element i with
 * i + h (i with bit h clear) into (a + b, a - b); the result is scaled by
 * 1 / sqrt(d) once. Both backends do the same additions in the same order
 * in fp32, so in fp32 they agree to the last bit.
 */
#include <math.h>

#include "kvk_internal.h"

static void fwht_row(float *x, uint32_t d)
{
	for (uint32_t h = 1; h < d; h <<= 1)
		for (uint32_t p = 0; p < d / 2; p++) {
			uint32_t i = (p / h) * 2 * h + p % h;
			float a = x[i], b = x[i + h];

			x[i] = a + b;
			x[i + h] = a - b;
		}
}

/**
 * kvk_hadamard_cpu() - x[r] = H x[r] / sqrt(dim), in place, per row
 * @x: @rows rows of @dim elements of @dt, packed
 * @dt: dtype of @x; computed in fp32, stored rounded to @dt
 * @rows: rows; 0 is a no-op
 * @dim: a power of two, 2 to KVK_HADAMARD_MAX_DIM
 * @stream: ignored
 *
 * Return: 0 or -EINVAL.
 */
int kvk_hadamard_cpu(void *x, enum kvk_dtype dt, size_t rows, uint32_t dim,
		     void *stream)
{
	float buf[KVK_HADAMARD_MAX_DIM], s;
	size_t es = kvk_dtype_size(dt);

	(void)stream;
	if (!x || !es || dim < 2 || dim > KVK_HADAMARD_MAX_DIM ||
	    (dim & (dim - 1)))
		return -EINVAL;
	s = 1.0f / sqrtf((float)dim);
	for (size_t r = 0; r < rows; r++) {
		uint8_t *row = (uint8_t *)x + r * dim * es;

		kvk_convert_to_f32(buf, row, dim, dt);
		fwht_row(buf, dim);
		for (uint32_t e = 0; e < dim; e++)
			buf[e] *= s;
		kvk_convert_from_f32(row, buf, dim, dt);
	}
	return 0;
}
