/*
 * fc_runtime.c - process-wide state of the kernels: the SIMD level every vector
 * path is dispatched on, start-up and the fork rule, build facts. (Threads and
 * the team controller: fc_team.c; scratch memory: fc_scratch.c.)
 */
#include <string.h>

#include "fc_internal.h"

/* ---- the SIMD level ---------------------------------------------------------- */
/*
 * Every vector path (micro-kernel tables, the loops written once and compiled
 * per level with FC_SIMD_PROC, the optimiser's ranges, the pooling row kernel)
 * runs at fc_g_simd_level: chosen when the extension is imported (fc_init: the CPU's
 * best, lowered by FASTCONV_SIMD, read that once) and changed only by
 * fc_set_simd_level. fc_g_simd_used records which levels ran, for the tests.
 */
FC_HIDDEN int fc_g_simd_level = -1; /* -1: not chosen yet */
FC_HIDDEN int fc_g_simd_used = 0; /* bit `level` set once a vector path ran at that level */

int fc_simd_supported(void)
{
#if FC_X86_SIMD
    __builtin_cpu_init();
    /* avx512bw too: the 2x2 max-pool row kernel uses its mask moves, and a level
     * must mean one instruction set for every vector path (no per-kernel check) */
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return FC_SIMD_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return FC_SIMD_AVX2;
#endif
    return FC_SIMD_GENERIC;
}

static int level_from_env(int best)
{
    const char *s = getenv("FASTCONV_SIMD");
    if (!s || !*s) return best;
    int want = best;
    if (!strcmp(s, "generic")) want = FC_SIMD_GENERIC;
    else if (!strcmp(s, "avx2")) want = FC_SIMD_AVX2;
    else if (!strcmp(s, "avx512")) want = FC_SIMD_AVX512;
    return want < best ? want : best;
}

int fc_simd_level(void)
{
    int lv = fc_g_simd_level;
    if (lv < 0) {
        /* Racing first calls compute the same value, so a plain store is fine. */
        lv = level_from_env(fc_simd_supported());
        fc_g_simd_level = lv;
    }
    return lv;
}

int fc_set_simd_level(int level)
{
    int best = fc_simd_supported();
    if (level < FC_SIMD_GENERIC) level = FC_SIMD_GENERIC;
    fc_g_simd_level = level > best ? best : level;
    return fc_g_simd_level;
}

/* the first run at a level since the last reset (fc_simd_ran checks first) */
void fc_simd_note(int lv)
{
#if defined(__GNUC__) || defined(__clang__)
    __atomic_fetch_or(&fc_g_simd_used, 1 << lv, __ATOMIC_RELAXED);
#else
    fc_g_simd_used |= 1 << lv;
#endif
}

int fc_simd_levels_used(int reset)
{
#if defined(__GNUC__) || defined(__clang__)
    return reset ? __atomic_exchange_n(&fc_g_simd_used, 0, __ATOMIC_RELAXED)
                 : __atomic_load_n(&fc_g_simd_used, __ATOMIC_RELAXED);
#else
    const int u = fc_g_simd_used;
    if (reset) fc_g_simd_used = 0;
    return u;
#endif
}

const char *fc_simd_name(int level)
{
    switch (level) {
    case FC_SIMD_AVX512: return "avx512";
    case FC_SIMD_AVX2: return "avx2";
    default: return "generic";
    }
}

/* ---- start-up, fork rule, build facts ------------------------------------- */
static volatile int g_forked_child = 0;

#if !defined(_WIN32)
#include <pthread.h>
static void on_fork_child(void)
{
    if (fc_team_was_used()) g_forked_child = 1;
    fc_team_atfork_child();
    fc_scratch_atfork_child();
}
#endif

void fc_init(void)
{
#if !defined(_WIN32)
    static int done = 0;
    if (!done) {
        done = 1;
        pthread_atfork(NULL, NULL, on_fork_child);
    }
#endif
    (void)fc_simd_level(); /* the start-up SIMD cap is read here, once */
}

int fc_forked_child(void) { return g_forked_child; }

int fc_openmp_enabled(void) { return FC_HAVE_OPENMP; }

const char *fc_compiler(void)
{
#ifdef FC_COMPILER
    return FC_COMPILER;
#else
    return "unknown";
#endif
}
