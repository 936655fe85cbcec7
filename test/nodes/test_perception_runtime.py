"""perception's runtime parameters over real DDS: device=cuda without CUDA and bf16 on a CPU without
native bf16 leave the node up (CPU fp32 with a WARN status, or no inference with an ERROR status),
the perception executable started with device:=cuda stays up (it used to die),
backend=onnxruntime predicts from the sessions of an export, and precision=int8 with it switches
between the int8 sessions as the health budget changes."""
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch

rclpy = pytest.importorskip('rclpy')
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from sentryfuse_ros import msg_arrays  # noqa: E402
from sentryfuse_ros.core.runtime.choice import Capabilities  # noqa: E402
from sentryfuse_ros.msg import ModalityHealth, Prediction  # noqa: E402
from sentryfuse_ros.nodes.perception import Perception  # noqa: E402
from ros_helpers import spin_until  # noqa: E402

pytestmark = pytest.mark.slow  # ROS end to end: nodes and node processes, ONNX export

RUNTIME = 'sentryfuse: perception runtime'


class Harness:
    """A perception node and a test node sending camera frames at 10 Hz and recording outputs."""

    def __init__(self, ctx, capabilities=None, **params):
        values = {'rate': 10.0, 'diagnostics_period': 0.2, 'camera.max_age': 1.5, 'torch_threads': 1}
        values.update(params)
        self.perception = Perception(context=ctx, capabilities=capabilities,
                                     parameter_overrides=[Parameter(k, value=v) for k, v in values.items()])
        self.node = Node('runtime_test', context=ctx)
        self.predictions, self.diagnostics = [], []
        self.node.create_subscription(Prediction, '/sentryfuse/prediction', self.predictions.append, 50)
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self.diagnostics.append, 50)
        pub = self.node.create_publisher(Image, '/camera/image_raw', 10)
        image = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)   # (H, W, 3)
        self.node.create_timer(0.1, lambda: pub.publish(msg_arrays.array_to_image(image, encoding='rgb8')))
        self.executor = SingleThreadedExecutor(context=ctx)
        self.executor.add_node(self.perception)
        self.executor.add_node(self.node)

    def status(self, name):
        for diag in reversed(self.diagnostics):
            found = next((s for s in diag.status if s.name == name), None)
            if found is not None:
                return found
        return None

    def spin_until(self, predicate, timeout_s, what):
        spin_until(self.executor, predicate, timeout_s, what)

    def close(self):
        self.executor.shutdown(timeout_sec=0)
        self.perception.destroy_node()
        self.node.destroy_node()


@pytest.fixture
def make(ros_context):
    made = []

    def factory(**kwargs):
        made.append(Harness(ros_context, **kwargs))
        return made[-1]

    yield factory
    for h in made:
        h.close()


def values(status):
    return {v.key: v.value for v in status.values}


@pytest.fixture
def no_cuda():
    if torch.cuda.is_available():
        pytest.skip('this machine has CUDA: the test is about one without it')


def test_device_cuda_without_cuda_falls_back_to_cpu_fp32_with_warn(make, checkpoint, no_cuda):
    h = make(model_path=str(checkpoint), device='cuda')          # the real machine's capabilities
    h.spin_until(lambda: len(h.predictions) >= 2 and h.status(RUNTIME) is not None, 15.0, 'predictions on CPU')
    status = h.status(RUNTIME)
    assert status.level == bytes([1])
    assert "device='cuda': torch here is built without CUDA" in status.message
    assert status.message.endswith('falling back to torch cpu fp32')
    assert values(status) == {'requested': 'torch cuda fp32', 'running': 'torch cpu fp32'}
    assert h.status('sentryfuse: perception parameters').level == bytes([0])


def test_device_cuda_without_cuda_and_without_fallback_is_an_error_with_the_node_up(make, checkpoint, no_cuda):
    h = make(model_path=str(checkpoint), device='cuda', precision='fp16', runtime_fallback=False)
    h.spin_until(lambda: h.status('sentryfuse: perception model') is not None, 10.0, 'model status')
    assert h.status(RUNTIME).level == bytes([2])
    assert h.status(RUNTIME).message.startswith("refused, no inference: device='cuda'")
    assert 'runtime_fallback false' in h.status('sentryfuse: perception model').message
    assert h.perception.engine is None and h.predictions == []
    h.spin_until(lambda: len(h.diagnostics) >= 3, 5.0, 'the node keeps publishing diagnostics')


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device (scripts/device_check_runtimes.sh)')
@pytest.mark.parametrize('precision', ['fp16', 'fp32'])
def test_device_cuda_runs_on_the_gpu(make, checkpoint, precision):
    h = make(model_path=str(checkpoint), device='cuda', precision=precision)
    h.spin_until(lambda: len(h.predictions) >= 3 and h.status(RUNTIME) is not None, 30.0, 'CUDA predictions')
    assert h.status(RUNTIME).message == f'running torch cuda {precision}'
    engine = h.perception.engine
    assert engine.device.type == 'cuda' and engine.dtype == {'fp16': torch.float16, 'fp32': torch.float32}[precision]
    assert all(np.isfinite(p.scores).all() for p in h.predictions)


def test_bf16_on_a_cpu_without_bf16_is_refused_by_name(make, checkpoint):
    h = make(model_path=str(checkpoint), precision='bf16', runtime_fallback=False,
             capabilities=Capabilities(cpu_bf16=False, ort_providers=('CPUExecutionProvider',)))
    h.spin_until(lambda: h.status(RUNTIME) is not None, 10.0, 'runtime status')
    assert h.status(RUNTIME).level == bytes([2])
    assert "precision='bf16': this CPU has no native bf16" in h.status(RUNTIME).message
    assert h.perception.engine is None


def test_bf16_on_a_cpu_with_bf16_runs_bf16(make, checkpoint):
    h = make(model_path=str(checkpoint), precision='bf16',
             capabilities=Capabilities(cpu_bf16=True, ort_providers=('CPUExecutionProvider',)))
    h.spin_until(lambda: len(h.predictions) >= 2 and h.status(RUNTIME) is not None, 15.0, 'bf16 predictions')
    assert h.status(RUNTIME).level == bytes([0]) and h.status(RUNTIME).message == 'running torch cpu bf16'
    assert h.perception.engine.dtype == torch.bfloat16


def test_backend_onnxruntime_predicts_from_the_export(make, checkpoint, tmp_path_factory):
    pytest.importorskip('onnxruntime')
    from onnx_export import export_dir
    folder = export_dir(tmp_path_factory, checkpoint)
    h = make(backend='onnxruntime', onnx_dir=str(folder), budget_levels=[1.0, 0.5])
    h.spin_until(lambda: len(h.predictions) >= 2 and h.status(RUNTIME) is not None, 15.0, 'onnxruntime predictions')
    assert h.status(RUNTIME).message == 'running onnxruntime cpu fp32'
    pred = h.predictions[-1]
    assert list(pred.modalities_used) == ['camera'] and pred.subnetwork == 'camera@1.00'
    assert h.perception.engine.runners.stats['builds'] == 14   # every session prebuilt


def test_backend_onnxruntime_int8_switches_levels_when_the_budget_changes(make, checkpoint, tmp_path_factory):
    pytest.importorskip('onnxruntime')
    from onnx_export import int8_export_dir
    folder = int8_export_dir(tmp_path_factory, checkpoint)
    h = make(backend='onnxruntime', precision='int8', onnx_dir=str(folder), budget_levels=[1.0, 0.5])
    budget = [1.0]
    pub = h.node.create_publisher(ModalityHealth, '/sentryfuse/health', 10)
    h.node.create_timer(0.1, lambda: pub.publish(ModalityHealth(
        modalities=['camera', 'lidar', 'audio'], live=[True, False, False], compute_budget=budget[0])))
    h.spin_until(lambda: h.predictions and h.predictions[-1].subnetwork == 'camera@1.00'
                 and h.status(RUNTIME) is not None, 15.0, 'int8 predictions at budget 1.0')
    assert h.status(RUNTIME).message == 'running onnxruntime cpu int8'
    assert h.perception.engine.runners.manifest.precision == 'int8'
    for b, key in ((0.5, 'camera@0.50'), (1.0, 'camera@1.00'), (0.6, 'camera@0.50')):
        budget[0] = b
        h.spin_until(lambda: h.predictions[-1].subnetwork == key, 5.0, f'the int8 session {key} at budget {b}')
        assert h.predictions[-1].compute_budget == pytest.approx(float(key[-4:]))
        assert np.isfinite(h.predictions[-1].scores).all()
    stats = h.perception.engine.runners.stats
    assert stats['builds'] == 4 and stats['evictions'] == 0 and stats['hits'] > 3   # prebuilt: switches are hits


def test_int8_with_backend_torch_falls_back_to_torch_fp32_naming_int8(make, checkpoint):
    h = make(model_path=str(checkpoint), precision='int8')
    h.spin_until(lambda: len(h.predictions) >= 1 and h.status(RUNTIME) is not None, 15.0, 'fp32 predictions')
    assert h.status(RUNTIME).level == bytes([1])
    assert h.status(RUNTIME).message.startswith("precision='int8' with backend='torch': int8 sub-networks are")
    assert values(h.status(RUNTIME)) == {'requested': 'torch cpu int8', 'running': 'torch cpu fp32'}


def test_backend_onnxruntime_without_onnx_dir_is_an_error(make):
    h = make(backend='onnxruntime')
    h.spin_until(lambda: h.status('sentryfuse: perception model') is not None, 10.0, 'model status')
    assert "needs onnx_dir" in h.status('sentryfuse: perception model').message
    assert h.status('sentryfuse: perception model').level == bytes([2])


def test_the_perception_process_started_with_device_cuda_stays_up(checkpoint, no_cuda):
    from conftest import domain_for
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain_for(9)))
    proc = subprocess.Popen([sys.executable, '-m', 'sentryfuse_ros.nodes.perception', '--ros-args',
                             '-p', 'device:=cuda', '-p', f'model_path:={checkpoint}'],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any('prebuilt' in line for line in lines):
            assert proc.poll() is None, ''.join(lines)   # the process died (the old AssertionError)
            time.sleep(0.1)
        assert any("device='cuda': torch here is built without CUDA" in line and
                   'falling back to torch cpu fp32' in line for line in lines), ''.join(lines)
        assert any('prebuilt' in line for line in lines), ''.join(lines)
        time.sleep(1.0)
        assert proc.poll() is None, ''.join(lines)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            rc = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert rc == 0, ''.join(lines)
