/*
 * fc_winograd_rows.h - the Winograd F(2x2, 5x5) input and output transforms of
 * one tile row, vectorised across the tiles of the row (RL lanes). Included by
 * fc_winograd.c with RL and name set.
 */
/*
 * Input transform of one channel for up to RL tiles side by side in one tile
 * row: the patch of tile q starts at src + 2q (row pitch ld). The even and odd
 * columns are split first, so that both passes run on unit-stride lane arrays.
 * Reads up to 2*RL + 4 values past the last patch (the caller's slack). V point
 * p of tile q < nq goes to dst[p * sp + q].
 *
 * A narrow layer (nq <= WINO_PAIR_MAX tiles per row, e.g. 7 for a 14-wide
 * output) would leave most lanes idle: then src2, if not NULL, is a second
 * tile row of nq tiles, worked on in lanes WINO_PAIR_OFF.. (its patches need
 * columns up to 2*nq + 3, which must not overlap the first row's), and its V
 * goes to dst[p * sp + nq + q].
 *
 * Whole lane arrays are stored (one vector per point), the lanes past the
 * row's (or pair's) tiles as exact zeros: the caller leaves RL columns of room
 * after each point and writes tiles left to right, and grad-weight sums over
 * those spare columns.
 */
/* the parameters of every variant of the input transform below */
#define WINO_IN_ROW_PARAMS                                                          \
    (const float *FC_RESTRICT src, const float *FC_RESTRICT src2, ptrdiff_t ld, int nq, \
     float *FC_RESTRICT dst, ptrdiff_t sp)
#if WINO_VEC16 && RL == 16
FC_ALWAYS_INLINE void wino_in_row_vec WINO_IN_ROW_PARAMS
{
    /*
     * Whole-vector version. Lane q needs the even/odd column arrays at lanes q,
     * q+1 and q+2, i.e. lanes 0..17: kept as a low vector (lanes 0..15), a high
     * vector (lanes 2..17) and, for the middle, a one-lane shift built from both.
     * No scalar remainder anywhere (the plain C form ran lanes 16..17 scalar).
     */
    wino_v16 el[6], eh[6], ol[6], oh[6];
    /* lanes 0..nq-1 stay, a second row's lanes 9.. follow them, the rest become
     * exact zeros (lane 16 = the zero vector's): grad-weight sums over these
     * columns, so spare columns must hold no stale or non-finite values */
    wino_i16 pack;
    const int used = src2 ? 2 * nq : nq;
    for (int l = 0; l < 16; ++l)
        pack[l] = l < nq ? l : (l < used ? WINO_PAIR_OFF + l - nq : 16);
    const wino_v16 zero = {0};
    for (int i = 0; i < 6; ++i) {
        const float *sa = src + i * ld;
        wino_v16 a0, a1;
        memcpy(&a0, sa, sizeof a0);
        memcpy(&a1, sa + 16, sizeof a1);
        const wino_v16 e = __builtin_shuffle(a0, a1, WINO_EVEN);
        const wino_v16 od_ = __builtin_shuffle(a0, a1, WINO_ODD);
        if (src2) {
            const float *sb = src2 + i * ld;
            wino_v16 b0, b1;
            memcpy(&b0, sb, sizeof b0);
            memcpy(&b1, sb + 16, sizeof b1);
            const wino_v16 e2 = __builtin_shuffle(b0, b1, WINO_EVEN);
            const wino_v16 o2 = __builtin_shuffle(b0, b1, WINO_ODD);
            el[i] = __builtin_shuffle(e, e2, WINO_JOIN);
            ol[i] = __builtin_shuffle(od_, o2, WINO_JOIN);
            eh[i] = __builtin_shuffle(e, e2, WINO_JOIN_HI);
            oh[i] = __builtin_shuffle(od_, o2, WINO_JOIN_HI);
        } else {
            wino_v16 c0, c1;
            memcpy(&c0, sa + 4, sizeof c0);
            memcpy(&c1, sa + 20, sizeof c1);
            el[i] = e;
            ol[i] = od_;
            eh[i] = __builtin_shuffle(c0, c1, WINO_EVEN); /* columns 4, 6, .., 34 */
            oh[i] = __builtin_shuffle(c0, c1, WINO_ODD);  /* columns 5, 7, .., 35 */
        }
    }
    /* rows: B^T d on each column, the four lane vectors alike */
    wino_v16 rel[6], reh[6], rol[6], roh[6];
    WINO_BT(rel, , el[0], el[1], el[2], el[3], el[4], el[5]);
    WINO_BT(reh, , eh[0], eh[1], eh[2], eh[3], eh[4], eh[5]);
    WINO_BT(rol, , ol[0], ol[1], ol[2], ol[3], ol[4], ol[5]);
    WINO_BT(roh, , oh[0], oh[1], oh[2], oh[3], oh[4], oh[5]);
    /* columns: patch column j of tile q is the even (j even) or odd array at lane q + j/2 */
    for (int a = 0; a < 6; ++a) {
        wino_v16 d[6], r[6];
        d[0] = rel[a];
        d[1] = rol[a];
        d[2] = __builtin_shuffle(rel[a], reh[a], WINO_SHIFT1);
        d[3] = __builtin_shuffle(rol[a], roh[a], WINO_SHIFT1);
        d[4] = reh[a];
        d[5] = roh[a];
        WINO_BT(r, , d[0], d[1], d[2], d[3], d[4], d[5]);
        /* stores straight from the registers (a round trip through a stack array
         * cost a failed store-to-load forward per point: 60% of this function) */
        for (int b = 0; b < 6; ++b) {
            /* one store per point: with a second row, its nq tiles are moved
             * next to the first row's (lanes nq..2nq-1) */
            const wino_v16 rv = __builtin_shuffle(r[b], zero, pack);
            memcpy(dst + (a * 6 + b) * sp, &rv, sizeof rv);
        }
    }
}
#endif

/* The same in plain C on lane arrays: the generic level's code, and the only
 * one where GCC's vector extensions are missing. */
FC_ALWAYS_INLINE void wino_in_row_scalar WINO_IN_ROW_PARAMS
{
    float ev[6][RL + 2], od[6][RL + 2], re[6][RL + 2], ro[6][RL + 2];
    float o[6][RL];
    const int split = src2 ? WINO_PAIR_OFF : RL + 2;
    for (int i = 0; i < 6; ++i) {
        for (int q = 0; q < split; ++q) {
            ev[i][q] = src[i * ld + 2 * q];
            od[i][q] = src[i * ld + 2 * q + 1];
        }
        for (int q = split; q < RL + 2; ++q) {
            ev[i][q] = src2[i * ld + 2 * (q - split)];
            od[i][q] = src2[i * ld + 2 * (q - split) + 1];
        }
    }
    /* rows: B^T d on each column */
    for (int q = 0; q < RL + 2; ++q) {
        WINO_BT(re, [q], ev[0][q], ev[1][q], ev[2][q], ev[3][q], ev[4][q], ev[5][q]);
        WINO_BT(ro, [q], od[0][q], od[1][q], od[2][q], od[3][q], od[4][q], od[5][q]);
    }
    /* columns: patch column j of tile q is re[.][q + j/2] (j even) or ro[.][q + j/2] */
    for (int a = 0; a < 6; ++a) {
        for (int q = 0; q < RL; ++q)
            WINO_BT(o, [q], re[a][q], ro[a][q], re[a][q + 1], ro[a][q + 1], re[a][q + 2],
                    ro[a][q + 2]);
        for (int b = 0; b < 6; ++b) {
            /* the same layout as the vector version: tiles, a second row's tiles, zeros */
            float *dp = dst + (a * 6 + b) * sp;
            const int used = src2 ? 2 * nq : nq;
            for (int q = 0; q < RL; ++q)
                dp[q] = q < nq ? o[b][q] : (q < used ? o[b][WINO_PAIR_OFF + q - nq] : 0.0f);
        }
    }
}

#if WINO_VEC16 && RL == 16
#define WINO_IN_ROW_VEC wino_in_row_vec
#else
#define WINO_IN_ROW_VEC wino_in_row_scalar
#endif
#if FC_X86_SIMD
FC_TGT_AVX512 static void wino_in_row_avx512 WINO_IN_ROW_PARAMS
{
    fc_simd_ran(FC_SIMD_AVX512);
    WINO_IN_ROW_VEC(src, src2, ld, nq, dst, sp);
}
FC_TGT_AVX2 static void wino_in_row_avx2 WINO_IN_ROW_PARAMS
{
    fc_simd_ran(FC_SIMD_AVX2);
    WINO_IN_ROW_VEC(src, src2, ld, nq, dst, sp);
}
#endif
static void wino_in_row_generic WINO_IN_ROW_PARAMS
{
    fc_simd_ran(FC_SIMD_GENERIC);
    wino_in_row_scalar(src, src2, ld, nq, dst, sp);
}
#undef WINO_IN_ROW_VEC
static void wino_in_row WINO_IN_ROW_PARAMS
{
    FC_SIMD_CALL(wino_in_row, (src, src2, ld, nq, dst, sp));
}

/* The four outputs of each tile, A^T M A plus the bias (and ReLU): v[2a + c][l] =
 * output row a, column c of tile l (lane-major: vectorises). Shared by the plain
 * and the pooled output transforms, so both make the same bits. */
FC_ALWAYS_INLINE void wino_out_vals(const float *FC_RESTRICT m, ptrdiff_t sp, float bias,
                                     int relu, float v[4][RL])
{
    float t[2][6][RL];
    for (int j = 0; j < 6; ++j) {
        const float *m0 = m + j * sp, *m1 = m0 + 6 * sp, *m2 = m1 + 6 * sp, *m3 = m2 + 6 * sp,
                    *m4 = m3 + 6 * sp, *m5 = m4 + 6 * sp;
        for (int l = 0; l < RL; ++l) {
            t[0][j][l] = (m0[l] + m1[l]) + (m2[l] + m3[l]) + m4[l];
            t[1][j][l] = (m1[l] - m2[l]) + 2 * (m3[l] - m4[l]) + m5[l];
        }
    }
    for (int a = 0; a < 2; ++a)
        for (int l = 0; l < RL; ++l) {
            const float *s0 = t[a][0], *s1 = t[a][1], *s2 = t[a][2], *s3 = t[a][3],
                        *s4 = t[a][4], *s5 = t[a][5];
            float v0 = (s0[l] + s1[l]) + (s2[l] + s3[l]) + s4[l] + bias;
            float v1 = (s1[l] - s2[l]) + 2 * (s3[l] - s4[l]) + s5[l] + bias;
            if (relu) {
                v0 = v0 <= 0 ? 0.0f : v0; /* NaN stays NaN */
                v1 = v1 <= 0 ? 0.0f : v1;
            }
            v[2 * a][l] = v0;
            v[2 * a + 1][l] = v1;
        }
}

/*
 * Output transform of one output channel for up to RL tiles side by side in a
 * tile row: M point p of tile q is m[p * sp + q]. Y = A^T M A + bias (then
 * ReLU); output row a < nrow of the tiles goes to y + a * ld, its first ncol
 * values (2 per tile, fewer at an odd right edge). If y2 is not NULL, the next
 * tile row (nq <= RL/2 tiles each) follows in lanes nq..2nq-1 of m and goes to
 * y2 (nrow2 rows, the same ncol).
 */
#define WINO_OUT_ROW_PARAMS                                                         \
    (const float *FC_RESTRICT m, ptrdiff_t sp, float bias, int relu, int nq, int nrow,  \
     int ncol, ptrdiff_t ld, float *y, int nrow2, float *y2)
FC_ALWAYS_INLINE void wino_out_row_body WINO_OUT_ROW_PARAMS
{
    float v[4][RL], buf[2][2 * RL];
    wino_out_vals(m, sp, bias, relu, v);
    for (int a = 0; a < 2; ++a)
        for (int l = 0; l < RL; ++l) {
            buf[a][2 * l] = v[2 * a][l];
            buf[a][2 * l + 1] = v[2 * a + 1][l];
        }
    /* a loop, not memcpy: ncol is small and a libc call per row costs more than the copy */
    for (int a = 0; a < nrow; ++a)
        for (int i = 0; i < ncol; ++i) y[a * ld + i] = buf[a][i];
    if (y2)
        for (int a = 0; a < nrow2; ++a)
            for (int i = 0; i < ncol; ++i) y2[a * ld + i] = buf[a][2 * nq + i];
}
/* As FC_SIMD_PROC makes them, with FC_NO_MEMCPY on each compiled variant. */
#if FC_X86_SIMD
FC_TGT_AVX512 FC_NO_MEMCPY static void wino_out_row_avx512 WINO_OUT_ROW_PARAMS
{
    fc_simd_ran(FC_SIMD_AVX512);
    wino_out_row_body(m, sp, bias, relu, nq, nrow, ncol, ld, y, nrow2, y2);
}
FC_TGT_AVX2 FC_NO_MEMCPY static void wino_out_row_avx2 WINO_OUT_ROW_PARAMS
{
    fc_simd_ran(FC_SIMD_AVX2);
    wino_out_row_body(m, sp, bias, relu, nq, nrow, ncol, ld, y, nrow2, y2);
}
#endif
FC_NO_MEMCPY static void wino_out_row_generic WINO_OUT_ROW_PARAMS
{
    fc_simd_ran(FC_SIMD_GENERIC);
    wino_out_row_body(m, sp, bias, relu, nq, nrow, ncol, ld, y, nrow2, y2);
}
static void wino_out_row WINO_OUT_ROW_PARAMS
{
    FC_SIMD_CALL(wino_out_row, (m, sp, bias, relu, nq, nrow, ncol, ld, y, nrow2, y2));
}

/*
 * The output transform fused with a 2x2/2 max-pool: an F(2x2, 5x5) tile is one
 * pooling window, so tile q's four outputs (made, biased and rectified exactly
 * as wino_out_row makes them) are compared in raster order with the max-pool
 * rule (a larger value or a NaN takes over) and only the winner is stored: the
 * bits of wino_out_row then max_pool2d. Lanes [0, npool) go to y; if y2 is not
 * NULL, lanes [nq, nq + npool) (the next tile row) go to y2.
 */
#define WINO_POOL_ROW_PARAMS                                                        \
    (const float *FC_RESTRICT m, ptrdiff_t sp, float bias, int relu, int nq, int npool, \
     float *y, float *y2)

FC_ALWAYS_INLINE void wino_pool_store(const float *best, int nq, int npool, float *y,
                                      float *y2)
{
    for (int i = 0; i < npool; ++i) y[i] = best[i];
    if (y2)
        for (int i = 0; i < npool; ++i) y2[i] = best[nq + i];
}

FC_ALWAYS_INLINE void wino_pool_row_body WINO_POOL_ROW_PARAMS
{
    float v[4][RL], best[RL];
    wino_out_vals(m, sp, bias, relu, v);
    for (int l = 0; l < RL; ++l) {
        float b = v[0][l];
        for (int i = 1; i < 4; ++i) b = (v[i][l] > b || v[i][l] != v[i][l]) ? v[i][l] : b;
        best[l] = b;
    }
    wino_pool_store(best, nq, npool, y, y2);
}
#if FC_X86_SIMD && RL == 16
/* The pick on whole vectors (GCC leaves the select above scalar, with branches). */
FC_TGT_AVX512 FC_NO_MEMCPY static void wino_pool_row_avx512 WINO_POOL_ROW_PARAMS
{
    fc_simd_ran(FC_SIMD_AVX512);
    float v[4][RL], best[RL];
    wino_out_vals(m, sp, bias, relu, v);
    __m512 b = _mm512_loadu_ps(v[0]);
    for (int i = 1; i < 4; ++i) {
        const __m512 c = _mm512_loadu_ps(v[i]);
        const __mmask16 take = _mm512_cmp_ps_mask(c, b, _CMP_GT_OQ) |
                               _mm512_cmp_ps_mask(c, c, _CMP_UNORD_Q);
        b = _mm512_mask_mov_ps(b, take, c);
    }
    _mm512_storeu_ps(best, b);
    wino_pool_store(best, nq, npool, y, y2);
}
#elif FC_X86_SIMD
FC_TGT_AVX512 FC_NO_MEMCPY static void wino_pool_row_avx512 WINO_POOL_ROW_PARAMS
{
    fc_simd_ran(FC_SIMD_AVX512);
    wino_pool_row_body(m, sp, bias, relu, nq, npool, y, y2);
}
#endif
#if FC_X86_SIMD
FC_TGT_AVX2 FC_NO_MEMCPY static void wino_pool_row_avx2 WINO_POOL_ROW_PARAMS
{
    fc_simd_ran(FC_SIMD_AVX2);
    float v[4][RL], best[RL];
    wino_out_vals(m, sp, bias, relu, v);
    for (int l = 0; l < RL; l += 8) {
        __m256 b = _mm256_loadu_ps(v[0] + l);
        for (int i = 1; i < 4; ++i) {
            const __m256 c = _mm256_loadu_ps(v[i] + l);
            const __m256 take = _mm256_or_ps(_mm256_cmp_ps(c, b, _CMP_GT_OQ),
                                             _mm256_cmp_ps(c, c, _CMP_UNORD_Q));
            b = _mm256_blendv_ps(b, c, take);
        }
        _mm256_storeu_ps(best + l, b);
    }
    wino_pool_store(best, nq, npool, y, y2);
}
#endif
FC_NO_MEMCPY static void wino_pool_row_generic WINO_POOL_ROW_PARAMS
{
    fc_simd_ran(FC_SIMD_GENERIC);
    wino_pool_row_body(m, sp, bias, relu, nq, npool, y, y2);
}
static void wino_pool_row WINO_POOL_ROW_PARAMS
{
    FC_SIMD_CALL(wino_pool_row, (m, sp, bias, relu, nq, npool, y, y2));
}
