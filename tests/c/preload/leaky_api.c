/* leaky_api.c — leaks through the NMM API with tracking and a stack on every
 * allocation (stacks=1/1), then prints the leak report: text, a line "----",
 * then JSON. Frames are named by dladdr, so build with -rdynamic and frame
 * pointers. Usage: leaky_api [NMM_OPTIONS string]
 *        leaky_api default   leaks from the default heap (configured by the
 *                            NMM_OPTIONS variable) and prints nothing itself: the
 *                            report at exit does (and the exit status is 23)
 */
#include <nmm.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static nmm_heap_t *heap;

__attribute__((noinline)) void *leak_big(void)
{
    return NMM_ALLOC(heap, 4000);
}

__attribute__((noinline)) void *leak_small(void)
{
    return NMM_ALLOC(heap, 24);
}

__attribute__((noinline)) void *from_helper(void)
{
    return leak_small();
}

/* Overwrite the dead stack below main's frame, where the leak scan at exit
 * would otherwise still find the lost pointers (a conservative scan's limit). */
__attribute__((noinline)) void scrub_stack(void)
{
    volatile char dead[64 * 1024];
    memset((char *)dead, 0, sizeof dead);
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "default") == 0) {
        heap = nmm_default_heap();
        leak_big();
        from_helper();
        scrub_stack();
        return 0;
    }
    nmm_config_t cfg;
    char err[512];
    nmm_config_init(&cfg);
    if (nmm_config_parse(&cfg, argc > 1 ? argv[1] : "tracking=1:stacks=1/1", err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    heap = nmm_heap_create(&cfg);
    if (!heap)
        return 3;
    for (int i = 0; i < 3; i++)
        leak_big();
    for (int i = 0; i < 10; i++)
        from_helper();
    void *freed = NMM_ALLOC(heap, 100);
    NMM_FREE(heap, freed);
    static char buf[1 << 16];
    size_t n = nmm_leaks_report(heap, 0, buf, sizeof buf);
    if (n >= sizeof buf)
        return 4;
    fputs(buf, stdout);
    puts("----");
    n = nmm_leaks_report(heap, 1, buf, sizeof buf);
    if (n >= sizeof buf)
        return 4;
    puts(buf);
    /* snprintf contract: a short buffer is truncated and the full length returned */
    char tiny[8];
    size_t full = nmm_leaks_report(heap, 1, tiny, sizeof tiny);
    if (full != n || tiny[7] != '\0')
        return 5;
    return 0;
}
