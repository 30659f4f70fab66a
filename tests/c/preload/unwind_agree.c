/* unwind_agree.c — white-box check of unwind.c's cached-rule stack walk: from many
 * frame shapes (rsp-relative frames, VLA frames with an rbp-relative CFA, frames
 * inside libc's qsort, which has no frame pointer) the fast walk must return the
 * very frames _Unwind_Backtrace returns, or decline. Built -O2 (no frame pointers)
 * with unwind.c included directly; prints "agree N declined M disagree K". */
#include "unwind.c"

#include <stdio.h>

static int agree, declined, disagree;

static NMM_NOINLINE void compare(void)
{
#ifdef FAST_UNWIND
    uintptr_t fast[STACK_ALL], slow[STACK_ALL];
    struct unwind_state f = {.pcs = fast, .skip = 1, .entry = -1};
    struct unwind_state s = {.pcs = slow, .skip = 1, .entry = -1};
    uintptr_t ip, sp, bp;
    __asm__ volatile("leaq 0(%%rip), %0\n\tmovq %%rsp, %1\n\tmovq %%rbp, %2"
                     : "=r"(ip), "=r"(sp), "=r"(bp));
    int r = fast_walk(ip, sp, bp, &f);
    _Unwind_Backtrace(unwind_frame, &s);
    if (r < 0) {
        declined++;
        return;
    }
    bool same = f.n == s.n && f.entry == s.entry && f.n > 2 &&
                memcmp(fast, slow, f.n * sizeof fast[0]) == 0;
    if (!same) {
        printf("fast %u frames, unwinder %u frames\n", f.n, s.n);
        for (uint32_t i = 0; i < f.n || i < s.n; i++)
            printf("  #%u %#lx %#lx\n", i, i < f.n ? (unsigned long)fast[i] : 0ul,
                   i < s.n ? (unsigned long)slow[i] : 0ul);
    }
    same ? agree++ : disagree++;
#endif
}

static NMM_NOINLINE int recurse(int depth, volatile const char *seed)
{
    char vla[depth * 24 + 1]; /* a VLA: the CFA is rbp-relative here */
    vla[0] = seed ? seed[0] : 1;
    if (depth == 0) {
        compare();
        return vla[0];
    }
    return recurse(depth - 1, vla) + vla[0];
}

static int by_value(const void *a, const void *b)
{
    compare();
    recurse(*(const int *)a % 4, NULL);
    return *(const int *)a - *(const int *)b;
}

int main(void)
{
    int total = 0;
    for (int i = 0; i < 24; i++)
        total += recurse(i, NULL);
    int values[6] = {5, 3, 1, 6, 2, 4};
    qsort(values, 6, sizeof values[0], by_value);
    printf("agree %d declined %d disagree %d (%d)\n", agree, declined, disagree, total > 0);
    return 0;
}
