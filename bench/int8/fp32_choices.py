#!/usr/bin/env python3
"""What stays fp32 in the int8 graphs, measured: the default (MatMul/Gemm weights int8, log-mel front end
and patch-embedding Convs fp32) against quantizing the mel filterbank too, and the Convs too.

    taskset -c 1 nice -n 5 python bench/int8/fp32_choices.py FP32_GRAPH.onnx --checkpoint models/sentryfuse_robot.pt

FP32_GRAPH: an all-modality graph of `sentryfuse export` (it needs the audio front end). Prints, per variant,
size vs fp32, median ms (1 thread, interleaved rounds) and speed-up vs fp32, held-out accuracy vs fp32 and
max |logit diff| on scenes of the checkpoint's training distribution (the export check's seed).
"""
import argparse
import dataclasses
import json
import pathlib
import statistics
import sys
import tempfile
import time

import numpy as np


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('graph')
    parser.add_argument('--checkpoint', required=True)
    parser.add_argument('--n', type=int, default=200)
    parser.add_argument('--rounds', type=int, default=20)
    args = parser.parse_args()
    from sentryfuse_ros.core.pruning.checkpoint import load_sentryfuse
    from sentryfuse_ros.core.runtime import quantize as q
    from sentryfuse_ros.core.runtime.export import ort_session

    graph = pathlib.Path(args.graph)
    live = tuple(s.name for s in ort_session(graph).get_inputs())
    model, _, meta = load_sentryfuse(args.checkpoint)
    config = q.QuantizeConfig(check_samples=args.n, max_drop_points=100.0, max_logit_diff=1e9)
    samples, labels, where = q.SampleSource(args.checkpoint, meta, model, config).draw(live, 'check')
    variants = {'default (MatMul/Gemm; front end, Conv fp32)': (('MatMul', 'Gemm'), True),
                'also the mel filterbank': (('MatMul', 'Gemm'), False),
                'also the patch-embedding Convs': (('MatMul', 'Gemm', 'Conv'), True)}
    sessions, sizes = {'fp32': ort_session(graph)}, {'fp32': graph.stat().st_size}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (ops, keep_front) in variants.items():
            out = pathlib.Path(tmp) / f'{len(sessions)}.onnx'
            if not keep_front:
                q.front_end_nodes, saved = (lambda path: []), q.front_end_nodes
            try:
                q.quantize_graph(graph, out, dataclasses.replace(config, op_types=ops))
            finally:
                if not keep_front:
                    q.front_end_nodes = saved
            sessions[name], sizes[name] = ort_session(out), out.stat().st_size
        ref = q.graph_logits(sessions['fp32'], samples)
        rows = {}
        for name, session in sessions.items():
            logits = q.graph_logits(session, samples)
            rows[name] = {'bytes_vs_fp32': round(sizes[name] / sizes['fp32'], 3),
                          'accuracy': round(float((logits.argmax(-1) == labels).mean()), 4),
                          'max_abs_logit_diff': float(np.abs(logits - ref).max())}
        feed = {m: x[:1] for m, x in samples.items()}
        times = {k: [] for k in sessions}
        for r in range(3 + args.rounds):
            for name, session in sessions.items():
                t0 = time.perf_counter()
                session.run(None, feed)
                if r >= 3:
                    times[name].append((time.perf_counter() - t0) * 1e3)
    for name in rows:
        rows[name]['median_ms'] = round(statistics.median(times[name]), 2)
        rows[name]['speedup_vs_fp32'] = round(statistics.median(times['fp32']) / statistics.median(times[name]), 2)
    print(json.dumps({'graph': str(graph), 'samples': where, 'n': args.n, 'rows': rows}, indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())
