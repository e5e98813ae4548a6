"""A run's decisions by name: what the golden file pins (see record.py)."""
from __future__ import annotations

from pathlib import Path

from evomerge.store import Store, open_store


def run_snapshot(source: Path | Store) -> dict:
    """Of a run directory, or of an open store (left open)."""
    store = source if isinstance(source, Store) else open_store(source)
    try:
        members = store.members()
        names = {m.id: m.name for m in members}
        crossovers = {x.id: x for x in store.crossovers()}
        candidates = {}
        for x in crossovers.values():
            for c in store.candidates(x.id):
                candidates[c.id] = (x.generation, x.slot, c.iteration, c.idx)

        def subject(s: str) -> str:
            kind, _, ident = s.partition(":")
            if kind == "member":
                return f"member {names[int(ident)]}"
            return "candidate g{}s{} {}.{}".format(*candidates[int(ident)])

        mutations = []
        for mu in store.mutations():
            mutations.append({"generation": mu.generation, "slot": mu.slot, "parent": names[mu.parent_id],
                              "operator": mu.operator, "child": names.get(mu.child_id),
                              "steps": [s.data for s in store.mutation_steps(mu.id)]})
        return {
            "members": [{"name": m.name, "generation": m.generation, "operator": m.operator,
                         "parents": [names[p] for p in m.parents], "params": m.params, "state": m.state.value}
                        for m in members],
            "survivors": {str(g): [names[i] for i in ids] for g, ids in store.generations().items()},
            "scores": sorted([subject(s.subject), s.task, s.split, s.metric, s.limit, s.value, s.docs,
                              None if s.reused_from is None else subject(s.reused_from)]
                             for s in store.all_scores()),
            "candidates": [{"crossover": f"g{x.generation}s{x.slot}", "parents": [names[p] for p in x.parents],
                            "child": names.get(x.child_id),
                            "proposals": [[c.iteration, c.idx, list(c.x), c.params, c.score]
                                          for c in store.candidates(x.id)]}
                           for x in crossovers.values()],
            "mutations": mutations,
        }
    finally:
        if store is not source:
            store.close()
