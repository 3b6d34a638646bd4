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
 * therefore go back to a small pool instead of the OS and are reused by later
 * calls (best fit, at most 4x larger than asked). The pool keeps at most
 * FC_POOL_SLOTS blocks and FC_POOL_MAX_BYTES in all; anything else is freed.
 * A 64-byte header before each block records its size.
 */
#define FC_POOL_SLOTS 16
#define FC_POOL_MIN ((size_t)64 << 10)
#define FC_POOL_MAX_BYTES ((size_t)1 << 30)

#if !defined(_WIN32) && !defined(FC_NO_POOL) /* sanitizer builds: every block is fresh */
#include <pthread.h>
static pthread_mutex_t g_pool_lock = PTHREAD_MUTEX_INITIALIZER;
#define POOL_LOCK() pthread_mutex_lock(&g_pool_lock)
#define POOL_UNLOCK() pthread_mutex_unlock(&g_pool_lock)
#define FC_HAVE_POOL 1
#else
#define FC_HAVE_POOL 0 /* Windows: plain allocation */
#endif

/* In a child forked while another thread held the pool lock, that thread does
 * not exist: the lock is made fresh (called by the fork handler in fc_runtime.c). */
void fc_scratch_atfork_child(void)
{
#if FC_HAVE_POOL
    pthread_mutex_init(&g_pool_lock, NULL);
#endif
}

static void *g_pool_ptr[FC_POOL_SLOTS];
static size_t g_pool_size[FC_POOL_SLOTS];
static size_t g_pool_bytes;

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
#if FC_HAVE_POOL
    if (sz >= FC_POOL_MIN) {
        POOL_LOCK();
        int best = -1;
        for (int i = 0; i < FC_POOL_SLOTS; ++i)
            if (g_pool_ptr[i] && g_pool_size[i] >= sz && g_pool_size[i] / 4 <= sz &&
                (best < 0 || g_pool_size[i] < g_pool_size[best]))
                best = i;
        if (best >= 0) {
            base = (char *)g_pool_ptr[best];
            sz = g_pool_size[best];
            g_pool_ptr[best] = NULL;
            g_pool_bytes -= sz;
        }
        POOL_UNLOCK();
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
#if FC_HAVE_POOL
    if (sz >= FC_POOL_MIN) {
        POOL_LOCK();
        int slot = -1;
        for (int i = 0; i < FC_POOL_SLOTS && slot < 0; ++i)
            if (!g_pool_ptr[i]) slot = i;
        if (slot < 0) { /* full: replace the smallest block if this one is larger */
            int small = 0;
            for (int i = 1; i < FC_POOL_SLOTS; ++i)
                if (g_pool_size[i] < g_pool_size[small]) small = i;
            if (g_pool_size[small] < sz) {
                raw_free(g_pool_ptr[small]);
                g_pool_bytes -= g_pool_size[small];
                g_pool_ptr[small] = NULL;
                slot = small;
            }
        }
        if (slot >= 0 && g_pool_bytes + sz <= FC_POOL_MAX_BYTES) {
            g_pool_ptr[slot] = base;
            g_pool_size[slot] = sz;
            g_pool_bytes += sz;
            base = NULL;
        }
        POOL_UNLOCK();
        if (!base) return;
    }
#endif
    raw_free(base);
}

/* Give every pooled block back to the system (fastconv.release_memory()). */
void fc_release_pool(void)
{
#if FC_HAVE_POOL
    POOL_LOCK();
    for (int i = 0; i < FC_POOL_SLOTS; ++i) {
        raw_free(g_pool_ptr[i]);
        g_pool_ptr[i] = NULL;
        g_pool_size[i] = 0;
    }
    g_pool_bytes = 0;
    POOL_UNLOCK();
#endif
}

size_t fc_pool_bytes(void) { return g_pool_bytes; }
