# The front door. `make demo` runs the main job (the robot model; DEMO_ARGS="--model tiny" for the tiny one);
# `make test` runs every test; `make test-fast` the core and the conversions without the tests marked
# slow (ROS processes, ros2 launch, demo, training, DDP, exports): under 2 minutes. All set up first;
# PYTEST_ARGS passes arguments to pytest.
SHELL := /bin/bash
ENV := . .venv/bin/activate && . install/local_setup.bash &&

.PHONY: setup test test-fast demo bench-quick clean

setup:
	@bash scripts/setup.sh

test: setup
	@$(ENV) python -m pytest test -q $(PYTEST_ARGS)

test-fast: setup
	@$(ENV) python -m pytest test -q -m "not slow" $(PYTEST_ARGS)

demo: setup
	@$(ENV) python -m sentryfuse_ros.cli demo $(DEMO_ARGS)

bench-quick: setup
	@$(ENV) python -m sentryfuse_ros.cli bench --quick --out bench_quick.json

clean:
	rm -rf build install log .venv .cache
