"""How good is a select score estimated from anchor documents? On a run whose every candidate and member was scored
on every select document, each is estimated again from its outcomes on the anchors alone, exactly what scoring it
on the anchors gives (this script checks that on a member), and set against its score on every document.

    python benchmarks/baselines.py --pipeline pipelines/showcase-anchors.yaml --work runs/baselines-anchors --arm full
    python benchmarks/anchors.py runs/baselines-anchors/full            # the table (a minute or two on 2 cores)
    python benchmarks/anchors.py runs/baselines-anchors/full --n 15 30 60 --draws 20
    python benchmarks/anchors.py runs/baselines-anchors/full --n 30 --allocation proportional neyman --no-check

The run's anchors are chosen as a run with `fitness.select.estimator: {kind: anchors, n: N}` chooses them: from
its seeds' per-document select outcomes, with the run's seed (the first draw) and with seeds 1, 2, ... (the others,
so that the table says how much rides on one draw). Printed per n: documents scored per candidate against every
document, the mean and largest absolute error of the weighted estimate, its rank correlation with the full score
(Spearman, over every candidate and member), how often the full score lies within the estimate's 95% interval, and
in how many crossovers the estimates pick the child the full scores picked (in all, and in those whose full pick is
beyond noise over the runner-up; where not, how much worse on the full score the estimated pick is). Then what the
same documents give without anchors: how often a bootstrap of every select document (a fresh split of the same size)
picks the full scores' child, the ceiling for any estimate, and the error and picks of n random documents per task.
Goal (issue 29): ≥10x fewer documents, mean absolute error ≤ 0.02, the same child in ≥ 8 of 10 crossovers.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def load(run_dir: Path):
    """(fitness, seeds' per-task metric outcomes, every other subject's chosen-metric outcomes, crossovers): the
    subjects scored on every select document."""
    from evomerge.evolution import open_config
    from evomerge.store import open_store

    store = open_store(run_dir)
    loaded = open_config(store)
    fitness = loaded.pipeline.fitness
    key = {"split": fitness.select.split, "limit": fitness.select.limit, "fewshot": fitness.num_fewshot}

    def rows(subject: str) -> dict[str, dict[str, np.ndarray]]:
        out: dict = {}
        for r in store.scores(subject, **key):
            if r.packed is not None:
                out.setdefault(r.task, {})[r.metric] = r.outcomes()
        return out

    seeds = [rows(f"member:{m.id}") for m in store.members() if m.generation == 0 and m.state.value != "failed"]
    others = {}
    for m in store.members():
        if m.generation > 0 and not (store.member(m.id).params.get("candidate")):  # mutants (children reuse)
            r = rows(f"member:{m.id}")
            if r:
                others[m.name] = r
    crossovers = []
    for x in store.crossovers():
        names = []
        for c in store.candidates(x.id):
            r = rows(f"candidate:{c.id}")
            if r and c.score is not None:
                others[f"candidate {c.id}"] = r
                names.append(f"candidate {c.id}")
        if names:
            crossovers.append(names)
    store.close()
    return loaded, seeds, others, crossovers


def full_score(fitness, outcomes) -> float:
    """The weighted select score on every document, as the run computes it (Fitness.weighted)."""
    return fitness.weighted({t.task: {t.metric: float(outcomes[t.task][t.metric].mean())} for t in fitness.tasks})


def beyond_noise(fitness, others, better: str, worse: str) -> tuple[bool, tuple[float, float]]:
    """Whether `better` scores above `worse` beyond noise, and the 95% interval of the difference, paired over every
    select document."""
    from evomerge.outcomes import paired

    outcomes = [{t.task: others[k][t.task][t.metric] for t in fitness.tasks} for k in (better, worse)]
    whole = paired(*outcomes, {t.task: t.weight for t in fitness.tasks})[1]
    return whole.low > 0, (whole.low, whole.high)


def clear_picks(fitness, others, crossovers) -> set[int]:
    """The crossovers (their indices) whose full scores pick their child beyond noise over the runner-up."""
    # sorted is stable: ties keep the first, as the crossover takes
    ranked = [sorted(cands, key=lambda k: -full_score(fitness, others[k])) for cands in crossovers]
    return {i for i, r in enumerate(ranked) if len(r) > 1 and beyond_noise(fitness, others, r[0], r[1])[0]}


def resampled(fitness, others, crossovers, *, n: int | None = None, draws: int = 1000,
              seed: int = 0) -> tuple[float, float]:
    """In how many crossovers, on average over `draws` resamples of the select documents, the resampled scores pick
    the child the full scores pick, and the mean absolute error of the resampled weighted score over every candidate
    and member. n None: a bootstrap of every document (what a fresh select split of the same size
    would pick: the ceiling for any estimate); n: n documents per task drawn at random without replacement (anchors
    without strata)."""
    rng = np.random.default_rng(seed)
    weights = np.asarray([t.weight for t in fitness.tasks], dtype=float)
    # ties: the first, as the crossover takes
    chosen = [max(range(len(c)), key=lambda i: full_score(fitness, others[c[i]])) for c in crossovers]
    names = list(others)
    rows = [[names.index(k) for k in c] for c in crossovers]
    whole = np.asarray([full_score(fitness, others[k]) for k in names])
    sizes = {t.task: len(others[names[0]][t.task][t.metric]) for t in fitness.tasks}
    hits, error = 0, 0.0
    for _ in range(draws):
        picks = {t: rng.integers(0, size, size) if n is None else rng.choice(size, n, replace=False)
                 for t, size in sizes.items()}
        means = np.asarray([[others[k][t.task][t.metric][picks[t.task]].mean() for t in fitness.tasks]
                            for k in names]) @ weights / weights.sum()
        error += float(np.abs(means - whole).mean())
        hits += sum(int(np.argmax(np.round(means[r], 12))) == pick for r, pick in zip(rows, chosen))
    return hits / draws, error / draws


def evaluate(loaded, seeds, others, crossovers, *, n: int, seed: int, allocation: str = "proportional",
             clear: frozenset[int] = frozenset()) -> dict:
    from evomerge.fitness.anchors import Anchors, features

    fitness = loaded.pipeline.fitness
    tasks = [t.task for t in fitness.tasks]
    size = {t: len(seeds[0][t][m]) for t, m in ((t.task, t.metric) for t in fitness.tasks)}
    estimator = Anchors(Anchors.Settings(kind="anchors", n=n, allocation=allocation))
    anchors = {t: estimator.choose(t, features([s[t] for s in seeds], size[t]), seed=seed) for t in tasks}
    total = sum(t.weight for t in fitness.tasks)
    est, full, se = {}, {}, {}
    for name, r in others.items():
        values, errors = {}, {}
        for t in fitness.tasks:
            y = r[t.task][t.metric]
            a = anchors[t.task]
            values[t.task], errors[t.task] = estimator.estimate(a, y[list(a.docs)])
        est[name] = sum(t.weight * values[t.task] for t in fitness.tasks) / total
        se[name] = math.sqrt(sum(t.weight ** 2 * errors[t.task] ** 2 for t in fitness.tasks)) / total
        full[name] = full_score(fitness, r)
    names = list(others)
    err = np.asarray([est[k] - full[k] for k in names])
    from scipy.stats import spearmanr

    same, same_clear, regret, interval, costly = 0, 0, [], None, 0
    for i, cands in enumerate(crossovers):
        by_full = max(cands, key=lambda k: full[k])  # ties: the first, as the crossover takes
        by_est = max(cands, key=lambda k: est[k])
        same += by_full == by_est
        same_clear += i in clear and by_full == by_est
        if by_full != by_est:
            regret.append(full[by_full] - full[by_est])
            lost, span = beyond_noise(fitness, others, by_full, by_est)
            costly += lost
            if regret[-1] == max(regret):
                interval = span
    return {"n": n, "seed": seed, "docs": sum(len(a.docs) for a in anchors.values()),
            "all": sum(size.values()), "mae": float(np.abs(err).mean()), "max": float(np.abs(err).max()),
            "rho": float(spearmanr([est[k] for k in names], [full[k] for k in names]).statistic),
            "cover": float(np.mean([abs(est[k] - full[k]) <= 1.96 * se[k] for k in names])),
            "same": same, "same_clear": same_clear, "costly": costly, "crossovers": len(crossovers), "regret": max(regret, default=0.0),
            "interval": interval,
            "models": len(names)}


def check_outcomes(run_dir: Path, loaded, n: int) -> str:
    """Score one alive member on the anchors alone and compare with its full outcomes there."""
    from evomerge.fitness.anchors import Anchors, features
    from evomerge.fitness.lm_eval import Scorer
    from evomerge.models import load_model, load_tokenizer
    from evomerge.store import open_store

    store = open_store(run_dir)
    fitness = loaded.pipeline.fitness
    key = {"split": fitness.select.split, "limit": fitness.select.limit, "fewshot": fitness.num_fewshot}
    member = next(m for m in store.members() if m.generation > 0 and m.state.value == "alive" and m.weights)
    full = {(r.task, r.metric): r.outcomes() for r in store.scores(f"member:{member.id}", **key) if r.packed}
    seed_rows = [m for m in store.members() if m.generation == 0 and m.state.value != "failed"]
    estimator = Anchors(Anchors.Settings(kind="anchors", n=n))
    docs = {}
    for t in fitness.tasks:
        rows = [{r.metric: r.outcomes() for r in store.scores(f"member:{m.id}", **key) if r.task == t.task}
                for m in seed_rows]
        docs[t.task] = estimator.choose(t.task, features(rows, len(rows[0][t.metric])), seed=0).docs
    path = member.weights if Path(member.weights).is_absolute() else str(run_dir / member.weights)
    store.close()
    scorer = Scorer(fitness.model_copy(update={"select": fitness.select.model_copy(update={"estimator": None})}),
                    include_paths=loaded.include_paths())
    scored = scorer.evaluate(load_model(path), load_tokenizer(path), "select", docs=docs)
    off = sum(int(np.sum(np.asarray(scored.outcomes[t][m]) != full[t, m][list(docs[t])]))
              for t in docs for m in scored.outcomes[t])
    return (f"{member.name} scored on its {sum(len(d) for d in docs.values())} anchor documents alone: {off} "
            "outcomes differ from its outcomes there when scored on every document")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("run_dir", type=Path, help="a run scored on every select document (no estimator)")
    parser.add_argument("--n", type=int, nargs="+", default=[15, 30, 60], help="anchors per task")
    parser.add_argument("--allocation", nargs="+", default=["proportional"], choices=["proportional", "neyman"],
                        help="how anchors are shared among strata (fitness.select.estimator.allocation)")
    parser.add_argument("--draws", type=int, default=10, help="anchor draws per n (seeds 0, 1, ...)")
    parser.add_argument("--no-check", action="store_true", help="skip scoring a member on its anchors")
    args = parser.parse_args()
    loaded, seeds, others, crossovers = load(args.run_dir)
    print(f"{args.run_dir}: {len(seeds)} seeds; {len(others)} candidates and mutants scored on every select "
          f"document; {len(crossovers)} crossovers")
    print("| allocation | anchors per task | documents per candidate (of all) | fewer | mean abs error | largest | "
          "Spearman | 95% interval covers | same child | same child where the full pick is clear | "
          "misses beyond noise | worst miss |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---|---|---|---:|")
    fitness = loaded.pipeline.fitness
    clear = frozenset(clear_picks(fitness, others, crossovers))
    for allocation, n in ((a, n) for a in args.allocation for n in args.n):
        runs = [evaluate(loaded, seeds, others, crossovers, n=n, seed=s, allocation=allocation, clear=clear)
                for s in range(args.draws)]
        first = runs[0]

        def span(key: str, digits: int = 4) -> str:
            values = [r[key] for r in runs]
            return f"{first[key]:.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"

        def count(key: str) -> str:
            values = [r[key] for r in runs]
            return f"{min(values)}–{max(values)}, mean {np.mean(values):.1f}"

        low, high = first["interval"] or (0.0, 0.0)
        print(f"| {allocation} | {n} | {first['docs']} of {first['all']} | {first['all'] / first['docs']:.1f}x | "
              f"{span('mae')} | {span('max')} | {span('rho', 3)} | {span('cover', 2)} | "
              f"{first['same']} of {first['crossovers']} ({count('same')}) | "
              f"{first['same_clear']} of {len(clear)} ({count('same_clear')}) | {first['costly']} ({count('costly')}) | "
              f"{span('regret')} [{low:+.4f}, {high:+.4f}] |")
    print(f"(first value: the run's own draw, seed 0; in brackets: the range over {args.draws} draws, seeds 0 to "
          f"{args.draws - 1}; worst miss: the full score the estimated pick loses to the full pick, at most, with "
          "the first draw's 95% paired interval over every select document)")
    print(f"the full scores themselves pick their child beyond noise (over the runner-up, paired over every select "
          f"document) in {len(clear)} of {len(crossovers)} crossovers; a fresh select split of the same size (a "
          f"bootstrap of its documents) picks the same child in {resampled(fitness, others, crossovers)[0]:.1f} "
          f"of {len(crossovers)} on average")
    for n in args.n:
        same, error = resampled(fitness, others, crossovers, n=n)
        print(f"{n} documents per task at random (no strata): mean abs error {error:.4f}, the same child in "
              f"{same:.1f} of {len(crossovers)}, on average")
    if not args.no_check:
        print(check_outcomes(args.run_dir, loaded, args.n[0]))


if __name__ == "__main__":
    main()
