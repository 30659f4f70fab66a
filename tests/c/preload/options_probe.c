/* options_probe.c — drives NMM's option and fail-point parsers for the tests.
 *   options_probe parse STRING     -> one JSON line with the parsed nmm_config_t, exit 0;
 *                                     or the error message on stdout, exit 2
 *   options_probe failpoints SEED SPEC POINT SIZE N
 *                                  -> arms SPEC on a heap seeded SEED and prints, for N
 *                                     allocation attempts of SIZE bytes at POINT ("alloc"),
 *                                     a string of '0' (succeeded) and '1' (failed)
 *   options_probe drops CAP N      -> N invalid frees on a heap with an event ring of CAP
 *                                     entries: prints nmm_report_json, then the number of
 *                                     events nmm_events_drain returns
 *   options_probe defaults         -> the nmm_config_init defaults as JSON
 *   options_probe default-heap     -> nmm_report_json of the default heap (configured
 *                                     from NMM_OPTIONS), one line
 * Only the public API (nmm.h) is used.
 */
#include <nmm.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void print_config(const nmm_config_t *c)
{
    printf("{\"level\":%d,\"policy\":%d,\"limit_bytes\":%llu,\"retain_bytes\":%llu,"
           "\"quarantine_bytes\":%llu,\"sweep_every_ops\":%llu,\"guard_pages\":%u,"
           "\"thread_cache\":%u,\"tracking\":%u,\"stack_sample\":%u,\"event_capacity\":%u,"
           "\"exit_check\":%u,\"poison_limit\":%llu,\"seed\":%llu,\"failpoints\":",
           (int)c->level, (int)c->policy, (unsigned long long)c->limit_bytes,
           (unsigned long long)c->retain_bytes, (unsigned long long)c->quarantine_bytes,
           (unsigned long long)c->sweep_every_ops, c->guard_pages, c->thread_cache,
           c->tracking, c->stack_sample, c->event_capacity, c->exit_check,
           (unsigned long long)c->poison_limit, (unsigned long long)c->seed);
    if (!c->failpoints) {
        printf("null}\n");
        return;
    }
    putchar('"');
    for (const char *p = c->failpoints; *p; p++) {
        if (*p == '"' || *p == '\\')
            putchar('\\');
        putchar(*p);
    }
    printf("\"}\n");
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "defaults") == 0) {
        nmm_config_t c;
        nmm_config_init(&c);
        print_config(&c);
        return 0;
    }
    if (argc >= 2 && strcmp(argv[1], "default-heap") == 0) {
        static char report[1 << 16];
        size_t n = nmm_report_json(nmm_default_heap(), report, sizeof report);
        if (n >= sizeof report)
            return 3;
        printf("%s\n", report);
        return 0;
    }
    if (argc == 4 && strcmp(argv[1], "drops") == 0) {
        nmm_config_t c;
        nmm_config_init(&c);
        c.event_capacity = (uint32_t)strtoul(argv[2], NULL, 0);
        nmm_heap_t *h = nmm_heap_create(&c);
        long n = strtol(argv[3], NULL, 0);
        static char wild[64];
        for (long i = 0; i < n; i++)
            if (nmm_free(h, wild + 16, 0) != NMM_E_INVALID_POINTER)
                return 4;
        static char report[1 << 16];
        nmm_report_json(h, report, sizeof report);
        nmm_event_t ev[64];
        size_t got = nmm_events_drain(h, ev, 64);
        printf("%s\n%zu\n", report, got);
        for (size_t i = 1; i < got; i++)
            if (ev[i].seq != ev[i - 1].seq + 1)
                return 5;
        return 0;
    }
    if (argc == 3 && strcmp(argv[1], "parse") == 0) {
        nmm_config_t c;
        char err[1024];
        nmm_config_init(&c);
        if (nmm_config_parse(&c, argv[2], err, sizeof err) != NMM_OK) {
            printf("%s\n", err);
            return 2;
        }
        print_config(&c);
        return 0;
    }
    if (argc == 7 && strcmp(argv[1], "failpoints") == 0) {
        nmm_config_t c;
        char err[1024];
        nmm_config_init(&c);
        c.seed = strtoull(argv[2], NULL, 0);
        nmm_heap_t *h = nmm_heap_create(&c);
        if (!h) {
            printf("heap create failed\n");
            return 3;
        }
        if (nmm_failpoint_set(h, argv[3], err, sizeof err) != NMM_OK) {
            printf("%s\n", err);
            return 2;
        }
        size_t size = strtoull(argv[5], NULL, 0);
        long n = strtol(argv[6], NULL, 0);
        if (strcmp(argv[4], "alloc") != 0) {
            printf("only the alloc point is driven directly\n");
            return 2;
        }
        for (long i = 0; i < n; i++) {
            errno = 0;
            void *p = nmm_alloc(h, size, 0);
            if (!p && errno != ENOMEM) {
                printf("NULL without ENOMEM\n");
                return 4;
            }
            putchar(p ? '0' : '1');
            nmm_free(h, p, 0);
        }
        putchar('\n');
        size_t problems = nmm_validate(h);
        nmm_heap_destroy(h);
        return problems ? 5 : 0;
    }
    fprintf(stderr, "usage: options_probe parse STRING | defaults | failpoints SEED SPEC alloc SIZE N\n");
    return 2;
}
