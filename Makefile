# make bench: set up .venv, build, run the benchmark suite (the main job)
# make test:  set up .venv, build, run the test suite
PY := .venv/bin/python

.PHONY: setup test bench bench-quick check-cuda clean

setup:
	scripts/setup.sh

test: setup
	$(PY) -m pytest -q tests

bench: setup
	$(PY) -m convspectra.bench --json bench/results/latest-cpu.json

bench-quick: setup
	$(PY) -m convspectra.bench --quick

check-cuda: setup
	scripts/check_cuda.sh $(PY)

clean:
	rm -rf build .venv
