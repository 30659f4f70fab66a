/* zero_size.c — zero-size blocks under libnmm_preload.so:
 *   zero_size ok | write | read | double_free
 * "ok": distinct addresses, the usable size, realloc to and from 0, free; the
 * others touch (or free twice) a malloc(0) made in make_zero. At paranoid the
 * block is in a PROT_NONE area: a touch dies with SIGSEGV after NMM's line.
 */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

__attribute__((noinline)) char *make_zero(void)
{
    return malloc(0);
}

int main(int argc, char **argv)
{
    const char *what = argc > 1 ? argv[1] : "ok";
    char *blocks[64];
    for (int i = 0; i < 64; i++)
        blocks[i] = make_zero();
    for (int i = 0; i < 64; i++)
        for (int j = 0; j < i; j++)
            if (blocks[i] == blocks[j] || !blocks[i])
                return printf("not distinct\n"), 1;
    char *z = blocks[0];
    printf("usable %zu\n", malloc_usable_size(z));
    char *grown = realloc(blocks[1], 40);
    memset(grown, 7, 40);
    char *shrunk = realloc(grown, 0);
    free(shrunk);
    char *made = calloc(0, 8);
    free(made);
    for (int i = 2; i < 64; i++)
        free(blocks[i]);
    printf("ok\n");
    fflush(stdout);
    if (strcmp(what, "write") == 0)
        z[0] = 1;
    else if (strcmp(what, "read") == 0)
        printf("read %d\n", ((volatile char *)z)[0]);
    else if (strcmp(what, "double_free") == 0)
        free(z);
    free(z);
    printf("survived\n");
    return 0;
}
