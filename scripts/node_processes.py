"""Shared by scripts/load_test.py and scripts/soak.py: the SentryFuse nodes as separate processes
(the installed executables, as `ros2 launch` starts them), an observer node recording what they
publish, RSS from /proc, and CPU hogs.

Run after `make setup` in a shell with `. .venv/bin/activate && . install/local_setup.bash`;
the nodes use ROS_DOMAIN_ID from the environment, like every ROS 2 process.
"""
import json
import os
import pathlib
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from typing import Dict, List, Optional, Sequence

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXECUTABLES = ROOT / 'install' / 'sentryfuse_ros' / 'lib' / 'sentryfuse_ros'
PARAMS = ROOT / 'config' / 'perception.yaml'


def params_file(overrides: Dict[str, Dict[str, object]], folder: pathlib.Path) -> pathlib.Path:
    """config/perception.yaml with ``{node: {parameter: value}}`` replaced, written to ``folder``."""
    params = yaml.safe_load(PARAMS.read_text(encoding='utf-8'))
    for node, values in overrides.items():
        section = params.setdefault(node, {}).setdefault('ros__parameters', {})
        for key, value in values.items():
            *parents, leaf = key.split('.')
            target = section
            for p in parents:
                target = target.setdefault(p, {})
            target[leaf] = value
    path = folder / 'params.yaml'
    path.write_text(yaml.safe_dump(params), encoding='utf-8')
    return path


class NodeProcess:
    """One installed node executable in its own process (group); output to a log file."""

    def __init__(self, executable: str, name: str, params: pathlib.Path, log_dir: pathlib.Path,
                 extra: Sequence[str] = ()):
        self.name = name
        self.log = log_dir / f'{name}.log'
        argv = [sys.executable, str(EXECUTABLES / executable), '--ros-args', '-r', f'__node:={name}',
                '--params-file', str(params), *extra]
        with open(self.log, 'w') as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                         env=dict(os.environ, PYTHONUNBUFFERED='1'),
                                         preexec_fn=normal_priority)

    def rss_mb(self) -> float:
        try:
            text = pathlib.Path(f'/proc/{self.proc.pid}/status').read_text()
        except OSError:
            return float('nan')
        kb = next(int(line.split()[1]) for line in text.splitlines() if line.startswith('VmRSS:'))
        return kb / 1024.0

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> Optional[int]:
        """SIGINT (Ctrl-C), then SIGKILL after 10 s; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                return self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode


class Observer:
    """An rclpy node in this process, spun in a thread, recording each inference (Prediction +
    InferenceLatency as an InferenceRecord whose ``t`` is the Prediction's receive time [s, monotonic])
    and health messages (with their live flags)."""

    def __init__(self):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from sentryfuse_ros.msg import InferenceLatency, ModalityHealth, Prediction
        from sentryfuse_ros.msg_arrays.inference import RecordPairer
        self._rclpy = rclpy
        self.context = rclpy.context.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node('sentryfuse_observer', context=self.context)
        self.lock = threading.Lock()
        # receive times t are time.monotonic(); stamps are the publisher's header.stamp [s, wall
        # clock], unaffected when this process itself is starved
        self.records: List = []              # InferenceRecord of each inference; t = when its Prediction came
        self.health: List[tuple] = []        # (t, header stamp = publication, modalities, live, rate_hz)
        self._pairer = RecordPairer(self.records.append)
        self.camera: List[tuple] = []        # (t, header stamp) of camera frames (raw, not deserialized)
        self.node.create_subscription(Prediction, '/sentryfuse/prediction', self._on_prediction, 50)
        self.node.create_subscription(ModalityHealth, '/sentryfuse/health', self._on_health, 50)
        self.node.create_subscription(InferenceLatency, '/sentryfuse/latency', self._on_latency, 50)
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import Image
        from sentryfuse_ros.core.data.topics import SENSOR_TOPICS  # noqa: PLC0415
        self.node.create_subscription(Image, SENSOR_TOPICS['camera'][0], self._on_camera, qos_profile_sensor_data,
                                      raw=True)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self) -> None:
        while self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.1)
            except Exception:  # noqa: BLE001 - shutting down
                return

    def _on_prediction(self, msg) -> None:
        with self.lock:
            self._pairer.prediction(msg, time.monotonic())

    def _on_health(self, msg) -> None:
        with self.lock:
            self.health.append((time.monotonic(), _stamp(msg.header.stamp), tuple(msg.modalities),
                                tuple(msg.live), tuple(msg.rate_hz)))

    def _on_camera(self, raw: bytes) -> None:
        sec, nanosec = struct.unpack_from('<iI', raw, 4)  # CDR: 4-byte encapsulation, then header.stamp
        with self.lock:
            self.camera.append((time.monotonic(), sec + nanosec * 1e-9))

    def _on_latency(self, msg) -> None:
        with self.lock:
            self._pairer.latency(msg)

    def wait_all_live(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if self.health and all(self.health[-1][3]) and self.records:
                    return True
            time.sleep(0.1)
        return False

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=1.0)
        self.context.try_shutdown()
        self.thread.join(timeout=2.0)


def _stamp(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def gaps(times: Sequence[float], t0: float, t1: float) -> List[float]:
    """Intervals between consecutive times inside [t0, t1], the window edges included."""
    inside = [t0] + [t for t in times if t0 <= t <= t1] + [t1]
    return [b - a for a, b in zip(inside, inside[1:])]


def not_live_transitions(health: Sequence[tuple], t0: float, t1: float) -> Dict[str, int]:
    """{modality: number of live -> not-live transitions} in health messages inside [t0, t1]."""
    counts: Dict[str, int] = {}
    previous = None
    for t, _stamp_s, modalities, live, _rates in health:
        if t < t0 or t > t1:
            previous = (modalities, live) if t < t0 else previous
            continue
        for name in modalities:
            counts.setdefault(name, 0)
        if previous is not None:
            for name, was, now in zip(modalities, previous[1], live):
                if was and not now:
                    counts[name] += 1
        previous = (modalities, live)
    return counts


def start_hogs(count: int) -> List[subprocess.Popen]:
    """``count`` processes spinning a CPU core each (pure Python busy loops)."""
    return [subprocess.Popen([sys.executable, '-c', 'while True: pass'], preexec_fn=normal_priority)
            for _ in range(count)]


def stop_hogs(hogs: Sequence[subprocess.Popen]) -> None:
    for hog in hogs:
        hog.kill()
        hog.wait(5)


def normal_priority() -> None:
    """Children (nodes under test, hogs) run at the default priority and with the default SIGINT
    action whatever this process has (a shell's background job ignores SIGINT, and the nodes
    would inherit that and never see the Ctrl-C that stops them)."""
    os.setpriority(os.PRIO_PROCESS, 0, 0)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def raise_own_priority() -> bool:
    """The observer is the instrument: let it run ahead of the nodes under test (root only)."""
    try:
        os.nice(-10)
        return True
    except OSError:
        return False


def workdir() -> pathlib.Path:
    return pathlib.Path(tempfile.mkdtemp(prefix='sentryfuse_'))


def report(results: Dict[str, object], json_path: Optional[str]) -> int:
    """Print the results as JSON and, when asked, write them to ``json_path``; the scripts' exit code."""
    print(json.dumps(results, indent=1))
    if json_path:
        with open(json_path, 'w') as out:
            json.dump(results, out, indent=1)
    return 0
