#!/bin/bash
{{directives}}
# {{generated}}
# Rendered from templates/slurm.sh; submitted with sbatch --hold and native dependencies.
set -u
export PATH={{bin_dir}}:"$PATH"
export LSST_RUN_DIR={{run_dir}} LSST_JOB_DIR={{job_dir}} LSST_STAGE={{stage}} LSST_POINT={{point}}
{{setup}}
cd {{job_dir}} || exit 1
echo "lsst: job ${SLURM_JOB_ID:-?} (restart ${SLURM_RESTART_COUNT:-0}) on $(hostname) at $(date -u +%Y-%m-%dT%H:%M:%SZ)" >&2

# Preemption and time limits: Slurm signals this shell 120 s before the limit
# (--signal=B:USR1@120) and sends SIGTERM on scancel or preemption. The handler passes the
# signal on to the whole command (its own process group); lsst-run then checkpoints at the
# next step boundary and exits 75, which requeues the job (the command resumes from the
# checkpoint with --resume latest).
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
if [ "$lsst_rc" -eq 75 ]; then
  echo "lsst: checkpointed after a signal (exit 75): requeueing job $SLURM_JOB_ID" >&2
  scontrol requeue "$SLURM_JOB_ID"
fi
exit "$lsst_rc"
