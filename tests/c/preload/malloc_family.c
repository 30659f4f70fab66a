/* malloc_family.c — every entry point of the malloc family with its edge cases,
 * for running under libnmm_preload.so. Prints one line per check; exit 1 on the
 * first failed check.
 */
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CHECK(cond)                                                         \
    do {                                                                    \
        if (!(cond)) {                                                      \
            printf("FAILED line %d: %s\n", __LINE__, #cond);                \
            return 1;                                                       \
        }                                                                   \
    } while (0)

int main(void)
{
    long page = sysconf(_SC_PAGESIZE);
    volatile size_t huge = SIZE_MAX / 2; /* volatile: keep the compiler from folding it */
    char *p = malloc(100);
    CHECK(p && ((uintptr_t)p & 15) == 0);
    CHECK(malloc_usable_size(p) >= 100);
    memset(p, 'x', 100);
    p = realloc(p, 5000);
    CHECK(p && p[0] == 'x' && p[99] == 'x');
    p = realloc(p, 10);
    CHECK(p && p[9] == 'x');
    free(p);

    int *z = calloc(1000, sizeof(int));
    CHECK(z);
    for (int i = 0; i < 1000; i++)
        CHECK(z[i] == 0);
    free(z);
    errno = 0;
    CHECK(calloc(huge, 4) == NULL && errno == ENOMEM);

    errno = 0;
    CHECK(reallocarray(NULL, huge, 4) == NULL && errno == ENOMEM);
    int *a = reallocarray(NULL, 10, sizeof(int));
    CHECK(a);
    free(a);

    void *m = NULL;
    CHECK(posix_memalign(&m, 64, 1000) == 0 && ((uintptr_t)m & 63) == 0);
    free(m);
    CHECK(posix_memalign(&m, 3, 10) == EINVAL);
    CHECK(posix_memalign(&m, 4096, 10) == 0 && ((uintptr_t)m & 4095) == 0);
    free(m);

    void *al = aligned_alloc(256, 512);
    CHECK(al && ((uintptr_t)al & 255) == 0);
    free(al);
    void *ma = memalign(128, 77);
    CHECK(ma && ((uintptr_t)ma & 127) == 0);
    free(ma);
    void *va = valloc(10);
    CHECK(va && ((uintptr_t)va % (uintptr_t)page) == 0);
    free(va);
    void *pv = pvalloc(10);
    CHECK(pv && ((uintptr_t)pv % (uintptr_t)page) == 0 && malloc_usable_size(pv) >= (size_t)page);
    free(pv);

    void *big = malloc(10 << 20);
    CHECK(big);
    memset(big, 1, 10 << 20);
    free(big);
    void *zero = malloc(0);
    CHECK(zero != NULL);
    free(zero);
    free(NULL);
    CHECK(malloc_usable_size(NULL) == 0);
    printf("all checks passed\n");
    return 0;
}
