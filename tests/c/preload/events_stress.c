/* events_stress.c — many threads report detections into one heap's event ring
 * while another thread drains it: nothing is lost or duplicated. Every event is
 * either drained exactly once or counted as dropped, sequence numbers are unique,
 * and the per-kind counts add up. Exit 0 when all of that holds.
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
    const char *ev = strstr(report, "\"events\":{\"total\":");
    unsigned long long total = 0, dropped = 0;
    if (!ev || sscanf(ev, "\"events\":{\"total\":%llu,\"dropped\":%llu", &total, &dropped) != 2)
        return 2;
    printf("total %llu dropped %llu drained %zu\n", total, dropped, drained);
    if (total != (unsigned long long)THREADS * PER_THREAD || drained + dropped != total)
        return 3;
    return 0;
}
