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
	$(PY) -m pip install -q -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/pclandscape reproduce --quick --out results
	@echo "report: $(CURDIR)/results/report.html (and results/report.md)"

test: install
	$(PY) -m pytest -q

DOCS_STAMP := $(VENV)/.docs-installed

$(DOCS_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[test,docs]'
	@touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet
	@echo "site: $(CURDIR)/site/index.html"

bench: install
	for b in benchmarks/train_step.py benchmarks/inference.py benchmarks/seeds.py benchmarks/lr_grid.py benchmarks/curvature.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) results .pytest_cache site docs/quick docs/report.md
