// lsst-report's library: percentiles (numpy's definition), model FLOPs, per-job
// statistics (imbalance, slowest ranks), scaling series and lss / megatron-sp pairs,
// the rank-file reader on files written by the runtime's metrics writer (also with
// ranks of different lengths: a live run), damaged files, SVG id prefixing, escaping.
#include "check.h"
#include "common.h"
#include "metrics.h"
#include "report_doc.h"
#include "report_load.h"
#include "report_plot.h"
#include "report_read.h"
#include "report_scan.h"
#include "report_stats.h"
#include "report_summary.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int near(double a, double b) { return fabs(a - b) <= 1e-12 * fmax(1.0, fabs(b)); }

static void test_percentile(void) {
    double x[] = {1, 2, 3, 4, 5};
    CHECK(near(report_percentile(x, 5, 50), 3), "median of 1..5 is 3");
    CHECK(near(report_percentile(x, 5, 99), 4.96), "p99 of 1..5 is 4.96 (numpy: index 0.99 * 4 = 3.96)");
    CHECK(near(report_percentile(x, 5, 100), 5) && near(report_percentile(x, 5, 0), 1), "p0 / p100 are min / max");
    double y[] = {10, 20};
    CHECK(near(report_percentile(y, 2, 50), 15), "median of two values is their mean");
    CHECK(near(report_percentile(y, 1, 99), 10), "one value is every percentile");
    CHECK(isnan(report_percentile(y, 0, 50)), "no values: NaN");
}

static void test_flops(void) {
    // L=2, E=32, M=128, V=256, l=64: 6 (2 (4*1024 + 2*32*128) + 32*256) + 12*2*64*32
    double want = 6.0 * (2 * (4 * 1024 + 2 * 32 * 128) + 32 * 256) + 12.0 * 2 * 64 * 32;
    CHECK(near(report_flops_per_token(2, 32, 128, 256, 64), want), "model FLOPs per token (%g)", want);
    CHECK(isnan(report_flops_per_token(0, 32, 128, 256, 64)), "unknown layers: NaN");
    Job j = {.model_text = "{\"layers\":2,\"dim\":32,\"heads\":4,\"mlp\":128,\"vocab\":256}"};
    report_parse_model(&j);
    CHECK(j.layers == 2 && j.dim == 32 && j.heads == 4 && j.mlp == 128 && j.vocab == 256, "model JSON parsed");
    Job k = {.model_text = "layers: 12\ndim: 512\nheads: 8\n"};
    report_parse_model(&k);
    CHECK(k.layers == 12 && k.dim == 512 && k.mlp == 2048 && k.vocab == 256, "model YAML parsed, mlp 4 x dim default");
    Job z = {.model_text = "not: [a map"};
    report_parse_model(&z);
    CHECK(z.layers == 0 && z.dim == 0, "unparsable model text: sizes stay 0");
}

static void test_job_stats(void) {
    double t[] = {0.3, 0.1, 0.2};
    RankStats ranks[4] = {{.rank = 0, .t_compute_mean = 1, .mem_peak = 100},
                          {.rank = 1, .t_compute_mean = 3, .mem_peak = 300},
                          {.rank = 2, .t_compute_mean = 2, .mem_peak = 200},
                          {.rank = 3, .t_compute_mean = 3, .mem_peak = 50}};
    Job j = {.step_time = t, .n_steps = 3, .ranks = ranks, .n_ranks = 4, .tokens_per_step = 100, .seq_len = 64};
    report_job_stats(&j);
    CHECK(near(j.t_mean, 0.2) && near(j.t_median, 0.2) && near(j.t_p99, 0.298), "step time mean, median, p99");
    CHECK(j.mem_max == 300 && j.mem_min == 50 && near(j.mem_mean, 162.5), "peak memory over ranks");
    CHECK(near(j.imbalance, 3 / 2.25 - 1), "imbalance = max / mean - 1 of t_compute (%g)", j.imbalance);
    CHECK(j.n_slowest == 4 && j.slowest[0] == 1 && j.slowest[1] == 3 && j.slowest[2] == 2 && j.slowest[3] == 0,
          "slowest ranks by t_compute, ties by rank: 1 3 2 0");
    CHECK(isnan(j.flops_per_step) && isnan(j.final_valid_bpc), "no model, no eval: NaN");
    // More ranks than REPORT_SLOWEST: the five largest, in order.
    RankStats many[8];
    for (int r = 0; r < 8; r++) many[r] = (RankStats){.rank = r, .t_compute_mean = (double)((r * 3) % 8)};
    Job m = {.step_time = t, .n_steps = 3, .ranks = many, .n_ranks = 8};
    report_job_stats(&m);
    // t_compute by rank: 0 3 6 1 4 7 2 5 -> slowest 5 (7), 2 (6), 7 (5), 4 (4), 1 (3)
    CHECK(m.n_slowest == 5 && m.slowest[0] == 5 && m.slowest[1] == 2 && m.slowest[2] == 7 && m.slowest[3] == 4 &&
              m.slowest[4] == 1,
          "five slowest of eight ranks");
}

static Job scaling_job(const char *scheme, int world, int seq_len, double t_mean) {
    Job j = {.scheme = (char *)scheme, .model_text = "m", .backend = "cpu", .device = "cpu", .world = world,
             .sp_size = world, .dp_size = 1, .seq_len = seq_len, .layers = 2, .dim = 32, .mlp = 128, .vocab = 256,
             .n_steps = 5, .t_mean = t_mean, .tokens_per_step = 4.0 * seq_len, .mem_max = 1000 * world,
             .bytes_per_step = 10.0 * world};
    j.flops_per_step = j.tokens_per_step * report_flops_per_token(2, 32, 128, 256, seq_len);
    j.flops_per_s = j.flops_per_step / t_mean;
    return j;
}

static void test_cross(void) {
    Job jobs[5] = {scaling_job("lss", 4, 256, 0.4), scaling_job("megatron-sp", 2, 128, 0.5),
                   scaling_job("lss", 1, 64, 0.1), scaling_job("lss", 2, 128, 0.2), scaling_job("none", 1, 64, 0.1)};
    jobs[1].mem_max = 8000;
    Report r = {.jobs = jobs, .n_jobs = 5};
    report_cross(&r);
    CHECK(r.n_series == 1 && r.series[0].n == 3, "one series: the three lss jobs (megatron-sp and none alone)");
    if (r.n_series == 1 && r.series[0].n == 3) {
        const ScalingSeries *s = &r.series[0];
        CHECK(s->jobs[0] == 2 && s->jobs[1] == 3 && s->jobs[2] == 0, "ordered by ranks, 1-rank baseline first");
        double f1 = jobs[2].flops_per_s, f4 = jobs[0].flops_per_s;
        CHECK(near(s->speedup[0], 1) && near(s->speedup[2], f4 / f1), "speedup = FLOP rate / baseline's");
        CHECK(near(s->efficiency[2], f4 / f1 / 4), "efficiency = speedup / (P / P0)");
        CHECK(s->by_flops, "speedup from model FLOP rates (every job has model sizes)");
    }
    CHECK(r.n_ratios == 1 && r.ratios[0].lss == 3 && r.ratios[0].megatron == 1, "lss 2 ranks pairs megatron-sp 2 ranks");
    if (r.n_ratios == 1) {
        CHECK(near(r.ratios[0].time, 0.5 / 0.2) && near(r.ratios[0].memory, 8000.0 / 2000) &&
                  near(r.ratios[0].comm, 1.0),
              "ratios are megatron-sp / lss");
    }
    r.jobs = NULL;
    r.n_jobs = 0;
    report_free(&r);
}

static void test_text(void) {
    CHECK(report_is_rank_file("rank-00000.h5") && report_is_rank_file("rank-7.h5"), "rank-N.h5 is a rank file");
    CHECK(!report_is_rank_file("rank-00000.h5.tmp.123") && !report_is_rank_file("rank-.h5") &&
              !report_is_rank_file("rank-01a.h5") && !report_is_rank_file("xrank-0.h5"),
          "temp files and other names are not");
    char *svg = plot_prefix_svg_ids("<?xml version=\"1.0\"?>\n<svg>\n<g id='a' gid='z'><use xlink:href='#a'/>"
                                    "<text filter='url(#box)' id=\"b\"/></g></svg>",
                                    "p3-");
    CHECK(!strcmp(svg, "<svg>\n<g id='p3-a' gid='z'><use xlink:href='#p3-a'/><text filter='url(#p3-box)' id=\"p3-b\"/>"
                       "</g></svg>"),
          "SVG ids and references prefixed, prologue dropped");
    free(svg);
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    doc_put_html(f, "<a href=\"x\">&'</a>");
    fputc('|', f);
    report_put_csv_field(f, "plain");
    fputc('|', f);
    report_put_csv_field(f, "a,\"b\"");
    fputc('|', f);
    doc_put_md_cell(f, "a|b");
    fclose(f);
    CHECK(!strcmp(out, "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;|plain|\"a,\"\"b\"\"\"|a\\|b"),
          "HTML, CSV and Markdown escaping (%s)", out);
    free(out);
}

// ---- files written by the runtime's metrics writer ----

// A rank file at dir/metrics/rank-NNNNN.h5 open for appending; NULL (and a failed check) on error.
static MetricsFile *open_rank(const char *dir, int rank, int world) {
    char *path = xasprintf("%s/metrics/rank-%05d.h5", dir, rank), err[512];
    MetricsAttrs a = {.rank = rank, .world = world, .sp_rank = rank, .sp_size = world, .dp_size = 1,
                      .scheme = "lss", .backend = "cpu", .host = "node", .device = "cpu", .seq_len = 64,
                      .model_json = "{\"layers\":2,\"dim\":32,\"heads\":4,\"mlp\":128,\"vocab\":256}", .git = "g"};
    MetricsFile *m = metrics_open(path, &a, -1, err, sizeof err);
    CHECK(m != NULL, "metrics_open %s (%s)", path, m ? "" : err);
    free(path);
    return m;
}

static void write_rank(const char *dir, int rank, int world, int rows, double slow) {
    MetricsFile *m = open_rank(dir, rank, world);
    if (!m) return;
    for (int s = 1; s <= rows; s++) {
        StepRow row = {.step = s, .loss = 5.0 - 0.1 * s, .tokens = 32, .t_compute = slow * 0.01 * s,
                       .t_comm = 0.001 * s, .comm_bytes = 1000 + rank, .mem_peak = 1 << 20};
        row.t_step = row.t_compute + row.t_comm;
        metrics_append_step(m, &row);
        if (s % 4 == 0) {
            EvalRow ev = {.step = s, .split = "valid", .loss = 4.0, .bpc = 4.0 / M_LN2 - 0.01 * s};
            metrics_append_eval(m, &ev);
        }
    }
    metrics_close(m);
}

// Many more /eval rows than /steps rows: the reader's buffers for the eval table must
// not move the step rows it already handed out (an ASan use-after-free before the fix).
static void test_reader_eval_heavy(const char *dir) {
    char *sub = path_join(dir, "eval-heavy"), *metrics = path_join(sub, "metrics");
    mkdir_p(metrics, 0755);
    MetricsFile *m = open_rank(sub, 0, 1);
    if (m) {
        for (int s = 1; s <= 2; s++) {
            StepRow row = {.step = s, .loss = 5.0, .tokens = 32, .t_step = 0.01, .t_compute = 0.01};
            metrics_append_step(m, &row);
        }
        for (int i = 1; i <= 12; i++) {
            EvalRow ev = {.step = i, .loss = 4.0, .bpc = 0.5 * i};
            strcpy(ev.split, i % 2 ? "valid" : "test");
            metrics_append_eval(m, &ev);
        }
        metrics_close(m);
    }
    RankReader *rd = rank_reader_new();   // fresh: its row buffer is sized by this file alone
    RankFile f;
    char err[512] = "";
    char *path = xasprintf("%s/rank-00000.h5", metrics);
    int rc = rank_reader_read(rd, path, true, true, &f, err, sizeof err);
    CHECK(rc == 0, "read a rank file with 2 steps and 12 eval rows (%s)", err);
    if (rc == 0) {
        CHECK(f.n_rows == 2 && f.rows[0].step == 1 && f.rows[1].step == 2, "step rows intact after the eval read");
        CHECK(f.n_valid == 6 && f.n_test == 6 && f.valid[5].step == 11 && near(f.test[5].bpc, 6.0), "12 eval rows");
        rank_file_clear(&f);
    }
    rank_reader_free(rd);
    free(path);
    free(metrics);
    free(sub);
}

static void test_reader(const char *dir) {
    char *metrics = path_join(dir, "metrics");
    mkdir_p(metrics, 0755);
    write_rank(dir, 0, 2, 10, 1.0);
    write_rank(dir, 1, 2, 7, 2.0);   // a rank that flushed fewer rows (live run)
    RankReader *rd = rank_reader_new();
    RankFile f;
    char err[512] = "";
    char *p0 = xasprintf("%s/rank-00000.h5", metrics);
    int rc = rank_reader_read(rd, p0, true, true, &f, err, sizeof err);
    CHECK(rc == 0, "read a rank file (%s)", err);
    if (rc == 0) {
        CHECK(f.n_rows == 10 && f.rows[9].step == 10 && near(f.rows[9].t_compute, 0.1) && f.rows[9].comm_bytes == 1000 &&
                  f.rows[9].mem_peak == 1 << 20 && f.rows[0].tokens == 32 && near(f.rows[0].loss, 4.9),
              "rows read through the compound subset type");
        CHECK(f.world == 2 && f.sp_size == 2 && f.seq_len == 64 && !strcmp(f.scheme, "lss") && !strcmp(f.host, "node"),
              "attributes read");
        CHECK(f.n_valid == 2 && f.valid[1].step == 8 && near(f.valid[1].bpc, 4.0 / M_LN2 - 0.08), "valid eval rows");
        rank_file_clear(&f);
    }
    // A truncated copy is refused with a cause, not a crash.
    char *bad = xasprintf("%s/bad.h5", dir);
    size_t n = 0;
    char *bytes = read_file(p0, &n);
    write_file_atomic(bad, bytes, n / 3);
    free(bytes);
    rc = rank_reader_read(rd, bad, true, true, &f, err, sizeof err);
    CHECK(rc == -1 && strlen(err) > 0, "a truncated file is refused (%s)", err);
    free(bad);
    free(p0);

    // The job: timed steps 1..7 (rank 1 has 7 rows); rank 0's means over those steps only.
    Job j = {.label = xstrdup("job"), .dir = xstrdup(dir), .n_files = 2};
    j.files = xmalloc(2 * sizeof *j.files);
    j.files[0] = xasprintf("%s/rank-00000.h5", metrics);
    j.files[1] = xasprintf("%s/rank-00001.h5", metrics);
    report_load_job(&j, rd, 0);
    CHECK(j.n_ranks == 2 && j.n_steps == 7 && j.rows_min == 7 && j.rows_max == 10, "7 timed steps of 7 and 10 rows");
    // rank 0: t_compute = 0.01 s; mean over 1..7 = 0.04. rank 1: 0.02 s -> 0.08.
    CHECK(near(j.ranks[0].t_compute_mean, 0.04) && near(j.ranks[1].t_compute_mean, 0.08),
          "per-rank means over the timed steps (%g %g)", j.ranks[0].t_compute_mean, j.ranks[1].t_compute_mean);
    // T_s = rank 1's t_step = 0.021 s; mean over 1..7 = 0.084
    CHECK(near(j.t_mean, 0.021 * 4), "mean step time = mean of the max over ranks (%g)", j.t_mean);
    CHECK(near(j.bytes_per_step, 2001) && near(j.tokens_per_step, 64), "bytes and tokens per step summed over ranks");
    CHECK(j.slowest[0] == 1 && near(j.imbalance, 0.08 / 0.06 - 1), "rank 1 is the slowest");
    CHECK(j.n_loss == 10 && j.n_valid == 2 && near(j.final_valid_bpc, 4.0 / M_LN2 - 0.08), "curves from rank 0");
    Report r = {.jobs = &j, .n_jobs = 1};
    report_cross(&r);
    char *h5 = xasprintf("%s/summary.h5", dir);
    CHECK(report_write_h5(&r, h5, err, sizeof err) == 0, "summary.h5 written (%s)", err);
    free(h5);
    h5 = xasprintf("%s/no-such-dir/summary.h5", dir);
    CHECK(report_write_h5(&r, h5, err, sizeof err) == -1 && strstr(err, "cannot create the file: No such file"),
          "a failed summary.h5 names HDF5's cause (%s)", err);
    free(h5);
    r.jobs = xmalloc(sizeof j);
    r.jobs[0] = j;
    report_free(&r);
    rank_reader_free(rd);
    free(metrics);
}

int main(void) {
    lsst_prog = "test_report";
    test_percentile();
    test_flops();
    test_job_stats();
    test_cross();
    test_text();
    char tmpl[] = "/tmp/lsst-test-report.XXXXXX";
    if (mkdtemp(tmpl)) {
        test_reader(tmpl);
        test_reader_eval_heavy(tmpl);
        rm_rf(tmpl);
    } else {
        CHECK(0, "mkdtemp");
    }
    return check_done();
}
