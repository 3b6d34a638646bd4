/*
 * fc_transpose16.h - a 16 x 16 float32 transpose in AVX-512 registers.
 *
 * Shared by the GEMM's one-column kernel (fc_ukernels.c: rows of A as columns)
 * and grad_weight's NHWC rows (fc_conv_grad_weight.c). A copy: the bits of
 * whatever is built from it do not depend on it. Include after immintrin.h,
 * inside #if FC_X86_SIMD.
 */
#ifndef FC_TRANSPOSE16_H
#define FC_TRANSPOSE16_H

/* r[i] = row i of a 16x16 block -> r[c] = column c (lane i = row i). */
__attribute__((target("avx512f,avx2,fma")))
static inline void fc_transpose16_avx512(__m512 r[16])
{
    __m512 t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    /* then r[4g + j], 128-bit lane L = rows 4g..4g+3 of column 4L + j */
    for (int i = 0; i < 16; i += 4) {
        r[i] = _mm512_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
        r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
        r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
        r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    /* column 4L + j = lane L of r[j], r[4 + j], r[8 + j], r[12 + j] */
    for (int j = 0; j < 4; ++j) {
        const __m512 u0 = _mm512_shuffle_f32x4(r[j], r[4 + j], 0x44);
        const __m512 u1 = _mm512_shuffle_f32x4(r[j], r[4 + j], 0xEE);
        const __m512 v0 = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0x44);
        const __m512 v1 = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0xEE);
        t[j] = _mm512_shuffle_f32x4(u0, v0, 0x88);
        t[4 + j] = _mm512_shuffle_f32x4(u0, v0, 0xDD);
        t[8 + j] = _mm512_shuffle_f32x4(u1, v1, 0x88);
        t[12 + j] = _mm512_shuffle_f32x4(u1, v1, 0xDD);
    }
    for (int i = 0; i < 16; ++i) r[i] = t[i];
}

#endif /* FC_TRANSPOSE16_H */
