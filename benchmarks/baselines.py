"""Does evolution pay? The showcase's specialists, and every simpler way a user could combine them, at the same
number of scored merges, each reported on the held-out report split with its paired difference to evomerge's arm.

    python benchmarks/baselines.py --arm seeds      # the shared specialists (once; about 30 min on 2 cores)
    python benchmarks/baselines.py --arm d          # one arm (each resumes where it stopped; <= 45 min on 2 cores)
    python benchmarks/baselines.py --arm all        # every arm not done yet, in order
    python benchmarks/baselines.py --table          # the table from whichever arms are done

The arms (pipelines/showcase.yaml's population and fitness for all):

- a: the best seed (by its select score): what you have without merging;
- b-ta, b-ties: one mergekit merge of the four specialists with default weights (task_arithmetic, weight 1/4 each;
  TIES, weight 1/4 and density 0.5), merged by mergekit's run_merge: what a user gets with no search;
- c-ta, c-ties: one CMA-ES search over all the members at once with the whole budget (mergekit-evolve's design): one
  child of every member, task_arithmetic (weights) or TIES (weights and densities). The base is one of the members;
  its task vector is zero, so its weight is inert;
- d: evomerge's showcase as it is: shared fitness + attraction, LoRA mutation;
- e: the same with elitist + tournament;
- f: the same without mutation.

Every searching arm (c, d, e, f) scores the same number of merges on the select split (24: 4 children x budget 6,
or one child x budget 24); each arm's answer is its best member by select score, as the leaderboard ranks it, which
may be a seed. Nothing here looks at the report split to choose anything: it is read once per answer, for the table.

The specialists are fine-tuned once (`--arm seeds`, the showcase's own seeding) and each searching arm starts from a
copy of that run directory with its own pipeline, so no arm pays for the seeds again and all share them exactly.
Results go to WORK/results.json (default WORK: runs/baselines), wall times to WORK/seconds.json (a killed arm loses
the time of its last piece; `--arm X` again resumes it).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHOWCASE = ROOT / "pipelines" / "showcase.yaml"  # --pipeline changes it (tests run the arms on tiny models)
ARMS = {
    "a": "best seed",
    "b-ta": "one merge, task_arithmetic 1/n",
    "b-ties": "one merge, TIES density 0.5",
    "c-ta": "one CMA-ES search, task_arithmetic",
    "c-ties": "one CMA-ES search, TIES",
    "d": "evomerge: shared + attraction",
    "e": "evomerge: elitist + tournament",
    "f": "evomerge: shared + attraction, no mutation",
}


def showcase() -> dict:
    data = yaml.safe_load(SHOWCASE.read_text())
    data["population"] = str((SHOWCASE.parent / data["population"]).resolve())
    return data


def specialists() -> list[str]:
    """Every member of the population but its base."""
    population = yaml.safe_load(Path(showcase()["population"]).read_text())
    return [m["name"] for m in population["members"] if m["name"] != population["base_model"]]


def budget() -> int:
    """Merges scored by the showcase (generations x children x CMA-ES budget): every searching arm's budget."""
    data = showcase()
    return data["generations"] * data["children_per_generation"] * data["crossover"]["cma"]["budget"]


def pipeline_of(arm: str) -> dict:
    """The arm's pipeline: the showcase's, changed only where the arm differs."""
    data = showcase()
    if arm == "e":
        data["parent_selection"] = {"kind": "tournament", "k": 2}
        data["survivor_selection"] = {"kind": "elitist"}
    elif arm == "f":
        data.pop("mutation", None)
    elif arm in ("c-ta", "c-ties"):
        data.update(generations=1, children_per_generation=1, parents_per_child=len(specialists()) + 1,
                    parent_selection={"kind": "uniform"}, survivor_selection={"kind": "elitist"})
        data.pop("mutation", None)
        data["crossover"] = {"method": "task_arithmetic" if arm == "c-ta" else "ties",
                             "search": ["weight"] if arm == "c-ta" else ["weight", "density"],
                             "cma": {"sigma0": 0.3, "popsize": 8, "budget": budget()}}
    elif arm != "d":
        raise ValueError(f"arm {arm} has no pipeline")
    data["name"] = f"baseline-{arm}"
    return data


# ------------------------------------------------------------------ runs


def seeds(work: Path) -> Path:
    """The showcase's seeding (the same members, fine-tunes and scores as `evomerge run pipelines/showcase.yaml`)."""
    from evomerge.evolution import Run

    run_dir = work / "seeds"
    if (run_dir / "done").is_file():
        return run_dir
    (Run.resume(run_dir) if run_dir.exists() else Run.start(SHOWCASE, run_dir=run_dir)).seed_only()
    (run_dir / "done").write_text("")
    return run_dir


def fork(work: Path, arm: str) -> Path:
    """The arm's run directory: a copy of the seeds' with the arm's pipeline as its configuration."""
    from evomerge.config import load_pipeline

    run_dir = work / arm
    if run_dir.exists():
        return run_dir
    file = work / f"{arm}.yaml"
    file.write_text(yaml.safe_dump(pipeline_of(arm), sort_keys=False))
    loaded = load_pipeline(file)
    tmp = work / f".tmp-{arm}"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(work / "seeds", tmp, ignore=shutil.ignore_patterns("done", "*.lock"))
    config = {"pipeline": loaded.pipeline.model_dump(mode="json"),
              "population": loaded.population.model_dump(mode="json"),
              "pipeline_file": loaded.pipeline_file, "population_file": loaded.population_file}
    with sqlite3.connect(tmp / "evomerge.db") as conn:
        conn.execute("UPDATE meta SET value=? WHERE key='config'", (json.dumps(config),))
    tmp.rename(run_dir)
    return run_dir


def evolve(work: Path, arm: str) -> Path:
    from evomerge.evolution import Run
    from evomerge.progress import Reporter

    run_dir = fork(work, arm)
    Run.resume(run_dir, reporter=Reporter(quiet=False)).run()
    return run_dir


def merged_once(work: Path, arm: str) -> dict:
    """One mergekit merge of the specialists with default weights, scored on both splits."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from evomerge.config import CrossoverSpec
    from evomerge.crossover.genome import Genome
    from evomerge.crossover.merge import merge_to_disk
    from evomerge.evolution import open_config
    from evomerge.fitness.lm_eval import Scorer
    from evomerge.store import open_store

    seeds_dir = work / "seeds"
    store = open_store(seeds_dir)
    loaded = open_config(store)
    path = {m.name: str(seeds_dir / m.weights) if not Path(m.weights).is_absolute() else m.weights
            for m in store.members()}
    store.close()
    method = "task_arithmetic" if arm == "b-ta" else "ties"
    spec = CrossoverSpec(method=method, search=["weight"] if method == "task_arithmetic" else ["weight", "density"])
    names = specialists()
    genome = Genome(spec, tuple(names), num_layers=0)
    params = {name: {"weight": [1 / len(names)], **({"density": [0.5]} if method == "ties" else {})}
              for name in names}
    config = genome.merge_config(params, paths=path, base_path=path["base"], dtype="float32")
    out = work / arm / "model"
    if not out.exists():
        merge_to_disk(config, out, seed=0)
    model = AutoModelForCausalLM.from_pretrained(out, torch_dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    fitness = loaded.pipeline.fitness
    scorer = Scorer(fitness, include_paths=loaded.include_paths(), device="cpu")
    result = {"member": f"{method} of the {len(names)} specialists", "params": params}
    for which in ("select", "report"):
        scored = scorer.evaluate(model, tokenizer, which)
        chosen = {t.task: t.metric for t in fitness.tasks}
        result[which] = {t: scored.results[t][m] for t, m in chosen.items()}
        result[f"{which}_outcomes"] = {t: scored.outcomes[t][m] for t, m in chosen.items()}
        result[f"{which}_docs"] = sum(scored.docs.values())
    result["weighted"] = fitness.weighted({t: {chosen[t]: v} for t, v in result["report"].items()})
    result["documents"] = result["select_docs"] + result["report_docs"]
    result["candidates"] = 1
    return result


# ------------------------------------------------------------------ results


def answer(run_dir: Path, *, seeds_only: bool = False, seed_docs: int = 0) -> dict:
    """A run's answer (its best member by select score, seeds only for arm a) with its report scores and outcomes,
    and what the run scored beyond the seeds."""
    from evomerge.evolution import open_config
    from evomerge.records import MemberState
    from evomerge.scores import ScoreBoard
    from evomerge.store import open_store

    store = open_store(run_dir)
    fitness = open_config(store).pipeline.fitness
    board = ScoreBoard(store, fitness)
    contenders = [m for m in store.members() if m.state is not MemberState.INTERMEDIATE
                  and (m.generation == 0 or not seeds_only)]
    best = max(contenders, key=lambda m: (board.member(m.id).weighted or -1.0, -m.id))
    report = board.member(best.id, "report")
    chosen = {t.task: t.metric for t in fitness.tasks}
    docs = sum(r.docs for r in store.all_scores() if chosen.get(r.task) == r.metric)
    candidates = sum(len(store.candidates(x.id)) for x in store.crossovers())
    select = board.member(best.id).tasks
    store.close()
    return {"member": best.name, "params": best.params, "select": select, "report": report.tasks,
            "report_outcomes": {t: report.outcomes[t].tolist() for t in chosen}, "weighted": report.weighted,
            "documents": docs - seed_docs, "candidates": candidates}


def seed_documents(work: Path) -> int:
    return answer(work / "seeds", seeds_only=True)["documents"]


def _signed(v: float) -> str:
    text = f"{v:+.4f}"
    return "±0.0000" if text in ("+0.0000", "-0.0000") else text.replace("-", "−")


def table(work: Path) -> str:
    import numpy as np

    from evomerge.evolution import open_config
    from evomerge.outcomes import fmt_pm, paired, task_se
    from evomerge.store import open_store

    results = json.loads((work / "results.json").read_text()) if (work / "results.json").is_file() else {}
    seconds = json.loads((work / "seconds.json").read_text()) if (work / "seconds.json").is_file() else {}
    store = open_store(work / "seeds")
    fitness = open_config(store).pipeline.fitness
    store.close()
    tasks = [t.task for t in fitness.tasks]
    weights = {t.task: t.weight for t in fitness.tasks}
    metric = {t.task: t.metric for t in fitness.tasks}
    labels = {t: t.removeprefix("evomerge_") for t in tasks}
    out = ["| arm | answer | report (weighted) | " + " | ".join(labels[t] for t in tasks)
           + " | arm − (d), 95% paired interval | wall time | documents scored | merges scored |",
           "|---|---|---:|" + "---:|" * len(tasks) + "---|---:|---:|---:|"]
    d = results.get("d")
    for arm, label in ARMS.items():
        r = results.get(arm)
        if r is None:
            out.append(f"| {arm}: {label} | not run yet |" + " |" * (len(tasks) + 5))
            continue
        outs = {t: np.asarray(r["report_outcomes"][t], dtype=float) for t in tasks}
        ses = {t: task_se(r["report"][t], outs[t].size, metric[t], outs[t]) for t in tasks}
        w_se = fitness.weighted_se(ses)
        if d is None or arm == "d":
            versus = "–" if arm == "d" else "(d) not run yet"
        else:
            _, whole = paired(outs, {t: np.asarray(d["report_outcomes"][t], dtype=float) for t in tasks}, weights)
            versus = (f"{_signed(whole.diff)} [{_signed(whole.low)}, {_signed(whole.high)}]"
                      + (" within noise" if whole.low <= 0 <= whole.high else ""))
        wall = seconds.get(arm)
        out.append(f"| {arm}: {label} | {r['member']} | {fmt_pm(r['weighted'], w_se)} | "
                   + " | ".join(fmt_pm(r["report"][t], ses[t], 3) for t in tasks)
                   + f" | {versus} | {'–' if wall is None else f'{wall / 60:.1f} min'} | {r['documents']} | "
                   f"{r['candidates']} |")
    if "seeds" in seconds:
        out.append(f"\nThe shared seeds (fine-tunes and their scores): {seconds['seeds'] / 60:.1f} min, not counted "
                   "in any arm; the showcase from scratch is seeds + (d).")
    return "\n".join(out)


def run_arm(work: Path, arm: str) -> None:
    results_file, seconds_file = work / "results.json", work / "seconds.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else {}
    if arm in results:
        print(f"arm {arm}: done already ({results[arm]['member']})")
        return
    seconds = json.loads(seconds_file.read_text()) if seconds_file.is_file() else {}
    start = time.perf_counter()
    try:
        if arm == "seeds":
            seeds(work)
            return
        seeds(work)  # a no-op once they are done
        if arm == "a":
            result = answer(work / "seeds", seeds_only=True)
            result["documents"] = 0
        elif arm.startswith("b-"):
            result = merged_once(work, arm)
        else:
            result = answer(evolve(work, arm), seed_docs=seed_documents(work))
    finally:
        seconds[arm] = seconds.get(arm, 0.0) + time.perf_counter() - start
        seconds_file.write_text(json.dumps(seconds, indent=1))
    results[arm] = result
    results_file.write_text(json.dumps(results))
    print(f"arm {arm}: {result['member']}, report {result['weighted']:.4f}")


def main() -> None:
    global SHOWCASE
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--arm", choices=["seeds", *ARMS, "all"], help="run this arm (resumes where it stopped)")
    parser.add_argument("--table", action="store_true", help="print the table of the arms done")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "baselines")
    parser.add_argument("--pipeline", type=Path, default=None, help="the evomerge arm's pipeline (default: the "
                        "showcase); the others are derived from it")
    args = parser.parse_args()
    SHOWCASE = (args.pipeline or SHOWCASE).resolve()
    if args.arm is None and not args.table:
        parser.error("give --arm or --table")
    args.work.mkdir(parents=True, exist_ok=True)
    if args.arm is not None:
        for arm in ([*ARMS] if args.arm == "all" else [args.arm]):
            run_arm(args.work, arm)
    if args.table or args.arm is not None:
        print(table(args.work))


if __name__ == "__main__":
    main()
