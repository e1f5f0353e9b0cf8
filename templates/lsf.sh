#!/bin/bash
{{directives}}
# {{generated}}
# Rendered from templates/lsf.sh; submitted with bsub -H and -w "done(...)" dependencies.
set -u
export PATH={{bin_dir}}:"$PATH"
export LSST_RUN_DIR={{run_dir}} LSST_JOB_DIR={{job_dir}} LSST_STAGE={{stage}} LSST_POINT={{point}}
{{setup}}
cd {{job_dir}} || exit 1
echo "lsst: job ${LSB_JOBID:-?} on $(hostname) at $(date -u +%Y-%m-%dT%H:%M:%SZ)" >&2

# Preemption and time limits: LSF signals this shell 2 minutes before the limit (-wa USR1
# -wt 2) and sends SIGTERM on bkill. The handler passes the signal on to the whole command
# (its own process group); lsst-run checkpoints and exits 75, and LSF requeues the job on
# that exit value (-Q "75"); the command resumes from the checkpoint with --resume latest.
lsst_signalled=0
lsst_forward() {
  lsst_signalled=1
  echo "lsst: SIG$1 received; passing it on to the command" >&2
  kill -s "$1" -- "-$lsst_child" 2>/dev/null
}
trap 'lsst_forward USR1' USR1
trap 'lsst_forward TERM' TERM
set -m
(
  trap true USR1 TERM
{{command}}
) &
lsst_child=$!
set +m
while :; do
  wait "$lsst_child"; lsst_rc=$?
  [ "$lsst_signalled" = 1 ] || break
  lsst_signalled=0    # the trap interrupted wait: wait again for the command's own status
done
exit "$lsst_rc"
