#!/usr/bin/env bash
# make demo: the quickstart (prep -> 2-rank LSS training -> report -> archive).
echo "make demo: not yet available: the quickstart workflow (issue 8) has not landed;" >&2
echo "           lsst-prep works today: bin/lsst-prep ../shared/data/enwik8/enwik8-head-4MB data/enwik8" >&2
exit 1
