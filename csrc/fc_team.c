/*
 * fc_team.c - how many threads a kernel gets, and a controller that backs off
 * when the team's helpers are not really there.
 *
 * An OpenMP region ends at a barrier: the calling thread waits for every
 * helper to finish its static share. When another process or another thread
 * pool holds the cores, a helper is often descheduled: it starts (or finishes)
 * its share a scheduler time slice late, milliseconds, while the share itself
 * took microseconds, and the caller spins at the barrier all that time. Every
 * region of every call pays it, so two threads run 20-90x slower than one.
 *
 * Each region is timed by its caller (fc_team_begin / fc_team_end); helpers
 * stamp their arrival and the caller stamps the end of its own share, so the
 * caller knows how long it waited at the end. The caller can be the one held
 * up, too: with one core taken by another process, the caller and its helper
 * share the other, and a helper that has finished (or not yet started) spins
 * on it while the caller waits for the core (measured: LeNet-5 forward at
 * batch 1, whose one parallel region copies 1,176 floats, spent 99% of its
 * time in 1% of those regions, 20 ms each, the caller off its core). So the
 * caller also reads its thread's CPU clock: wall time in the region that it
 * was not running is waiting too, whoever caused it. A region whose caller
 * waited longer than FC_LATE_NS and longer than half its own work would have been
 * faster on one thread: the controller then caps the team, without the helpers
 * that arrived late (or one thread smaller when none did: one was descheduled
 * mid-share), for a back-off period. When it lapses, a thread of our own (the
 * scout) is woken first; if it gets a core at once and the run queue shows a
 * core with nothing to run, the next call tries the full team again, else the
 * back-off is renewed without any kernel waiting. So the team shrinks to the
 * cores actually free and grows back when they are.
 *
 * Lateness in a region opened within FC_CLEAN_SPELL (1 s) after a back-off
 * ended means the contention lasts, and the back-off doubles, up to
 * FC_BACKOFF_MAX, so a failed probe of the full team (one time slice of waiting)
 * costs under 1%. One late region is enough when the full team was tried
 * although the run queue showed every core busy (the scout's renewals ran out)
 * or there is no scout; after the scout saw a free core it takes FC_STRIKES,
 * as a first back-off does. An idle VM has stray hiccups (a vCPU the host ran
 * late, another program's burst) a few times a second at worst: on one late
 * region each, a first back-off grew into a chain (16, 32, 64, 128 ms... at one
 * thread's speed), while a real load beside us makes lateness recur within
 * milliseconds, or shows in the run queue. A helper that shares its core
 * with another process is on it half the time, so clean regions in between
 * prove little; only lateness after a clean second starts the back-off again at
 * its minimum.
 * Not every late region is contention, though. A share that page-faults its way
 * through a freshly allocated output, or sleeps on the process's memory-map lock
 * while its partner faults, holds the barrier up just as a descheduled helper
 * does, on an idle machine; backing off then only halves the speed (measured:
 * pooling fwd+bwd rows, which allocate their outputs on every call, ran whole
 * rows at one thread's speed). What tells them apart is whether a thread of
 * ours was runnable and waiting for a CPU: Linux counts that per thread
 * (/proc/self/task/<tid>/schedstat, second field: run delay). A late region
 * reads it for every thread of the process (so a pool of another library
 * waiting for a core counts too); a back-off then needs a late region in which
 * the process's run delay grew by at least half the region's wait since a
 * reading at most FC_STRIKE_WINDOW_NS old (taken at the previous late region or
 * when the last back-off lifted). A late region with a fresh reading and no run
 * delay is a stall, counted and otherwise ignored; one with only an old reading
 * counts as a first strike, never as the last. Without the per-thread
 * statistics (other systems, or a kernel that keeps none) the rules above
 * apply unchanged.
 * Results do not depend on the team size (every kernel chunks its work the same
 * way for any thread count), so the controller changes only the speed, never a
 * bit of any output.
 *
 * State is a handful of process-wide atomics: kernels may be called from many
 * Python threads at once; a race between two updates only makes one of them
 * win, and the next region corrects it.
 */
#if !defined(_WIN32) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif
#include <stdio.h>
#include <time.h>
#if !defined(_WIN32)
#include <unistd.h>
#endif
#if defined(__linux__)
#include <dirent.h>
#include <pthread.h>
#endif

#include "fc_internal.h"

#define FC_BACKOFF_MIN_NS 16000000LL   /* 16 ms: a few training steps */
#define FC_BACKOFF_MAX_NS 1000000000LL /* 1 s: a late probe then costs < 1% */
/* Lateness this long after a back-off ended is a new episode, not the old one:
 * shorter clean spells happen by chance while a helper shares its core. */
#define FC_CLEAN_SPELL_NS 1000000000LL
/* One late observation alone is not contention: on an idle VM a halted vCPU,
 * a page-faulting share or a thread's first start-up can hold a helper (or
 * the scout) up for a millisecond now and then. A busy core makes lateness
 * recur within milliseconds, so a back-off needs FC_STRIKES late regions
 * within FC_STRIKE_WINDOW_NS, or FC_STRIKES late scout answers in a row. */
#define FC_STRIKES 2
/* Back-offs the scout may renew in a row because every core had a runnable
 * thread, before the full team is tried anyway (about 4 s at the longest
 * back-off): a probe costs one time slice, a wrong reading a lasting cap. */
#define FC_FULL_RENEWALS 4
#define FC_STRIKE_WINDOW_NS 100000000LL /* 100 ms */

#if defined(__GNUC__) || defined(__clang__)
#define LOAD(p) __atomic_load_n(p, __ATOMIC_RELAXED)
#define STORE(p, v) __atomic_store_n(p, v, __ATOMIC_RELAXED)
#define ADD(p, v) ((void)__atomic_fetch_add(p, v, __ATOMIC_RELAXED))
#define CAS(p, expected, v) \
    __atomic_compare_exchange_n(p, expected, v, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED)
#else /* approximate but harmless: the controller only tunes speed */
#define LOAD(p) (*(p))
#define STORE(p, v) (*(p) = (v))
#define ADD(p, v) (*(p) += (v))
static int cas_int(int *p, int *expected, int v)
{
    if (*p != *expected) { *expected = *p; return 0; }
    *p = v;
    return 1;
}
#define CAS(p, expected, v) cas_int(p, expected, v)
#endif

int64_t fc_team_now(void)
{
#if !defined(_WIN32)
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
#elif FC_HAVE_OPENMP
    return (int64_t)(omp_get_wtime() * 1e9);
#else
    return 0;
#endif
}

/* The calling thread's CPU time, ns; -1 where there is no such clock. A system
 * call (about 0.4 us on a VM), made only around regions of a team. */
int64_t fc_team_thread_cpu(void)
{
#if !defined(_WIN32) && defined(CLOCK_THREAD_CPUTIME_ID)
    struct timespec ts;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0) return -1;
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
#else
    return -1;
#endif
}

/* ---- controller state ---------------------------------------------------- */
static int g_cap = 0;                 /* team cap while backing off; 0 = none */
static int64_t g_cap_until = 0;       /* fc_team_now() at which the cap lapses */
static int64_t g_backoff_min = FC_BACKOFF_MIN_NS;
static int64_t g_backoff = FC_BACKOFF_MIN_NS;
static int g_adaptive = 1;            /* 0: observe only, never cap (tests, benchmarks) */
static int g_last_team = 1;           /* largest team of the last kernel call */
static int g_used = 0;                /* a region ran with > 1 thread (fork rule) */
static int64_t g_parallel_regions = 0, g_late_regions = 0, g_backoffs = 0, g_scout_late = 0;
static int64_t g_wait_ns = 0;         /* callers' waits summed over parallel regions */
static int64_t g_descheduled = 0;     /* regions whose caller was off its core > FC_LATE_NS */
static int g_strikes = FC_STRIKES;   /* late observations that make a back-off */
static int64_t g_region_late_at = 0;  /* t0 of the last late region */
static int g_region_strikes = 0;      /* late regions in the current strike window */
static int g_scout_strikes = 0;       /* late scout answers in a row */
static int g_lift_free = 0;           /* the last back-off was lifted on the scout's free core */
static int64_t g_sim_late = 0;        /* test hook: injected wait, ns */
static int g_sim_regions = 0;         /* ... for this many more parallel regions */
static int64_t g_sim_after = -1;      /* ... then this wait for every later one; < 0: real */
static int g_sim_full = -1;           /* test hook: the scout's run-queue reading; < 0: real */
static int64_t g_stalled = 0;         /* late regions in which no thread of ours waited for a CPU */
static int g_sim_sched = -1;          /* test hook: late regions' run-delay verdict; < 0: real */

/* Test hook: the wait a region (or scout answer) reports instead of `measured`. */
static int64_t simulated(int64_t measured)
{
    int sim = LOAD(&g_sim_regions);
    if (sim > 0 && CAS(&g_sim_regions, &sim, sim - 1)) return LOAD(&g_sim_late);
    const int64_t after = LOAD(&g_sim_after);
    return after >= 0 ? after : measured;
}

int fc_team_was_used(void) { return LOAD(&g_used); }

int fc_thread_limit(void)
{
    int lim = FC_MAX_TEAM;
#if FC_HAVE_OPENMP
    /* libgomp aborts the process for a team beyond its thread limit */
    int omp = omp_get_thread_limit();
    if (omp >= 1 && omp < lim) lim = omp;
#endif
    return lim;
}

/* Cap the team at `cap` for a back-off, for lateness seen in a region (or by
 * the scout) that began at `t0`. */
static void back_off(int64_t t0, int cap)
{
    const int64_t now = fc_team_now(), until = LOAD(&g_cap_until);
    /* a region opened while the current back-off was in force: already counted */
    if (t0 < until) return;
    /* measured from the region's start: the late region itself may take a long
     * time slice to end on a crowded machine */
    int64_t b = LOAD(&g_backoff);
    if (until != 0 && t0 - until <= FC_CLEAN_SPELL_NS)
        b = FC_MIN(2 * b, FC_BACKOFF_MAX_NS);
    else
        b = LOAD(&g_backoff_min);
    STORE(&g_backoff, b);
    STORE(&g_cap_until, now + b);
    STORE(&g_cap, FC_MAX(cap, 1));
    ADD(&g_backoffs, 1);
}

/*
 * ---- the scout ----
 * Trying the full team again when a back-off lapses costs a time slice if the
 * cores are still busy. A sleeping thread of our own is woken first instead: if
 * it gets a core within FC_LATE_NS, a helper would too, and the next call tries
 * the full team; if not, the back-off is renewed (doubled) and no kernel waited.
 * Calls in between stay on the capped team.
 */
#if FC_HAVE_OPENMP && !defined(_WIN32)
#include <pthread.h>
static pthread_mutex_t g_scout_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_scout_cond = PTHREAD_COND_INITIALIZER;
static int g_scout_state = 0;   /* 0 not started, 1 running, -1 could not start */
static int64_t g_ping_at = 0;   /* a wake-up posted at this time awaits the scout; 0 = none */
static int64_t g_pong = -1;     /* the scout's wake-up latency for it, ns; -1 = not yet */
static int g_pong_full = 0;     /* ... and every core had a runnable thread besides it */
static int g_full_renewals = 0; /* back-offs renewed in a row on the run queue alone */

/*
 * A prompt wake-up alone does not show a free core: the scheduler favours a
 * thread that slept (it has used little CPU), so the scout runs at once even
 * when one core runs another process and the other our caller; the team that
 * follows makes three runnable threads on two cores and someone waits a time
 * slice. So the scout also counts the runnable threads (Linux /proc/loadavg,
 * fourth field: runnable / total, the reader included). As many besides the
 * scout as there are online cores: no core for a helper.
 */
static int cores_full(void)
{
#if defined(__linux__)
    static long ncpu = 0;
    if (ncpu == 0) ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    FILE *f = fopen("/proc/loadavg", "r");
    if (!f) return 0;
    long running = 0, total = 0;
    /* the load averages skipped as words: their decimal point follows no locale */
    const int got = fscanf(f, "%*s %*s %*s %ld/%ld", &running, &total);
    fclose(f);
    return got == 2 && ncpu > 0 && running - 1 >= ncpu;
#else
    return 0;
#endif
}

static void *scout_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&g_scout_lock);
    for (;;) {
        while (g_ping_at == 0 || g_pong >= 0) pthread_cond_wait(&g_scout_cond, &g_scout_lock);
        const int64_t asked = g_ping_at, lat = fc_team_now() - asked;
        pthread_mutex_unlock(&g_scout_lock); /* no file read under the lock */
        const int full = cores_full();
        pthread_mutex_lock(&g_scout_lock);
        if (g_ping_at == asked && g_pong < 0) { /* not withdrawn by a reset meanwhile */
            g_pong_full = full;
            g_pong = lat;
        }
    }
    return NULL;
}

/* In a forked child: the scout thread is gone, and the lock may have been held. */
void fc_team_atfork_child(void)
{
    pthread_mutex_init(&g_scout_lock, NULL);
    pthread_cond_init(&g_scout_cond, NULL);
    g_scout_state = 0;
    g_ping_at = 0;
}

/* 1: a core is free, try the full team; 0: no answer yet; -1: no core was free.
 * *asked gets the time the answered question was posted. */
static int scout_check(int64_t now, int64_t *asked)
{
    int r = 0;
    pthread_mutex_lock(&g_scout_lock);
    if (g_scout_state == 0) {
        pthread_attr_t at;
        pthread_t t;
        pthread_attr_init(&at);
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&at, 1 << 16);
        g_scout_state = pthread_create(&t, &at, scout_main, NULL) == 0 ? 1 : -1;
        pthread_attr_destroy(&at);
    }
    if (g_scout_state < 0) {
        STORE(&g_lift_free, 0);
        r = 1; /* no scout: the team itself finds out */
    } else if (g_ping_at == 0) {
        g_ping_at = now;
        g_pong = -1;
        pthread_cond_signal(&g_scout_cond);
    } else if (g_pong >= 0) {
        /* a test's simulated answer stands alone: the run queue is the machine's */
        const int sim = LOAD(&g_sim_regions) > 0 || LOAD(&g_sim_after) >= 0;
        const int sim_full = LOAD(&g_sim_full);
        const int pong_full = sim_full >= 0 ? sim_full : !sim && g_pong_full;
        int64_t lat = g_pong;
        lat = simulated(lat);
        /* The run queue is a snapshot, and outside a container's own CPU
         * accounting; a few renewals on it alone, then the team finds out. */
        const int full = pong_full && lat <= FC_LATE_NS
                         && g_full_renewals < FC_FULL_RENEWALS;
        if (lat <= FC_LATE_NS && !full) {
            g_scout_strikes = 0;
            g_full_renewals = 0;
            /* a free core seen, not a lift because the renewals ran out */
            STORE(&g_lift_free, !pong_full);
            r = 1;
        } else if (full) {
            ++g_full_renewals;
            r = -1;
        } else if (++g_scout_strikes >= LOAD(&g_strikes)) {
            g_scout_strikes = 0;
            r = -1;
        } /* else: ask once more (r = 0: the team stays capped meanwhile) */
        *asked = g_ping_at;
        g_ping_at = 0;
    }
    pthread_mutex_unlock(&g_scout_lock);
    return r;
}
#else
void fc_team_atfork_child(void) {}
static int scout_check(int64_t now, int64_t *asked)
{
    *asked = now;
    return 1;
}
#endif

/*
 * ---- run delay: was a thread of ours waiting for a CPU? ----
 * The sum over the process's threads of the time each spent runnable but not
 * running, from /proc/self/task/<tid>/schedstat, kept per thread between
 * readings. Read only for late regions and when a back-off lifts (tens of
 * microseconds for a few dozen threads), under a lock: concurrent callers are
 * rare there and the table is small.
 */
#define FC_SCHED_THREADS 256 /* threads tracked; more are read but not remembered */
enum { SCHED_NONE = -1, SCHED_STALE = -2 }; /* sched_delay_since's non-readings */
/* sched_verdict's answers besides 1 (contention) and 0 (a stall of our own) */
enum { VERDICT_UNKNOWN = -1, VERDICT_STALE = -2 };

#if defined(__linux__)
static pthread_mutex_t g_sched_lock = PTHREAD_MUTEX_INITIALIZER;
static int g_sched_tid[FC_SCHED_THREADS];
static int64_t g_sched_delay[FC_SCHED_THREADS];
static int g_sched_n = 0;
static int64_t g_sched_at = 0;      /* fc_team_now() of the last reading; 0 = none */
static int g_sched_missing = 0;     /* the statistics cannot be read here */

/* Run delay grown since the last reading, ns: SCHED_STALE when that reading is
 * older than FC_STRIKE_WINDOW_NS (or there was none), SCHED_NONE without the
 * statistics. The reading becomes the new baseline either way. */
static int64_t sched_delay_since(int64_t now)
{
    if (LOAD(&g_sched_missing)) return SCHED_NONE;
    DIR *d = opendir("/proc/self/task");
    if (!d) {
        STORE(&g_sched_missing, 1);
        return SCHED_NONE;
    }
    pthread_mutex_lock(&g_sched_lock);
    int tid[FC_SCHED_THREADS];
    int64_t delay[FC_SCHED_THREADS];
    int n = 0;
    int64_t grown = 0, ran = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        char path[64];
        snprintf(path, sizeof path, "/proc/self/task/%.20s/schedstat", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f) continue; /* the thread ended meanwhile */
        long long on_cpu = 0, waited = 0;
        const int got = fscanf(f, "%lld %lld", &on_cpu, &waited);
        fclose(f);
        if (got != 2) continue;
        ran += on_cpu;
        const int t = atoi(e->d_name);
        int64_t before = 0; /* a thread not seen before: all its run delay is new */
        for (int i = 0; i < g_sched_n; ++i)
            if (g_sched_tid[i] == t) { before = g_sched_delay[i]; break; }
        grown += FC_MAX((int64_t)waited - before, 0);
        if (n < FC_SCHED_THREADS) {
            tid[n] = t;
            delay[n] = waited;
            ++n;
        }
    }
    closedir(d);
    const int64_t at = g_sched_at;
    memcpy(g_sched_tid, tid, sizeof(int) * (size_t)n);
    memcpy(g_sched_delay, delay, sizeof(int64_t) * (size_t)n);
    g_sched_n = n;
    g_sched_at = now;
    pthread_mutex_unlock(&g_sched_lock);
    /* a kernel built without the accounting shows zeros: no CPU time at all */
    if (ran == 0) {
        STORE(&g_sched_missing, 1);
        return SCHED_NONE;
    }
    return at == 0 || now - at > FC_STRIKE_WINDOW_NS ? SCHED_STALE : grown;
}

static void sched_reset(void)
{
    pthread_mutex_lock(&g_sched_lock);
    g_sched_n = 0;
    g_sched_at = 0;
    pthread_mutex_unlock(&g_sched_lock);
}
#else
static int64_t sched_delay_since(int64_t now)
{
    (void)now;
    return SCHED_NONE;
}
static void sched_reset(void) {}
#endif

/* The verdict on a late region's wait: 1 a thread of ours waited for a CPU for
 * at least half of it (contention), 0 none did (a stall of our own),
 * VERDICT_STALE no reading recent enough to compare with (this one becomes it),
 * VERDICT_UNKNOWN no statistics here. */
static int sched_verdict(int64_t wait, int64_t now, int simulated_wait)
{
    const int sim = LOAD(&g_sim_sched);
    if (sim >= 0) return sim;
    /* a test's simulated wait stands alone: the machine's run delay is not its */
    if (simulated_wait) return 1;
    const int64_t grown = sched_delay_since(now);
    if (grown == SCHED_NONE) return VERDICT_UNKNOWN;
    if (grown == SCHED_STALE) return VERDICT_STALE;
    return grown >= wait / 2;
}

int fc_threads(int requested)
{
    if (requested <= 1 || !FC_HAVE_OPENMP || fc_forked_child()) {
        STORE(&g_last_team, 1);
        return 1;
    }
    int n = FC_MIN(requested, fc_thread_limit());
    int cap = LOAD(&g_cap);
    if (cap > 0) {
        const int64_t now = fc_team_now();
        int64_t asked = now;
        int r = 0;
        if (now >= LOAD(&g_cap_until) && (r = scout_check(now, &asked)) > 0) {
            /* lapsed, a core is free: this call tries the full team; the run
             * delay read now is the baseline its lateness, if any, is judged by */
            if (CAS(&g_cap, &cap, 0)) (void)sched_delay_since(now);
        } else {
            n = FC_MIN(n, cap);
            if (r < 0) {
                ADD(&g_scout_late, 1);
                if (LOAD(&g_adaptive)) back_off(asked, cap);
            }
        }
    }
    /* regions raise it to the team they really ran with */
    STORE(&g_last_team, 1);
    if (n > 1) STORE(&g_used, 1);
    return n;
}

int fc_threads_for(int requested, double work)
{
    if (work < FC_MIN_PARALLEL_WORK) {
        STORE(&g_last_team, 1);
        return 1;
    }
    return fc_threads(requested);
}

/* ---- one region ------------------------------------------------------------ */
/*
 * How long a region's helpers, or the cores, held its caller up, from its
 * timings (ns): `total` from opening to the end barrier, `*work` the caller's
 * t0-to-done span, `late` the latest helper arrival, `off` the wall time the
 * caller was not on a core. The wait is the caller's at the end barrier after
 * its share, the latest arrival (a region with inner barriers already counts
 * waits there in `work`), or its time off the core, whichever is longest; time
 * off the core inside the share is taken out of *work, so the share is judged
 * by what the caller really ran.
 */
static int64_t region_wait(int64_t total, int64_t *work, int64_t late, int64_t off)
{
    int64_t wait = FC_MAX(*work > 0 ? total - *work : 0, late);
    if (off > FC_LATE_NS) {
        *work = FC_MAX(*work - off, 0);
        wait = FC_MAX(wait, off);
    }
    return wait;
}

/* One thread would have been faster: the wait is longer than a free core's
 * wake-up can be and longer than half the caller's share. */
static int is_late(int64_t wait, int64_t work)
{
    return wait > FC_LATE_NS && wait > work / 2;
}

int fc_team_region_late(int64_t total_ns, int64_t work_ns, int64_t late_ns, int64_t off_ns)
{
    return is_late(region_wait(total_ns, &work_ns, late_ns, off_ns), work_ns);
}

void fc_team_begin(fc_team *tm, int nt)
{
    tm->team = 1;
    tm->late = 0;
    tm->work = 0;
    tm->nlate = 0;
    tm->t0 = nt > 1 ? fc_team_now() : 0;
    tm->start = 0;
    tm->cpu0 = -1; /* read by the caller's fc_team_arrive, once the team is known */
}

void fc_team_end(fc_team *tm)
{
    if (tm->t0 == 0 || tm->team <= 1) return;
    const int64_t total = fc_team_now() - tm->t0;
    int last = LOAD(&g_last_team);
    while (last < tm->team && !CAS(&g_last_team, &last, tm->team)) {}
    ADD(&g_parallel_regions, 1);

    /* Only a region longer than FC_LATE_NS can be late, so a short one skips
     * the second CPU-clock read. */
    int64_t off = 0;
    if (total > FC_LATE_NS && tm->cpu0 >= 0) {
        const int64_t cpu = fc_team_thread_cpu();
        /* waking the helpers, then the wall time of the rest not on the core */
        if (cpu >= 0) off = tm->start + FC_MAX(total - tm->start - (cpu - tm->cpu0), 0);
    }
    if (off > FC_LATE_NS) ADD(&g_descheduled, 1);
    int64_t work = tm->work;
    int64_t wait = region_wait(total, &work, tm->late, off);
    const int sim_wait = LOAD(&g_sim_regions) > 0 || LOAD(&g_sim_after) >= 0;
    wait = simulated(wait);
    ADD(&g_wait_ns, FC_MAX(wait, 0));

    if (is_late(wait, work)) {
        ADD(&g_late_regions, 1);
        const int verdict = sched_verdict(wait, tm->t0 + total, sim_wait);
        if (verdict == 0) { /* no thread of ours waited for a CPU: not contention */
            ADD(&g_stalled, 1);
            return;
        }
        /* racing updates from concurrent callers only blur the count by one */
        const int64_t prev = LOAD(&g_region_late_at);
        int strikes = prev != 0 && tm->t0 - prev <= FC_STRIKE_WINDOW_NS
                          ? LOAD(&g_region_strikes) + 1 : 1;
        STORE(&g_region_late_at, tm->t0);
        /* Right after a back-off lifted on a full run queue, lateness is the same
         * contention going on, not a stray hiccup: one late region renews it,
         * and each probe of the full team under a lasting load costs one time
         * slice, not two. After a lift on a free core, a single late region is
         * as likely a hiccup as it was before the first back-off. */
        const int64_t until = LOAD(&g_cap_until);
        const int need = until != 0 && tm->t0 >= until && tm->t0 - until <= FC_CLEAN_SPELL_NS
                                 && !LOAD(&g_lift_free)
                             ? 1 : LOAD(&g_strikes);
        /* a late region the run delay could not vouch for is never the last strike */
        if (strikes >= need && verdict != VERDICT_STALE) {
            strikes = 0;
            /* without the helpers that arrived late (their cores are busy), or one
             * fewer when none did (one was descheduled mid-share) */
            if (LOAD(&g_adaptive)) back_off(tm->t0, tm->team - FC_MAX(tm->nlate, 1));
        }
        STORE(&g_region_strikes, strikes);
    }
}

/* ---- diagnostics and the test hook ---------------------------------------- */
void fc_team_get_stats(fc_team_stats *s)
{
    const int64_t left = LOAD(&g_cap_until) - fc_team_now();
    const int cap = LOAD(&g_cap);
    s->cap = cap > 0 && left > 0 ? cap : 0;
    s->cap_left_ns = s->cap ? left : 0;
    s->backoff_ns = LOAD(&g_backoff);
    s->last_team = LOAD(&g_last_team);
    s->parallel_regions = LOAD(&g_parallel_regions);
    s->late_regions = LOAD(&g_late_regions);
    s->backoffs = LOAD(&g_backoffs);
    s->scout_late = LOAD(&g_scout_late);
    s->wait_ns = LOAD(&g_wait_ns);
    s->descheduled = LOAD(&g_descheduled);
    s->stalled = LOAD(&g_stalled);
}

void fc_team_reset(int64_t backoff_ns, int strikes)
{
    STORE(&g_strikes, strikes >= 1 ? strikes : FC_STRIKES);
    STORE(&g_region_late_at, 0);
    STORE(&g_region_strikes, 0);
#if FC_HAVE_OPENMP && !defined(_WIN32)
    pthread_mutex_lock(&g_scout_lock);
    g_ping_at = 0; /* an answer to a question from before is not wanted */
    g_scout_strikes = 0;
    g_full_renewals = 0;
    pthread_mutex_unlock(&g_scout_lock);
#endif
    if (backoff_ns <= 0) backoff_ns = FC_BACKOFF_MIN_NS;
    backoff_ns = FC_MIN(backoff_ns, FC_BACKOFF_MAX_NS);
    STORE(&g_lift_free, 0);
    STORE(&g_cap, 0);
    STORE(&g_cap_until, 0);
    STORE(&g_backoff_min, backoff_ns);
    STORE(&g_backoff, backoff_ns);
    STORE(&g_parallel_regions, 0);
    STORE(&g_late_regions, 0);
    STORE(&g_backoffs, 0);
    STORE(&g_scout_late, 0);
    STORE(&g_wait_ns, 0);
    STORE(&g_descheduled, 0);
    STORE(&g_sim_regions, 0);
    STORE(&g_sim_late, 0);
    STORE(&g_sim_after, -1);
    STORE(&g_sim_full, -1);
    STORE(&g_stalled, 0);
    STORE(&g_sim_sched, -1);
    sched_reset();
}

void fc_team_set_adaptive(int on)
{
    STORE(&g_adaptive, on != 0);
    if (!on) STORE(&g_cap, 0);
}

int fc_team_adaptive(void) { return LOAD(&g_adaptive); }

void fc_team_simulate_full(int full) { STORE(&g_sim_full, full < 0 ? -1 : full != 0); }

void fc_team_simulate_sched(int waited) { STORE(&g_sim_sched, waited < 0 ? -1 : waited != 0); }

int fc_team_run_delay(int64_t *grown_ns)
{
    const int64_t grown = sched_delay_since(fc_team_now());
    *grown_ns = grown >= 0 ? grown : 0;
    return grown == SCHED_NONE ? -1 : grown != SCHED_STALE;
}

int fc_team_cores_full(void)
{
#if FC_HAVE_OPENMP && !defined(_WIN32)
    return cores_full();
#else
    return 0;
#endif
}

void fc_team_simulate_late(int64_t wait_ns, int regions, int64_t after_ns)
{
    STORE(&g_sim_late, wait_ns);
    STORE(&g_sim_after, after_ns);
    STORE(&g_sim_regions, regions);
}

/* ---- route overrides (tests) ---------------------------------------------- */
static long g_override[FC_OVERRIDE_COUNT];
static int g_override_on[FC_OVERRIDE_COUNT];

int fc_set_route_override(int which, long value, int on)
{
    if (which < 0 || which >= FC_OVERRIDE_COUNT) return -1;
    STORE(&g_override[which], value);
    STORE(&g_override_on[which], on != 0);
    return 0;
}

long fc_route_override(int which, long dflt)
{
    return LOAD(&g_override_on[which]) ? LOAD(&g_override[which]) : dflt;
}

/* ---- the OpenMP runtime's own setting ------------------------------------- */
int fc_max_threads(void)
{
#if FC_HAVE_OPENMP
    return fc_forked_child() ? 1 : FC_MIN(omp_get_max_threads(), fc_thread_limit());
#else
    return 1;
#endif
}

void fc_set_max_threads(int n)
{
#if FC_HAVE_OPENMP
    if (n >= 1) omp_set_num_threads(FC_MIN(n, fc_thread_limit()));
#else
    (void)n;
#endif
}
