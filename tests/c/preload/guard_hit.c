/* guard_hit.c — runs off the end of a large block into its guard page (or writes
 * into a freed large block) on a paranoid heap: NMM's SIGSEGV handler must name
 * it in one line and the process must still die of SIGSEGV.
 *   guard_hit overflow | uaf | plain | chained
 * plain: a wild write that is not NMM's (the handler must stay out of the way);
 * chained: a handler installed before the heap sees the non-NMM fault and exits 42.
 */
#include <nmm.h>

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static void earlier_handler(int sig)
{
    (void)sig;
    static const char msg[] = "earlier handler ran\n";
    ssize_t w = write(2, msg, sizeof msg - 1);
    (void)w;
    _exit(42);
}

__attribute__((noinline)) static void poke(volatile char *p)
{
    *p = 1;
}

int main(int argc, char **argv)
{
    const char *what = argc > 1 ? argv[1] : "";
    if (strcmp(what, "chained") == 0)
        signal(SIGSEGV, earlier_handler);
    nmm_config_t cfg;
    char err[256];
    nmm_config_init(&cfg);
    if (nmm_config_parse(&cfg, "level=paranoid:tracking=1:stacks=0", err, sizeof err))
        return 2;
    nmm_heap_t *heap = nmm_heap_create(&cfg);
    if (!heap)
        return 3;
    size_t size = 1000000;
    char *p = NMM_ALLOC(heap, size);
    memset(p, 0, size);
    fprintf(stderr, "block %p\n", (void *)p);
    if (strcmp(what, "overflow") == 0) {
        for (size_t i = size; i < size + 2 * 4096; i++)
            poke(p + i);
    } else if (strcmp(what, "uaf") == 0) {
        NMM_FREE(heap, p);
        poke(p + 10);
    } else {
        poke((volatile char *)16);
    }
    printf("not reached\n");
    return 0;
}
