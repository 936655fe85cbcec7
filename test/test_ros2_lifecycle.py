"""The perception node's lifecycle with the real ROS 2 command line, as a deployment drives it:

    ros2 launch sentryfuse_ros perception.launch.py use_sim:=true autostart:=false model_path:=<corrupt>
    ros2 lifecycle set /perception configure      # fails: the checkpoint is corrupt
    ros2 param set /perception model_path <good>  # settable while unconfigured
    ros2 lifecycle set /perception configure|activate|deactivate|activate|deactivate|cleanup

checked from other processes with `ros2 lifecycle get`, `ros2 topic echo /sentryfuse/prediction`
(predictions only while active) and `ros2 topic echo /diagnostics` (the reason of the failed
configure; the forward-pass counter unchanged over a 2 s inactive window); while active, the
vision_msgs outputs: `ros2 topic echo /sentryfuse/classification` (hypotheses whose best class is
the Prediction's) and `ros2 topic echo --qos-durability transient_local /sentryfuse/label_info`
started long after configure published the map. One launch serves the module (start-up and prebuild
cost ~10-20 s here); the tests run in file order.
"""
import pathlib
import re
import time
from typing import Dict, List, Optional, Tuple

import pytest
import yaml

from conftest import domain_for
from ros2_cli import ROOT, Process, ros2, ros2_session

pytestmark = pytest.mark.slow  # the real ros2 launch/lifecycle/param/topic CLI against node processes

PREDICTION = 'sentryfuse_ros/msg/Prediction'
DIAGNOSTICS = 'diagnostic_msgs/msg/DiagnosticArray'
CLASSIFICATION = 'vision_msgs/msg/Classification'
LABEL_INFO = 'vision_msgs/msg/LabelInfo'
DISCOVERY = ('--no-daemon', '--spin-time', '3')   # a --no-daemon verb spins this long for discovery
WAIT_NODE = ('--no-daemon', '--timeout', '10')     # `ros2 param` waits this long for the node
GRAPH_TIMEOUT = 60.0      # [s] bound on discovery / a transition taking effect on 2 loaded cores
IN_FLIGHT_S = 0.5         # [s] a prediction published before deactivate returned may still arrive
INACTIVE_WINDOW_S = 2.0   # [s] inactive window over which no forward pass may happen
GOOD_MODEL = ROOT / 'models' / 'sentryfuse_sim.pt'


@pytest.fixture(scope='module')
def env():
    with ros2_session(domain_for(16)) as environment:
        yield environment


@pytest.fixture(scope='module')
def files(tmp_path_factory) -> Dict[str, pathlib.Path]:
    """A corrupt checkpoint (the shipped one cut short) and config/perception.yaml without the
    demo scenario's scripted dropouts."""
    folder = tmp_path_factory.mktemp('lifecycle')
    corrupt = folder / 'corrupt.pt'
    corrupt.write_bytes(GOOD_MODEL.read_bytes()[:5000])
    params = yaml.safe_load((ROOT / 'config' / 'perception.yaml').read_text(encoding='utf-8'))
    params['sensor_sim']['ros__parameters']['scenario'] = ''
    path = folder / 'params.yaml'
    path.write_text(yaml.safe_dump(params), encoding='utf-8')
    return {'corrupt': corrupt, 'params': path}


@pytest.fixture(scope='module')
def launch(env, files):
    proc = Process(['ros2', 'launch', 'sentryfuse_ros', 'perception.launch.py', 'use_sim:=true',
                    'autostart:=false', f"params_file:={files['params']}",
                    f"model_path:={files['corrupt']}"], env)
    try:
        proc.wait_for(r"\[health_monitor\]: live=\['audio', 'camera', 'lidar'\]", timeout=90)
        yield proc
    finally:
        proc.stop(timeout=20)


@pytest.fixture(scope='module')
def diagnostics(env, launch):
    """`ros2 topic echo /diagnostics` for the whole module (full-length strings)."""
    proc = Process(['ros2', 'topic', 'echo', '/diagnostics', DIAGNOSTICS, '--no-daemon', '--full-length'], env)
    yield proc
    proc.stop(timeout=10)


@pytest.fixture(scope='module')
def predictions(env, launch):
    """`ros2 topic echo /sentryfuse/prediction --field subnetwork`: one line per prediction."""
    proc = Process(['ros2', 'topic', 'echo', '/sentryfuse/prediction', PREDICTION, '--no-daemon',
                    '--field', 'subnetwork'], env)
    yield proc
    proc.stop(timeout=10)


def retry_discovery(env, *args: str) -> str:
    """``ros2 ARGS``, asked again while the verb has not discovered the node yet; its output."""
    deadline = time.monotonic() + GRAPH_TIMEOUT
    while True:
        out = ros2(env, *args, timeout=60).stdout
        if 'Node not found' not in out or time.monotonic() > deadline:
            return out


def transition(env, label: str) -> str:
    return retry_discovery(env, 'lifecycle', 'set', '/perception', label, *DISCOVERY)


def state(env) -> str:
    out = retry_discovery(env, 'lifecycle', 'get', '/perception', *DISCOVERY)
    found = re.search(r'^(\w+) \[\d+\]$', out, re.M)
    assert found, out
    return found.group(1)


def perception_statuses(proc: Process, after: float) -> List[Tuple[float, Dict[str, dict]]]:
    """[(time read, {status name: {'level', 'message', 'values'}})] of the perception node's
    /diagnostics messages that `ros2 topic echo` printed after monotonic time ``after``."""
    out, doc, t_doc = [], [], None
    for t, line in proc.snapshot():
        if line.strip() == '---':
            if doc and t_doc is not None and t_doc > after:
                statuses = {s['name']: {'level': s['level'], 'message': s['message'],
                                        'values': {v['key']: v['value'] for v in s['values'] or []}}
                            for s in yaml.safe_load('\n'.join(doc))['status']}
                if any(name.startswith('sentryfuse: perception') for name in statuses):
                    out.append((t, statuses))
            doc, t_doc = [], None
        else:
            doc.append(line)
            t_doc = t if t_doc is None else t_doc
    return out


def wait_status(proc: Process, after: float, name: str, match=lambda status: True) -> dict:
    """The first perception status ``name`` printed after ``after`` for which ``match(status)``
    (AssertionError with the last one seen after GRAPH_TIMEOUT)."""
    deadline, seen = time.monotonic() + GRAPH_TIMEOUT, None
    while time.monotonic() < deadline:
        for _, statuses in perception_statuses(proc, after):
            if name in statuses:
                seen = statuses[name]
                if match(seen):
                    return seen
        time.sleep(0.2)
    raise AssertionError(f'no matching {name!r} on /diagnostics within {GRAPH_TIMEOUT} s; last: {seen}')


def in_state(label: str):
    return lambda status: status['values'].get('lifecycle_state') == label


def prediction_times(proc: Process, start: float, end: Optional[float] = None) -> List[float]:
    return [t for t, line in proc.snapshot() if re.match(r'^\w+\+?.*@\d\.\d\d$', line)
            and t > start and (end is None or t <= end)]


def test_unconfigured_at_start_and_a_corrupt_checkpoint_fails_configure(env, launch, diagnostics):
    assert state(env) == 'unconfigured'
    t0 = time.monotonic()
    out = transition(env, 'configure')
    assert 'Transitioning failed' in out, out
    assert state(env) == 'unconfigured'
    launch.wait_for(r'\[perception\]: cannot load model .*corrupt\.pt.*corrupt or not a torch file', timeout=10)
    model = wait_status(diagnostics, t0, 'sentryfuse: perception model', lambda s: s['level'] != '\x00')
    assert model['level'] == '\x02', model
    assert re.search(r"cannot load model '.*corrupt\.pt'.*corrupt or not a torch file", model['message']), model
    assert model['values']['lifecycle_state'] == 'unconfigured', model


def test_model_path_fixed_while_unconfigured_then_configure_succeeds(env, launch, predictions):
    out = ros2(env, 'param', 'set', '/perception', 'model_path', str(GOOD_MODEL), *WAIT_NODE).stdout
    assert 'Set parameter successful' in out, out
    t0 = time.monotonic()
    out = transition(env, 'configure')
    assert 'Transitioning successful' in out, out
    assert state(env) == 'inactive'
    launch.wait_for(r'\[perception\]: prebuilt \d+ sub-networks', timeout=10)
    refused = ros2(env, 'param', 'set', '/perception', 'model_path', '/elsewhere.pt', *WAIT_NODE).stdout
    assert re.search(r"Setting parameter failed: \['model_path'\] cannot change while the node is inactive: "
                     r'configure reads them; .*`cleanup`, set them, then `configure`', refused), refused
    time.sleep(1.0)
    assert prediction_times(predictions, t0) == [], 'predictions while configured but inactive'


def test_predictions_only_while_active_and_no_forward_pass_while_inactive(env, launch, predictions, diagnostics):
    t_on = time.monotonic()
    assert 'Transitioning successful' in transition(env, 'activate')
    assert state(env) == 'active'
    deadline = time.monotonic() + GRAPH_TIMEOUT
    while len(prediction_times(predictions, t_on)) < 10 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(prediction_times(predictions, t_on)) >= 10, predictions.text[-2000:]

    out = transition(env, 'deactivate')
    t_off = time.monotonic()
    assert 'Transitioning successful' in out, out
    before = wait_status(diagnostics, t_off, 'sentryfuse: perception', in_state('inactive'))
    time.sleep(INACTIVE_WINDOW_S)
    t_after = time.monotonic()
    after = wait_status(diagnostics, t_after, 'sentryfuse: perception', in_state('inactive'))
    print(f"inactive window: forward_passes {before['values']['forward_passes']} -> "
          f"{after['values']['forward_passes']}, inferences {before['values']['inferences']} -> "
          f"{after['values']['inferences']}")
    assert before['values']['lifecycle_state'] == after['values']['lifecycle_state'] == 'inactive', after
    assert int(before['values']['forward_passes']) > 0, before
    assert after['values']['forward_passes'] == before['values']['forward_passes'], (before, after)
    assert after['values']['inferences'] == before['values']['inferences'], (before, after)
    assert after['level'] == '\x00' and after['message'].startswith('inactive: no inference'), after
    late = prediction_times(predictions, t_off + IN_FLIGHT_S)
    assert late == [], f'{len(late)} predictions more than {IN_FLIGHT_S} s after deactivate returned'

    t_on = time.monotonic()
    assert 'Transitioning successful' in transition(env, 'activate')
    deadline = time.monotonic() + GRAPH_TIMEOUT
    while len(prediction_times(predictions, t_on)) < 5 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(prediction_times(predictions, t_on)) >= 5, 'no predictions after the second activate'
    resumed = wait_status(diagnostics, t_on, 'sentryfuse: perception', lambda s: in_state('active')(s) and int(
        s['values']['forward_passes']) > int(after['values']['forward_passes']))
    assert int(resumed['values']['inferences']) > int(after['values']['inferences']), resumed


def echoed(proc: Process) -> List[dict]:
    """The messages `ros2 topic echo` printed (YAML documents separated by '---')."""
    return [yaml.safe_load(doc) for doc in proc.text.split('\n---') if doc.strip() and doc.strip() != '---']


def stamp_key(msg: dict) -> Tuple[int, int]:
    return msg['header']['stamp']['sec'], msg['header']['stamp']['nanosec']


def model_classes(launch: Process) -> List[str]:
    """The class names perception logged at configure ("model ...: classes [...]")."""
    return yaml.safe_load(launch.wait_for(r'\[perception\]: model .*: classes (\[[^]]*\])', 10).group(1))


def test_label_info_is_latched_for_a_late_subscriber(env, launch):
    """configure published the map long before this subscriber exists: transient local delivers it."""
    out = ros2(env, 'topic', 'echo', '--qos-durability', 'transient_local', '--qos-reliability', 'reliable',
               '/sentryfuse/label_info', LABEL_INFO, '--once', '--no-daemon', '--full-length', timeout=60).stdout
    info = yaml.safe_load(out.split('\n---')[0])
    names = model_classes(launch)
    assert [(c['class_id'], c['class_name']) for c in info['class_map']] == list(enumerate(names)), out
    assert info['threshold'] == 0.0 and info['header']['stamp']['sec'] > 0, out


def test_classification_hypotheses_are_the_predictions_scores(env, launch):
    """Every Classification pairs with the Prediction of its header stamp: one hypothesis per class in
    class-index order, class_id = the name, scores = the probabilities, the best one = the label."""
    names = model_classes(launch)
    echoes = {topic: Process(['ros2', 'topic', 'echo', topic, kind, '--no-daemon', '--full-length'], env)
              for topic, kind in (('/sentryfuse/classification', CLASSIFICATION),
                                  ('/sentryfuse/prediction', PREDICTION))}
    try:
        deadline = time.monotonic() + GRAPH_TIMEOUT
        while time.monotonic() < deadline and min(p.text.count('\n---') for p in echoes.values()) < 12:
            time.sleep(0.2)
    finally:
        for proc in echoes.values():
            proc.stop(timeout=10)
    classifications = {stamp_key(m): m for m in echoed(echoes['/sentryfuse/classification'])}
    predictions = {stamp_key(m): m for m in echoed(echoes['/sentryfuse/prediction'])}
    paired = sorted(set(classifications) & set(predictions))
    assert len(paired) >= 5, (len(classifications), len(predictions))
    for key in paired:
        cls, pred = classifications[key], predictions[key]
        assert cls['header'] == pred['header']  # the stamp of the newest sample used, and frame_id
        assert [h['class_id'] for h in cls['results']] == names
        scores = [h['score'] for h in cls['results']]
        assert all(0.0 <= x <= 1.0 for x in scores) and sum(scores) == pytest.approx(1.0, abs=1e-4)
        assert scores == pytest.approx(list(pred['scores']), abs=1e-6)
        assert names[scores.index(max(scores))] == pred['label'] == names[pred['class_id']]


def test_deactivate_and_cleanup_release_the_model(env, launch, predictions, diagnostics):
    assert 'Transitioning successful' in transition(env, 'deactivate')
    out = transition(env, 'cleanup')
    t0 = time.monotonic()
    assert 'Transitioning successful' in out, out
    assert state(env) == 'unconfigured'
    model = wait_status(diagnostics, t0, 'sentryfuse: perception model', in_state('unconfigured'))
    assert model['level'] == '\x00' and model['message'].startswith('unconfigured: no model loaded'), model
    assert prediction_times(predictions, t0) == []
    out = ros2(env, 'param', 'set', '/perception', 'model_path', str(GOOD_MODEL), *WAIT_NODE).stdout
    assert 'Set parameter successful' in out, out  # settable again once unconfigured
