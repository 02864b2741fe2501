#!/usr/bin/env bash
# One prepared run of the benchmark suite and the full-size fig5 on a GPU machine, in a fixed
# time budget, everything logged to $OUT/log.txt (fig5's results.json, report and figures are
# copied to $OUT too). Run from the repository root:
#
#     OUT=gpu-out benchmarks/gpu_run.sh [BUDGET_S=540] [DATA_DIR=.gpu/data] [STEP ...]
#
# STEPs (default: all, in this order): train_step, train_step_cmdbuf, train_step_fp32, seeds,
# seeds_no_triton, inference, fig5. DATA_DIR is passed to fig5's --data-dir: a folder with
# the data files (e.g. fashion-mnist/*.gz) copied to the GPU machine with the working tree,
# since such a machine often has no network (keep it out of git, e.g. in .git/info/exclude).
#
# It uses the python3 on PATH (JAX with CUDA, equinox, optax, diffrax, lineax, optimistix,
# jaxtyping, matplotlib) and the package from src/ (no install). Each step has a time cap;
# a step that fails or runs out of time does not stop the others. Order: what the issue's
# GPU targets need first (train_step, seeds), then inference, then fig5 with the time left.
set -u
BUDGET=${1:-540}
DATA_DIR=${2:-.gpu/data}
shift $(($# < 2 ? $# : 2))
STEPS=" ${*:-train_step train_step_cmdbuf train_step_fp32 seeds seeds_no_triton inference fig5} "
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
exec > >(tee "$OUT/log.txt") 2>&1
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PY:-python3}
T0=$(date +%s)

step() { # step CAP_S LABEL command...: run with a cap, never past the budget
  local cap=$1 label=$2
  shift 2
  [[ $label == versions || $STEPS == *" $label "* ]] || return 0
  local left=$((BUDGET - ($(date +%s) - T0)))
  ((cap > left)) && cap=$left
  if ((cap < 15)); then
    echo "### $label: skipped, budget spent"
    return
  fi
  echo "### $label (cap ${cap} s): $*"
  local t=$(date +%s)
  timeout -k 5 "$cap" "$@"
  echo "### $label: exit $? after $(($(date +%s) - t)) s"
}

echo "### $(date -u)  budget ${BUDGET} s"
nvidia-smi -L
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,temperature.gpu,utilization.gpu --format=csv
step 60 versions "$PY" -c "
import sys, jax, jaxlib, equinox, optax, diffrax, lineax, optimistix
print(sys.version.split()[0], 'jax', jax.__version__, 'jaxlib', jaxlib.__version__, 'equinox', equinox.__version__,
      'optax', optax.__version__, 'diffrax', diffrax.__version__, 'lineax', lineax.__version__, jax.devices())
import jax.numpy as jnp, optax as o, pclandscape as pcl
net = pcl.MLP(jax.random.key(0), [784, 32, 32, 10], 'tanh')
x = jax.random.normal(jax.random.key(1), (8, 784)); y = jax.nn.one_hot(jnp.arange(8) % 10, 10)
opt = o.sgd(1e-3)
_, _, info = pcl.pc_step(net, pcl.init_opt_state(net, opt), x, y, opt, pcl.Euler())
print('smoke pc_step ok: loss', float(info.loss), 'unroll default', pcl.Euler()._unroll())
"
step 150 train_step "$PY" benchmarks/train_step.py --variants --train-steps 64 --repeats 30
step 70 train_step_cmdbuf env XLA_FLAGS="--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,CUDNN,CONDITIONAL,WHILE --xla_gpu_graph_min_graph_size=1" \
  "$PY" benchmarks/train_step.py --variants --activations tanh --repeats 30
step 70 train_step_fp32 env JAX_DEFAULT_MATMUL_PRECISION=highest "$PY" benchmarks/train_step.py --activations tanh --repeats 30 --train-steps 64
step 100 seeds "$PY" benchmarks/seeds.py --seeds 5 --steps 64 --repeats 3
step 100 seeds_no_triton env XLA_FLAGS=--xla_gpu_enable_triton_gemm=false "$PY" benchmarks/seeds.py --seeds 5 --steps 64 --repeats 3
step 150 inference "$PY" benchmarks/inference.py --width 500 --depths 2,5,10 --activations tanh,relu --solvers euler,heun,cg --max-steps 2000 --repeats 3
rm -rf /tmp/pcl-fig5
step 100000 fig5 "$PY" -c "
import sys
from pclandscape import cli
sys.exit(cli.main(['run', 'fig5', '--out', '/tmp/pcl-fig5', '--data-dir', '$DATA_DIR', '--set', 'datasets=fashion_mnist']))
"
for f in /tmp/pcl-fig5/fig5/results.json /tmp/pcl-fig5/report.md $(ls /tmp/pcl-fig5/fig5/*.png 2>/dev/null | head -5); do
  [ -f "$f" ] && cp "$f" "$OUT/"
done
echo "### done after $(($(date +%s) - T0)) s"
