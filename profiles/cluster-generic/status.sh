#!/usr/bin/env bash
# Job status for snakemake's cluster-generic executor on SLURM: prints running, success or failed.
# Usage: status.sh <jobid>   (the id sbatch --parsable printed; "id;cluster" is accepted)
set -u
jobid="${1%%;*}"
# sacct knows finished jobs for as long as the accounting database keeps them; without
# accounting it fails, and scontrol knows the job until MinJobAge after it ends.
state=$(sacct -j "$jobid" -X -n -P -o State 2>/dev/null | head -n 1)
if [ -z "$state" ]; then
    state=$(scontrol show job "$jobid" -o 2>/dev/null | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p')
fi
case "${state%% *}" in
    COMPLETED) echo success ;;
    PENDING | CONFIGURING | RUNNING | COMPLETING | SUSPENDED | REQUEUED | REQUEUE_FED | REQUEUE_HOLD | RESIZING | SIGNALING | STAGE_OUT | RESV_DEL_HOLD) echo running ;;
    "")
        echo "status.sh: SLURM has no record of job $jobid (no accounting and older than MinJobAge); reporting it failed" >&2
        echo failed
        ;;
    *) echo failed ;;
esac
