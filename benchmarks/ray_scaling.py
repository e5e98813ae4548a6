"""Candidates per minute with the serial executor and with Ray (1 and 2 workers), on this machine.

    python benchmarks/ray_scaling.py                      # tiny Llamas and SmolLM2-135M, 2 children x 16 candidates
    python benchmarks/ray_scaling.py --workloads tiny     # the tiny workload only

Each configuration is a fresh `evomerge run` of one generation: two children bred at once (crossovers of the same
population), each CMA-ES iteration's 4 candidates scored at once, no mutation. Read from the run's event log:

- candidates per minute: candidates scored / (last candidate scored - first CMA-ES ask) x 60;
- start-up: from `run_started` to the first score (Ray: starting Ray and the workers, loading their models);
- Ray's overhead per candidate: the seconds per candidate of Ray with 1 worker minus those of the serial executor
  on one thread (the same compute on the same number of cores: what remains is shipping the task, the result, and
  the worker's resident parents);
- 'object store': workers that act as if they could not see the run directory, so that the parents and the task
  data are shipped through Ray's object store (what a multi-machine run without a shared filesystem pays).

Workloads: 'tiny' (random Llamas of 4 layers, 2 tasks x 60 documents: scoring is the whole cost and one core runs
it, so a second worker is a second core), 'smollm2' (SmolLM2-135M in float32, task arithmetic, 2 x 40 documents:
matmul-bound, so the serial executor already uses both cores).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests")]

PIPELINE = """\
name: scaling
population: population.yaml
generations: 1
population_size: 3
children_per_generation: 2
parents_per_child: 2
crossover: {{method: task_arithmetic, cma: {{sigma0: 0.3, popsize: 4, budget: 16}}}}
fitness:
  tasks: [{{task: evomerge_arith, metric: acc}}, {{task: evomerge_arc_easy, metric: acc}}]
  select: {{split: select, limit: {docs}}}
  report: {{split: report, limit: {docs}}}
seed: 0
executor: {executor}
"""

CONFIGS = [("serial", "{kind: serial}", {}),
           ("serial, 1 thread", "{kind: serial}", {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}),
           ("ray x1", "{kind: ray, workers: 1}", {}),
           ("ray x2", "{kind: ray, workers: 2}", {}),
           ("ray x2, object store", "{kind: ray, workers: 2, files: object_store}", {})]


def _population(root: Path, workload: str) -> None:
    if workload == "tiny":
        from conftest import make_model

        for name, seed in (("base", 0), ("a", 1), ("b", 2)):
            make_model(root / "models" / name, seed=seed)
        members = "\n".join(f"  - {{name: {n}, model: models/{n}}}" for n in ("base", "a", "b"))
    else:
        members = ("  - {name: base, model: smollm2-135m-instruct}\n"
                   "  - {name: a, lora: {parent: base, task: evomerge_arith, steps: 4, batch_size: 4}}\n"
                   "  - {name: b, lora: {parent: base, task: evomerge_arc_easy, steps: 4, batch_size: 4}}")
    (root / "population.yaml").write_text(f"name: p\nbase_model: base\nmembers:\n{members}\n")


def _measure(run_dir: Path) -> dict:
    from evomerge.store import open_store

    events = open_store(run_dir).events()
    started = next(t for t, k, _ in events if k == "run_started")
    first_score = next(t for t, k, _ in events if k == "scored")
    asks = [t for t, k, _ in events if k == "cma_ask"]
    cands = [t for t, k, d in events if k == "scored" and d["subject"].startswith("candidate")]
    span = cands[-1] - asks[0]
    return {"candidates": len(cands), "per_minute": 60 * len(cands) / span, "per_candidate": span / len(cands),
            "startup": first_score - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", nargs="+", default=["tiny", "smollm2"], choices=["tiny", "smollm2"])
    args = parser.parse_args()
    rows = []
    for workload in args.workloads:
        root = Path(tempfile.mkdtemp(prefix=f"evomerge-scaling-{workload}-"))
        _population(root, workload)
        docs = 60 if workload == "tiny" else 40
        results = {}
        for name, executor, env in CONFIGS:
            pipeline = root / f"{name.replace(' ', '_').replace(',', '')}.yaml"
            pipeline.write_text(PIPELINE.format(docs=docs, executor=executor))
            run_dir = root / f"run-{pipeline.stem}"
            t0 = time.time()
            done = subprocess.run([sys.executable, "-m", "evomerge.cli", "run", str(pipeline), "--run-dir",
                                   str(run_dir), "--quiet"], env={**os.environ, **env}, capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"{workload} {name} failed:\n{done.stderr[-2000:]}")
            results[name] = {**_measure(run_dir), "wall": time.time() - t0}
            print(f"{workload:8} {name:18} {json.dumps(results[name])}", file=sys.stderr)
        base, one = results["serial"]["per_minute"], results["serial, 1 thread"]["per_minute"]
        overhead = results["ray x1"]["per_candidate"] - results["serial, 1 thread"]["per_candidate"]
        for name, r in results.items():
            rows.append((workload, name, r, (r["per_minute"] / base, r["per_minute"] / one), overhead))
    print("\n| workload | executor | candidates/min | x serial | x serial 1 thread | s/candidate | start-up s | "
          "run wall s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for workload, name, r, (ratio, ratio_one), _ in rows:
        print(f"| {workload} | {name} | {r['per_minute']:.1f} | {ratio:.2f} | {ratio_one:.2f} | "
              f"{r['per_candidate']:.3f} | {r['startup']:.1f} | {r['wall']:.0f} |")
    print()
    for workload in args.workloads:
        overhead = next(o for w, _, _, _, o in rows if w == workload)
        print(f"{workload}: Ray's overhead per candidate (ray x1 - serial on 1 thread): {overhead:+.3f} s")


if __name__ == "__main__":
    main()
