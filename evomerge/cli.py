"""The `evomerge` command: run | resume | status | leaderboard | lineage | compare | export | report.

Heavy libraries (torch, transformers, mergekit, lm-eval) are imported only by the commands that compute, so
`evomerge --help` and a config error answer at once. Usage errors exit with status 2 and create nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import time
from pathlib import Path
from typing import Optional

from evomerge.errors import EvomergeError


class _Help(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Help that shows every option's default and keeps the examples' lines as written."""


RUN_DIR = "a run directory, as `evomerge run` printed it (e.g. runs/demo-20261130-120000)"
EXAMPLES = {
    "run": """examples:
  evomerge run pipelines/demo.yaml
  evomerge run pipelines/pareto.yaml --run-dir runs/pareto-1
  evomerge run pipelines/demo.yaml 2>&1 | tee run.log     # a log: a line per step, progress every 30 s""",
    "resume": """examples:
  evomerge resume runs/demo-20261130-120000        # after Ctrl-C, a crash or kill -9: no score is computed twice""",
    "status": """examples:
  evomerge status runs/demo-20261130-120000        # works while the run goes on
  watch -n 10 evomerge status runs/demo-20261130-120000""",
    "leaderboard": """examples:
  evomerge leaderboard runs/demo-20261130-120000
  evomerge leaderboard runs/demo-20261130-120000 --split report --format md
  evomerge leaderboard runs/pareto-20261130-120000 --pareto       # each member's Pareto front
  evomerge leaderboard runs/demo-20261130-120000 --all --format csv > members.csv""",
    "lineage": """examples:
  evomerge lineage runs/demo-20261130-120000                 # the best member's tree
  evomerge lineage runs/demo-20261130-120000 g2-c0
  evomerge lineage runs/demo-20261130-120000 --format dot | dot -Tsvg > tree.svg""",
    "export": """examples:
  evomerge export runs/demo-20261130-120000 g1-c1 out/g1-c1
  evomerge rebuild out/g1-c1 out/g1-c1-again          # from the export alone, without the run directory""",
    "rebuild": """examples:
  evomerge rebuild out/g1-c1 out/g1-c1-again
  evomerge rebuild out/g1-c1 /tmp/check --device cuda""",
    "compare": """examples:
  evomerge compare runs/demo-20261130-120000 g2-c1 arith-lora                  # held-out report documents
  evomerge compare runs/demo-20261130-120000 g2-c1 g1-c1 --split select --format json""",
    "check": """examples:
  evomerge check runs/demo-20261130-120000 && cp -r runs/demo-20261130-120000 /backup/""",
    "report": """examples:
  evomerge report runs/demo-20261130-120000                     # runs/demo-.../report.html
  evomerge report runs/demo-20261130-120000 -o report.html --plots plots/""",
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="evomerge", formatter_class=_Help,
                                description="Evolve a population of language models: mergekit crossover with "
                                            "CMA-ES weights, LoRA or noise-ES mutation, lm-eval selection, SQLite "
                                            "lineage.", epilog="Start with: evomerge run pipelines/demo.yaml; then "
                                                              "evomerge COMMAND --help for each command.")
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", help="what to do (each has --help)")

    def command(name: str, help: str):
        return sub.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".", epilog=EXAMPLES[name],
                              formatter_class=_Help)

    _run_commands(command)
    _inspect_commands(command)
    return p


def _run_commands(command) -> None:
    """The verbs that compute: run, resume, export, rebuild."""
    r = command("run", "start a run from a pipeline file")
    r.add_argument("pipeline", type=Path, help="the pipeline YAML file (see README.md, 'Pipeline file')")
    r.add_argument("--run-dir", type=Path, help="where the run lives; a new or empty directory "
                                                "(default: runs/<name>-<timestamp>)")
    r.add_argument("--quiet", action="store_true", help="print nothing but errors")

    r = command("resume", "continue a run after Ctrl-C, a crash or kill -9")
    r.add_argument("run_dir", type=Path, help=RUN_DIR)
    r.add_argument("--quiet", action="store_true", help="print nothing but errors")

    r = command("export", "write a member as an HF model directory with the recipe that rebuilds it")
    r.add_argument("run_dir", type=Path, help=RUN_DIR)
    r.add_argument("member", help="member name (evomerge leaderboard RUN_DIR --all lists them)")
    r.add_argument("out_dir", type=Path, help="a new or empty directory for the model and its recipe")
    r.add_argument("--keep-rebuilt", action="store_true",
                   help="keep the retired ancestors rebuilt for the export in RUN_DIR/members")

    r = command("rebuild", "rebuild an exported member from its recipe, without the run directory")
    r.add_argument("export_dir", type=Path, help="a directory written by `evomerge export`")
    r.add_argument("out_dir", type=Path, help="a new or empty directory for the rebuilt model")
    r.add_argument("--device", help="where to compute (default: the run's device)")


def _inspect_commands(command) -> None:
    """The verbs that read a run: status, leaderboard, lineage, compare, check, report."""
    r = command("status", "where a run stands: generation, step under way, best member, last events")
    r.add_argument("run_dir", type=Path, help=RUN_DIR)

    r = command("leaderboard", "members ranked by weighted score, one column per task")
    r.add_argument("run_dir", type=Path, help=RUN_DIR)
    r.add_argument("--split", choices=["select", "report"], default="select",
                   help="select: what selection saw; report: held-out documents")
    r.add_argument("--format", choices=["table", "md", "csv", "json"], default="table", help="output format")
    r.add_argument("--pareto", action="store_true", help="mark each member's Pareto front over the per-task scores "
                                                        "of the split (1: not dominated by any member)")
    r.add_argument("--all", action="store_true", help="list intermediates too (merges that were mutated at once)")

    r = command("lineage", "a member's ancestry back to the seeds, each edge with its operator and parameters")
    r.add_argument("run_dir", type=Path, help=RUN_DIR)
    r.add_argument("member", nargs="?", help="member name (default: the best by select score)")
    r.add_argument("--format", choices=["text", "dot"], default="text", help="text, or Graphviz DOT")

    r = command("compare", "member A against member B, document by document: per task and weighted, the paired "
                           "difference A − B with its 95% bootstrap interval, and who wins how many documents")
    r.add_argument("run_dir", type=Path, help=RUN_DIR)
    r.add_argument("a", help="member A's name")
    r.add_argument("b", help="member B's name")
    r.add_argument("--split", choices=["select", "report"], default="report",
                   help="report: held-out documents; select: what selection saw")
    r.add_argument("--format", choices=["text", "json"], default="text", help="output format")

    r = command("check", "verify a run directory and fold its write-ahead log in, so that it can be copied")
    r.add_argument("run_dir", type=Path, help=RUN_DIR)

    r = command("report", "one self-contained HTML page (lineage tree, leaderboard, fronts, charts), or PNG plots")
    r.add_argument("run_dir", type=Path, help=RUN_DIR)
    r.add_argument("-o", "--output", type=Path, help="HTML file to write (default: RUN_DIR/report.html)")
    r.add_argument("--plots", type=Path, metavar="DIR",
                   help="write the charts as PNG files into DIR (then the HTML only if -o is given too)")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("evomerge")
    except PackageNotFoundError:
        return "(not installed)"


def main(argv: Optional[list[str]] = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args) or 0
    except BrokenPipeError:  # `evomerge status RUN | head -3`: the reader has what it wanted
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that Python's own flush at exit does not fail again
        return 0
    except EvomergeError as e:
        print(f"evomerge: error: {e}", file=sys.stderr)
        return 2
    except sqlite3.DatabaseError as e:  # a store damaged after it was opened
        where = getattr(args, "run_dir", None) or "the run directory"
        print(f"evomerge: error: the run database of {where} cannot be read ({e}). Fix: `evomerge check {where}` "
              "says what is damaged; restore the directory from a copy made after `evomerge check`", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        where = getattr(args, "run_dir", None) or "<run dir>"
        print(f"\nevomerge: interrupted; every finished step is saved. Continue with: evomerge resume {where}",
              file=sys.stderr)
        return 130


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # models and data are local; never wait on a network that isn't there
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")  # the libraries' own bars; evomerge draws one set with rich
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    for name in ("lm_eval", "transformers", "datasets", "mergekit", "peft", "accelerate"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        import datasets

        datasets.disable_progress_bars()
    except ImportError:
        pass


def _run(args) -> int:
    from evomerge.config import load_pipeline

    load_pipeline(args.pipeline)  # fail on a bad file or run directory before importing torch and friends
    if args.run_dir is not None:
        from evomerge.store import check_new_run_dir

        check_new_run_dir(args.run_dir)
    _quiet_libraries()
    from evomerge.evolution import Run
    from evomerge.progress import Reporter

    reporter = Reporter(quiet=args.quiet)
    run = Run.start(args.pipeline, run_dir=args.run_dir, reporter=reporter)
    reporter.console.print(f"run directory: {run.dir}  (resume with: evomerge resume {run.dir})")
    args.run_dir = run.dir
    return _advance(run, args)


def _resume(args) -> int:
    _quiet_libraries()
    from evomerge.evolution import Run
    from evomerge.progress import Reporter

    reporter = Reporter(quiet=args.quiet)
    run = Run.resume(args.run_dir, reporter=reporter)
    reporter.console.print(f"resuming {run.dir}")
    return _advance(run, args)


def _advance(run, args) -> int:
    start = time.time()
    run.run()
    if not args.quiet:
        print(f"\nfinished in {time.time() - start:.0f} s\n")
        pareto = run.cfg.survivor_selection.kind == "nsga2"  # what selection went by
        for split in ("select", "report"):
            _leaderboard(argparse.Namespace(run_dir=run.dir, split=split, format="table", pareto=pareto, all=False))
    return 0


def _open(run_dir: Path):
    from evomerge.evolution import open_config
    from evomerge.store import open_store

    store = open_store(run_dir)
    return store, open_config(store)


def _leaderboard(args) -> int:
    from evomerge import leaderboard
    from evomerge.scores import ScoreBoard

    store, loaded = _open(args.run_dir)
    table = leaderboard.rows(store, loaded.pipeline, split=args.split, pareto=args.pareto, intermediates=args.all)
    names = [t.task for t in loaded.pipeline.fitness.tasks]
    if args.format == "table":
        spec = loaded.pipeline.fitness.split(args.split)
        weights = ", ".join(f"{t.task} {t.metric} ×{t.weight:g}" for t in loaded.pipeline.fitness.tasks)
        estimated = any(r.estimated for r in table)
        anchors = ScoreBoard(store, loaded.pipeline.fitness).anchors(args.split) if estimated else {}
        leaderboard.print_table(
            table, split=args.split, task_names=names,
            title=f"{loaded.pipeline.name}: {args.split} split '{spec.split}'"
                  f"{'' if spec.limit is None else f' (first {spec.limit} docs per task)'}",
            docs_note=f"weighted = {weights}; ± one standard error over documents; "
                      + (f"≈: estimated from {_anchor_count(anchors)} anchor documents per task (fitness.select."
                         "estimator), ± the estimate's standard error; seeds are scored on every document; green: "
                         "see the report split, where every member is scored on every document" if estimated else
                         "green: better than every seed member, its 95% paired interval above 0 (evomerge compare)"
                         if leaderboard.beats_every_seed(table)[1] else
                         "green: above every seed member's score (no per-document outcomes to pair in this run)")
                      + ("" if args.split == "report" else "; the report split is held out from selection")
                      + ("; front 1: no member is at least as good on every task and better on one"
                         if args.pareto else ""))
    else:
        print(leaderboard.render(table, fmt=args.format, split=args.split, task_names=names))
    return 0


def _anchor_count(anchors: dict) -> str:
    """`30 of 300` (or `30 of 283-300` where tasks differ in size), the anchors per task of an estimated split."""
    counts = sorted({len(a.docs) for a in anchors.values()})
    sizes = sorted({len(a.strata) for a in anchors.values()})
    span = lambda v: str(v[0]) if len(v) == 1 else f"{v[0]}-{v[-1]}"  # noqa: E731
    return f"{span(counts)} of {span(sizes)}" if counts else "some"


def _split_score(store, loaded, which: str = "select"):
    from evomerge.scores import ScoreBoard

    board = ScoreBoard(store, loaded.pipeline.fitness)

    def score(member_id: int) -> tuple[Optional[float], Optional[float], bool]:
        s = board.member(member_id, which)
        return s.weighted, s.weighted_se, bool(s.estimator)

    return score


def _member(store, name: Optional[str], loaded):
    if name is None:
        from evomerge import leaderboard

        table = leaderboard.rows(store, loaded.pipeline, split="select", vs_seeds=False)
        if not table:
            raise EvomergeError("the run has no members yet. Fix: wait for `evomerge run` to add its seeds")
        name = table[0].member
    record = store.member(name)
    if record is None:
        names = ", ".join(m.name for m in store.members())
        raise EvomergeError(f"no member named {name!r} in this run. Fix: use one of: {names}")
    return record


def _lineage(args) -> int:
    from evomerge import lineage

    store, loaded = _open(args.run_dir)
    member = _member(store, args.member, loaded)
    render = lineage.dot if args.format == "dot" else lineage.text_tree
    print(render(store, member, score=_split_score(store, loaded), report=_split_score(store, loaded, "report")))
    return 0


def _check_out_dir(out_dir: Path) -> None:
    """Refuse an output directory that holds something, before any work (export and rebuild write a new one)."""
    if out_dir.exists() and any(out_dir.iterdir()):
        raise EvomergeError(f"{out_dir} exists and is not empty. Fix: give a new directory")


def _export(args) -> int:
    _check_out_dir(args.out_dir)
    store, loaded = _open(args.run_dir)
    member = _member(store, args.member, loaded)
    _quiet_libraries()
    from evomerge.evolution import Run
    from evomerge.export import export
    from evomerge.registry import CROSSOVERS

    export(Run.resume(args.run_dir), member, args.out_dir, keep_rebuilt=args.keep_rebuilt)
    print(f"exported {member.name} to {args.out_dir}: an HF model directory, and evomerge_recipe.json with what "
          "rebuilds it")
    print(f"rebuild it without the run directory: evomerge rebuild {args.out_dir} OUT_DIR")
    if member.operator in CROSSOVERS:
        print(f"or with mergekit, while its parents are where they are: mergekit-yaml "
              f"{args.out_dir / 'mergekit_config.yml'} OUT_DIR --random-seed {member.params.get('seed', 0)}")
    return 0


def _rebuild(args) -> int:
    _check_out_dir(args.out_dir)
    _quiet_libraries()
    from evomerge.export import rebuild

    rebuild(args.export_dir, args.out_dir, device=args.device)
    print(f"rebuilt {args.export_dir} into {args.out_dir}")
    return 0


def _status(args) -> int:
    store, loaded = _open(args.run_dir)
    pipe = loaded.pipeline
    events = store.events(last=8)
    finished = bool(store.events(kind="run_finished"))
    gens = [g for g in range(1, pipe.generations + 1) if store.survivors(g) is not None]
    alive = [m for m in store.members() if m.state.value == "alive"]
    print(f"run        {args.run_dir} ({pipe.name}, seed {pipe.seed})")
    interrupted = bool(events) and events[-1][1] == "interrupted"
    state = "finished" if finished else "interrupted (Ctrl-C)" if interrupted else "in progress or stopped"
    print(f"state      {state}; generations done "
          f"{len(gens)}/{pipe.generations}; members {len(store.members())} ({len(alive)} alive)")
    from evomerge import leaderboard

    from evomerge.outcomes import fmt_pm

    table = [r for r in leaderboard.rows(store, pipe, split="select", vs_seeds=False) if r.score is not None]
    if table:
        best = table[0]
        print(f"best       {best.member} select {'≈' if best.estimated else ''}{fmt_pm(best.score, best.se)} (± one "
              "standard error" + ("; ≈ an estimate from anchor documents)" if best.estimated else ")"))
    for _, _, d in store.events(kind="member_failed"):
        print(f"failed     {d['name']}: {d['reason']} (left out of selection)")
    started = store.events(kind="run_started")
    if started and not finished and events:
        cmax = pipe.children_per_generation * pipe.generations
        done_children = len([m for m in store.members() if m.generation > 0 and m.state.value != "intermediate"])
        elapsed = events[-1][0] - started[0][0]
        print(f"now        {_step(store, events[-1])} ({time.time() - events[-1][0]:.0f} s ago)")
        if done_children:
            eta = elapsed / done_children * (cmax - done_children)
            print(f"progress   {done_children}/{cmax} children; about {eta / 60:.0f} min left at this pace")
        else:
            print(f"progress   0/{cmax} children; no estimate before the first child")
    _workers(args.run_dir)
    print("last scores:")
    for t, _, data in store.events(kind="scored", last=5):
        print(f"  {time.strftime('%H:%M:%S', time.localtime(t))} {_subject(store, data['subject']):<24} "
              f"{data['split']:<7} {_score(data.get('score'))}")
    print("last events:")
    for t, kind, data in events:
        print(f"  {time.strftime('%H:%M:%S', time.localtime(t))} {kind:<17} {json.dumps(data)[:100]}")
    return 0


def _workers(run_dir: Path) -> None:
    """What each Ray worker is doing, and candidates per minute, while a Ray run goes on."""
    path = run_dir / "workers.json"
    if not path.is_file():
        return
    try:
        state = json.loads(path.read_text())
    except ValueError:
        return  # being replaced: the next status shows it
    print(f"workers    {len(state['workers'])} Ray workers; {state['candidates_last_10_min'] / 10:.1f} candidates "
          "per minute over the last 10 minutes")
    for index, w in state["workers"].items():
        since = f" for {time.time() - w['since']:.0f} s" if "since" in w else ""
        print(f"  worker {index} {w.get('host', '?')} pid {w.get('pid', '?')}: {w['task']}{since}")


def _score(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def _subject(store, subject: str) -> str:
    kind, _, ident = subject.partition(":")
    return store.member(int(ident)).name if kind == "member" else f"CMA-ES candidate {ident}"


def _step(store, event: tuple[float, str, dict]) -> str:
    """What the run is doing, read from its last event."""
    _, kind, d = event
    if kind in ("crossover_started", "cma_ask", "cma_tell") or (kind == "scored" and
                                                                 d["subject"].startswith("candidate")):
        return "crossover: scoring CMA-ES candidates (merge + select split)"
    if kind == "es_iteration":
        return f"noise-ES mutation: iteration {d['iteration'] + 1} done, mean reward {d['reward']:.4f}"
    if kind == "mutation_progress":
        from evomerge.progress import duration

        if d.get("done") is None:
            return f"fine-tuning {d['member']} ({d['operator']}, {d['steps']} steps): starting"
        left = "" if d.get("eta") is None else f", {duration(d['eta'])} left"
        return f"fine-tuning {d['member']}, step {d['done']}/{d['steps']}{left} (loss {d['loss']:.3f})"
    if kind == "scored":
        return f"scoring members: {_subject(store, d['subject'])} done on {d['split']}"
    if kind == "member_added":
        return f"added {d['name']} ({d['operator']}); next: scoring, mutation or the next child"
    if kind == "generation_done":
        return f"generation {d['generation']} done; next generation"
    return kind.replace("_", " ")


def _report(args) -> int:
    output = args.output
    if output is None and args.plots is None:
        output = args.run_dir / "report.html"
    if output is not None and output.is_dir():
        raise EvomergeError(f"-o {output} is a directory. Fix: give a file name, e.g. {output / 'report.html'}")
    if args.plots is not None and args.plots.exists() and not args.plots.is_dir():
        raise EvomergeError(f"--plots {args.plots} is a file. Fix: give a directory for the PNG files")
    store, loaded = _open(args.run_dir)
    from evomerge.report import collect, render_html

    data = collect(store, loaded.pipeline, run_dir=args.run_dir.resolve())
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(render_html(data), encoding="utf-8")
        print(f"wrote {output}")
    if args.plots is not None:
        from evomerge.report import plots

        for path in plots.write_all(data, args.plots):
            print(f"wrote {path}")
    return 0


def _compare_scores(board, a, b, split: str):
    """Both members' scores on `split`, each on every document; an estimate from anchors pairs with nothing."""
    sa, sb = board.member(a.id, split), board.member(b.id, split)
    estimated = [m.name for m, s in ((a, sa), (b, sb)) if s.estimator]
    if estimated:
        raise EvomergeError(f"{' and '.join(estimated)} {'has' if len(estimated) == 1 else 'have'} on the "
                            f"{split} split only an estimate from anchor documents (fitness.select.estimator), "
                            "which pairs with nothing document by document. Fix: compare on the report split (the "
                            "default), where every member is scored on every document")
    if sa.doc_weights or sb.doc_weights:  # two members scored on every document, in a run that estimates the others
        sa, sb = board.of(f"member:{a.id}", split, exact=True), board.of(f"member:{b.id}", split, exact=True)
    for m, s in ((a, sa), (b, sb)):
        if s.weighted is None:
            raise EvomergeError(f"{m.name} has no {split} score on every task ({m.state.value}). Fix: compare "
                                f"members that `evomerge leaderboard --split {split}` lists with a score")
    return sa, sb


def _compare(args) -> int:
    from evomerge.outcomes import ITERATIONS, SEED
    from evomerge.scores import ScoreBoard

    store, loaded = _open(args.run_dir)
    fitness = loaded.pipeline.fitness
    board = ScoreBoard(store, fitness)
    a, b = (_member(store, name, loaded) for name in (args.a, args.b))
    sa, sb = _compare_scores(board, a, b, args.split)
    compared = board.compare(sa, sb)
    spec = fitness.split(args.split)
    where = (f"{args.split} split '{spec.split}'" + ("" if spec.limit is None else f", first {spec.limit} documents "
                                                                                  "per task"))
    if compared is None:
        old = [m.name for m, s in ((a, sa), (b, sb)) if not s.paired]
        note = (f"{' and '.join(old)}: these scores have no per-document outcomes (they were stored before evomerge "
                "kept them, or by a fitness function that gives none), so there is no paired comparison; the "
                "difference below has independent standard errors, a wider and cruder interval")
        diff = sa.weighted - sb.weighted
        se = None if sa.weighted_se is None or sb.weighted_se is None else (sa.weighted_se ** 2
                                                                            + sb.weighted_se ** 2) ** 0.5
        if args.format == "json":
            print(json.dumps({"a": a.name, "b": b.name, "split": args.split, "paired": False, "note": note,
                              "weighted": {"a": sa.weighted, "b": sb.weighted, "diff": diff, "se": se}}, indent=2))
        else:
            print(f"{a.name} − {b.name} on the {where}\nnote: {note}")
            print(f"weighted: {sa.weighted:.4f} − {sb.weighted:.4f} = {diff:+.4f}"
                  + ("" if se is None else f" ±{1.96 * se:.4f} (95%, independent)"))
        return 0
    per, whole = compared
    rows = [(t.task, sa.tasks[t.task], sb.tasks[t.task], per[t.task]) for t in fitness.tasks]
    rows.append(("weighted", sa.weighted, sb.weighted, whole))
    if args.format == "json":
        print(json.dumps({"a": a.name, "b": b.name, "split": args.split, "paired": True,
                          "bootstrap": {"resamples": ITERATIONS, "seed": SEED, "stratified_by": "task"},
                          "rows": [{"task": name, "a": va, "b": vb, "diff": p.diff, "low": p.low, "high": p.high,
                                    "docs": p.docs, "a_wins": p.a_wins, "b_wins": p.b_wins, "ties": p.ties}
                                   for name, va, vb, p in rows]}, indent=2))
        return 0
    width = max(len(name) for name, *_ in rows)
    print(f"A = {a.name}, B = {b.name}, on the {where}: paired over the same documents")
    print(f"{'':<{width}}  {'A':>6}  {'B':>6}  {'A − B':>7}  {'95% interval':<18}  {'docs':>5}  {'A wins':>6}  "
          f"{'B wins':>6}  {'ties':>6}")
    for name, va, vb, p in rows:
        print(f"{name:<{width}}  {va:6.4f}  {vb:6.4f}  {p.diff:+7.4f}  [{p.low:+.4f}, {p.high:+.4f}]  {p.docs:>5}  "
              f"{p.a_wins:6.1%}  {p.b_wins:6.1%}  {p.ties:6.1%}")
    weights = ", ".join(f"{t.task} ×{t.weight:g}" for t in fitness.tasks)
    verdict = {"A better": f"{a.name} is better beyond noise (the interval is above 0)",
               "B better": f"{b.name} is better beyond noise (the interval is below 0)",
               "within noise": "within noise: the interval contains 0"}[whole.verdict]
    print(f"weighted: {weights}. {verdict}.")
    print(f"(paired bootstrap over documents: {ITERATIONS} resamples, each task resampled on its own, seed {SEED})")
    return 0


def _check(args) -> int:
    """Fold the WAL into evomerge.db, verify the database and the files its records need; exit 2 on problems."""
    from evomerge.artifacts import Artifacts

    store, loaded = _open(args.run_dir)
    problems = store.check()
    files, notes = Artifacts(args.run_dir, store, loaded, bench=lambda: None).check()
    problems += files
    members = store.members()
    print(f"run        {args.run_dir} ({loaded.pipeline.name})")
    print(f"database   {'ok' if not problems else 'PROBLEMS'}; its write-ahead log is folded into "
          "evomerge.db, so the directory can be copied as it is")
    print(f"members    {len(members)} ({sum(m.state.value == 'alive' for m in members)} alive, "
          f"{sum(m.state.value == 'failed' for m in members)} failed)")
    for note in notes:
        print(f"note       {note}")
    for problem in problems:
        print(f"problem    {problem}")
    return 2 if problems else 0


_COMMANDS = {"run": _run, "resume": _resume, "status": _status, "leaderboard": _leaderboard,
             "lineage": _lineage, "export": _export, "rebuild": _rebuild, "report": _report, "check": _check,
             "compare": _compare}


if __name__ == "__main__":
    sys.exit(main())
