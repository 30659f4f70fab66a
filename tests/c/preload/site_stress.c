/* site_stress.c — threads intern the same (file, line) pairs concurrently, from
 * their own temporary buffers: equal pairs get one id, distinct pairs distinct
 * ids, and nmm_site_info gives the pair back after the buffers are gone.
 * Exit 0 when all of that holds.
 */
#include <nmm.h>

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#define THREADS 4
#define FILES 50
#define LINES 40

static nmm_site_t ids[THREADS][FILES][LINES];

static void *intern(void *arg)
{
    int t = (int)(long)arg;
    for (int k = 0; k < FILES * LINES; k++) {
        /* each thread walks the pairs in its own order (multipliers coprime
         * with FILES * LINES = 2000, so every pair is visited once) */
        static const int mult[THREADS] = {1, 3, 7, 9};
        int idx = (k * mult[t] + t * 7) % (FILES * LINES);
        int f = idx / LINES, l = idx % LINES;
        char file[64];
        snprintf(file, sizeof file, "dir/file_%03d.c", f);
        ids[t][f][l] = nmm_site(NULL, file, l + 1);
        memset(file, 'x', sizeof file - 1); /* the caller's buffer does not live on */
    }
    return NULL;
}

int main(void)
{
    pthread_t th[THREADS];
    for (long t = 0; t < THREADS; t++)
        pthread_create(&th[t], NULL, intern, (void *)t);
    for (int t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);
    static unsigned char used[1 << 16];
    for (int f = 0; f < FILES; f++)
        for (int l = 0; l < LINES; l++) {
            nmm_site_t id = ids[0][f][l];
            if (id == 0 || used[id]++) {
                printf("site %d:%d: id %u is zero or shared\n", f, l + 1, id);
                return 1;
            }
            for (int t = 1; t < THREADS; t++)
                if (ids[t][f][l] != id) {
                    printf("site %d:%d: threads disagree (%u vs %u)\n", f, l + 1, id,
                           ids[t][f][l]);
                    return 1;
                }
            const char *file = NULL;
            int line = 0;
            char want[64];
            snprintf(want, sizeof want, "dir/file_%03d.c", f);
            if (nmm_site_info(id, &file, &line) != NMM_OK || strcmp(file, want) || line != l + 1) {
                printf("site %u: info %s:%d, want %s:%d\n", id, file ? file : "?", line, want, l + 1);
                return 1;
            }
        }
    const char *file;
    int line;
    if (nmm_site_info(0, &file, &line) != NMM_E_INVALID_ARGUMENT ||
        nmm_site_info(60000, &file, &line) != NMM_E_INVALID_ARGUMENT)
        return 2;
    printf("%d sites\n", FILES * LINES);
    return 0;
}
