# samjax developer commands. Every target installs what it needs into .venv.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.samjax-installed
# Tests see 8 fake CPU devices (sharding tests); set before jax is imported.
TEST_ENV := XLA_FLAGS=--xla_force_host_platform_device_count=8
PYTEST_ARGS ?=
# pytest-xdist workers: most tests wait on a single-threaded XLA compile, so a
# second worker uses the second core. Expensive session fixtures are built
# once for both (tests/shared_fixtures.py). TEST_WORKERS=0: one process.
# --dist loadgroup: tests marked xdist_group(name) run on one worker, so a
# module fixture that starts several training runs is built once, not once
# per worker.
TEST_WORKERS ?= 2

.PHONY: install browser test demo finetune-demo bench lint clean

install: $(STAMP)

# Debian's chromium for the `samjax annotate` browser tests, installed where
# this user can (root with apt-get); elsewhere those tests say why they skip.
CHROMIUM ?= /usr/bin/chromium
browser:
	@if [ ! -x $(CHROMIUM) ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian's chromium for the browser tests"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 || \
	  { apt-get update -q >/dev/null && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; } || \
	  echo "could not install chromium: the browser tests will skip"; \
	fi

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[train,data,eval,plan,cloud,torch,test,dev]"
	touch $(STAMP)

# pytest exits 5 when it collects nothing: treat that as a failure, a suite
# that silently ran no test must not pass CI.
test: install browser
	$(TEST_ENV) $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS) tests; \
	rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

demo: install
	$(BIN)/python experiments/demo.py --out demo_out

# Fine-tunes the demo's model (runs the demo first if demo_out/ lacks it) on a
# COCO-format dataset of other sample images; held-out mIoU before/after.
finetune-demo: install
	$(BIN)/python experiments/finetune_demo.py --demo-out demo_out --out finetune_out

# Every benchmark against its baseline, results written to experiments/results
# as <bench>_<date>_<host>.md (host = CPU kind, e.g. amd-epyc or
# intel-xeon-avx512-amx), about 25 minutes on a 2-core CPU; each script also
# runs on its own.
bench: install
	$(BIN)/python experiments/bench_encoder.py --write experiments/results
	$(BIN)/python experiments/profile_encoder.py --write experiments/results
	$(BIN)/python experiments/bench_predictor.py --write experiments/results
	$(BIN)/python experiments/bench_amg.py --write experiments/results
	$(BIN)/python experiments/bench_data.py --write experiments/results
	$(BIN)/python experiments/bench_train.py --write experiments/results
	$(BIN)/python experiments/bench_annotate.py --write experiments/results

lint: install
	$(BIN)/ruff check samjax data_pipelines experiments tests

clean:
	rm -rf $(VENV) demo_out finetune_out demo_interop_out bench_out .pytest_cache
