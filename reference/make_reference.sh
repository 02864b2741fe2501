#!/usr/bin/env bash
# Reference results of the BP-vs-PC experiments, written into reference/ (see reference/README.md).
# Resumable: an experiment whose results.json exists for the same config is skipped, so an
# interrupted run picks up where it stopped (run the script again; --force reruns).
# Usage: reference/make_reference.sh [cpu|full] [DATA_DIR]
#   cpu   fig2 and fig6 at the paper's sizes; the fair comparison at a CPU-sized config:
#         Fashion-MNIST, linear nets of width 64,
#         depths 1-4, 2000 steps; the full learning-rate grid and 5 seeds (~40 min on 2 cores);
#         fig5's MLPs at the paper's sizes and schedule (784-500x4-10, the notebook's epoch rule)
#         on Fashion-MNIST and MNIST-1D, linear and tanh, without the CNN (~1 h on 2 cores); fig12 likewise
#         on Fashion-MNIST, linear and tanh; into relu/
#         fig5's ReLU nets on Fashion-MNIST, into tanh/ the fair comparison with tanh nets at the same sizes,
#         into fine/ the linear fair comparison at H = 2, 3 on a quarter-decade learning-rate grid, into w500/
#         the linear fair comparison at the paper's width 500, depths 1-5, 3000 steps (fair's defaults but for
#         the data set; ~1.5 h on 2 cores); into w500_tanh/ the same with tanh nets at H = 1-3, 1000 steps, into w500_tanh45/ at H = 4, 5,
#         into w500_tanh_full/ at H = 1, 2 and 3000 steps, into w500_tanh3_full/ .. w500_tanh5_full/ at H = 3, 4, 5 and 3000
#         steps; into mupc_v4/ the
#         mupc run at 8-64 layers with the float64 check; into
#         mupc/ residual tanh nets of 8-128 layers under muPC, 200 steps, and into mupc_relu/ ReLU nets of 8-32 layers
#   full  every BP-vs-PC experiment at the paper's §A.4 sizes (a GPU machine; days on a CPU)
# Data: Fashion-MNIST from Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist)
# or DATA_DIR; MNIST and CIFAR-10 in DATA_DIR for `full`. Nothing falls back to another data set.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-cpu}
DATA=(); [ -n "${2:-}" ] && DATA=(--data-dir "$2")
CLI=(.venv/bin/pclandscape)
case "$MODE" in
  cpu)
    "${CLI[@]}" reproduce --out reference --only fair,fig2,fig6,fig5,fig12 "${DATA[@]}" --no-fallback --exit-zero \
      --set fair.dataset=fashion_mnist --set fair.activations=linear --set fair.width=64 \
      --set fair.depths=1,2,3,4 --set fair.max_steps=2000 \
      --set fig5.datasets=fashion_mnist,mnist1d --set fig5.activations=linear,tanh --set fig5.cnn=false \
      --set fig12.datasets=fashion_mnist --set fig12.activations=linear,tanh
    # fig5's ReLU nets on Fashion-MNIST (~36 min) and the fair comparison with tanh nets (Newton), in folders of
    # their own so that the runs above keep their configs
    "${CLI[@]}" reproduce --out reference/relu --only fig5 "${DATA[@]}" --no-fallback --exit-zero \
      --set fig5.datasets=fashion_mnist --set fig5.activations=relu --set fig5.cnn=false
    "${CLI[@]}" reproduce --out reference/tanh --only fair "${DATA[@]}" --no-fallback --exit-zero \
      --set fair.dataset=fashion_mnist --set fair.activations=tanh --set fair.width=64 \
      --set fair.depths=1,2,3,4 --set fair.max_steps=2000
    # the linear cells whose verdicts the edge check finds within the half-decade grid (H = 2, 3), on a
    # quarter-decade grid between 1e-2 and 3.16 (the coarse grid's ends kept for the coverage check)
    "${CLI[@]}" reproduce --out reference/fine --only fair "${DATA[@]}" --no-fallback --exit-zero \
      --set fair.dataset=fashion_mnist --set fair.activations=linear --set fair.width=64 \
      --set fair.depths=2,3 --set fair.max_steps=2000 \
      --set fair.lrs=1e-4,1e-3,1e-2,0.0178,0.0316,0.0562,0.1,0.178,0.316,0.562,1,1.78,3.16,10,31.6
    # the linear fair comparison at full size: fair's default config (width 500, H = 1-5, 3000 steps) on Fashion-MNIST
    "${CLI[@]}" reproduce --out reference/w500 --only fair "${DATA[@]}" --no-fallback --exit-zero \
      --set fair.dataset=fashion_mnist --set fair.activations=linear
    # the same with tanh nets (Newton), cut to H = 1-3 and 1000 steps to fit 45 minutes on 2 cores
    "${CLI[@]}" reproduce --out reference/w500_tanh --only fair "${DATA[@]}" --no-fallback --exit-zero \
      --set fair.dataset=fashion_mnist --set fair.activations=tanh --set fair.depths=1,2,3 --set fair.max_steps=1000
    # and at H = 4, 5 (~2 h on 2 cores; each grid resumes from its checkpoint every 100 steps after an interrupt)
    "${CLI[@]}" reproduce --out reference/w500_tanh45 --only fair "${DATA[@]}" --no-fallback --exit-zero \
      --set fair.dataset=fashion_mnist --set fair.activations=tanh --set fair.depths=4,5 --set fair.max_steps=1000
    # H = 1, 2 at fair's full 3000 steps (~1.8 h on 2 cores: PC at H = 2 takes ~1.6 s per step of its 40 stable
    # members in the second half), H = 3 (~2 h: ~2.2 s per PC step of its 41 stable members), then H = 4 and
    # H = 5 (each a few hours; an interrupted grid resumes from its checkpoint in the folder's resume directory)
    "${CLI[@]}" reproduce --out reference/w500_tanh_full --only fair "${DATA[@]}" --no-fallback --exit-zero \
      --set fair.dataset=fashion_mnist --set fair.activations=tanh --set fair.depths=1,2
    "${CLI[@]}" reproduce --out reference/w500_tanh3_full --only fair "${DATA[@]}" --no-fallback --exit-zero \
      --set fair.dataset=fashion_mnist --set fair.activations=tanh --set fair.depths=3
    "${CLI[@]}" reproduce --out reference/w500_tanh4_full --only fair "${DATA[@]}" --no-fallback --exit-zero \
      --set fair.dataset=fashion_mnist --set fair.activations=tanh --set fair.depths=4
    "${CLI[@]}" reproduce --out reference/w500_tanh5_full --only fair "${DATA[@]}" --no-fallback --exit-zero \
      --set fair.dataset=fashion_mnist --set fair.activations=tanh --set fair.depths=5
    # deep residual nets (mupc) at the default width 128 and depths 8-128: tanh under muPC only (SP's inference takes
    # ~100 Newton iterations per step from 32 layers on), 200 SGD steps (default one epoch), a grid shifted up to
    # 10000 (muPC's output scaling 1/N at width 128), F*'s Hessian at the origin at 8 layers only (75 min on 2 cores,
    # the 128-layer cell 63 min of it; each cell's grids resume from their checkpoints every 50 steps)
    "${CLI[@]}" reproduce --out reference/mupc --only mupc "${DATA[@]}" --no-fallback --exit-zero \
      --set mupc.activations=tanh --set mupc.params=mupc --set mupc.steps=200 \
      --set mupc.lrs=3.16,10,31.6,100,316,1000,3160,10000 --set mupc.hessian_max_depth=8
    # the same at 8-64 layers with mupc VERSION 4 (the float64 check of the final equilibria; ~17 min on 2 cores)
    "${CLI[@]}" reproduce --out reference/mupc_v4 --only mupc "${DATA[@]}" --no-fallback --exit-zero \
      --set mupc.activations=tanh --set mupc.params=mupc --set mupc.steps=200 --set mupc.depths=8,16,32,64 \
      --set mupc.lrs=3.16,10,31.6,100,316,1000,3160,10000 --set mupc.hessian_max_depth=8
    # the same with ReLU nets at 8-32 layers (their Newton iterations grow with depth: 55 per step at 128 layers, batch 64)
    "${CLI[@]}" reproduce --out reference/mupc_relu --only mupc "${DATA[@]}" --no-fallback --exit-zero \
      --set mupc.activations=relu --set mupc.params=mupc --set mupc.steps=200 --set mupc.depths=8,16,32 \
      --set mupc.lrs=3.16,10,31.6,100,316,1000,3160,10000
    ;;
  full)
    "${CLI[@]}" reproduce --out reference --only fair,fig5,fig2,fig6,fig12 "${DATA[@]}" --no-fallback --exit-zero
    ;;
  *) echo "usage: $0 [cpu|full] [DATA_DIR]" >&2; exit 2 ;;
esac
"${CLI[@]}" report reference
