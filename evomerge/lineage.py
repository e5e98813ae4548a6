"""Ancestry of a member back to the seeds, as an indented text tree or Graphviz DOT.

Each edge parent -> child carries the operator that made the child and the child's parameters for that parent
(merge weight and density, LoRA settings).
"""
from __future__ import annotations

from collections.abc import Callable

from evomerge.records import MemberRecord
from evomerge.registry import CROSSOVERS, MUTATION_OPERATORS
from evomerge.store.base import Store

SEED_COLOR = "#555555"
UNKNOWN_COLOR = "#444444"  # an operator whose class is not registered in this process (a plugin not imported)


def operator_class(operator: str):
    """The class registered for a member's operator: a merge method or a mutation operator (None for seeds and
    for operators not registered in this process)."""
    for registry in (CROSSOVERS, MUTATION_OPERATORS):
        if operator in registry:
            return registry.get(operator)
    return None


def drawn_path(member: MemberRecord):
    """A layer-path child's layers as runs (its crossover kind's `drawn_path`); None for every other member."""
    kind = operator_class(member.operator)
    drawn = getattr(kind, "drawn_path", None)  # crossover kinds have it, mutation operators not
    return drawn((member.params or {}).get("merge", {})) if drawn is not None else None


def operator_colors() -> dict[str, str]:
    """Okabe-Ito colours (readable with every common colour-vision deficiency), one per operator, shared by the
    DOT output, the HTML report and the plots so that an operator looks the same everywhere."""
    return {"seed": SEED_COLOR, **{n: operator_class(n).color for n in [*CROSSOVERS.names(),
                                                                         *MUTATION_OPERATORS.names()]}}


def operator_color(operator: str) -> str:
    cls = operator_class(operator)
    return SEED_COLOR if operator == "seed" else cls.color if cls is not None else UNKNOWN_COLOR


def operator_kind(operator: str) -> str:
    """seed, crossover (every merge method), or the mutation operator's own name."""
    if operator in CROSSOVERS:
        return "crossover"
    return operator


def edge_label(child: MemberRecord, parent: MemberRecord) -> str:
    """How `child` was made from `parent`: operator and the parameters that concern this parent."""
    if child.operator in CROSSOVERS:
        return CROSSOVERS.get(child.operator).edge_label(child.params, parent.name)
    if child.operator in MUTATION_OPERATORS:
        return MUTATION_OPERATORS.get(child.operator).edge_label(child.params)
    return child.operator


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


def _fmt(v: tuple | float | None) -> str:
    """A score, or (score, its standard error[, whether it is an estimate from anchors]) as `0.7125 ±0.051` (an
    estimate: `≈0.7125 ±0.051`)."""
    from evomerge.outcomes import fmt_pm

    if not isinstance(v, tuple):
        return fmt_pm(v, None)
    value, se, *estimated = v
    return ("≈" if estimated and estimated[0] and value is not None else "") + fmt_pm(value, se)


def text_tree(store: Store, member: MemberRecord, *, score: Callable[[int], float | None],
              report: Callable[[int], float | None] | None = None, width: int | None = None) -> str:
    """`score` gives a member's select fitness (or it and its standard error); `report`, if given, its held-out
    report fitness. Lines are wrapped
    to `width` (default: the terminal's width, or $COLUMNS; not wrapped in a pipe or a log, to stay greppable), each
    continuation under its own branch of the tree."""
    import os
    import shutil
    import sys
    import textwrap

    if width is None and (sys.stdout.isatty() or "COLUMNS" in os.environ):
        width = shutil.get_terminal_size((100, 24)).columns
    width = width or 10**6

    def label(m: MemberRecord) -> str:
        source = f" source={m.params['source']}" if m.operator == "seed" else ""
        held_out = "" if report is None else f" report {_fmt(report(m.id))}"
        return f"{m.name} (gen {m.generation}, {m.state.value}{source}) select {_fmt(score(m.id))}{held_out}"

    def add(text: str, first: str, rest: str) -> None:
        lines.extend(textwrap.wrap(text, width=max(40, width), initial_indent=first, subsequent_indent=rest,
                                   break_long_words=False, break_on_hyphens=False) or [first])

    lines: list[str] = []
    add(label(member), "", "    ")

    def walk(m: MemberRecord, prefix: str) -> None:
        parents = [store.member(p) for p in m.parents]
        for i, p in enumerate(parents):
            last = i == len(parents) - 1
            below = prefix + ("    " if last else "│   ")
            add(f"[{edge_label(m, p)}] {label(p)}", f"{prefix}{'└' if last else '├'}── ", below + ("    " if p.parents
                                                                                                  else "  "))
            walk(p, below)

    walk(member, "")
    return "\n".join(lines)


def dot(store: Store, member: MemberRecord, *, score: Callable[[int], float | None],
        report: Callable[[int], float | None] | None = None) -> str:
    """Graphviz DOT: seeds on the left, edges coloured by operator; alive members bold, retired ones dashed,
    intermediates (merges mutated at once, never in the population) dotted on grey, failed ones red."""
    def q(s: str) -> str:
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'

    out = ["digraph lineage {", "  rankdir=LR;", "  node [shape=box, fontname=Helvetica];",
           "  edge [fontname=Helvetica, fontsize=10];"]
    members = ancestors(store, member)
    for m in members:
        lines = [m.name, f"gen {m.generation} {m.operator}", f"select {_fmt(score(m.id))}"]
        if report is not None:
            lines.append(f"report {_fmt(report(m.id))}")
        style = {"alive": ", style=bold", "retired": ", style=dashed",
                 "intermediate": ', style="dotted,filled", fillcolor="#eeeeee"',
                 "failed": ', style=dashed, color="#b42318"'}[m.state.value]
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
