/*
 * fc_winograd_rows4.h - the Winograd F(4x4, 3x3) input and output transforms of
 * one tile row, vectorised across the tiles of the row (RL lanes). Included by
 * fc_winograd_common.h after fc_winograd_rows.h (whose B^T, WINO_BT, and
 * parameter list the input transform shares), with RL set.
 *
 * Plain C on lane arrays, compiled per SIMD level: the compiler vectorises the
 * lane loops. The tiles of a row are 4 columns apart, so the patch columns are
 * split into their four phases (4q, 4q + 1, 4q + 2, 4q + 3) before the row
 * pass; column 4q + 4 and 4q + 5 are phases 0 and 1 of lane q + 1.
 */

/*
 * Input transform of one channel for up to RL tiles side by side in one tile
 * row: the 6x6 patch of tile q starts at src + 4q (row pitch ld). Reads up to
 * 4 * (RL + 1) values from src on each of the 6 rows (the caller's slack,
 * wino_in_slack). Layout of dst, pairing of a second row src2 in lanes
 * WINO_PAIR_OFF.. (its patches need columns up to 4 * nq + 1) and the zeros in
 * the spare lanes: as wino_in_row.
 */
FC_SIMD_PROC(wino_in_row4, WINO_IN_ROW_PARAMS, (src, src2, ld, nq, dst, sp))
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
    /* along the rows: patch column 4 and 5 of tile q are phases 0 and 1 of lane q + 1 */
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

/* 1-D A^T on one column m0..m5 into o[0..3] L (see WINO_BT for L) */
#define WINO_AT4(o, L, m0, m1, m2, m3, m4, m5)                                      \
    do {                                                                            \
        const float s12p_ = (m1) + (m2), s12m_ = (m1) - (m2);                       \
        const float s34p_ = (m3) + (m4), s34m_ = (m3) - (m4);                       \
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
FC_SIMD_PROC(wino_out_row4, WINO_OUT4_PARAMS,
             (m, sp, bias, relu, pool, nq, nrow, ncol, ld, y, nrow2, y2))
{
    float t[4][6][RL], v[4][4][RL], buf[4][4 * RL];
    for (int j = 0; j < 6; ++j) {
        const float *m0 = m + j * sp, *m1 = m0 + 6 * sp, *m2 = m1 + 6 * sp, *m3 = m2 + 6 * sp,
                    *m4 = m3 + 6 * sp, *m5 = m4 + 6 * sp;
        float c[4][RL];
        for (int l = 0; l < RL; ++l) WINO_AT4(c, [l], m0[l], m1[l], m2[l], m3[l], m4[l], m5[l]);
        for (int a = 0; a < 4; ++a)
            for (int l = 0; l < RL; ++l) t[a][j][l] = c[a][l];
    }
    for (int a = 0; a < 4; ++a) {
        float c[4][RL];
        for (int l = 0; l < RL; ++l)
            WINO_AT4(c, [l], t[a][0][l], t[a][1][l], t[a][2][l], t[a][3][l], t[a][4][l],
                     t[a][5][l]);
        for (int b = 0; b < 4; ++b)
            for (int l = 0; l < RL; ++l) {
                float x = c[b][l] + bias;
                if (relu) x = x <= 0 ? 0.0f : x; /* NaN stays NaN */
                v[a][b][l] = x;
            }
    }
    int per; /* values per tile and row in buf */
    if (!pool) {
        per = 4;
        for (int a = 0; a < 4; ++a)
            for (int l = 0; l < RL; ++l)
                for (int b = 0; b < 4; ++b) buf[a][4 * l + b] = v[a][b][l];
    } else {
        per = 2;
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
    /* a loop, not memcpy: ncol is small and a libc call per row costs more than the copy */
    for (int a = 0; a < nrow; ++a)
        for (int i = 0; i < ncol; ++i) y[a * ld + i] = buf[a][i];
    if (y2)
        for (int a = 0; a < nrow2; ++a)
            for (int i = 0; i < ncol; ++i) y2[a * ld + i] = buf[a][per * nq + i];
}
