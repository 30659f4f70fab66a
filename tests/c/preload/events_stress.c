/* events_stress.c — many threads report detections into one heap's event ring
 * while another thread drains it: nothing is lost or duplicated. Every event is
 * either drained exactly once or counted as dropped, sequence numbers are unique,
 * and the per-kind counts add up. Then, with nobody draining, a known number of
 * events is reported past the ring's capacity: exactly the capacity is drained, the
 * oldest ones, in order, and exactly the rest is counted dropped (a ring that drops
 * everything, or keeps the newest, fails here). Exit 0 when all of that holds.
 */
#include <nmm.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define THREADS 4
#define PER_THREAD 20000

static nmm_heap_t *heap;
static volatile int done;
static unsigned char *seen;
static size_t drained;

static void *reporter(void *arg)
{
    static char wild[64];
    (void)arg;
    for (int i = 0; i < PER_THREAD; i++)
        if (nmm_free(heap, wild + 8, 0) != NMM_E_INVALID_POINTER)
            abort();
    return NULL;
}

static void take(void)
{
    nmm_event_t ev[64];
    size_t n = nmm_events_drain(heap, ev, 64);
    for (size_t i = 0; i < n; i++) {
        if (ev[i].kind != NMM_EV_INVALID_FREE || ev[i].seq == 0 ||
            ev[i].seq > (uint64_t)THREADS * PER_THREAD || seen[ev[i].seq]++) {
            printf("bad event seq %llu kind %u\n", (unsigned long long)ev[i].seq, ev[i].kind);
            exit(1);
        }
    }
    drained += n;
}

/* The heap report's event totals. */
static int ev_json(const char *report, unsigned long long *total, unsigned long long *dropped)
{
    const char *ev = strstr(report, "\"events\":{\"total\":");
    return ev && sscanf(ev, "\"events\":{\"total\":%llu,\"dropped\":%llu", total, dropped) == 2;
}

static void *drainer(void *arg)
{
    (void)arg;
    while (!__atomic_load_n(&done, __ATOMIC_ACQUIRE))
        take();
    return NULL;
}

int main(void)
{
    nmm_config_t cfg;
    nmm_config_init(&cfg);
    cfg.event_capacity = 64;
    heap = nmm_heap_create(&cfg);
    seen = calloc((size_t)THREADS * PER_THREAD + 1, 1);
    pthread_t t[THREADS], d;
    pthread_create(&d, NULL, drainer, NULL);
    for (int i = 0; i < THREADS; i++)
        pthread_create(&t[i], NULL, reporter, NULL);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    __atomic_store_n(&done, 1, __ATOMIC_RELEASE);
    pthread_join(d, NULL);
    take();
    static char report[1 << 16];
    nmm_report_json(heap, report, sizeof report);
    unsigned long long total = 0, dropped = 0;
    if (!ev_json(report, &total, &dropped))
        return 2;
    printf("total %llu dropped %llu drained %zu\n", total, dropped, drained);
    if (total != (unsigned long long)THREADS * PER_THREAD || drained + dropped != total)
        return 3;
    if (drained == 0 || nmm_events_last_seq(heap) != total)
        return 4;
    /* quiet ring: 64 + 10 reports, nobody draining */
    static char wild[64];
    for (int i = 0; i < 74; i++)
        if (nmm_free(heap, wild + 8, 0) != NMM_E_INVALID_POINTER)
            return 5;
    nmm_event_t ev[128];
    size_t n = nmm_events_drain(heap, ev, 128);
    if (n != 64)
        return 6;
    for (size_t i = 0; i < n; i++)
        if (ev[i].seq != total + 1 + i)
            return 7;
    nmm_report_json(heap, report, sizeof report);
    ev_json(report, &total, &dropped);
    if (total != (unsigned long long)THREADS * PER_THREAD + 74 || nmm_events_last_seq(heap) != total)
        return 8;
    if (dropped != total - drained - 64)
        return 9;
    printf("quiet ring: drained 64 of 74, dropped 10 more\n");
    return 0;
}
