# make bench:        set up .venv, build, run the benchmark suite (the main job);
#                    its JSON goes to bench/out/latest-cpu.json (git-ignored)
# make bench-quick:  the same for the --quick subset: bench/out/quick-cpu.json
# RESULTS=1:         (make bench RESULTS=1, make bench-quick RESULTS=1) write the
#                    JSON to bench/results/ instead, the committed tables
# make test:         set up .venv, build, run the test suite
PY := .venv/bin/python
BENCH_OUT := $(if $(RESULTS),bench/results,bench/out)

.PHONY: setup test bench bench-quick check-cuda clean

setup:
	scripts/setup.sh

test: setup
	$(PY) -m pytest -q tests

bench: setup
	$(PY) -m convspectra.bench --json $(BENCH_OUT)/latest-cpu.json

bench-quick: setup
	$(PY) -m convspectra.bench --quick --json $(BENCH_OUT)/quick-cpu.json

check-cuda: setup
	scripts/check_cuda.sh $(PY)

clean:
	rm -rf build .venv
