/* sampled_api.c — site-0 allocations (the malloc replacement's case) with
 * tracking: which of them get a sampled stack. The Python binding always passes
 * a site, so this is the one test of the fast path that counts down inline.
 * Usage: sampled_api OPTIONS COUNT
 * Allocates COUNT blocks (64 bytes, then 5000 bytes, alternating in runs of 3,
 * so cache hits and refills interleave) with site 0 from one call path, keeps
 * them, and prints the leak report as JSON. The calling thread allocates
 * nothing through NMM before, so its countdown starts fresh.
 */
#include <nmm.h>

#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    if (argc != 3)
        return 2;
    nmm_config_t cfg;
    char err[512];
    nmm_config_init(&cfg);
    if (nmm_config_parse(&cfg, argv[1], err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    nmm_heap_t *heap = nmm_heap_create(&cfg);
    long count = atol(argv[2]);
    void **keep = calloc((size_t)count, sizeof *keep);
    if (!heap || !keep)
        return 3;
    for (long i = 0; i < count; i++) {
        keep[i] = nmm_alloc(heap, i / 3 % 2 ? 5000 : 64, 0);
        if (!keep[i])
            return 4;
    }
    static char buf[1 << 16];
    size_t n = nmm_leaks_report(heap, 1, buf, sizeof buf);
    if (n >= sizeof buf)
        return 5;
    puts(buf);
    for (long i = 0; i < count; i++)
        if (nmm_free(heap, keep[i], 0) != NMM_OK)
            return 6;
    return nmm_validate(heap) == 0 ? 0 : 7;
}
