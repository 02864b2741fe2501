# Two commands on a fresh machine with Python >= 3.10 and pip:
#   make demo   install if needed, then the quick reproduction
#   make test   install if needed, then the whole test suite
# (make docs builds the documentation site into site/, --strict: a broken reference fails)
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo test docs bench clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || { $(PYTHON) -m pip install --user virtualenv && $(PYTHON) -m virtualenv $(VENV); }
	$(PY) -m pip install --upgrade pip >/dev/null
	$(PY) -m pip install -q -e '.[test,sweep]'
	@touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/pclandscape reproduce --quick --out results --exit-zero --jobs 2
	@echo "report: $(CURDIR)/results/report.html (and results/report.md)"

# the suite in TEST_WORKERS processes (pytest-xdist), a test file per process at a time: the
# tests are mostly single-threaded XLA compilation, so 2 workers on CI's 2 cores take ~0.6x
TEST_WORKERS ?= 2

test: install
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

DOCS_STAMP := $(VENV)/.docs-installed

$(DOCS_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[test,sweep,docs]'
	@touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet
	@echo "site: $(CURDIR)/site/index.html"

bench: install
	for b in benchmarks/train_step.py benchmarks/inference.py benchmarks/seeds.py benchmarks/lr_grid.py benchmarks/curvature.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) results .pytest_cache site docs/quick docs/report.md
