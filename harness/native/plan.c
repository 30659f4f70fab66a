/* plan.c — each worker's op stream as a pure function of (seed, worker): a fixed
 * number of draws per op from the worker's own xoshiro256**, resolved against the
 * slot's occupancy. Must not read clocks, addresses or shared state; any thread. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "driver.h"

#define STREAM_TAG 0x53545245414D0001ull /* "STREAM" */

void plan_stream_seed(xoshiro_t *rng, const options_t *o, uint32_t worker)
{
    xoshiro_seed(rng, prng_mix(o->seed ^ STREAM_TAG, worker));
}

/* Log-uniform within a range picked by weight. Two draws, always. */
uint64_t plan_size(xoshiro_t *rng, const options_t *o)
{
    double pick = xoshiro_unit(rng) * o->weight_total;
    double u = xoshiro_unit(rng);
    const size_range_t *r = &o->ranges[o->range_count - 1];
    for (int i = 0; i < o->range_count; i++) {
        if (pick < o->ranges[i].cumulative) {
            r = &o->ranges[i];
            break;
        }
    }
    double x = u * SIZE_STEPS;
    unsigned i = (unsigned)x;
    double q = r->quantiles[i] + (x - (double)i) * (r->quantiles[i + 1] - r->quantiles[i]);
    uint64_t size = (uint64_t)q - (r->zero_based ? 1 : 0);
    if (size < r->lo)
        size = r->lo;
    if (size > r->hi)
        size = r->hi;
    return size;
}

void plan_range_init(size_range_t *r, uint64_t lo, uint64_t hi)
{
    r->lo = lo;
    r->hi = hi;
    /* ln(0) has no quantiles: a range from 0 is drawn one up (1..hi + 1), then
     * lowered; ranges from 1 keep their quantiles (and every recorded stream) */
    r->zero_based = lo == 0;
    double shift = r->zero_based ? 1.0 : 0.0;
    double log_lo = log((double)lo + shift), span = log((double)hi + 1.0 + shift) - log_lo;
    for (int i = 0; i <= SIZE_STEPS; i++)
        r->quantiles[i] = exp(log_lo + span * (double)i / SIZE_STEPS);
}

void plan_next(xoshiro_t *rng, const options_t *o, bool (*occupied)(void *ctx, uint32_t slot),
               void *ctx, op_t *op)
{
    /* Fixed draw order: slot, size (2), action, flavor, alignment. */
    uint64_t slot = xoshiro_below(rng, o->live);
    uint64_t size = plan_size(rng, o);
    double action = xoshiro_unit(rng);
    double flavor = xoshiro_unit(rng);
    uint64_t align_shift = 6 + xoshiro_below(rng, 7); /* 64 .. 4096 */

    memset(op, 0, sizeof *op);
    op->slot = (uint32_t)slot;
    op->size = size;
    if (!occupied(ctx, op->slot)) {
        op->kind = OP_ALLOC;
        if (flavor < o->calloc_share) {
            op->flavor = AF_CALLOC;
            /* calloc(count, elem): the count from what is left of the flavor draw (no
             * extra draw, so the stream is the same for every calloc_count), elem
             * rounded up so count * elem covers the size drawn */
            double counts = flavor / o->calloc_share * o->calloc_count;
            op->count = 1 + (uint32_t)counts;
            if (op->count > o->calloc_count)
                op->count = o->calloc_count;
            if (size == 0) {
                /* a zero-byte calloc: count elements of 0 bytes, or (the upper half of
                 * the count's draw) 0 elements of count bytes */
                op->zero_count = counts - floor(counts) >= 0.5;
            } else if (op->count > size) {
                op->count = (uint32_t)size;
            }
            op->size = (size + op->count - 1) / op->count * op->count;
        } else if (flavor < o->calloc_share + o->aligned_share) {
            op->flavor = AF_ALIGNED;
            op->alignment = 1ull << align_shift;
        }
        return;
    }
    if (action < o->realloc_share) {
        op->kind = OP_REALLOC;
        return;
    }
    op->kind = OP_FREE;
    /* Rescale what is left of the action draw so cross and realloc are independent. */
    double rest = (action - o->realloc_share) / (1.0 - o->realloc_share);
    op->cross = o->threads > 1 && rest < o->cross;
}

/* ---- the `stream` command: the same draws against a simulated live set */

static bool sim_occupied(void *ctx, uint32_t slot) { return ((uint8_t *)ctx)[slot] != 0; }

int plan_print_stream(const options_t *o, uint32_t worker, uint64_t count)
{
    static const char *const kinds[] = {"alloc", "free", "realloc"};
    static const char *const flavors[] = {"malloc", "calloc", "aligned"};
    uint8_t *occ = out_map(o->live);
    if (!occ) {
        out_error("cannot map %u slots", o->live);
        return 1;
    }
    xoshiro_t rng;
    plan_stream_seed(&rng, o, worker);
    char line[160];
    for (uint64_t i = 0; i < count; i++) {
        op_t op;
        plan_next(&rng, o, sim_occupied, occ, &op);
        int n;
        if (op.kind == OP_ALLOC) {
            n = snprintf(line, sizeof line, "%llu %s slot=%u size=%llu flavor=%s align=%llu",
                         (unsigned long long)i, kinds[op.kind], op.slot,
                         (unsigned long long)op.size, flavors[op.flavor],
                         (unsigned long long)op.alignment);
            if (op.count > 1) /* calloc_count > 1 only: older streams print the same */
                n += snprintf(line + n, sizeof line - (size_t)n, " count=%u", op.count);
            if (op.zero_count) /* calloc(0, count) */
                n += snprintf(line + n, sizeof line - (size_t)n, " zero_count=1");
            n += snprintf(line + n, sizeof line - (size_t)n, "\n");
            occ[op.slot] = 1;
        } else if (op.kind == OP_REALLOC) {
            n = snprintf(line, sizeof line, "%llu %s slot=%u size=%llu\n",
                         (unsigned long long)i, kinds[op.kind], op.slot,
                         (unsigned long long)op.size);
        } else {
            n = snprintf(line, sizeof line, "%llu %s slot=%u cross=%d\n", (unsigned long long)i,
                         kinds[op.kind], op.slot, op.cross ? 1 : 0);
            occ[op.slot] = 0;
        }
        if (fwrite(line, 1, (size_t)n, stdout) != (size_t)n) {
            out_unmap(occ, o->live);
            return 1;
        }
    }
    /* The fault placements are part of the stream too. */
    static fault_inst_t faults[DRV_MAX_FAULTS];
    uint32_t nf = faults_plan(o, faults, DRV_MAX_FAULTS);
    for (uint32_t i = 0; i < nf; i++) {
        if (faults[i].worker != worker)
            continue;
        const fault_spec_t *fs = &o->faults[faults[i].spec];
        printf("fault id=%u kind=%s variant=%s op=%llu slot_start=%u\n", faults[i].id,
               fault_kind_name(fs->kind), fault_variant_name(fs->variant),
               (unsigned long long)faults[i].op, faults[i].slot_start);
    }
    fflush(stdout);
    out_unmap(occ, o->live);
    return 0;
}
