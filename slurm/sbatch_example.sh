#!/bin/bash
# Plain sbatch (no submitit): 2 nodes x 8 GPUs, NCCL, automatic checkpoint-and-requeue.
#   sbatch slurm/sbatch_example.sh configs/opmask_R50_FPN_130k.yaml voc_r50 [KEY VALUE ...]
# Five minutes before the time limit (or on preemption with a grace period) SLURM sends SIGUSR1;
# opmask-train checkpoints at the next step boundary on all ranks and exits with code 75; this
# script then requeues the job, which resumes from the newest valid checkpoint (--resume).
#SBATCH --job-name=opmask
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=10
#SBATCH --time=72:00:00
#SBATCH --signal=USR1@300
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=slurm-%x-%j.out

CONFIG=${1:?config file}; EXP_ID=${2:?exp id}; shift 2
MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
MASTER_PORT=$((20000 + SLURM_JOB_ID % 20000))  # stable across requeues
export MASTER_ADDR MASTER_PORT

srun --kill-on-bad-exit=0 bash -c '
  export RANK=$SLURM_PROCID WORLD_SIZE=$SLURM_NTASKS LOCAL_RANK=$SLURM_LOCALID
  exec python -m opmask.cli.train --config-file "$0" --exp-id "$1" --resume "${@:2}"
' "$CONFIG" "$EXP_ID" "$@"
code=$?
if [ $code -eq 75 ]; then   # checkpointed on request: come back later
  scontrol requeue "$SLURM_JOB_ID"
fi
exit $code
