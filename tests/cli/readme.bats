#!/usr/bin/env bats
# The README's examples work as written: its config and workflow blocks validate,
# its command lines run (shortened where they would train for minutes), the paper's
# workflows plan on every site profile. (make demo runs the quickstart itself.)
load ../lib

setup() { cd "$BATS_TEST_TMPDIR"; }

# yaml_blocks FILTER: write every ```yaml block of README.md whose text matches FILTER
# to block-N.yaml; print the file names.
yaml_blocks() {
  "$PY" - "$REPO/README.md" "$1" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
for i, b in enumerate(re.findall(r"```yaml\n(.*?)```", text, re.S)):
    if re.search(sys.argv[2], b, re.M):
        open(f"block-{i}.yaml", "w").write(b)
        print(f"block-{i}.yaml")
PY
}

@test "readme: every lsst-run config example validates (lsst-run --plan)" {
  blocks=$(yaml_blocks '^data:')
  [ -n "$blocks" ]
  for b in $blocks; do
    run "$BIN/lsst-run" --config "$b" --plan
    echo "$b: $output"
    [ "$status" -eq 0 ]
  done
}

@test "readme: the workflow example and the site profile example validate (lsst-submit --dry-run)" {
  wf=$(yaml_blocks '^stages:')
  site=$(yaml_blocks '^scheduler:')
  [ -n "$wf" ]
  [ -n "$site" ]
  mkdir configs && cp "$REPO/workflows/configs/quickstart.yaml" configs/
  for w in $wf; do
    run "$BIN/lsst-submit" --dry-run --out runs "$w"
    echo "$w: $output" | tail -3
    [ "$status" -eq 0 ]
    run "$BIN/lsst-submit" --dry-run --site "$BATS_TEST_TMPDIR/$site" --out runs "$w"
    echo "$w on $site: $output" | tail -3
    [ "$status" -eq 0 ]
  done
}

@test "readme: the paper's workflows plan on every site profile; their lsst-run config validates" {
  for site in perlmutter alps summit; do
    for w in lss-vs-megatron seq-scaling; do
      run "$BIN/lsst-submit" --site $site --dry-run --out runs "$REPO/workflows/$w.yaml"
      [ "$status" -eq 0 ]
    done
  done
  for site in slurm local; do   # CPU sites, as the README says
    for w in lss-vs-megatron seq-scaling; do
      run "$BIN/lsst-submit" --site $site --dry-run --set gpus=0 --set backend=cpu --out runs "$REPO/workflows/$w.yaml"
      [ "$status" -eq 0 ]
    done
  done
  for sp in 4 8 16; do
    for scheme in lss megatron-sp; do
      run "$BIN/lsst-run" --config "$REPO/workflows/configs/paper.yaml" --plan --set parallel.scheme=$scheme \
          --set parallel.sequence=$sp --set data.seq_len=16384 --set backend=cpu
      [ "$status" -eq 0 ]
    done
  done
}

@test "readme: the training commands run as written (shortened)" {
  data=$(prep_data)
  yaml_blocks 'parallel: \{scheme: lss, sequence: 2, data: 2, balance: zigzag\}' > which
  cfg=$(head -1 which)
  [ -n "$cfg" ]
  short="--set data.dir=$data --set train.steps=2 --set data.seq_len=128 --set model.dim=64 --set output.dir=out"
  run mpirun_n 4 "$BIN/lsst-run" --config "$cfg" $short
  [ "$status" -eq 0 ]
  run mpirun_n 4 "$BIN/lsst-run" --config "$cfg" $short --set parallel.scheme=lss --set parallel.sequence=4 \
      --set parallel.data=1 --set output.dir=out4
  [ "$status" -eq 0 ]
  run "$BIN/lsst-run" --config "$cfg" $short --resume latest --set train.steps=3 --set parallel.sequence=1 \
      --set parallel.data=1 --set parallel.balance=none
  [ "$status" -eq 0 ]
  [[ "$output" == *"resumed from out/checkpoints/step-000002.h5 at step 2"* ]]
  run "$BIN/lsst-run" --config "$cfg" $short --eval-only test --set parallel.sequence=1 --set parallel.data=1 \
      --set parallel.balance=none
  [ "$status" -eq 0 ]
}
