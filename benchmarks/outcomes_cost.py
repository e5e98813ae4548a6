"""What keeping per-document outcomes costs a score: the demo's select scoring of SmolLM2-135M-Instruct with outcomes
(lm-eval's logged samples, read per document, packed and stored) against the same scoring without them (the release
before: `log_samples=False`), alternated in one process so that both see the same machine.

    python benchmarks/outcomes_cost.py              # 5 rounds of each, the demo's 40 select documents per task
    python benchmarks/outcomes_cost.py --rounds 9 --docs 100
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--docs", type=int, default=40)
    args = ap.parse_args()

    from evomerge.cli import _quiet_libraries

    _quiet_libraries()
    import lm_eval.evaluator
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import evomerge.fitness.lm_eval as ours
    from evomerge.config import FitnessSpec
    from evomerge.models import resolve_model
    from evomerge.store import create_store

    spec = FitnessSpec.model_validate({"tasks": [{"task": "evomerge_arith"}, {"task": "evomerge_arc_easy"}],
                                       "select": {"split": "select", "limit": args.docs}})
    path = resolve_model("smollm2-135m-instruct")
    model = AutoModelForCausalLM.from_pretrained(path, torch_dtype="float32")
    tok = AutoTokenizer.from_pretrained(path)
    scorer = ours.Scorer(spec)
    store = create_store("memory", None, config={})
    evaluate, per_document = lm_eval.evaluator.evaluate, ours._per_document

    def without(**kw):  # the release before: no logged samples, no outcomes
        out = evaluate(**{**kw, "log_samples": False})
        return {**out, "samples": {task: [] for task in out["results"]}}

    def score(keep: bool, i: int) -> float:
        lm_eval.evaluator.evaluate = evaluate if keep else without
        ours._per_document = per_document if keep else (lambda samples, metrics: {})
        t = time.perf_counter()
        scored = scorer.evaluate(model, tok, "select")
        with store.transaction():
            store.add_scores(f"member:{i}-{keep}", split="select", limit=args.docs, fewshot=0, results=scored.results,
                             docs=scored.docs, outcomes=scored.outcomes if keep else None)
        return time.perf_counter() - t

    score(True, -1), score(False, -1)  # warm: the requests are built once, the kernels compiled
    times = {True: [], False: []}
    for i in range(args.rounds):
        for keep in ((True, False) if i % 2 else (False, True)):
            times[keep].append(score(keep, i))
    lm_eval.evaluator.evaluate, ours._per_document = evaluate, per_document
    base, with_ = statistics.median(times[False]), statistics.median(times[True])
    print(f"\nselect scoring of SmolLM2-135M-Instruct, {args.docs} documents x 2 tasks, median of {args.rounds}\n")
    print("| | seconds per score | ratio |")
    print("|---|---:|---:|")
    print(f"| without outcomes (the release before) | {base:.3f} | 1.000x |")
    print(f"| with outcomes (logged samples, packed, stored) | {with_:.3f} | {with_ / base:.3f}x |")
    print(f"\noutcomes add {100 * (with_ / base - 1):+.1f}% to a score")


if __name__ == "__main__":
    main()
