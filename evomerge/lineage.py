"""Ancestry of a member back to the seeds, as an indented text tree or Graphviz DOT.

Each edge parent -> child carries the operator that made the child and the child's parameters for that parent
(merge weight and density, LoRA settings).
"""
from __future__ import annotations

from typing import Callable, Optional

from evomerge.store import MemberRecord, Store


def edge_label(child: MemberRecord, parent: MemberRecord) -> str:
    """How `child` was made from `parent`: operator and the parameters that concern this parent."""
    p = child.params
    if child.operator == "lora":
        data = f"task={p['task']}" if p.get("task") else f"data={p['data']}"
        return f"lora {data} steps={p['steps']} r={p['r']} alpha={p['alpha']} lr={p['learning_rate']:g}"
    if child.operator == "es":
        reward = p["reward"]
        source = reward.get("task") or reward.get("data") or "select split"
        return (f"es iterations={p['iterations']} pairs={p['pairs']} sigma={p['sigma']:g} lr={p['learning_rate']:g} "
                f"rank={p['rank'] if p['rank'] is not None else 'full'} reward={reward['kind']}:{source}")
    merge = child.params.get("merge", {})
    if child.operator == "slerp":
        values = merge.get("t", {})
    else:
        values = merge.get(parent.name, {})
    shown = " ".join(f"{k}={'/'.join(f'{v:.3f}' for v in vs)}" for k, vs in values.items())
    return f"{child.operator} {shown}".strip()


def ancestors(store: Store, member: MemberRecord) -> list[MemberRecord]:
    """The member and every ancestor, each once, children before parents."""
    seen: dict[int, MemberRecord] = {}
    stack = [member]
    while stack:
        m = stack.pop()
        if m.id in seen:
            continue
        seen[m.id] = m
        stack.extend(store.member(p) for p in m.parents)
    return sorted(seen.values(), key=lambda m: (-m.generation, m.id))


def text_tree(store: Store, member: MemberRecord, *, score: Callable[[int], Optional[float]]) -> str:
    def label(m: MemberRecord) -> str:
        s = score(m.id)
        source = f" source={m.params['source']}" if m.operator == "seed" else ""
        return f"{m.name} (gen {m.generation}, {m.state.value}{source}) select {'-' if s is None else f'{s:.4f}'}"

    lines = [label(member)]

    def walk(m: MemberRecord, prefix: str) -> None:
        parents = [store.member(p) for p in m.parents]
        for i, p in enumerate(parents):
            last = i == len(parents) - 1
            lines.append(f"{prefix}{'└' if last else '├'}── [{edge_label(m, p)}] {label(p)}")
            walk(p, prefix + ("    " if last else "│   "))

    walk(member, "")
    return "\n".join(lines)


def dot(store: Store, member: MemberRecord, *, score: Callable[[int], Optional[float]]) -> str:
    def q(s: str) -> str:
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'

    out = ["digraph lineage {", "  rankdir=LR;", "  node [shape=box, fontname=Helvetica];"]
    members = ancestors(store, member)
    for m in members:
        s = score(m.id)
        text = "\n".join([m.name, f"gen {m.generation} {m.operator}", "select " + ("-" if s is None else f"{s:.4f}")])
        style = "" if m.state.value == "alive" else ", style=dashed"
        out.append(f"  {q(m.name)} [label={q(text)}{style}];")
    for m in members:
        for p in m.parents:
            parent = store.member(p)
            out.append(f"  {q(parent.name)} -> {q(m.name)} [label={q(edge_label(m, parent))}];")
    out.append("}")
    return "\n".join(out)
