#!/usr/bin/env bats
# lsst-report on real lsst-run outputs laid out like a workflow run directory
# (ROOT/<workflow>/<id>/<stage>/<point>/metrics/rank-*.h5): lss at 1, 2 and 4 ranks
# (weak scaling: seq_len grows with the ranks), lss and megatron-sp at 2 ranks. Every
# number is checked against the same quantity computed here with h5py + numpy from
# the rank files, by the definitions in README "Reports: lsst-report".
load ../lib

setup_file() {
  export DATA=$(prep_data)
  cd "$BATS_FILE_TMPDIR"
  write_config run.yaml "$DATA" out
  export WF=$BATS_FILE_TMPDIR/runs/seq-scaling/20261126-101500-4f2a
  local common="--config run.yaml --set train.steps=12 --set train.eval_every=4 --set train.ckpt_every=0"
  for n in 1 2 4; do
    mpirun_n "$n" "$BIN/lsst-run" $common --set parallel.scheme=lss --set parallel.sequence=$n \
      --set data.seq_len=$((32 * n)) --set output.dir="$WF/train/sp$n" >"sp$n.log" 2>&1 || { cat "sp$n.log"; return 1; }
  done
  for s in lss megatron-sp; do
    mpirun_n 2 "$BIN/lsst-run" $common --set parallel.scheme=$s --set parallel.sequence=2 \
      --set output.dir="$WF/compare/$s" >"$s.log" 2>&1 || { cat "$s.log"; return 1; }
  done
}

setup() { cd "$BATS_TEST_TMPDIR"; }

# expect ROOT OUT [WARMUP]: every job's summary.csv row equals the numpy computation.
expect() {
  "$PY" - "$@" <<'PY'
import csv, glob, json, math, os, sys
import h5py, numpy as np
root, out = sys.argv[1], sys.argv[2]
warmup = int(sys.argv[3]) if len(sys.argv) > 3 else 0
rows = {r["job"]: r for r in csv.DictReader(open(os.path.join(out, "summary.csv"), newline=""))}
skip = set(os.environ.get("SKIP", "").split())

def close(name, got, want, rel=1e-8):
    got = float(got) if got != "" else float("nan")
    if math.isnan(want) and math.isnan(got): return
    assert abs(got - want) <= rel * abs(want) + 1e-12, f"{job}: {name}: report {got!r}, numpy {want!r}"

checked = 0
for d in sorted(glob.glob(os.path.join(root, "**", "metrics"), recursive=True)):
    job_dir = os.path.dirname(d)
    job = os.path.relpath(job_dir, root)
    if job == ".": job = os.path.basename(os.path.realpath(root))
    ranks = []
    for p in sorted(glob.glob(os.path.join(d, "rank-*.h5"))):
        if os.path.basename(p) in skip: continue
        with h5py.File(p, "r", libver="latest", swmr=True) as f:
            ranks.append((dict(f.attrs), f["steps"][:], f["eval"][:]))
    ranks.sort(key=lambda r: r[0]["rank"])
    r = rows[job]
    timed = sorted(set.intersection(*[set(s["step"].tolist()) for _, s, _ in ranks if len(s)]))
    timed = np.array([t for t in timed if t > warmup])
    sel = [s[np.isin(s["step"], timed)] for _, s, _ in ranks]
    T = np.max([s["t_step"] for s in sel], axis=0)               # step time: max over ranks
    assert int(r["steps"]) == len(timed), (job, r["steps"], len(timed))
    assert int(r["ranks_read"]) == len(ranks), (job, r["ranks_read"])
    close("mean", r["step_time_mean_s"], T.mean())
    close("median", r["step_time_median_s"], float(np.median(T)))
    close("p99", r["step_time_p99_s"], float(np.percentile(T, 99)))
    tokens = sum(int(s["tokens"].sum()) for s in sel)
    close("tokens/s", r["tokens_per_s"], tokens / T.sum())
    close("tokens/step", r["tokens_per_step"], tokens / len(timed))
    close("comm share", r["comm_share"], sum(s["t_comm"].sum() for s in sel) / sum(s["t_step"].sum() for s in sel))
    close("bytes/step", r["comm_bytes_per_step"], sum(float(s["comm_bytes"].sum()) for s in sel) / len(timed))
    mem = [int(s["mem_peak"].max()) for _, s, _ in ranks]
    assert int(r["mem_peak_max_bytes"]) == max(mem) and int(r["mem_peak_min_bytes"]) == min(mem), job
    C = np.array([s["t_compute"].mean() for s in sel])
    close("imbalance", r["imbalance"], C.max() / C.mean() - 1)
    order = sorted(range(len(ranks)), key=lambda i: (-C[i], ranks[i][0]["rank"]))[:5]
    assert r["slowest_ranks"] == ";".join(str(ranks[i][0]["rank"]) for i in order), (job, r["slowest_ranks"])
    a, s0, ev = ranks[0]
    valid = ev[ev["split"] == b"valid"]
    close("final valid bpc", r["final_valid_bpc"], float(valid["bpc"][-1]) if len(valid) else float("nan"))
    close("final loss", r["final_loss"], float(s0["loss"][-1]))
    m = json.loads(a["model"]); L, E, M, V, l = m["layers"], m["dim"], m["mlp"], m["vocab"], int(a["seq_len"])
    flops = tokens / len(timed) * (6 * (L * (4 * E * E + 2 * E * M) + E * V) + 12 * L * l * E)
    close("model flops/step", r["model_flops_per_step"], flops)
    assert r["scheme"] == a["scheme"] and int(r["world"]) == a["world"] and int(r["sp_size"]) == a["sp_size"], job
    checked += 1
print(f"{checked} jobs match numpy")
PY
}

@test "report: --help shows an example, --version the git commit" {
  run "$BIN/lsst-report" --help
  [ "$status" -eq 0 ]
  [[ "$output" == *"example:"* ]]
  [[ "$output" == *"lsst-report runs/"* ]]
  run "$BIN/lsst-report" --version
  [ "$status" -eq 0 ]
  [[ "$output" == "lsst-report "*"(git "* ]]
}

@test "report: usage errors exit 2, an empty directory exits 1, with lsst-report: error:" {
  run "$BIN/lsst-report"
  [ "$status" -eq 2 ]
  [[ "$output" == "lsst-report: error: no run directory given"* ]]
  run "$BIN/lsst-report" nowhere
  [ "$status" -eq 2 ]
  [[ "$output" == "lsst-report: error: nowhere: no such directory" ]]
  run "$BIN/lsst-report" "$WF" "$WF"
  [ "$status" -eq 2 ]
  [[ "$output" == *"-o OUT"* ]]
  run "$BIN/lsst-report" --warmup -3 "$WF"
  [ "$status" -eq 2 ]
  [[ "$output" == *"--warmup -3"* ]]
  run "$BIN/lsst-report" --bogus "$WF"
  [ "$status" -eq 2 ]
  mkdir empty
  run "$BIN/lsst-report" empty
  [ "$status" -eq 1 ]
  [[ "$output" == "lsst-report: error: no metrics/rank-*.h5 under empty" ]]
  [ ! -e empty/report ]
}

@test "report: a workflow run directory: every job's numbers equal numpy's, outputs in RUNDIR/report" {
  cp -r "$WF" wf
  run "$BIN/lsst-report" wf
  [ "$status" -eq 0 ]
  [ "$output" = "wf/report" ]                      # the output directory on stdout, nothing else
  [ -f wf/report/report.md ]
  [ -f wf/report/report.html ]
  [ -f wf/report/summary.csv ]
  [ -f wf/report/summary.h5 ]
  [ -z "$(find wf/report -name '*.tmp.*')" ]       # atomic writes left no temp files
  run expect wf wf/report
  echo "$output"
  [ "$status" -eq 0 ]
  [ "$output" = "5 jobs match numpy" ]
  [ "$(cut -d, -f1 wf/report/summary.csv | tr -d '\r' | paste -sd' ')" = "job compare/lss compare/megatron-sp train/sp1 train/sp2 train/sp4" ]
}

@test "report: summary.h5 holds T_s per step, curves and per-rank numbers equal to numpy's" {
  run "$BIN/lsst-report" "$WF" -o rep
  [ "$status" -eq 0 ]
  run "$PY" - "$WF" rep/summary.h5 <<'PY'
import glob, os, sys, h5py, numpy as np
wf, path = sys.argv[1:]
s = h5py.File(path, "r")
jobs = [j.decode() if isinstance(j, bytes) else j for j in s["jobs"]["job"]]
for i, job in enumerate(jobs):
    g = s["job-%03d" % (i + 1)]
    assert g.attrs["label"] == job
    files = sorted(glob.glob(os.path.join(wf, job, "metrics", "rank-*.h5")))
    steps = [h5py.File(p, "r", swmr=True)["steps"][:] for p in files]
    T = np.max([x["t_step"] for x in steps], axis=0)
    assert np.array_equal(g["step"][:], steps[0]["step"]), job
    assert np.array_equal(g["step_time"][:], T), job                        # bit-exact: a max, no arithmetic
    assert np.array_equal(g["loss"][:], steps[0]["loss"]), job
    rk = g["ranks"][:]
    assert list(rk["rank"]) == list(range(len(files))), job
    assert np.allclose(rk["t_compute_mean"], [x["t_compute"].mean() for x in steps], rtol=1e-12), job
    assert list(rk["mem_peak"]) == [int(x["mem_peak"].max()) for x in steps], job
    assert np.allclose(rk["comm_bytes_per_step"], [x["comm_bytes"].mean() for x in steps], rtol=1e-12), job
print(len(jobs), "jobs")
PY
  echo "$output"
  [ "$status" -eq 0 ]
  [ "$output" = "5 jobs" ]
}

@test "report: weak-scaling speedup and efficiency from model FLOP rates against the smallest run" {
  run "$BIN/lsst-report" "$WF" -o rep
  [ "$status" -eq 0 ]
  run "$PY" - rep <<'PY'
import csv, sys, h5py, numpy as np
out = sys.argv[1]
rows = list(csv.DictReader(open(out + "/summary.csv", newline="")))
s = h5py.File(out + "/summary.h5", "r")
sc = s["scaling"][:]
lss = [i for i, r in enumerate(rows) if r["scheme"] == "lss"]
# one lss series (compare/lss and train/sp2 both have 2 ranks); megatron-sp alone has no series
assert set(sc["series"]) == {0} and sorted(sc["job"] - 1) == sorted(lss), sc
base = rows[sc["job"][0] - 1]
assert base["job"] == "train/sp1" and int(base["world"]) == 1
rate = lambda r: float(r["model_flops_per_step"]) / float(r["step_time_mean_s"])
for x in sc:
    r = rows[x["job"] - 1]
    S = rate(r) / rate(base)
    assert abs(x["speedup"] - S) <= 1e-7 * S, (r["job"], x["speedup"], S)
    assert abs(x["efficiency"] - S / (int(r["world"]) / int(base["world"]))) <= 1e-7 * S, r["job"]
    assert x["ranks"] == int(r["world"])
print("ok", len(sc))
PY
  echo "$output"
  [ "$status" -eq 0 ]
  [ "$output" = "ok 4" ]
  grep -q "^## Scaling" rep/report.md
  grep -q "parallel efficiency E = S / (P / P0)" rep/report.md
  grep -q "| train/sp4 | 4 | 4 x 1 | 128 |" rep/report.md
}

@test "report: lss / megatron-sp ratios of time, memory and bytes at equal rank counts" {
  run "$BIN/lsst-report" "$WF" -o rep
  [ "$status" -eq 0 ]
  run "$PY" - rep <<'PY'
import csv, sys, h5py
out = sys.argv[1]
rows = list(csv.DictReader(open(out + "/summary.csv", newline="")))
ra = h5py.File(out + "/summary.h5", "r")["ratios"][:]
# both 2-rank lss jobs pair with the one megatron-sp job (same grid, seq_len, model); sp1/sp4 have no twin
pairs = sorted((rows[x["lss_job"] - 1]["job"], rows[x["megatron_job"] - 1]["job"]) for x in ra)
assert pairs == [("compare/lss", "compare/megatron-sp"), ("train/sp2", "compare/megatron-sp")], pairs
for x in ra:
    l, m = rows[x["lss_job"] - 1], rows[x["megatron_job"] - 1]
    f = lambda r, k: float(r[k])
    assert abs(x["time"] - f(m, "step_time_mean_s") / f(l, "step_time_mean_s")) < 1e-7 * x["time"]
    assert abs(x["memory"] - f(m, "mem_peak_max_bytes") / f(l, "mem_peak_max_bytes")) < 1e-7 * x["memory"]
    assert abs(x["comm"] - f(m, "comm_bytes_per_step") / f(l, "comm_bytes_per_step")) < 1e-7 * x["comm"]
print("ok")
PY
  echo "$output"
  [ "$status" -eq 0 ]
  [ "$output" = "ok" ]
  grep -q "^## LSS vs megatron-sp at equal rank counts" rep/report.md
  grep -q "| 2 | 2 x 1 | 64 | compare/lss | compare/megatron-sp |" rep/report.md
}

@test "report: report.html is self-contained with real gnuplot SVG plots; report.md links the same plots" {
  run "$BIN/lsst-report" "$WF" -o rep
  [ "$status" -eq 0 ]
  html=rep/report.html
  # 5 jobs x (bpc, step time, per rank) + overlaid curves + speedup + efficiency
  [ "$(grep -c '<svg' "$html")" -eq 18 ]
  [ "$(grep -c 'Produced by GNUPLOT' "$html")" -eq 18 ]
  run ! grep -Eiq '<script|<link|<img|src=|@import|https?://[^" ]*\.(css|js|png)' "$html"
  # no id twice on the page (each SVG's ids are prefixed), every #reference resolves on the page
  [ -z "$(grep -o " id=[\"'][^\"']*" "$html" | sort | uniq -d)" ]
  for ref in $(grep -o "href='#[^']*\|url(#[^)]*" "$html" | sed "s/.*#//" | sort -u); do grep -q "id='$ref'" "$html"; done
  # the plots draw the data: the bpc plot of train/sp2 has its 12 train points and 3 valid points
  [ "$(ls rep/plots | wc -l)" -eq 18 ]
  grep -q '](plots/job-4-bpc.svg)' rep/report.md
  [ -f rep/plots/job-4-bpc.svg ]
  grep -q 'valid' rep/plots/job-4-bpc.svg
  # the tables are there, numbers escaped as text
  grep -q '<th>step time mean</th>' "$html"
  grep -q '<td>train/sp4</td>' "$html"
  grep -q '^| train/sp2 | lss | 2 x 1 | 2 | 64 | 12 |' rep/report.md
}

@test "report: a sequence x data grid (2 x 2): sums over all ranks, the slowest ranks named with sp and dp rank" {
  cd "$BATS_FILE_TMPDIR"
  run mpirun_n 4 "$BIN/lsst-run" --config run.yaml --set parallel.scheme=lss --set parallel.sequence=2 \
    --set parallel.data=2 --set train.steps=8 --set output.dir="$BATS_TEST_TMPDIR/grid/2x2"
  [ "$status" -eq 0 ]
  cd "$BATS_TEST_TMPDIR"
  run "$BIN/lsst-report" grid -o rep
  [ "$status" -eq 0 ]
  run expect grid rep
  echo "$output"
  [ "$status" -eq 0 ]
  [ "$output" = "1 jobs match numpy" ]
  grep -q "| grid | 2 sequence x 2 data = 4 ranks |" rep/report.md
  # tokens per step: the global batch (4 sequences x 64 tokens), from all four ranks
  run "$PY" -c "import csv; r = next(csv.DictReader(open('rep/summary.csv'))); print(r['tokens_per_step'], r['sp_size'], r['dp_size'])"
  [ "$output" = "256 2 2" ]
}

@test "report: a damaged rank file is skipped with a warning naming it; the rest is reported exactly" {
  mkdir -p dmg
  cp -r "$WF/train/sp4" dmg/job
  head -c 3000 dmg/job/metrics/rank-00002.h5 >t
  mv t dmg/job/metrics/rank-00002.h5      # truncated
  echo "not an HDF5 file" >dmg/job/metrics/rank-00003.h5                                  # garbage
  run "$BIN/lsst-report" dmg -o rep
  echo "$output"
  [ "$status" -eq 0 ]
  [[ "$output" == *"lsst-report: warning: dmg/job/metrics/rank-00002.h5: skipped: "* ]]
  [[ "$output" == *"lsst-report: warning: dmg/job/metrics/rank-00003.h5: skipped: not a readable HDF5 file"* ]]
  SKIP="rank-00002.h5 rank-00003.h5" run expect dmg rep
  echo "$output"
  [ "$status" -eq 0 ]
  [ "$output" = "1 jobs match numpy" ]
  run "$PY" -c "import csv; r = next(csv.DictReader(open('rep/summary.csv'))); print(r['rank_files'], r['ranks_read'], r['files_skipped'])"
  [ "$output" = "4 2 2" ]
  grep -q "2 read, 2 skipped; 2 of 4 ranks present; missing: 2, 3" rep/report.md
  grep -q "^- dmg/job/metrics/rank-00003.h5: not a readable HDF5 file" rep/report.md
}

@test "report: a file without the metrics columns, and a stale file of a bigger run, are skipped by name" {
  mkdir -p mix
  cp -r "$WF/train/sp2" mix/job
  cp "$WF/train/sp4/metrics/rank-00003.h5" mix/job/metrics/rank-00003.h5      # world 4 in a 2-rank job
  "$PY" -c "
import h5py, numpy as np
f = h5py.File('mix/job/metrics/rank-00002.h5', 'w', libver='latest')
f.create_dataset('steps', data=np.zeros(3, [('step', '<i8'), ('loss', '<f8')]))
for k, v in dict(rank=2, world=2, sp_rank=0, dp_rank=0, sp_size=2, dp_size=1, seq_len=64).items(): f.attrs[k] = np.int32(v)
f.attrs['host'] = 'h'"
  run "$BIN/lsst-report" mix -o rep
  echo "$output"
  [ "$status" -eq 0 ]
  [[ "$output" == *"mix/job/metrics/rank-00002.h5: skipped: attribute rank 2 is not in [0, world 2)"* ]]
  [[ "$output" == *"mix/job/metrics/rank-00003.h5: skipped: from another run: world 4, but mix/job/metrics/rank-00000.h5 has world 2"* ]]
  SKIP="rank-00002.h5 rank-00003.h5" run expect mix rep
  [ "$status" -eq 0 ]
  # a rank file whose /steps lacks t_step etc. is named with the cause
  "$PY" -c "
import h5py, numpy as np
f = h5py.File('mix/job/metrics/rank-00001.h5', 'w', libver='latest')
f.create_dataset('steps', data=np.zeros(3, [('step', '<i8'), ('loss', '<f8')]))
for k, v in dict(rank=1, world=2, sp_rank=1, dp_rank=0, sp_size=2, dp_size=1, seq_len=64).items(): f.attrs[k] = np.int32(v)
f.attrs['host'] = 'h'"
  run "$BIN/lsst-report" mix -o rep
  [ "$status" -eq 0 ]
  [[ "$output" == *"mix/job/metrics/rank-00001.h5: skipped: /steps has no field 'tokens'"* ]]
}

@test "report: ranks with different numbers of rows: statistics over the steps every rank reported" {
  mkdir -p part
  cp -r "$WF/compare/lss" part/job
  # rank 1 flushed 3 rows less than rank 0 (a live or killed run)
  "$PY" -c "import h5py; f = h5py.File('part/job/metrics/rank-00001.h5', 'r+'); f['steps'].resize((9,))"
  run "$BIN/lsst-report" part -o rep
  [ "$status" -eq 0 ]
  run expect part rep
  echo "$output"
  [ "$status" -eq 0 ]
  grep -q "The rank files hold 9 to 12 rows" rep/report.md
  # rank 0's per-rank means are over steps 1..9 only
  run "$PY" -c "
import h5py, numpy as np
s = h5py.File('part/job/metrics/rank-00000.h5', 'r', swmr=True)['steps'][:9]
r = h5py.File('rep/summary.h5', 'r')['job-001/ranks'][:]
print(bool(np.isclose(r['t_step_mean'][0], s['t_step'].mean(), rtol=1e-12)))"
  [ "$output" = "True" ]
}

@test "report: --warmup N leaves steps 1..N out of the timing statistics" {
  run "$BIN/lsst-report" --warmup 3 "$WF/train/sp2" -o rep
  [ "$status" -eq 0 ]
  run expect "$WF/train/sp2" rep 3
  echo "$output"
  [ "$status" -eq 0 ]
  [ "$output" = "1 jobs match numpy" ]
  grep -q "steps 1 to 3 are left out" rep/report.md
}

@test "report: reads a run while it writes (SWMR), and a killed run's files that a plain open refuses" {
  "$BIN/lsst-run" --config "$BATS_FILE_TMPDIR/run.yaml" --set train.steps=100000 --set output.dir=live >live.log 2>&1 &
  pid=$!
  rows=0
  for _ in $(seq 200); do
    rows=$("$PY" -c "import h5py; print(len(h5py.File('live/metrics/rank-00000.h5', 'r', swmr=True)['steps']))" 2>/dev/null || echo 0)
    [ "$rows" -ge 30 ] && break
    sleep 0.1
  done
  [ "$rows" -ge 30 ]
  run "$BIN/lsst-report" live -o rep-live
  kill -9 "$pid"; wait "$pid" || true
  echo "$output"
  [ "$status" -eq 0 ]
  steps=$("$PY" -c "import csv; print(next(csv.DictReader(open('rep-live/summary.csv')))['steps'])")
  [ "$steps" -ge 30 ]
  [ "$steps" -lt 100000 ]
  # killed: a plain read-only open fails (the file is still marked open for SWMR writing) ...
  run "$PY" -c "import h5py; h5py.File('live/metrics/rank-00000.h5', 'r')"
  [ "$status" -ne 0 ]
  # ... lsst-report reads every flushed row, with numbers equal to numpy's
  run "$BIN/lsst-report" live -o rep-killed
  [ "$status" -eq 0 ]
  run expect live rep-killed
  echo "$output"
  [ "$status" -eq 0 ]
  [ "$output" = "1 jobs match numpy" ]
}

@test "report: without gnuplot the report is still written, saying the plots are missing" {
  LSST_GNUPLOT=/nonexistent/gnuplot run "$BIN/lsst-report" "$WF/train/sp1" -o rep
  echo "$output"
  [ "$status" -eq 0 ]
  [[ "$output" == *"lsst-report: warning: plots not drawn: cannot run /nonexistent/gnuplot"* ]]
  run ! grep -q '<svg' rep/report.html
  grep -q 'Plot not drawn: sp1: bits per character' rep/report.html
  [ -f rep/summary.csv ]
}

@test "report: a second report replaces the first, leaving no plot of the old one" {
  run "$BIN/lsst-report" "$WF" -o rep
  [ "$status" -eq 0 ]
  [ "$(ls rep/plots | wc -l)" -eq 18 ]
  run "$BIN/lsst-report" "$WF/train/sp1" -o rep
  [ "$status" -eq 0 ]
  [ "$(ls rep/plots | wc -l)" -eq 3 ]
  [ "$(ls rep | wc -l)" -eq 5 ]
  grep -q "^1 job, 1 rank file read" rep/report.md
}
