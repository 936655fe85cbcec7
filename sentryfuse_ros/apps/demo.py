"""The main job: simulated robot + health monitor + perception, a live terminal view, a summary.

Runs the node graph of the launch file in one process (sentryfuse_ros.apps.graph) with the shipped
model and the demo scenario (a lidar dropout, an audio dropout, a battery drop), plus a
``demo_view`` node that listens to what perception publishes and to the simulator's ground truth.
"""
import json
import math
import sys
import time
from typing import Dict, List, Optional

from rclpy.node import Node
from std_msgs.msg import String

from sentryfuse_ros.core.replay.phases import format_summary, scenario_phases, summarize
from sentryfuse_ros.core.runtime.record import InferenceRecord
from sentryfuse_ros.core.sim.scenario import Scenario, load_scenario
from sentryfuse_ros.msg import InferenceLatency, ModalityHealth, Prediction
from sentryfuse_ros.msg_arrays.inference import RecordPairer
from sentryfuse_ros.nodes.sensor_sim import resolve_path

TRANSITION_S = 0.6  # predictions this soon after a scene change are not scored (newest samples may be the old scene)


class DemoView(Node):
    """Records predictions with ground truth and prints a live status line.

    Args:
        phases: scenario phases (for the status line).
        live_view: print the status line.
        out: where the status line goes.
        **kwargs: passed to rclpy Node.
    """

    def __init__(self, phases, live_view: bool = True, out=sys.stdout, **kwargs):
        super().__init__('demo_view', **kwargs)
        self.phases = phases
        self.records: List[InferenceRecord] = []
        self._t0 = self._now()
        self._pairer = RecordPairer(self.records.append, origin_s=self._t0)  # t_sample: since the view started
        self._truth: Optional[str] = None
        self._truth_changed = -math.inf
        self._health: Optional[ModalityHealth] = None
        self.went_dead: Dict[str, int] = {}  # modality -> times the health monitor declared it dead after live
        self._out, self._live_view = out, live_view
        self._tty = hasattr(out, 'isatty') and out.isatty()
        self.create_subscription(String, '/sentryfuse/ground_truth', self._on_truth, 10)
        self.create_subscription(Prediction, '/sentryfuse/prediction', self._on_prediction, 50)
        self.create_subscription(InferenceLatency, '/sentryfuse/latency', self._on_latency, 50)
        self.create_subscription(ModalityHealth, '/sentryfuse/health', self._on_health, 10)
        self.create_timer(1.0, self._print_status)

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def t(self) -> float:
        return self._now() - self._t0

    def _on_truth(self, msg: String) -> None:
        if msg.data != self._truth:
            self._truth, self._truth_changed = msg.data, self.t()

    def _on_health(self, msg: ModalityHealth) -> None:
        before = dict(zip(self._health.modalities, self._health.live)) if self._health else {}
        for m, live in zip(msg.modalities, msg.live):
            self.went_dead.setdefault(m, 0)
            if before.get(m) and not live:
                self.went_dead[m] += 1
        self._health = msg

    def _on_latency(self, msg: InferenceLatency) -> None:
        self._pairer.latency(msg)

    def _on_prediction(self, msg: Prediction) -> None:
        t = self.t()
        self._pairer.prediction(msg, t, self._truth if t - self._truth_changed >= TRANSITION_S else None)

    def _print_status(self) -> None:
        if not self._live_view:
            return
        t = self.t()
        phase = next((p.name for p in self.phases if p.start <= t < p.end), 'end')
        r = self.records[-1] if self.records else None
        live = ([m for m, ok in zip(self._health.modalities, self._health.live) if ok]
                if self._health else [])
        budget = self._health.compute_budget if self._health else float('nan')
        if r is None:
            line = f't={t:5.1f}s [{phase}] waiting for predictions; live={"+".join(live) or "-"}'
        else:
            mark = '' if r.truth is None else ('ok' if r.label == r.truth else 'WRONG')
            line = (f't={t:5.1f}s [{phase}] pred={r.label:<14s} truth={self._truth or "?":<14s} {mark:5s} '
                    f'live={"+".join(live) or "-"} budget={budget:.2f} net={r.subnetwork} '
                    f'{r.gflops * 1e3:.1f} MFLOPs {r.total_ms:.1f} ms')
        if self._tty:
            self._out.write('\r\033[K' + line)
        else:
            self._out.write(line + '\n')
        self._out.flush()


def run_demo(params_file=None, duration: Optional[float] = None, sets=(), live_view: bool = True,
             json_out: Optional[str] = None, domain_id: Optional[int] = None, overlays=()) -> dict:
    """Run the demo (``params_file``, then the ``overlays``, then ``sets``); returns the summary dict
    (also printed)."""
    from sentryfuse_ros.apps.graph import GRAPH, NodeSpec, default_params_file, graph_parameters, run_graph

    params_file = params_file or default_params_file()
    params = graph_parameters(params_file, overlays, sets)
    scenario_path = params.get('sensor_sim', {}).get('scenario', '')
    scenario = load_scenario(resolve_path(scenario_path)) if scenario_path else Scenario()
    duration = float(duration or scenario.duration or 60.0)
    phases = scenario_phases(scenario, duration)
    views: List[DemoView] = []

    def _view(**kwargs):
        views.append(DemoView(phases, live_view=live_view, **kwargs))
        return views[-1]

    specs = tuple(GRAPH) + (NodeSpec('demo_view', _view, sim_only=True),)
    sets = ['sensor_sim.label.rate=10.0', *sets]
    print(f'sentryfuse demo: {duration:.0f} s of the simulated robot; scenario {scenario_path or "(none)"}')
    for p in phases:
        print(f'  {p.start:5.1f}-{p.end:5.1f} s  {p.name}')
    t0 = time.monotonic()
    run_graph(specs, params_file=params_file, use_sim=True, duration=duration, sets=sets,
              domain_id=domain_id, overlays=overlays)
    wall = time.monotonic() - t0
    records = views[0].records if views else []
    summary = summarize(records, phases)
    summary['wall_s'] = wall
    summary['went_dead'] = views[0].went_dead if views else {}
    summary['scenario_drops'] = {m: sum(1 for e in scenario.events if e.action == 'drop' and e.modality == m
                                        and e.t < duration) for m in summary['went_dead']}
    print('\n\nsummary (accuracy against the simulator\'s labels; predictions within '
          f'{TRANSITION_S} s of a scene change not scored):')
    print(format_summary(summary))
    print('sensors declared dead by the health monitor (scenario drops): ' + (', '.join(
        f'{m} {n} ({summary["scenario_drops"][m]})' for m, n in summary['went_dead'].items()) or 'no health messages'))
    if json_out:
        with open(json_out, 'w', encoding='utf-8') as fh:
            json.dump(summary, fh, indent=1)
    return summary
