"""Applications built from the nodes, in one process: the node graph of the launch file
(graph.py: `sentryfuse run`), the demo's live view and summary (demo.py: `sentryfuse demo`) and live
bag replay over DDS (replay_live.py: `sentryfuse replay --live`). They may import the nodes, the
message converters and the core; nothing under core/ or nodes/ imports them.
"""
