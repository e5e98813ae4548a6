"""Record the golden lineage: small runs on tiny models covering every operator kind, and everything they decided.

    python tests/golden/record.py            # rewrites tests/golden/lineage.json
    python tests/golden/record.py OUT.json   # or writes another file, to compare

Each run is a pipeline in PIPELINES below (every merge method, LoRA and ES mutation with each ES reward,
intermediates, uniform and tournament parents, a mutation-only run) over the tiny models of tests/conftest.py.
The snapshot holds, by name and never by database id: each member's generation, operator, parents, parameters
and state; the survivors of each generation; every score (member or CMA-ES candidate, task, split, metric, value,
documents); every CMA-ES candidate; every mutation and its steps. tests/test_golden.py runs the same pipelines and
demands the same snapshot: a change that alters a result must say so by re-recording this file.

It was first recorded by the release before the registries and the executor (commit 21fa5e4), and re-recorded
once, when noise ES began to evaluate low-rank perturbations inside the forward pass: the low-rank ES steps' rewards
moved by at most 4.8e-7 and say `in_forward`, the ES settings gained `evaluation` and `pairs_per_forward`, and every
member, survivor, score and coefficient stayed the same. It was re-recorded a second time when the weighted score
became exact (issue 19: equal scores are equal floats, so that ties go to the older member): 0.20000000000000004
became 0.2 in 33 candidate scores and 4 ES reward pairs of dare_ties, linear, slerp, task_arithmetic and ties, and
every member, survivor, proposal, child, coefficient and task score stayed the same. first-release.json keeps the first release's own snapshots
of `linear` and `ties`, on which runs that release made and killed must still end when resumed.
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

COMMON = """\
population: population.yaml
generations: 2
population_size: 3
children_per_generation: 2
fitness:
  tasks: [{task: evomerge_arith, metric: acc}, {task: evomerge_arc_easy, metric: acc, weight: 2.0}]
  select: {split: select, limit: 5}
  report: {split: report, limit: 5}
"""

LORA = "{kind: lora, task: evomerge_arith, steps: 2, batch_size: 2}"


def _es(reward: str, rank: str = "2") -> str:
    return (f"{{kind: es, iterations: 2, pairs: 2, sigma: 0.01, learning_rate: 0.005, rank: {rank}, "
            f"reward: {reward}}}")


PIPELINES = {
    "linear": f"""\
name: g-linear
parents_per_child: 2
crossover: {{method: linear, cma: {{sigma0: 0.3, popsize: 2, budget: 4}}}}
mutation:
  rate: 0.6
  operators: [{LORA}, {_es("{kind: exact_match, task: evomerge_arith, batch_size: 2, max_new_tokens: 3}")}]
seed: 2
""",
    "ties": f"""\
name: g-ties
parents_per_child: 2
crossover: {{method: ties, search: [weight, density], layer_group: 2, cma: {{sigma0: 0.3, popsize: 3, budget: 6}}}}
mutation:
  rate: 0.5
  operators: [{LORA}, {_es("{kind: loglik, task: evomerge_arith, batch_size: 3}")}]
seed: 3
""",
    "dare_ties": f"""\
name: g-dare
parents_per_child: 2
parent_selection: {{kind: uniform}}
crossover: {{method: dare_ties, search: [weight, density], cma: {{sigma0: 0.3, popsize: 2, budget: 4}}}}
mutation:
  rate: 0.5
  operators: [{_es("{kind: select}", rank="null")}]
seed: 5
""",
    "task_arithmetic": """\
name: g-ta
parents_per_child: 3
parent_selection: {kind: tournament, k: 3}
crossover: {method: task_arithmetic, layer_group: 2, cma: {sigma0: 0.3, popsize: 2, budget: 4}}
seed: 7
""",
    "slerp": f"""\
name: g-slerp
parents_per_child: 2
crossover: {{method: slerp, layer_group: 3, cma: {{sigma0: 0.2, popsize: 2, budget: 4}}}}
mutation:
  rate: 0.5
  operators: [{LORA}]
seed: 2
""",
    "mutation_only": f"""\
name: g-mut
parents_per_child: 1
parent_selection: {{kind: tournament, k: 2}}
mutation:
  rate: 1
  operators: [{LORA}, {_es("{kind: loglik, task: evomerge_arith, batch_size: 3}")}]
seed: 4
""",
}


def write_pipelines(root: Path, models: Path) -> dict[str, Path]:
    from conftest import POPULATION

    (root / "population.yaml").write_text(POPULATION.replace("MODELS", str(models)))
    out = {}
    for name, text in PIPELINES.items():
        out[name] = root / f"{name}.yaml"
        out[name].write_text(COMMON + text)
    return out


def main() -> None:
    from conftest import make_model
    from snapshot import run_snapshot

    from evomerge.evolution import Run

    golden = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name, seed in (("base", 0), ("a", 1), ("b", 2)):
            make_model(root / "models" / name, seed=seed)
        for name, pipeline in write_pipelines(root, root / "models").items():
            run = Run.start(pipeline, run_dir=root / "runs" / name)
            run.run()
            snap = json.dumps(run_snapshot(run.store)).replace(str(root / "models"), "<models>")
            golden[name] = json.loads(snap)
            print(name, [(m["name"], m["operator"], m["state"]) for m in golden[name]["members"]], flush=True)
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "lineage.json"
    out.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
