// lsst-run: the distributed trainer. One process per rank (GPU); one rank works
// without a launcher. See `lsst-run --help` and ARCHITECTURE §4.
#include <getopt.h>
#include <math.h>
#include <stdbool.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "config.h"
#include "gpu.h"
#include "train.h"

static void usage(FILE *fp) {
    fprintf(fp,
            "usage: lsst-run --config FILE [--set KEY=VALUE ...] [--resume PATH|latest] [--eval-only valid|test]\n"
            "\n"
            "Train a transformer with the LSS scheme (or megatron-sp, or none) on one or more MPI ranks.\n"
            "\n"
            "  -c, --config FILE      run configuration (YAML: data, model, parallel, train, backend, output)\n"
            "  -s, --set KEY=VALUE    override a config key, e.g. --set train.steps=100 (repeatable)\n"
            "      --resume PATH      continue from a checkpoint file, or 'latest' in output.dir/checkpoints\n"
            "                         ('latest' with no checkpoint starts from step 0)\n"
            "      --eval-only SPLIT  evaluate a checkpoint (--resume, default latest) on valid or test\n"
            "      --plan             print the bytes each rank will allocate, allocate nothing, exit\n"
            "  -h, --help             this help\n"
            "      --version          version and git commit\n"
            "\n"
            "Outputs under output.dir: run.yaml, log, metrics/rank-NNNNN.h5, checkpoints/step-NNNNNN.h5.\n"
            "Exit status: 0 done, 1 runtime failure, 2 invalid config or input,\n"
            "             75 stopped by SIGTERM/SIGUSR1 after a checkpoint (requeue with --resume latest).\n"
            "\n"
            "example:\n"
            "  lsst-prep ../shared/data/enwik8/enwik8-head-4MB data/enwik8\n"
            "  mpirun -np 2 lsst-run --config run.yaml --set parallel.sequence=2 --set train.steps=200\n");
}

typedef struct {
    const char *config, *resume, *eval_only;
    bool plan;
    char **sets;
    int nsets;
} Args;

// 0 ok, 1 --help/--version done, 2 usage error.
static int parse_args(int argc, char **argv, Args *a) {
    static const struct option opts[] = {{"config", required_argument, 0, 'c'}, {"set", required_argument, 0, 's'},
                                         {"resume", required_argument, 0, 'r'},
                                         {"eval-only", required_argument, 0, 'e'}, {"plan", no_argument, 0, 'p'},
                                         {"help", no_argument, 0, 'h'},
                                         {"version", no_argument, 0, 'V'}, {0, 0, 0, 0}};
    memset(a, 0, sizeof *a);
    a->sets = xcalloc((size_t)argc, sizeof(char *));
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "c:s:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c': a->config = optarg; break;
        case 's': a->sets[a->nsets++] = optarg; break;
        case 'r': a->resume = optarg; break;
        case 'e': a->eval_only = optarg; break;
        case 'p': a->plan = true; break;
        case 'h': usage(stdout); return 1;
        case 'V': lsst_print_version(); return 1;
        default:
            lsst_error("unknown or incomplete option '%s' (see lsst-run --help)", argv[optind - 1]);
            return 2;
        }
    }
    if (optind < argc) { lsst_error("unexpected argument '%s' (see lsst-run --help)", argv[optind]); return 2; }
    if (!a->config) { lsst_error("--config FILE is required (see lsst-run --help)"); return 2; }
    if (a->eval_only && strcmp(a->eval_only, "valid") && strcmp(a->eval_only, "test")) {
        lsst_error("--eval-only takes valid or test, not '%s'", a->eval_only);
        return 2;
    }
    return 0;
}

int main(int argc, char **argv) {
    lsst_prog = "lsst-run";
    setvbuf(stdout, NULL, _IOLBF, 0);
    Args args;
    int rc = parse_args(argc, argv, &args);
    if (rc != 0) { free(args.sets); return rc == 1 ? EXIT_OK : EXIT_USAGE; }

    MPI_Init(&argc, &argv);
    int rank = 0, world = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    // Validate everything before any rank allocates; rank 0 speaks, every rank exits.
    RunConfig cfg;
    char err[2048];
    rc = config_load(&cfg, args.config, args.sets, args.nsets, err, sizeof err);
    if (rc == 0 && !args.plan && config_check_layout(&cfg, world, err, sizeof err) != 0) { rc = -1; config_free(&cfg); }
    if (rc == 0 && cfg.backend == BACKEND_CUDA && gpu_check_env(err, sizeof err) != 0) { rc = -1; config_free(&cfg); }
    if (rc != 0) {
        if (rank == 0) lsst_error("%s", err);
        free(args.sets);
        MPI_Finalize();
        return EXIT_USAGE;
    }
    if (args.plan) {
        if (rank == 0)
            printf("%s per rank: %zu bytes (%.1f MiB) for %s, %d x %d ranks, seq %d\n",
                   cfg.backend == BACKEND_CUDA ? "device memory" : "memory", trainer_plan_bytes(&cfg),
                   trainer_plan_bytes(&cfg) / 1048576.0, scheme_name(cfg.scheme), cfg.sequence, cfg.data, cfg.seq_len);
        config_free(&cfg);
        free(args.sets);
        MPI_Finalize();
        return EXIT_OK;
    }
    Trainer tr;
    rc = trainer_setup(&tr, &cfg, args.resume, args.eval_only);
    if (rc != EXIT_OK) {
        // setup already said why
    } else if (args.eval_only) {
        double loss;
        rc = trainer_evaluate(&tr, args.eval_only, tr.valid, &loss) == 0 && isfinite(loss) ? EXIT_OK : EXIT_RUNTIME;
    } else {
        rc = trainer_run(&tr);
    }
    trainer_free(&tr);
    config_free(&cfg);
    free(args.sets);
    MPI_Finalize();
    return rc;
}
