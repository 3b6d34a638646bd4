/*
 * fc_winograd_rows4.h - the Winograd F(4x4, 3x3) input and output transforms of
 * one tile row, vectorised across the tiles of the row (RL lanes). Included by
 * fc_winograd_common.h after fc_winograd_rows.h (whose B^T, WINO_BT, and
 * parameter list the input transform shares), with RL set.
 *
 * The tiles of a row are 4 columns apart, so the patch columns are split into
 * their four phases (4q, 4q + 1, 4q + 2, 4q + 3) before the pass down the
 * columns; patch columns 4q + 4 and 4q + 5 are phases 0 and 1 of tile q + 1.
 * Plain C on lane arrays for the generic level (and compilers without GCC's
 * vector extensions), whole GCC vectors for AVX2 / AVX-512: the same sums in
 * the same order, so the same bits.
 */

/*
 * Input transform of one channel for up to RL tiles side by side in one tile
 * row: the 6x6 patch of tile q starts at src + 4q (row pitch ld). Reads up to
 * 4 * (RL + 1) values from src on each of the 6 rows (the caller's slack,
 * wino_in_slack). Layout of dst, pairing of a second row src2 (nq <= 7 tiles
 * each; its patches need columns up to 4 * nq + 1) and the zeros in the spare
 * lanes: as wino_in_row.
 */
FC_ALWAYS_INLINE void wino_in_row4_scalar WINO_IN_ROW_PARAMS
{
    /* ph[j][i][q] = patch row i, column 4q + j; then B^T down the columns */
    float ph[4][6][RL + 1], rb[4][6][RL + 1], o[6][RL];
    const int split = src2 ? WINO_PAIR_OFF : RL + 1;
    for (int i = 0; i < 6; ++i) {
        const float *a = src + i * ld;
        for (int q = 0; q < split; ++q)
            for (int j = 0; j < 4; ++j) ph[j][i][q] = a[4 * q + j];
        if (src2) {
            const float *b = src2 + i * ld;
            for (int q = split; q < RL + 1; ++q)
                for (int j = 0; j < 4; ++j) ph[j][i][q] = b[4 * (q - split) + j];
        }
    }
    for (int j = 0; j < 4; ++j)
        for (int q = 0; q < RL + 1; ++q)
            WINO_BT(rb[j], [q], ph[j][0][q], ph[j][1][q], ph[j][2][q], ph[j][3][q], ph[j][4][q],
                    ph[j][5][q]);
    /* along the rows: patch columns 4 and 5 of tile q are phases 0 and 1 of lane q + 1 */
    for (int a = 0; a < 6; ++a) {
        for (int q = 0; q < RL; ++q)
            WINO_BT(o, [q], rb[0][a][q], rb[1][a][q], rb[2][a][q], rb[3][a][q], rb[0][a][q + 1],
                    rb[1][a][q + 1]);
        const int used = src2 ? 2 * nq : nq;
        for (int b = 0; b < 6; ++b) {
            float *dp = dst + (a * 6 + b) * sp;
            for (int q = 0; q < RL; ++q)
                dp[q] = q < nq ? o[b][q] : (q < used ? o[b][WINO_PAIR_OFF + q - nq] : 0.0f);
        }
    }
}

#if WINO_VEC16 && RL == 16
/* lanes 0..7: phase j (columns j, j + 4, .., j + 28) of the 32 columns of two vectors */
#define WINO_PH4(j)                                                                 \
    ((wino_i16){j, j + 4, j + 8, j + 12, j + 16, j + 20, j + 24, j + 28,             \
                j, j + 4, j + 8, j + 12, j + 16, j + 20, j + 24, j + 28})
/* lanes 0..7 of the first vector, then lanes 0..7 of the second */
#define WINO_LO8 ((wino_i16){0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23})

/* 16 floats from p as a vector (a macro: a function returning a 64-byte vector
 * outside an AVX-512 target changes the ABI) */
#define wino_ld16(p)                                                                \
    ({                                                                              \
        wino_v16 v_;                                                                \
        memcpy(&v_, (p), sizeof v_);                                                \
        v_;                                                                         \
    })

/* phase j of 16 tiles: tiles 0..7 from the 32 columns at a, 8..15 from those at b */
#define WINO_PHASE16(a, b, j)                                                       \
    __builtin_shuffle(__builtin_shuffle(wino_ld16(a), wino_ld16((a) + 16), WINO_PH4(j)), \
                      __builtin_shuffle(wino_ld16(b), wino_ld16((b) + 16), WINO_PH4(j)), \
                      WINO_LO8)

/*
 * Whole-vector version (the same sums in the same order: the same bits). Lanes
 * 0..7 are tiles 0..7 of src; lanes 8..15 are its tiles 8..15 or, with src2,
 * tiles 0..7 of the second row (moved next to the first row's at the store).
 * Every phase is de-interleaved by two-source permutes from whole-vector
 * loads, instead of the 400 scalar moves of the plain C gather.
 */
FC_ALWAYS_INLINE void wino_in_row4_vec WINO_IN_ROW_PARAMS
{
    const float *hi = src2 ? src2 : src + 32;
    /* ph[j][i]: patch row i, phases 0..3 of tile q, then phases 0 and 1 of tile q + 1
     * (patch columns 4 and 5) */
    wino_v16 ph[6][6], rb[6][6];
    for (int i = 0; i < 6; ++i) {
        const float *a = src + i * ld, *b = hi + i * ld;
        ph[0][i] = WINO_PHASE16(a, b, 0);
        ph[1][i] = WINO_PHASE16(a, b, 1);
        ph[2][i] = WINO_PHASE16(a, b, 2);
        ph[3][i] = WINO_PHASE16(a, b, 3);
        ph[4][i] = WINO_PHASE16(a + 4, b + 4, 0);
        ph[5][i] = WINO_PHASE16(a + 4, b + 4, 1);
    }
    for (int j = 0; j < 6; ++j)
        WINO_BT(rb[j], , ph[j][0], ph[j][1], ph[j][2], ph[j][3], ph[j][4], ph[j][5]);
    wino_i16 pack;
    const int used = src2 ? 2 * nq : nq;
    for (int l = 0; l < 16; ++l) pack[l] = l < nq ? l : (l < used ? 8 + l - nq : 16);
    const wino_v16 zero = {0};
    for (int a = 0; a < 6; ++a) {
        wino_v16 r[6];
        WINO_BT(r, , rb[0][a], rb[1][a], rb[2][a], rb[3][a], rb[4][a], rb[5][a]);
        for (int b = 0; b < 6; ++b) {
            const wino_v16 rv = __builtin_shuffle(r[b], zero, pack);
            memcpy(dst + (a * 6 + b) * sp, &rv, sizeof rv);
        }
    }
}
#define WINO_IN_ROW4_VEC wino_in_row4_vec
#else
#define WINO_IN_ROW4_VEC wino_in_row4_scalar
#endif
#if FC_X86_SIMD
FC_TGT_AVX512 static void wino_in_row4_avx512 WINO_IN_ROW_PARAMS
{
    fc_simd_ran(FC_SIMD_AVX512);
    WINO_IN_ROW4_VEC(src, src2, ld, nq, dst, sp);
}
FC_TGT_AVX2 static void wino_in_row4_avx2 WINO_IN_ROW_PARAMS
{
    fc_simd_ran(FC_SIMD_AVX2);
    WINO_IN_ROW4_VEC(src, src2, ld, nq, dst, sp);
}
#endif
static void wino_in_row4_generic WINO_IN_ROW_PARAMS
{
    fc_simd_ran(FC_SIMD_GENERIC);
    wino_in_row4_scalar(src, src2, ld, nq, dst, sp);
}
#undef WINO_IN_ROW4_VEC
static void wino_in_row4 WINO_IN_ROW_PARAMS
{
    FC_SIMD_CALL(wino_in_row4, (src, src2, ld, nq, dst, sp));
}

/* 1-D A^T on one column m0..m5 of type T into o[0..3] L (see WINO_BT for L) */
#define WINO_AT4(T, o, L, m0, m1, m2, m3, m4, m5)                                   \
    do {                                                                            \
        const T s12p_ = (m1) + (m2), s12m_ = (m1) - (m2);                           \
        const T s34p_ = (m3) + (m4), s34m_ = (m3) - (m4);                           \
        o[0] L = ((m0) + s12p_) + s34p_;                                            \
        o[1] L = s12m_ + 2 * s34m_;                                                 \
        o[2] L = s12p_ + 4 * s34p_;                                                 \
        o[3] L = (s12m_ + 8 * s34m_) + (m5);                                        \
    } while (0)

/*
 * Output transform of one output channel for up to RL tiles side by side in a
 * tile row, M point p of tile q at m[p * sp + q]:
 *
 *     A^T = [1 1  1 1  1 0]        Y (4x4) = A^T M A + bias, then ReLU.
 *           [0 1 -1 2 -2 0]
 *           [0 1  1 4  4 0]
 *           [0 1 -1 8 -8 1]
 *
 * pool = 0: output row a < nrow of the tiles goes to y + a * ld, its first ncol
 * values (4 per tile, fewer at the right edge). pool = 1 (a 2x2/2 max-pool
 * fused): each tile holds 2x2 whole windows; each window's four outputs are
 * compared in raster order with the max-pool rule (a larger value or a NaN
 * takes over), and pooled row a < nrow (2 per tile) goes to y + a * ld, ncol
 * values (2 per tile). If y2 is not NULL, the next tile row (nq <= RL/2 tiles)
 * follows in lanes nq..2nq-1 of m and goes to y2 (nrow2 rows, the same ncol).
 */
#define WINO_OUT4_PARAMS                                                            \
    (const float *FC_RESTRICT m, ptrdiff_t sp, float bias, int relu, int pool, int nq,  \
     int nrow, int ncol, ptrdiff_t ld, float *y, int nrow2, float *y2)

/* buf rows (per values per tile each) to y and y2 */
FC_ALWAYS_INLINE void wino_out4_store(const float buf[4][4 * RL], int per, int nq, int nrow,
                                      int ncol, ptrdiff_t ld, float *y, int nrow2, float *y2)
{
    /* a loop, not memcpy: ncol is small and a libc call per row costs more than the copy */
    for (int a = 0; a < nrow; ++a)
        for (int i = 0; i < ncol; ++i) y[a * ld + i] = buf[a][i];
    if (y2)
        for (int a = 0; a < nrow2; ++a)
            for (int i = 0; i < ncol; ++i) y2[a * ld + i] = buf[a][per * nq + i];
}

FC_ALWAYS_INLINE void wino_out_row4_scalar WINO_OUT4_PARAMS
{
    float t[4][6][RL], v[4][4][RL], buf[4][4 * RL];
    for (int j = 0; j < 6; ++j) {
        const float *m0 = m + j * sp, *m1 = m0 + 6 * sp, *m2 = m1 + 6 * sp, *m3 = m2 + 6 * sp,
                    *m4 = m3 + 6 * sp, *m5 = m4 + 6 * sp;
        float c[4][RL];
        for (int l = 0; l < RL; ++l)
            WINO_AT4(float, c, [l], m0[l], m1[l], m2[l], m3[l], m4[l], m5[l]);
        for (int a = 0; a < 4; ++a)
            for (int l = 0; l < RL; ++l) t[a][j][l] = c[a][l];
    }
    for (int a = 0; a < 4; ++a) {
        float c[4][RL];
        for (int l = 0; l < RL; ++l)
            WINO_AT4(float, c, [l], t[a][0][l], t[a][1][l], t[a][2][l], t[a][3][l], t[a][4][l],
                     t[a][5][l]);
        for (int b = 0; b < 4; ++b)
            for (int l = 0; l < RL; ++l) {
                float x = c[b][l] + bias;
                if (relu) x = x <= 0 ? 0.0f : x; /* NaN stays NaN */
                v[a][b][l] = x;
            }
    }
    if (!pool) {
        for (int a = 0; a < 4; ++a)
            for (int l = 0; l < RL; ++l)
                for (int b = 0; b < 4; ++b) buf[a][4 * l + b] = v[a][b][l];
    } else {
        for (int a = 0; a < 2; ++a)
            for (int b = 0; b < 2; ++b)
                for (int l = 0; l < RL; ++l) {
                    const float w4[4] = {v[2 * a][2 * b][l], v[2 * a][2 * b + 1][l],
                                         v[2 * a + 1][2 * b][l], v[2 * a + 1][2 * b + 1][l]};
                    float best = w4[0];
                    for (int i = 1; i < 4; ++i)
                        best = (w4[i] > best || w4[i] != w4[i]) ? w4[i] : best;
                    buf[a][2 * l + b] = best;
                }
    }
    wino_out4_store((const float(*)[4 * RL])buf, pool ? 2 : 4, nq, nrow, ncol, ld, y, nrow2, y2);
}

#if WINO_VEC16 && RL == 16
/* interleave two vectors: lanes 0..7 of each alternately, then lanes 8..15 */
#define WINO_ZIP_LO ((wino_i16){0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23})
#define WINO_ZIP_HI ((wino_i16){8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31})
/* interleave pairs of lanes of two vectors */
#define WINO_ZIP2_LO ((wino_i16){0, 1, 16, 17, 2, 3, 18, 19, 4, 5, 20, 21, 6, 7, 22, 23})
#define WINO_ZIP2_HI ((wino_i16){8, 9, 24, 25, 10, 11, 26, 27, 12, 13, 28, 29, 14, 15, 30, 31})

/* b where keep is set, else a (keep: all ones or all zeros per lane) */
#define wino_sel(keep, b, a) ((wino_v16)(((wino_i16)(b) & (keep)) | ((wino_i16)(a) & ~(keep))))

/* Whole-vector version: the same sums in the same order, and the same picks */
FC_ALWAYS_INLINE void wino_out_row4_vec WINO_OUT4_PARAMS
{
    wino_v16 t[4][6], v[4][4];
    for (int j = 0; j < 6; ++j) {
        wino_v16 mi[6];
        for (int i = 0; i < 6; ++i) mi[i] = wino_ld16(m + (i * 6 + j) * sp);
        wino_v16 c[4];
        WINO_AT4(wino_v16, c, , mi[0], mi[1], mi[2], mi[3], mi[4], mi[5]);
        for (int a = 0; a < 4; ++a) t[a][j] = c[a];
    }
    const wino_v16 zero = {0};
    for (int a = 0; a < 4; ++a) {
        wino_v16 c[4];
        WINO_AT4(wino_v16, c, , t[a][0], t[a][1], t[a][2], t[a][3], t[a][4], t[a][5]);
        for (int b = 0; b < 4; ++b) {
            wino_v16 x = c[b] + bias;
            if (relu) x = wino_sel(x <= 0, zero, x); /* NaN stays NaN */
            v[a][b] = x;
        }
    }
    float buf[4][4 * RL];
    if (!pool) {
        for (int a = 0; a < 4; ++a) {
            const wino_v16 lo01 = __builtin_shuffle(v[a][0], v[a][1], WINO_ZIP_LO),
                           hi01 = __builtin_shuffle(v[a][0], v[a][1], WINO_ZIP_HI),
                           lo23 = __builtin_shuffle(v[a][2], v[a][3], WINO_ZIP_LO),
                           hi23 = __builtin_shuffle(v[a][2], v[a][3], WINO_ZIP_HI);
            const wino_v16 o[4] = {__builtin_shuffle(lo01, lo23, WINO_ZIP2_LO),
                                   __builtin_shuffle(lo01, lo23, WINO_ZIP2_HI),
                                   __builtin_shuffle(hi01, hi23, WINO_ZIP2_LO),
                                   __builtin_shuffle(hi01, hi23, WINO_ZIP2_HI)};
            if (!y2 && a < nrow && ncol == 4 * RL) { /* a whole row of 16 tiles: straight to y */
                memcpy(y + a * ld, o, sizeof o);
                continue;
            }
            memcpy(buf[a], o, sizeof o);
        }
        if (!y2 && ncol == 4 * RL) return;
    } else {
        for (int a = 0; a < 2; ++a) {
            wino_v16 pv[2];
            for (int b = 0; b < 2; ++b) {
                const wino_v16 w4[4] = {v[2 * a][2 * b], v[2 * a][2 * b + 1], v[2 * a + 1][2 * b],
                                        v[2 * a + 1][2 * b + 1]};
                wino_v16 best = w4[0];
                for (int i = 1; i < 4; ++i)
                    best = wino_sel((w4[i] > best) | (w4[i] != w4[i]), w4[i], best);
                pv[b] = best;
            }
            const wino_v16 o[2] = {__builtin_shuffle(pv[0], pv[1], WINO_ZIP_LO),
                                   __builtin_shuffle(pv[0], pv[1], WINO_ZIP_HI)};
            memcpy(buf[a], o, sizeof o);
        }
    }
    wino_out4_store((const float(*)[4 * RL])buf, pool ? 2 : 4, nq, nrow, ncol, ld, y, nrow2, y2);
}
#define WINO_OUT_ROW4_VEC wino_out_row4_vec
#else
#define WINO_OUT_ROW4_VEC wino_out_row4_scalar
#endif
/* As FC_SIMD_PROC makes them, with FC_NO_MEMCPY on each compiled variant. */
#if FC_X86_SIMD
FC_TGT_AVX512 FC_NO_MEMCPY static void wino_out_row4_avx512 WINO_OUT4_PARAMS
{
    fc_simd_ran(FC_SIMD_AVX512);
    WINO_OUT_ROW4_VEC(m, sp, bias, relu, pool, nq, nrow, ncol, ld, y, nrow2, y2);
}
FC_TGT_AVX2 FC_NO_MEMCPY static void wino_out_row4_avx2 WINO_OUT4_PARAMS
{
    fc_simd_ran(FC_SIMD_AVX2);
    WINO_OUT_ROW4_VEC(m, sp, bias, relu, pool, nq, nrow, ncol, ld, y, nrow2, y2);
}
#endif
FC_NO_MEMCPY static void wino_out_row4_generic WINO_OUT4_PARAMS
{
    fc_simd_ran(FC_SIMD_GENERIC);
    wino_out_row4_scalar(m, sp, bias, relu, pool, nq, nrow, ncol, ld, y, nrow2, y2);
}
#undef WINO_OUT_ROW4_VEC
static void wino_out_row4 WINO_OUT4_PARAMS
{
    FC_SIMD_CALL(wino_out_row4, (m, sp, bias, relu, pool, nq, nrow, ncol, ld, y, nrow2, y2));
}
