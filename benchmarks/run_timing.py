"""Where a run's time went, read from its event log: every step's duration is the time since the step before it.

    python benchmarks/run_timing.py runs/demo-20261123-120000

Prints one row per kind of step (LoRA fine-tune, scoring a member, scoring a CMA-ES candidate = merge + fitness,
writing a child, ...) with count, total and mean seconds, and the run's wall time.
"""
from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

from evomerge.store import open_store


def _kind(kind: str, data: dict) -> str:
    if kind == "scored":
        what = "candidate (merge + score)" if data["subject"].startswith("candidate") else "member"
        return f"score {what}, {data['split']} split"
    if kind == "member_added":
        if data.get("intermediate"):
            return "add a merge that is mutated next (no disk)"
        return {"seed": "add seed (convert built-in once)", "lora": "LoRA fine-tune (seed or mutation)",
                "es": "noise-ES mutation (last iteration, save)"}.get(
            data["operator"], "write child to disk (mergekit run_merge)")
    if kind == "es_iteration":
        return "noise-ES iteration"
    return kind


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    args = parser.parse_args()
    events = open_store(args.run_dir).events()
    totals: dict[str, list[float]] = defaultdict(list)
    for (t0, _, _), (t1, kind, data) in zip(events, events[1:]):
        totals[_kind(kind, data)].append(t1 - t0)
    wall = events[-1][0] - events[0][0]
    print(f"{'step':<45} {'count':>5} {'total s':>8} {'mean s':>7} {'share':>6}")
    for name, values in sorted(totals.items(), key=lambda kv: -sum(kv[1])):
        print(f"{name:<45} {len(values):>5} {sum(values):>8.1f} {sum(values) / len(values):>7.2f} "
              f"{sum(values) / wall:>6.1%}")
    print(f"{'wall time, first to last event':<45} {'':>5} {wall:>8.1f}")


if __name__ == "__main__":
    main()
