#!/usr/bin/python3
"""The peer lsst-report is measured against (tests/bench/report-bench.sh): h5py + numpy
computing ONLY the step-time statistics of lsst-report, on the same rank files.

  report_peer.py DIR...    every metrics/rank-*.h5 under DIR (one job)

Step time of step s = max over ranks of t_step; prints mean, median and p99
(numpy.percentile, linear interpolation) over the steps every rank reported.
"""
import glob, os, re, sys
import h5py, numpy as np


def main():
    files = []
    for d in sys.argv[1:]:
        for root, _, names in os.walk(d):
            if os.path.basename(root) == "metrics":
                files += [os.path.join(root, n) for n in names if re.fullmatch(r"rank-\d+\.h5", n)]
    files.sort()
    step_max = None
    for path in files:
        with h5py.File(path, "r", libver="latest", swmr=True) as f:
            t = f["steps"].fields("t_step")[:]
        if step_max is None:
            step_max = t.copy()
        else:
            n = min(len(step_max), len(t))       # steps every rank reported (rows are steps 1..n)
            step_max = np.maximum(step_max[:n], t[:n])
    print("files %d steps %d mean %.9g median %.9g p99 %.9g" % (len(files), len(step_max), step_max.mean(),
          np.median(step_max), np.percentile(step_max, 99)))


if __name__ == "__main__":
    main()
