#!/usr/bin/env bash
# make bench: every CPU benchmark of lsst, one after the other, each printing its
# own table with the ratio to its peer or physical limit measured in the same run.
# Results are recorded by hand (each script's --record) in tests/bench/RESULTS.md.
# GPU benchmarks live in tests/bench/gpu/ and run on a lent GPU machine.
# Minutes, not seconds: run on an otherwise idle machine.
set -u
cd "$(dirname "$0")/../.."
export LSST_BIN=${LSST_BIN:-$PWD/bin}
rc=0
for b in kernels-bench.sh train-bench.sh comm-bench.sh prep-bench.sh report-bench.sh submit-bench.sh; do
  [ -x "tests/bench/$b" ] || continue
  echo "=== $b"
  "tests/bench/$b" || { echo "=== $b FAILED"; rc=1; }
done
exit $rc
