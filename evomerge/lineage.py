"""Ancestry of a member back to the seeds, as an indented text tree or Graphviz DOT.

Each edge parent -> child carries the operator that made the child and the child's parameters for that parent
(merge weight and density, LoRA settings).
"""
from __future__ import annotations

from collections.abc import Callable

from evomerge.store import MemberRecord, Store

# Okabe-Ito colours (readable with every common colour-vision deficiency): one per operator, shared by the DOT
# output, the HTML report and the plots so that an operator looks the same everywhere.
OPERATOR_COLORS = {
    "seed": "#555555",
    "linear": "#0072B2",
    "task_arithmetic": "#56B4E9",
    "ties": "#009E73",
    "dare_ties": "#8E9A2A",
    "slerp": "#CC79A7",
    "lora": "#E69F00",
    "es": "#D55E00",
}


def operator_color(operator: str) -> str:
    return OPERATOR_COLORS.get(operator, "#444444")


def operator_kind(operator: str) -> str:
    """seed, lora, es, or crossover (every merge method)."""
    return operator if operator in ("seed", "lora", "es") else "crossover"


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


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"


def text_tree(store: Store, member: MemberRecord, *, score: Callable[[int], float | None],
              report: Callable[[int], float | None] | None = None) -> str:
    """`score` gives a member's select fitness; `report`, if given, its held-out report fitness."""
    def label(m: MemberRecord) -> str:
        source = f" source={m.params['source']}" if m.operator == "seed" else ""
        held_out = "" if report is None else f" report {_fmt(report(m.id))}"
        return f"{m.name} (gen {m.generation}, {m.state.value}{source}) select {_fmt(score(m.id))}{held_out}"

    lines = [label(member)]

    def walk(m: MemberRecord, prefix: str) -> None:
        parents = [store.member(p) for p in m.parents]
        for i, p in enumerate(parents):
            last = i == len(parents) - 1
            lines.append(f"{prefix}{'└' if last else '├'}── [{edge_label(m, p)}] {label(p)}")
            walk(p, prefix + ("    " if last else "│   "))

    walk(member, "")
    return "\n".join(lines)


def dot(store: Store, member: MemberRecord, *, score: Callable[[int], float | None],
        report: Callable[[int], float | None] | None = None) -> str:
    """Graphviz DOT: seeds on the left, edges coloured by operator, survivors bold, the others dashed."""
    def q(s: str) -> str:
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'

    out = ["digraph lineage {", "  rankdir=LR;", "  node [shape=box, fontname=Helvetica];",
           "  edge [fontname=Helvetica, fontsize=10];"]
    members = ancestors(store, member)
    for m in members:
        lines = [m.name, f"gen {m.generation} {m.operator}", f"select {_fmt(score(m.id))}"]
        if report is not None:
            lines.append(f"report {_fmt(report(m.id))}")
        style = ", style=bold" if m.state.value == "alive" else ", style=dashed"
        text = "\n".join(lines)
        out.append(f"  {q(m.name)} [label={q(text)}{style}];")
    for m in members:
        for p in m.parents:
            parent = store.member(p)
            color = q(operator_color(m.operator))
            out.append(f"  {q(parent.name)} -> {q(m.name)} [label={q(edge_label(m, parent))}, color={color}, "
                       f"fontcolor={color}];")
    out.append("}")
    return "\n".join(out)
