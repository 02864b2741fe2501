#!/usr/bin/env bash
# The peers' rows of benchmarks/README.md, reproducibly: builds a side environment in which
# pcx (and jpc, where its repository is reachable) import beside this package, then runs
# train_step.py there. The project's own environment is not touched.
#
# Pins: pcx 0.6.3 needs jax < 0.5 and equinox < 0.12; jpc 1.0.0 pins jax <= 0.5.2 and is not
# on PyPI (installed from its repository at the v1.0.0 tag; skipped, with a message, when
# GitHub cannot be reached). JAX 0.4.38 satisfies both; this package's suite passes under it.
#
# Usage: benchmarks/peers.sh [VENV_DIR] [-- train_step.py arguments]
#   default VENV_DIR: .peers-venv (git-ignored); default arguments: --repeats 15 --train-steps 16
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.peers-venv}
shift || true
[ "${1:-}" = "--" ] && shift
ARGS=("$@")
[ ${#ARGS[@]} -eq 0 ] && ARGS=(--repeats 15 --train-steps 16)
PY=${PYTHON:-python3.11}
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q "jax==0.4.38" "jaxlib==0.4.38" "equinox==0.11.12" "optax==0.2.5" \
    "diffrax==0.7.2" "optimistix==0.1.0" "lineax==0.0.7" "jaxtyping==0.2.36" "pcx==0.6.3"
  "$VENV/bin/pip" install -q --no-deps -e .
  "$VENV/bin/pip" install -q "numpy>=1.24" "matplotlib>=3.7" "mnist1d>=0.0.2"
  if ! timeout 120 "$VENV/bin/pip" install -q --no-deps "jpc @ git+https://github.com/thebuckleylab/jpc@v1.0.0"; then
    echo "peers.sh: jpc 1.0.0 could not be installed from its repository (no network to GitHub?): its row is skipped" >&2
  fi
fi
"$VENV/bin/python" - <<'PYEOF'
import importlib
for name in ("jax", "equinox", "pclandscape", "pcx", "jpc"):
    try:
        m = importlib.import_module(name)
        print(f"# {name} {getattr(m, '__version__', '?')}")
    except Exception as e:  # noqa: BLE001 - a report of what imports
        print(f"# {name}: not importable ({type(e).__name__})")
PYEOF
"$VENV/bin/python" benchmarks/train_step.py "${ARGS[@]}"
