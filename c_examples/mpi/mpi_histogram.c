/* conc inside a node, MPI between nodes: a histogram of 2,000,000
 * pseudo-random values, computed by every MPI rank together.
 *
 * - The ranks of one node (MPI_Comm_split_type with MPI_COMM_TYPE_SHARED)
 *   share one MPI-3 window (MPI_Win_allocate_shared). In it sit the shared
 *   histogram, a conc_mutex that guards it and a conc_barrier: conc's
 *   primitives work in any shared memory, with no init call for the mutex
 *   (all-zero bytes are an unlocked mutex) and no MPI call on the hot path.
 * - Each rank splits its own share of the values over its cores with
 *   conc_parallel_for; each range counts into a private histogram and adds
 *   it to the shared one under the mutex.
 * - The node's ranks meet at the conc_barrier; its leader then combines
 *   the node's histogram with the other nodes' through MPI_Allreduce over
 *   a communicator of node leaders, and checks the result against a serial
 *   computation.
 *
 * Build and run: make mpi-example (mpicc, then mpirun -np 2). */
#include <inttypes.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conc.h"

enum { BINS = 16 };
#define VALUES 2000000ULL

/* What the node's ranks share. */
struct shared {
    conc_mutex lock;      /* guards hist */
    conc_barrier arrived; /* the node's ranks meet here when done */
    uint64_t hist[BINS];
};

/* The i-th value: a fixed pseudo-random function of i (splitmix64). */
static uint64_t value_at(uint64_t i) {
    uint64_t z = i + 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static unsigned bin_of(uint64_t v) { return (unsigned)(v % BINS); }

struct work {
    struct shared *sh;
};

/* One range of this rank's values: counted privately, then added to the
 * node's histogram under the conc_mutex. */
static void count_range(size_t begin, size_t end, void *ctx) {
    struct work *w = ctx;
    uint64_t local[BINS] = {0};
    for (size_t i = begin; i < end; i++) {
        local[bin_of(value_at(i))]++;
    }
    conc_status s = conc_mutex_lock(&w->sh->lock);
    if (s != CONC_OK) {
        fprintf(stderr, "conc_mutex_lock: %s\n", conc_last_error_message());
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    for (int b = 0; b < BINS; b++) {
        w->sh->hist[b] += local[b];
    }
    conc_mutex_unlock(&w->sh->lock);
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int world_rank, world_size;
    MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world_size);

    /* The ranks of this node, and one window they all map. */
    MPI_Comm node;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, world_rank, MPI_INFO_NULL, &node);
    int node_rank, node_size;
    MPI_Comm_rank(node, &node_rank);
    MPI_Comm_size(node, &node_size);

    struct shared *sh;
    MPI_Win win;
    MPI_Win_allocate_shared(node_rank == 0 ? (MPI_Aint)sizeof *sh : 0, 8, MPI_INFO_NULL, node, &sh,
                            &win);
    MPI_Aint size;
    int disp;
    MPI_Win_shared_query(win, 0, &size, &disp, &sh);
    if (node_rank == 0) {
        memset(sh, 0, sizeof *sh); /* all-zero: an unlocked conc_mutex */
        if (conc_barrier_init(&sh->arrived, (uint32_t)node_size) != CONC_OK) {
            fprintf(stderr, "conc_barrier_init: %s\n", conc_last_error_message());
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
    }
    MPI_Barrier(node); /* the window is ready before anyone uses it */

    /* This rank's share of the values, split over its cores by conc. */
    uint64_t first = VALUES * (uint64_t)world_rank / (uint64_t)world_size;
    uint64_t last = VALUES * (uint64_t)(world_rank + 1) / (uint64_t)world_size;
    struct work w = {sh};
    conc_status s = conc_parallel_for(NULL, (size_t)first, (size_t)last, 50000, count_range, &w);
    if (s != CONC_OK) {
        fprintf(stderr, "conc_parallel_for: %s\n", conc_last_error_message());
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    printf("rank %d of %d: counted values %" PRIu64 "..%" PRIu64
           " on %zu pool thread(s), one per core MPI gave the rank\n",
           world_rank,
           world_size, first, last - 1, conc_pool_threads(NULL));
    fflush(stdout);

    /* The node's ranks meet; exactly one of them is the leader. */
    bool leader = false;
    if (conc_barrier_wait(&sh->arrived, &leader) != CONC_OK) {
        fprintf(stderr, "conc_barrier_wait: %s\n", conc_last_error_message());
        MPI_Abort(MPI_COMM_WORLD, 1);
    }

    /* Between nodes: the leaders sum their nodes' histograms with MPI. */
    MPI_Comm leaders;
    MPI_Comm_split(MPI_COMM_WORLD, leader ? 0 : MPI_UNDEFINED, world_rank, &leaders);
    int status = 0;
    if (leader) {
        uint64_t total[BINS];
        MPI_Allreduce(sh->hist, total, BINS, MPI_UINT64_T, MPI_SUM, leaders);
        int nodes;
        MPI_Comm_size(leaders, &nodes);
        uint64_t serial[BINS] = {0};
        for (uint64_t i = 0; i < VALUES; i++) {
            serial[bin_of(value_at(i))]++;
        }
        int same = memcmp(total, serial, sizeof serial) == 0;
        int leader_rank;
        MPI_Comm_rank(leaders, &leader_rank);
        if (leader_rank == 0) {
            printf("histogram of %llu values over %d rank(s) on %d node(s):\n",
                   (unsigned long long)VALUES, world_size, nodes);
            for (int b = 0; b < BINS; b++) {
                printf("  bin %2d: %" PRIu64 "\n", b, total[b]);
            }
            printf("%s the serial computation\n", same ? "matches" : "DIFFERS FROM");
        }
        status = same ? 0 : 1;
        MPI_Comm_free(&leaders);
    }
    int worst = 0;
    MPI_Allreduce(&status, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    MPI_Win_free(&win);
    MPI_Comm_free(&node);
    MPI_Finalize();
    return worst;
}
