/* fc_scratch.c - the scratch allocator every kernel uses (fc_malloc / fc_free). */
#if !defined(_WIN32) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L /* posix_memalign */
#endif
#include <stdlib.h>

#include "fc_internal.h"

/*
 * Scratch memory. Kernels need large temporary buffers (padded copies, partial
 * sums) on every call; fresh large blocks come from mmap, and the kernel's page
 * zeroing then costs 10-15% of a call on big layers. Blocks of 64 KiB and more
 * therefore go back to a small cache instead of the OS and are reused by later
 * calls (best fit, at most 4x larger than asked). The cache keeps at most
 * FC_CACHE_SLOTS blocks and FC_CACHE_MAX_BYTES in all; anything else is freed.
 * A 64-byte header before each block records its size.
 */
#define FC_CACHE_SLOTS 16
#define FC_CACHE_MIN ((size_t)64 << 10)
#define FC_CACHE_MAX_BYTES ((size_t)1 << 30)

#if !defined(_WIN32) && !defined(FC_NO_SCRATCH_CACHE) /* sanitizer builds: every block is fresh */
#include <pthread.h>
static pthread_mutex_t g_cache_lock = PTHREAD_MUTEX_INITIALIZER;
#define CACHE_LOCK() pthread_mutex_lock(&g_cache_lock)
#define CACHE_UNLOCK() pthread_mutex_unlock(&g_cache_lock)
#define FC_HAVE_CACHE 1
#else
#define FC_HAVE_CACHE 0 /* Windows: plain allocation */
#endif

/* In a child forked while another thread held the cache lock, that thread does
 * not exist: the lock is made fresh (called by the fork handler in fc_runtime.c). */
void fc_scratch_atfork_child(void)
{
#if FC_HAVE_CACHE
    pthread_mutex_init(&g_cache_lock, NULL);
#endif
}

static void *g_cache_ptr[FC_CACHE_SLOTS];
static size_t g_cache_size[FC_CACHE_SLOTS];
static size_t g_cache_bytes;

static void *raw_alloc(size_t sz)
{
#if defined(_MSC_VER)
    return _aligned_malloc(sz, 64);
#else
    void *p = NULL;
    if (posix_memalign(&p, 64, sz) != 0) return NULL;
    return p;
#endif
}

static void raw_free(void *p)
{
#if defined(_MSC_VER)
    _aligned_free(p);
#else
    free(p);
#endif
}

void *fc_malloc(size_t nbytes)
{
    if (nbytes == 0) return NULL;
    size_t sz = ((nbytes + 63) & ~(size_t)63) + 64;
    char *base = NULL;
#if FC_HAVE_CACHE
    if (sz >= FC_CACHE_MIN) {
        CACHE_LOCK();
        int best = -1;
        for (int i = 0; i < FC_CACHE_SLOTS; ++i)
            if (g_cache_ptr[i] && g_cache_size[i] >= sz && g_cache_size[i] / 4 <= sz &&
                (best < 0 || g_cache_size[i] < g_cache_size[best]))
                best = i;
        if (best >= 0) {
            base = (char *)g_cache_ptr[best];
            sz = g_cache_size[best];
            g_cache_ptr[best] = NULL;
            g_cache_bytes -= sz;
        }
        CACHE_UNLOCK();
    }
#endif
    if (!base) base = (char *)raw_alloc(sz);
    if (!base) return NULL;
    *(size_t *)base = sz;
    return base + 64;
}

void fc_free(void *p)
{
    if (!p) return;
    char *base = (char *)p - 64;
    size_t sz = *(size_t *)base;
#if FC_HAVE_CACHE
    if (sz >= FC_CACHE_MIN) {
        CACHE_LOCK();
        int slot = -1;
        for (int i = 0; i < FC_CACHE_SLOTS && slot < 0; ++i)
            if (!g_cache_ptr[i]) slot = i;
        if (slot < 0) { /* full: replace the smallest block if this one is larger */
            int small = 0;
            for (int i = 1; i < FC_CACHE_SLOTS; ++i)
                if (g_cache_size[i] < g_cache_size[small]) small = i;
            if (g_cache_size[small] < sz) {
                raw_free(g_cache_ptr[small]);
                g_cache_bytes -= g_cache_size[small];
                g_cache_ptr[small] = NULL;
                slot = small;
            }
        }
        if (slot >= 0 && g_cache_bytes + sz <= FC_CACHE_MAX_BYTES) {
            g_cache_ptr[slot] = base;
            g_cache_size[slot] = sz;
            g_cache_bytes += sz;
            base = NULL;
        }
        CACHE_UNLOCK();
        if (!base) return;
    }
#endif
    raw_free(base);
}

/* Give every cached block back to the system (fastconv.release_memory()). */
void fc_scratch_release(void)
{
#if FC_HAVE_CACHE
    CACHE_LOCK();
    for (int i = 0; i < FC_CACHE_SLOTS; ++i) {
        raw_free(g_cache_ptr[i]);
        g_cache_ptr[i] = NULL;
        g_cache_size[i] = 0;
    }
    g_cache_bytes = 0;
    CACHE_UNLOCK();
#endif
}

size_t fc_scratch_bytes(void) { return g_cache_bytes; }
