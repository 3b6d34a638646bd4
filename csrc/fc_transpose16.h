/*
 * fc_transpose16.h - a 16 x 16 float32 transpose in AVX-512 registers.
 *
 * Shared by the GEMM's one-column kernel (fc_ukernels.c: rows of A as columns),
 * grad_weight's NHWC rows (fc_conv_grad_weight.c), Winograd grad_weight's
 * channels-last dY (fc_winograd_grad_weight.c) and the image-lanes moves
 * (fc_lanes.h). A copy: the bits of whatever is built from it do not depend on
 * it. Include after fc_internal.h and immintrin.h, inside #if FC_X86_SIMD.
 * Compiled for FC_TGT_AVX512, the smallest target of its callers: a function
 * whose target adds features (fma) is not inlined into a caller without them,
 * and 16 vectors then go through memory on every call (measured: Winograd
 * grad_weight of a 64 -> 64 3x3 layer at 56x56, 8 images: 6.5 -> 5.1 ms).
 */
#ifndef FC_TRANSPOSE16_H
#define FC_TRANSPOSE16_H

/* r[i] = row i of a 16x16 block -> r[c] = column c (lane i = row i). */
FC_TGT_AVX512 static inline void fc_transpose16_avx512(__m512 r[16])
{
    __m512 a[16], b[16];
    for (int i = 0; i < 16; i += 2) {
        /* per 128-bit lane: rows i, i+1 of columns 0, 1 (lo) and 2, 3 (hi) */
        a[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        a[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int g = 0; g < 16; g += 4) {                 /* rows g..g+3 of column t + 4 * lane */
        b[g] = _mm512_shuffle_ps(a[g], a[g + 2], 0x44);
        b[g + 1] = _mm512_shuffle_ps(a[g], a[g + 2], 0xEE);
        b[g + 2] = _mm512_shuffle_ps(a[g + 1], a[g + 3], 0x44);
        b[g + 3] = _mm512_shuffle_ps(a[g + 1], a[g + 3], 0xEE);
    }
    /* the last stage writes r itself (through a temporary array it was 4-5%
     * slower in the image-lanes routes, whose moves are all transposes) */
    for (int t = 0; t < 4; ++t) {
        const __m512 c0 = _mm512_shuffle_f32x4(b[t], b[4 + t], 0x88);
        const __m512 c1 = _mm512_shuffle_f32x4(b[t], b[4 + t], 0xDD);
        const __m512 c2 = _mm512_shuffle_f32x4(b[8 + t], b[12 + t], 0x88);
        const __m512 c3 = _mm512_shuffle_f32x4(b[8 + t], b[12 + t], 0xDD);
        r[t] = _mm512_shuffle_f32x4(c0, c2, 0x88);
        r[t + 8] = _mm512_shuffle_f32x4(c0, c2, 0xDD);
        r[t + 4] = _mm512_shuffle_f32x4(c1, c3, 0x88);
        r[t + 12] = _mm512_shuffle_f32x4(c1, c3, 0xDD);
    }
}

#endif /* FC_TRANSPOSE16_H */
