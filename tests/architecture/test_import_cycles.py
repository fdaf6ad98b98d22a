"""Dependencies point one way: no module of layerbot imports, even inside a function, a
module that imports it back (issue 10, item 10).

Read from the source with ``ast``, so an import hidden in a function body (the usual way to
break a cycle at run time while keeping it in the design) counts like one at the top.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import layerbot

ROOT = Path(layerbot.__file__).parent


def _modules() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for path in ROOT.rglob("*.py"):
        parts = ["layerbot", *path.relative_to(ROOT).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _owner(name: str, modules: dict[str, Path]) -> str | None:
    """The module an imported name lives in (``a.b.C`` -> ``a.b``)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _imported(tree: ast.AST) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from pkg import mod` depends on pkg.mod; `from mod import name` on mod.
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for target in _imported(ast.parse(path.read_text(), str(path))):
            owner = _owner(target, modules) if target.startswith("layerbot.") else None
            if owner is not None and owner != name:
                graph[name].add(owner)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_layerbot_has_no_import_cycles() -> None:
    graph = import_graph()
    found = cycles(graph)
    detail = "\n".join(" <-> ".join(c) + "\n  " + "\n  ".join(
        f"{m} imports {sorted(graph[m] & set(c))}" for m in c) for c in found)
    assert not found, f"import cycles:\n{detail}"


#: Package -> what it must not import: the layers of docs/architecture.md.
FORBIDDEN = {
    "layerbot.operations": ("layerbot.handlers", "layerbot.control", "layerbot.app",
                            "layerbot.web"),
    "layerbot.handlers": ("layerbot.control", "layerbot.app", "layerbot.web"),
    "layerbot.control": ("layerbot.handlers", "layerbot.app"),
}


def test_handlers_and_the_control_center_share_logic_only_from_below() -> None:
    def within(module: str, package: str) -> bool:
        return module == package or module.startswith(package + ".")

    wrong = sorted((module, target) for module, targets in import_graph().items()
                   for package, banned in FORBIDDEN.items() if within(module, package)
                   for target in targets if any(within(target, b) for b in banned))
    assert wrong == []


#: What runs on a cluster's login node must not reach, even indirectly, the control plane's
#: parts: it has no database, no GitHub credentials and serves no HTTP.
CONTROL_PLANE_ONLY = ("layerbot.store", "layerbot.github", "layerbot.web", "layerbot.events",
                      "layerbot.handlers", "layerbot.control", "layerbot.operations",
                      "layerbot.app")
#: Of ``layerbot.deploy``, the agent stages its jobs' deployments (key, signature, metadata,
#: upload) and nothing else: the PR's deploy reply (``service``), approval and ingestion
#: are the control plane's and the repository server's. An allow-list, so a new module of
#: ``deploy`` is the control plane's until someone decides otherwise.
AGENT_MAY_USE_OF_DEPLOY = ("layerbot.deploy.upload", "layerbot.deploy.staging",
                           "layerbot.deploy.metadata", "layerbot.deploy.signing",
                           "layerbot.deploy.layout")


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(graph.get(node, ()))
    return seen


def test_reachable_follows_imports_of_imports() -> None:
    assert reachable({"a": {"b"}, "b": {"c"}, "c": set()}, "a") == {"a", "b", "c"}


def _within(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def control_plane_only(module: str) -> bool:
    if _within(module, ("layerbot.deploy",)):
        return module != "layerbot.deploy" and not _within(module, AGENT_MAY_USE_OF_DEPLOY)
    return _within(module, CONTROL_PLANE_ONLY)


def test_what_of_deploy_is_the_control_planes() -> None:
    for module in ("layerbot.deploy.service", "layerbot.deploy.ingest.ingestor",
                   "layerbot.deploy.approval", "layerbot.deploy.binding", "layerbot.store.db"):
        assert control_plane_only(module), module
    for module in ("layerbot.deploy.upload", "layerbot.deploy.staging.s3",
                   "layerbot.deploy.signing", "layerbot.config"):
        assert not control_plane_only(module), module


def test_the_agent_imports_nothing_of_the_control_plane() -> None:
    graph = import_graph()
    agent = [m for m in graph if m == "layerbot.agent" or m.startswith("layerbot.agent.")]
    assert "layerbot.agent.main" in agent
    # The agent stages its deployments itself: the check covers that code too.
    assert "layerbot.deploy.upload" in reachable(graph, "layerbot.agent.main")
    wrong = sorted({(m, t) for m in agent for t in reachable(graph, m)
                    if control_plane_only(t)})
    assert wrong == [], "the agent reaches control-plane code:\n" + "\n".join(
        f"  {m} -> {t}" for m, t in wrong)
