# The front door. `make demo` runs the main job (the robot model; DEMO_ARGS="--model tiny" for the tiny one);
# `make test` runs the tests. Both set up first.
SHELL := /bin/bash
ENV := . .venv/bin/activate && . install/local_setup.bash &&

.PHONY: setup test test-fast demo bench-quick clean

setup:
	@bash scripts/setup.sh

test: setup
	@$(ENV) python -m pytest test -q $(PYTEST_ARGS)

demo: setup
	@$(ENV) python -m sentryfuse_ros.cli demo $(DEMO_ARGS)

bench-quick: setup
	@$(ENV) python -m sentryfuse_ros.cli bench --quick --out bench_quick.json

clean:
	rm -rf build install log .venv .cache
