# make bench:        set up .venv, build, run the benchmark suite (the main job):
#                    the representative cases of every family, a few minutes on
#                    2 cores, with progress and a closing summary; its JSON goes
#                    to bench/out/latest-cpu.json (git-ignored)
# FULL=1:            (make bench FULL=1) the whole grid instead, tens of minutes
# make bench-quick:  the default cases with short timing: bench/out/quick-cpu.json
# RESULTS=1:         (make bench FULL=1 RESULTS=1, make bench-quick RESULTS=1) write the
#                    JSON to bench/results/ instead, the committed tables
# make test:         set up .venv, build, run the test suite
# make wheel:        build dist/convspectra-*.whl against the .venv's torch (its
#                    metadata pins that torch's minor version; scripts/check_wheel.sh
#                    installs it into a fresh venv and smoke-tests it)
# make docs:         set up .venv, build the documentation site into site/ with
#                    warnings as errors (scripts/build_docs.sh: benchmark plots,
#                    then mkdocs build --strict)
PY := .venv/bin/python
BENCH_OUT := $(if $(RESULTS),bench/results,bench/out)

.PHONY: setup test bench bench-quick wheel check-wheel check-cuda docs clean

setup:
	scripts/setup.sh

test: setup
	$(PY) -m pytest -q tests

bench: setup
	$(PY) -m convspectra.bench $(if $(FULL),--full) --json $(BENCH_OUT)/latest-cpu.json

bench-quick: setup
	$(PY) -m convspectra.bench --quick --json $(BENCH_OUT)/quick-cpu.json

wheel: setup
	$(PY) -m pip wheel -q --no-build-isolation --no-deps -w dist .

check-wheel: wheel
	scripts/check_wheel.sh $(PY)

check-cuda: setup
	scripts/check_cuda.sh $(PY)

docs: setup
	PY=$(PY) scripts/build_docs.sh

clean:
	rm -rf build dist .venv site docs/img/bench
