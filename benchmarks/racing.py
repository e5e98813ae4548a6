"""Racing CMA-ES candidates, off and on: documents scored, wall time per crossover, and whether the same child won.

    python benchmarks/racing.py                 # the demo's crossovers, then 10 crossovers of SmolLM2 specialists
    python benchmarks/racing.py --quick         # 2 crossovers of 12 documents: a smoke test
    python benchmarks/racing.py --vs-mergekit   # then one raced ARC-Easy crossover against mergekit-evolve's path

The seeds are the demo's: SmolLM2-135M-Instruct and its two LoRA specialists (arithmetic, ARC-Easy), fine-tuned
once here and then read in place by every run. Each configuration is one `evomerge run` in this process, racing
off and on, the same in everything else:

- the demo: pipelines/demo.yaml as it is (task arithmetic, popsize 3, budget 6, 40 select documents per task, LoRA
  mutation), with those seeds;
- small crossovers: one generation of 10 children (10 crossovers, each with its own CMA-ES random stream, keyed by
  its slot), task arithmetic of two parents picked by tournament, popsize 4, budget 12, 60 select documents of
  each task; raced as the issue asks ([0.25, 0.5, 1.0] at 95%) and, to show the trade-off, boldly ([0.1, 0.3, 1.0]
  at 80%).

Documents scored per crossover: every candidate's documents on every task (a raced candidate's slices add up to
the documents of its last rung). The child is the same when both runs chose the same merge parameters; where they
did not, both children's full select and report scores are given.

`--vs-mergekit` repeats benchmarks/candidate.py's comparison per crossover instead of per candidate: one crossover
of the two specialists on ARC-Easy (100 select documents, float32, popsize 4, budget 12) with racing, against
mergekit-evolve's on-disk path (run_merge to disk, lm-eval's `hf` model, delete), timed on 3 of the same
proposals and multiplied by the budget.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SEEDS = ["base", "arith-lora", "arc-lora"]

SMALL = """\
name: racing-{name}
population: {population}
generations: 1
population_size: 3
children_per_generation: {children}
parents_per_child: 2
parent_selection: {{kind: tournament, k: 2}}
crossover:
  method: task_arithmetic
  search: [weight]
  cma: {{sigma0: 0.4, popsize: 4, budget: 12}}
{racing}fitness:
  tasks: {tasks}
  select: {{split: select, limit: {docs}}}
  report: {{split: report, limit: {docs}}}
seed: 0
dtype: float32
device: cpu
"""
TASKS = "[{task: evomerge_arith, metric: acc}, {task: evomerge_arc_easy, metric: acc}]"
RACING = "  racing: {schedule: [0.25, 0.5, 1.0], confidence: 0.95}\n"
# a bolder race, to show the trade-off: a tenth of the documents first, bounds at 80%
BOLD = "  racing: {schedule: [0.1, 0.3, 1.0], confidence: 0.8}\n"


def specialists(work: Path) -> Path:
    """The demo's seeds, fine-tuned once (kept in `work` for a later run): a population file of local directories."""
    from evomerge.evolution import Run

    if (work / "population.yaml").is_file():
        return work / "population.yaml"

    run = Run.start(ROOT / "pipelines" / "demo.yaml", run_dir=work / "seeds")
    run.seed_only()
    lines = ["name: racing-seeds", "base_model: base", "members:"]
    for name in SEEDS:
        record = run.store.member(name)
        path = record.weights if Path(record.weights).is_absolute() else str(work / "seeds" / record.weights)
        lines.append(f"  - {{name: {name}, model: {path}}}")
    (work / "population.yaml").write_text("\n".join(lines) + "\n")
    return work / "population.yaml"


def crossovers(run_dir: Path) -> list[dict]:
    """Per crossover of a finished run: wall time, documents scored, candidates stopped, the child's parameters
    and its full select and report scores."""
    from evomerge.evolution import open_config
    from evomerge.records import candidate_subject
    from evomerge.scores import ScoreBoard
    from evomerge.store import open_store

    store = open_store(run_dir)
    board = ScoreBoard(store, open_config(store).pipeline.fitness)
    times = {}
    for at, kind, data in store.events():
        if kind == "crossover_started":
            times[data["crossover"]] = [at, None]
    child_at = {data["member"]: at for at, kind, data in store.events() if kind == "member_added"}
    stopped = {d["subject"] for _, k, d in store.events() if k == "candidate_stopped"}
    out = []
    for x in store.crossovers():
        docs = 0
        for c in store.candidates(x.id):
            rows = store.scores(candidate_subject(c.id), split="select", fewshot=0, any_limit=True)
            by_limit: dict[int, int] = {}
            for r in rows:
                if r.metric == "acc":
                    by_limit[r.limit] = by_limit.get(r.limit, 0) + r.docs
            docs += max(by_limit.values(), default=0)  # the last rung's documents: the slices add up to it
        child = store.member(x.child_id)
        out.append({"generation": x.generation, "slot": x.slot, "seconds": child_at[x.child_id] - times[x.id][0],
                    "documents": docs, "candidates": len(store.candidates(x.id)),
                    "stopped": sum(candidate_subject(c.id) in stopped for c in store.candidates(x.id)),
                    "child": child.name, "params": child.params["merge"],
                    "select": board.member(child.id, "select").weighted,
                    "report": board.member(child.id, "report").weighted})
    store.close()
    return out


def run(pipeline_text: str, work: Path, name: str) -> tuple[list[dict], float]:
    """One run (reused if `work` holds it finished, with the same pipeline); its crossovers and its wall time."""
    from evomerge.evolution import Run

    pipeline = work / f"{name}.yaml"
    done = work / name / "seconds.txt"
    if done.is_file() and pipeline.is_file() and pipeline.read_text() == pipeline_text:
        return crossovers(work / name), float(done.read_text())
    shutil.rmtree(work / name, ignore_errors=True)
    pipeline.write_text(pipeline_text)
    t = time.perf_counter()
    Run.start(pipeline, run_dir=work / name).run()
    seconds = time.perf_counter() - t
    done.write_text(str(seconds))
    return crossovers(work / name), seconds


def compare(label: str, off: list[dict], on: list[dict]) -> dict:
    print(f"\n{label}\n")
    print("| crossover | documents off | documents on | ratio | s off | s on | stopped | same child | off: select / "
          "report | on: select / report |")
    print("|---|---:|---:|---:|---:|---:|---:|---|---|---|")
    same = 0
    for a, b in zip(off, on):
        alike = a["params"] == b["params"]
        same += alike
        scores = "" if alike else f"{a['select']:.4f} / {a['report']:.4f} | {b['select']:.4f} / {b['report']:.4f}"
        print(f"| g{a['generation']} c{a['slot']} | {a['documents']} | {b['documents']} | "
              f"{a['documents'] / b['documents']:.2f}x | {a['seconds']:.1f} | {b['seconds']:.1f} | "
              f"{b['stopped']}/{b['candidates']} | {'yes' if alike else 'no'} | {scores or '| '}|")
    docs = sum(a["documents"] for a in off) / sum(b["documents"] for b in on)
    seconds = sum(a["seconds"] for a in off) / sum(b["seconds"] for b in on)
    print(f"\nall: {docs:.2f}x fewer documents, {seconds:.2f}x less crossover time, the same child in "
          f"{same} of {len(off)}")
    return {"documents": docs, "seconds": seconds, "same": same, "of": len(off)}


def vs_mergekit(population: Path, work: Path, docs: int, rounds: int) -> None:
    """One raced ARC-Easy crossover, and mergekit-evolve's on-disk path timed on its first proposals."""
    import lm_eval
    from mergekit.io.tasks import LoaderCache
    from transformers import AutoConfig

    from evomerge.crossover.genome import Genome
    from evomerge.crossover.merge import merge_to_disk
    from evomerge.evolution import open_config
    from evomerge.fitness.lm_eval import Scorer, _read_task_config
    from evomerge.models import resolve_model
    from evomerge.store import open_store

    text = SMALL.format(name="arc", population=population, children=1, racing=RACING, docs=docs,
                        tasks="[{task: evomerge_arc_easy, metric: acc}]")
    shutil.rmtree(work / "arc-raced", ignore_errors=True)
    ours, _ = run(text, work, "arc-raced")
    store = open_store(work / "arc-raced")
    loaded = open_config(store)
    x = store.crossovers()[0]
    names = {m.id: m.name for m in store.members()}
    sources = {m.name: resolve_model(json.loads(m.recipe)["source"]) for m in store.members() if m.operator == "seed"}
    paths = {names[p]: sources[names[p]] for p in x.parents}  # seeds: read in place
    genome = Genome(loaded.pipeline.crossover, tuple(names[p] for p in x.parents),
                    num_layers=AutoConfig.from_pretrained(sources["base"]).num_hidden_layers)
    scorer = Scorer(loaded.pipeline.fitness)
    manager = scorer._manager
    task_cfg = {**_read_task_config(manager, "evomerge_arc_easy"), "test_split": "select"}
    times = []
    for c in store.candidates(x.id)[:rounds]:
        config = genome.merge_config(c.params, paths=paths, base_path=sources["base"], dtype="float32")
        out = work / "merged"
        t = time.perf_counter()
        merge_to_disk(config, out, seed=0)
        lm_eval.simple_evaluate(model="hf", model_args={"pretrained": str(out), "dtype": "float32"},
                                tasks=[task_cfg], limit=docs, device="cpu", log_samples=False, verbosity="WARNING",
                                task_manager=manager, bootstrap_iters=0)
        shutil.rmtree(out)
        LoaderCache().flush_all()
        times.append(time.perf_counter() - t)
        print(f"mergekit-evolve candidate: {times[-1]:.1f} s", file=sys.stderr)
    budget = loaded.pipeline.crossover.cma.budget
    per_candidate = statistics.median(times)
    print(f"\nARC-Easy, float32, {docs} select documents, one crossover of {budget} candidates\n")
    print("| | seconds per crossover | documents | ratio |")
    print("|---|---:|---:|---:|")
    print(f"| mergekit-evolve on-disk: {budget} x {per_candidate:.1f} s per candidate (median of {len(times)}) | "
          f"{budget * per_candidate:.1f} | {budget * docs} | 1.0x |")
    print(f"| evomerge fast, raced ({ours[0]['stopped']} of {ours[0]['candidates']} stopped) | "
          f"{ours[0]['seconds']:.1f} | {ours[0]['documents']} | {budget * per_candidate / ours[0]['seconds']:.1f}x |")
    store.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 crossovers of 12 documents, no demo: a smoke test")
    ap.add_argument("--children", type=int, default=10, help="small crossovers (one per child slot)")
    ap.add_argument("--docs", type=int, default=60, help="select documents per task of the small crossovers")
    ap.add_argument("--no-demo", dest="demo", action="store_false", help="skip the demo's crossovers")
    ap.add_argument("--vs-mergekit", action="store_true", help="also: a raced ARC-Easy crossover vs mergekit-evolve")
    ap.add_argument("--only-vs-mergekit", action="store_true", help="only that (reuses the seeds kept in --work)")
    ap.add_argument("--race", nargs=2, action="append", metavar=("SCHEDULE", "CONFIDENCE"),
                    help="one more racing setting for the small crossovers, e.g. --race [0.25,0.5,1.0] 0.8 (runs "
                         "kept in --work are reused)")
    ap.add_argument("--work", type=Path, help="keep the runs here (default: a temporary folder, deleted)")
    ap.add_argument("--bound", choices=["paired", "wilson", "hoeffding"], default="paired",
                    help="racing's bound: paired (document by document against the best), or independent bounds")
    ap.add_argument("--no-bold", dest="bold", action="store_false", help="skip the bold setting")
    args = ap.parse_args()
    global RACING, BOLD
    RACING, BOLD = (r.replace("}\n", f", bound: {args.bound}}}\n") for r in (RACING, BOLD))
    if args.quick:
        args.children, args.docs, args.demo = 2, 12, False

    from evomerge.cli import _quiet_libraries

    _quiet_libraries()
    work = args.work or Path(tempfile.mkdtemp(prefix="evomerge-racing-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        t = time.perf_counter()
        population = specialists(work)
        print(f"seeds fine-tuned and scored in {time.perf_counter() - t:.0f} s", file=sys.stderr)
        results = {}
        if args.only_vs_mergekit:
            vs_mergekit(population, work, docs=12 if args.quick else 100, rounds=1 if args.quick else 3)
            return
        if args.demo:
            demo = (ROOT / "pipelines" / "demo.yaml").read_text().replace("../populations/demo.yaml", str(population))
            off, t_off = run(demo, work, "demo-off")
            on, t_on = run(demo.replace("  cma: {sigma0: 0.3, popsize: 3, budget: 6}",
                                        "  cma: {sigma0: 0.3, popsize: 3, budget: 6}\n" + RACING.rstrip("\n")),
                           work, "demo-on")
            results["demo"] = compare(f"the demo's crossovers (runs: {t_off:.0f} s off, {t_on:.0f} s on)", off, on)
        races = {"off": "", "on": RACING, **({"bold": BOLD} if args.bold else {}),
                 **{f"race{i}": f"  racing: {{schedule: {sched}, confidence: {conf}, bound: {args.bound}}}\n"
                    for i, (sched, conf) in enumerate(args.race or [])}}
        small = {name: SMALL.format(name=name, population=population, children=args.children, racing=racing,
                                    docs=args.docs, tasks=TASKS) for name, racing in races.items()}
        off, t_off = run(small["off"], work, "small-off")
        for name in [n for n in races if n != "off"]:
            on, t_on = run(small[name], work, f"small-{name}")
            results[f"small-{name}"] = compare(
                f"{args.children} crossovers of two SmolLM2 specialists, {args.docs} select documents per task, "
                f"racing {races[name].strip()} (runs: {t_off:.0f} s off, {t_on:.0f} s on)", off, on)
        if args.vs_mergekit:
            vs_mergekit(population, work, docs=12 if args.quick else 100, rounds=1 if args.quick else 3)
        print(json.dumps(results))
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
