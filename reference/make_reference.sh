#!/usr/bin/env bash
# Full-size (§A.4 settings) results of the BP-vs-PC experiments, written into reference/.
# Resumable: `pclandscape reproduce` skips experiments whose results exist for the same config,
# so an interrupted run picks up where it stopped (run it again). Needs the data sets in
# --data-dir (MNIST, Fashion-MNIST: Debian's dataset-fashion-mnist is found automatically;
# CIFAR-10). On a GPU machine run it there: its results.json files record the device and the
# wall time. Usage: reference/make_reference.sh [DATA_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-${PCLANDSCAPE_DATA:-$HOME/data}}
PY=${PY:-.venv/bin/python}
# the fair comparison first (the paper's open question), then the paper-code figures
exec "$PY" -m pclandscape.cli reproduce --out reference --only fair,fig5,fig2,fig6,fig12 --data-dir "$DATA" --no-fallback
