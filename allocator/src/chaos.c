/* chaos.c — the chaos build's run-time side (chaos.h): the scheduler's hooks, the lock
 * wrappers, and the mutant switch behind NMM_OPTIONS `mutant=NAME`. In the production
 * build only chaos_mutant_option remains, and it refuses the key without naming any
 * mutant. Any thread; chaos_mutants is written while options are parsed, before the
 * workload starts.
 */
#define NMM_CHAOS_IMPL 1 /* the real pthread calls, unwrapped */
#include "internal.h"

#include <string.h>

#ifdef NMM_CHAOS

chaos_hooks_t chaos_hooks;
uint32_t chaos_mutants;

#define NMM_MUTANT_NAME_(name, what) #name,
static const char *const mutant_names[] = {NMM_MUTANTS(NMM_MUTANT_NAME_)};
#undef NMM_MUTANT_NAME_

const char *chaos_mutant_name(int index)
{
    return index >= 0 && index < NMM_MUT_COUNT_ ? mutant_names[index] : NULL;
}

bool chaos_mutant_option(const char *v, size_t n, strbuf_t *msg)
{
    if (n == 4 && memcmp(v, "none", 4) == 0) {
        chaos_mutants = 0;
        return true;
    }
    for (int i = 0; i < NMM_MUT_COUNT_; i++) {
        if (strlen(mutant_names[i]) == n && memcmp(v, mutant_names[i], n) == 0) {
            chaos_mutants = 1u << i;
            return true;
        }
    }
    strbuf_puts(msg, "unknown mutant '");
    strbuf_putn(msg, v, n);
    strbuf_puts(msg, "' for key 'mutant' (expected none or one of: ");
    for (int i = 0; i < NMM_MUT_COUNT_; i++) {
        if (i)
            strbuf_puts(msg, ", ");
        strbuf_puts(msg, mutant_names[i]);
    }
    strbuf_putc(msg, ')');
    return false;
}

static __thread const char *site_name, *site_where;

void chaos_lock_site(const char *name, const char *where)
{
    site_name = name;
    site_where = where;
}

int chaos_mutex_lock(pthread_mutex_t *m, const char *name, const char *where)
{
    if (site_name) { /* heap_lock's caller */
        name = site_name;
        where = site_where;
        site_name = NULL;
    }
    chaos_yield(where);
    if (!chaos_hooks.lock_wait)
        return pthread_mutex_lock(m);
    while (pthread_mutex_trylock(m) != 0) {
        if (!chaos_hooks.lock_wait(m, name, where))
            return pthread_mutex_lock(m) == 0 ? (chaos_hooks.locked(m, name, where), 0) : -1;
    }
    chaos_hooks.locked(m, name, where);
    return 0;
}

int chaos_mutex_trylock(pthread_mutex_t *m, const char *name, const char *where)
{
    if (site_name) {
        name = site_name;
        where = site_where;
    }
    chaos_yield(where);
    int rc = pthread_mutex_trylock(m);
    if (rc == 0) {
        site_name = NULL;
        if (chaos_hooks.locked)
            chaos_hooks.locked(m, name, where);
    }
    return rc;
}

int chaos_mutex_unlock(pthread_mutex_t *m, const char *where)
{
    int rc = pthread_mutex_unlock(m);
    if (chaos_hooks.unlocked)
        chaos_hooks.unlocked(m);
    chaos_yield(where);
    return rc;
}

#else /* production build: no mutants, and no mutant's name in the binary */

bool chaos_mutant_option(const char *v, size_t n, strbuf_t *msg)
{
    (void)v;
    (void)n;
    strbuf_puts(msg, "key 'mutant' exists only in the chaos build (built with NMM_CHAOS: "
                     "`python allocator/build.py native --flavor chaos`, the _chaos "
                     "libraries and nmm-driver_chaos); this is the production build");
    return false;
}

#endif /* NMM_CHAOS */
