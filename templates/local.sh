#!/bin/bash
# {{generated}}
# Rendered from templates/local.sh; lsst-submit runs it on this machine once the jobs it
# waits for have completed, with its output in local.out beside it.
set -u
export PATH={{bin_dir}}:"$PATH"
export LSST_RUN_DIR={{run_dir}} LSST_JOB_DIR={{job_dir}} LSST_STAGE={{stage}} LSST_POINT={{point}}
{{setup}}
cd {{job_dir}} || exit 1
echo "lsst: local job on $(hostname) at $(date -u +%Y-%m-%dT%H:%M:%SZ)" >&2

# Ctrl-C or SIGTERM to lsst-submit reaches this shell; the handler passes it on to the
# whole command (its own process group): lsst-run checkpoints and exits 75.
lsst_signalled=0
lsst_forward() {
  lsst_signalled=1
  echo "lsst: SIG$1 received; passing it on to the command" >&2
  kill -s "$1" -- "-$lsst_child" 2>/dev/null
}
trap 'lsst_forward USR1' USR1
trap 'lsst_forward TERM' TERM
trap 'lsst_forward INT' INT
set -m
(
  trap true USR1 TERM INT
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
