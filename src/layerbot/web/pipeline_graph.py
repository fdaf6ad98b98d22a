"""A pipeline's graph as SVG geometry, drawn on the server like the cost charts (the page
needs no JavaScript and no graph library): steps are boxes in columns by their depth in
the plan (a step's column is one right of the deepest step it needs, so every edge points
right), in the plan's order within a column; edges are curves from a needed step to the
step that needs it.
"""

from __future__ import annotations

from dataclasses import dataclass

from layerbot.control import PipelineOut

NODE_W, NODE_H = 190, 46
COL_GAP, ROW_GAP, PAD = 56, 14, 10
LABEL_CHARS = 24


@dataclass(frozen=True)
class Node:
    step_id: str
    name: str
    label: str  # the name, shortened to fit the box (the full name is its tooltip)
    status: str
    seconds: float | None
    job_id: int
    reused: bool
    x: float
    y: float


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    path: str  # the SVG path's d attribute


@dataclass(frozen=True)
class Graph:
    nodes: list[Node]
    edges: list[Edge]
    width: int
    height: int
    node_w: int = NODE_W
    node_h: int = NODE_H


def _label(name: str) -> str:
    return name if len(name) <= LABEL_CHARS else name[:LABEL_CHARS - 1] + "…"


def layout(p: PipelineOut) -> Graph:
    columns: dict[int, int] = {}  # column -> steps placed in it so far
    nodes: dict[str, Node] = {}
    for s in p.steps:
        col = max(s.depth, 1) - 1
        row = columns.get(col, 0)
        columns[col] = row + 1
        nodes[s.step_id] = Node(
            step_id=s.step_id, name=s.name, label=_label(s.name), status=s.status,
            seconds=s.seconds, job_id=s.job_id, reused=s.reused_from is not None,
            x=PAD + col * (NODE_W + COL_GAP), y=PAD + row * (NODE_H + ROW_GAP))
    edges = []
    for s in p.steps:
        for need in s.needs:
            if need in nodes:
                a, b = nodes[need], nodes[s.step_id]
                x1, y1 = a.x + NODE_W, a.y + NODE_H / 2
                x2, y2 = b.x, b.y + NODE_H / 2
                bend = max(COL_GAP / 2, (x2 - x1) / 2)
                edges.append(Edge(need, s.step_id,
                                  f"M{x1:.1f},{y1:.1f} C{x1 + bend:.1f},{y1:.1f} "
                                  f"{x2 - bend:.1f},{y2:.1f} {x2:.1f},{y2:.1f}"))
    width = PAD * 2 + max(len(columns), 1) * (NODE_W + COL_GAP) - COL_GAP
    height = PAD * 2 + max(columns.values(), default=1) * (NODE_H + ROW_GAP) - ROW_GAP
    return Graph(list(nodes.values()), edges, width, height)
