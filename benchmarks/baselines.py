"""Does evolution pay? The showcase's specialists, and every simpler way a user could combine them, at the same
compute, each reported on the held-out report split with its paired difference to a reference arm.

    python benchmarks/baselines.py --arm seeds      # the shared specialists (once; about 30 min on 2 cores)
    python benchmarks/baselines.py --arm d          # one arm, resumable (<= 45 min on 2 cores; 1-2 h with anchors)
    python benchmarks/baselines.py --arm all        # every arm not done yet, in order
    python benchmarks/baselines.py --table          # the table from whichever arms are done

    # at equal documents, with select scores estimated from anchors (issue 29), paired with the joint search:
    python benchmarks/baselines.py --pipeline pipelines/showcase-anchors.yaml --work runs/baselines-anchors \
        --reference c-ta --arm all

The arms (pipelines/showcase.yaml's population and fitness for all):

- a: the best seed (by its select score): what you have without merging;
- b-ta, b-ties: one mergekit merge of the four specialists with default weights (task_arithmetic, weight 1/4 each;
  TIES, weight 1/4 and density 0.5), merged by mergekit's run_merge: what a user gets with no search;
- c-ta, c-ties: one CMA-ES search over all the members at once with the whole budget (mergekit-evolve's design): one
  child of every member, task_arithmetic (weights) or TIES (weights and densities). The base is one of the members;
  its task vector is zero, so its weight is inert;
- d: evomerge's showcase as it is: shared fitness + attraction, LoRA mutation;
- e: the same with elitist + tournament;
- f: the same without mutation;
- g: the same as e with three parents per child (attraction is not needed to mix more skills per child);
- full: the pipeline as it is but every candidate scored on every select document (only where the pipeline
  estimates select scores from anchors: what the estimates save, and what they cost in the answer).

Every searching arm (c, d, e, f, g) gets the same budget of select documents: the evomerge pipeline's planned
documents, generations x children x (CMA-ES budget + mutation rate) x the documents one candidate is scored on (its
anchors where `fitness.select.estimator` is set, else every select document up to the limit), so the joint search
(c) gets that many documents' worth of merges, in whole CMA-ES iterations of 8. Without anchors this is the same 24
merges as the first table (4 children x budget 6). Each arm's answer is its best member by select score, as the
leaderboard ranks it, which may be a seed. Nothing here looks at the report split to choose anything: it is read
once per answer, for the table. "documents scored" counts the select documents each arm's search scored (a
crossover child's reused candidate scores not twice), then the report documents its members were scored on.

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
    "g": "evomerge: elitist + tournament, 3 parents per child",
    "full": "evomerge: shared + attraction, every select document",
}
REFERENCE = "d"  # the arm every other is paired with (--reference)


def showcase() -> dict:
    data = yaml.safe_load(SHOWCASE.read_text())
    data["population"] = str((SHOWCASE.parent / data["population"]).resolve())
    return data


def specialists() -> list[str]:
    """Every member of the population but its base."""
    population = yaml.safe_load(Path(showcase()["population"]).read_text())
    return [m["name"] for m in population["members"] if m["name"] != population["base_model"]]


def per_candidate() -> int:
    """Select documents one candidate is scored on: its anchors (n per task) where the pipeline estimates, else every
    select document up to the limit."""
    from evomerge.config import load_pipeline
    from evomerge.fitness.lm_eval import Scorer

    fitness = load_pipeline(SHOWCASE).pipeline.fitness
    select = fitness.select
    if select.estimator is not None:
        return select.estimator.n * len(fitness.tasks)
    scorer = Scorer(fitness)

    def size(task: str) -> int:
        lines = Path(scorer._configs[task]["dataset_kwargs"]["data_files"][select.split]).read_text().splitlines()
        return sum(1 for line in lines if line.strip())

    return sum(min(size(t.task), select.limit or size(t.task)) for t in fitness.tasks)


def budget_documents() -> int:
    """Select documents the evomerge arm plans to score: generations x children x (CMA-ES budget + mutation rate) x
    one candidate's documents. Every searching arm's budget."""
    data = showcase()
    rate = (data.get("mutation") or {}).get("rate", 0.0)
    children = data["generations"] * data["children_per_generation"]
    return round(children * (data["crossover"]["cma"]["budget"] + rate) * per_candidate())


def budget() -> int:
    """The joint search's merges: the documents budget in candidates, whole CMA-ES iterations of 8."""
    return max(8, budget_documents() // per_candidate() // 8 * 8)


def pipeline_of(arm: str) -> dict:
    """The arm's pipeline: the showcase's, changed only where the arm differs."""
    data = showcase()
    if arm in ("e", "g"):
        data["parent_selection"] = {"kind": "tournament", "k": 2}
        data["survivor_selection"] = {"kind": "elitist"}
        if arm == "g":
            data["parents_per_child"] = 3
    elif arm == "f":
        data.pop("mutation", None)
    elif arm == "full":
        if data["fitness"]["select"].pop("estimator", None) is None:
            raise ValueError("arm full is the pipeline without its anchors, and this pipeline has none")
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
    result["select_documents"], result["report_documents"] = result["select_docs"], result["report_docs"]
    result["documents"] = result["select_docs"] + result["report_docs"]
    result["candidates"] = 1
    return result


# ------------------------------------------------------------------ results


def answer(run_dir: Path, *, seeds_only: bool = False, seed_docs: tuple[int, int] = (0, 0)) -> dict:
    """A run's answer (its best member by select score, seeds only for arm a) with its report scores and outcomes,
    and the select and report documents the run scored beyond the seeds' (`seed_docs`)."""
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
    scored = [r for r in store.all_scores() if chosen.get(r.task) == r.metric and r.reused_from is None]
    select_docs = sum(r.docs for r in scored if r.split == fitness.select.split) - seed_docs[0]
    report_docs = sum(r.docs for r in scored if r.split == fitness.report.split) - seed_docs[1]
    candidates = sum(len(store.candidates(x.id)) for x in store.crossovers())
    select = board.member(best.id)
    store.close()
    return {"member": best.name, "params": best.params, "select": select.tasks, "select_weighted": select.weighted,
            "select_estimated": bool(select.estimator), "report": report.tasks,
            "report_outcomes": {t: report.outcomes[t].tolist() for t in chosen}, "weighted": report.weighted,
            "select_documents": select_docs, "report_documents": report_docs,
            "documents": select_docs + report_docs, "candidates": candidates}


def seed_documents(work: Path) -> tuple[int, int]:
    """The select and report documents the shared seeds were scored on (no arm pays for them)."""
    seeds_answer = answer(work / "seeds", seeds_only=True)
    return seeds_answer["select_documents"], seeds_answer["report_documents"]


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
    ref = REFERENCE
    out = ["| arm | answer | select (weighted) | report (weighted) | " + " | ".join(labels[t] for t in tasks)
           + f" | arm − ({ref}), 95% paired interval | wall time | select documents | report documents "
             "| merges scored |",
           "|---|---|---:|---:|" + "---:|" * len(tasks) + "---|---:|---:|---:|---:|"]
    d = results.get(ref)
    for arm, label in ARMS.items():
        r = results.get(arm)
        if r is None:
            if arm != "full":
                out.append(f"| {arm}: {label} | not run yet |" + " |" * (len(tasks) + 7))
            continue
        outs = {t: np.asarray(r["report_outcomes"][t], dtype=float) for t in tasks}
        ses = {t: task_se(r["report"][t], outs[t].size, metric[t], outs[t]) for t in tasks}
        w_se = fitness.weighted_se(ses)
        if d is None or arm == ref:
            versus = "–" if arm == ref else f"({ref}) not run yet"
        else:
            _, whole = paired(outs, {t: np.asarray(d["report_outcomes"][t], dtype=float) for t in tasks}, weights)
            versus = (f"{_signed(whole.diff)} [{_signed(whole.low)}, {_signed(whole.high)}]"
                      + (" within noise" if whole.low <= 0 <= whole.high else ""))
        wall = seconds.get(arm)
        selected = r.get("select_weighted")
        shown = "–" if selected is None else ("≈" if r.get("select_estimated") else "") + f"{selected:.4f}"
        out.append(f"| {arm}: {label} | {r['member']} | {shown} | {fmt_pm(r['weighted'], w_se)} | "
                   + " | ".join(fmt_pm(r["report"][t], ses[t], 3) for t in tasks)
                   + f" | {versus} | {'–' if wall is None else f'{wall / 60:.1f} min'} | "
                   f"{r.get('select_documents', '–')} | {r.get('report_documents', '–')} | {r['candidates']} |")
    if "seeds" in seconds:
        out.append(f"\nThe shared seeds (fine-tunes and their scores): {seconds['seeds'] / 60:.1f} min, not counted "
                   "in any arm; the showcase from scratch is seeds + (d).")
    return "\n".join(out)


def _estimates() -> bool:
    """Whether the evomerge arm's pipeline estimates select scores from anchors (then arm `full` means something)."""
    return showcase()["fitness"]["select"].get("estimator") is not None


def _record(file: Path, arm: str, value) -> None:
    """Set `arm` in the JSON file `file`, read again just before writing (arms may run side by side, each in its own
    process), and replaced whole, so that a kill leaves the old file or the new one."""
    data = json.loads(file.read_text()) if file.is_file() else {}
    data[arm] = value
    tmp = file.with_suffix(f".{arm}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(file)


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
            result.update(documents=0, select_documents=0, report_documents=0)
        elif arm.startswith("b-"):
            result = merged_once(work, arm)
        else:
            result = answer(evolve(work, arm), seed_docs=seed_documents(work))
    finally:
        _record(seconds_file, arm, seconds.get(arm, 0.0) + time.perf_counter() - start)
    _record(results_file, arm, result)
    print(f"arm {arm}: {result['member']}, report {result['weighted']:.4f}")


def main() -> None:
    global SHOWCASE, REFERENCE
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--arm", choices=["seeds", *ARMS, "all"], help="run this arm (resumes where it stopped)")
    parser.add_argument("--table", action="store_true", help="print the table of the arms done")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "baselines")
    parser.add_argument("--pipeline", type=Path, default=None, help="the evomerge arm's pipeline (default: the "
                        "showcase); the others are derived from it")
    parser.add_argument("--reference", choices=[*ARMS], default=REFERENCE,
                        help="the arm every other is paired with in the table (default: d)")
    args = parser.parse_args()
    SHOWCASE = (args.pipeline or SHOWCASE).resolve()
    REFERENCE = args.reference
    if args.arm is None and not args.table:
        parser.error("give --arm or --table")
    args.work.mkdir(parents=True, exist_ok=True)
    if args.arm is not None:
        every = [a for a in ARMS if a != "full" or _estimates()]
        for arm in (every if args.arm == "all" else [args.arm]):
            run_arm(args.work, arm)
    if args.table or args.arm is not None:
        print(table(args.work))


if __name__ == "__main__":
    main()
