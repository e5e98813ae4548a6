"""What a mutation gains over its parent, with paired intervals: noise ES (pipelines/es-arithmetic.yaml) and a LoRA
fine-tune given the same wall time, both from the real SmolLM2-135M-Instruct, on 300 held-out arithmetic problems.

    python benchmarks/mutation_gain.py                 # about 15 minutes on 2 cores
    python benchmarks/mutation_gain.py --work DIR      # keep (and reuse) the two runs there

1. `evomerge run pipelines/es-arithmetic.yaml`: 20 ES iterations of 8 antithetic pairs, the reward the mean
   log-probability of fresh arithmetic training answers; its wall time T is read from the run's events (the mutation
   alone: from `mutation_started` to the child's `member_added`).
2. One LoRA step of the same pipeline's settings is timed on the same machine, and the LoRA run gets floor(T / step)
   steps (batch 8, learning rate 1e-3, the task's training split): the same wall time, from the same parent.
3. Each child against the parent on the report split: the paired difference over the same 300 problems with its 95%
   bootstrap interval (evomerge/outcomes.py), as `evomerge compare` gives it.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ES_PIPELINE = ROOT / "pipelines" / "es-arithmetic.yaml"
LORA = {"kind": "lora", "task": "evomerge_arith", "learning_rate": 1.0e-3, "batch_size": 8}


def run(pipeline: Path, run_dir: Path) -> None:
    from evomerge.evolution import Run
    from evomerge.progress import Reporter

    if run_dir.exists():
        Run.resume(run_dir, reporter=Reporter(quiet=False)).run()
    else:
        Run.start(pipeline, run_dir=run_dir, reporter=Reporter(quiet=False)).run()


def mutation_seconds(run_dir: Path) -> float:
    """From the mutation's start to its child's arrival, by the run's own events (resumes excluded: one piece)."""
    from evomerge.store import open_store

    store = open_store(run_dir)
    events = store.events()
    start = next(at for at, kind, _ in events if kind == "mutation_started")
    child = next(at for at, kind, d in events if kind == "member_added" and at >= start)
    store.close()
    return child - start


def lora_step_seconds(steps: int = 4) -> float:
    """One LoRA step on SmolLM2-135M (batch 8, the arithmetic training split), timed over a few steps after one."""
    import tempfile

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from evomerge.config import LoraSettings, load_pipeline
    from evomerge.fitness.lm_eval import Scorer
    from evomerge.models import resolve_model
    from evomerge.mutation.lora import train_lora

    path = resolve_model("smollm2-135m-instruct")
    tokenizer = AutoTokenizer.from_pretrained(path)
    examples = Scorer(load_pipeline(ES_PIPELINE).pipeline.fitness).train_examples(LORA["task"])
    times = []
    for n in (1, 1 + steps):
        model = AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32)
        spec = LoraSettings(task=LORA["task"], steps=n, learning_rate=LORA["learning_rate"],
                            batch_size=LORA["batch_size"])
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            train_lora(model, tokenizer, examples, spec, adapter_dir=Path(tmp) / "adapter")
            times.append(time.perf_counter() - t)
    return (times[1] - times[0]) / steps


def gain(run_dir: Path) -> tuple:
    """The child's name, its report score and SE, its paired comparison with its parent, and the parent's scores."""
    from evomerge.evolution import open_config
    from evomerge.scores import ScoreBoard
    from evomerge.store import open_store

    store = open_store(run_dir)
    board = ScoreBoard(store, open_config(store).pipeline.fitness)
    child = next(m for m in store.members() if m.generation == 1)
    a, b = board.member(child.id, "report"), board.member(child.parents[0], "report")
    _, whole = board.compare(a, b)
    store.close()
    return child.name, a.weighted, a.weighted_se, whole, b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "mutation-gain")
    parser.add_argument("--lora-steps", type=int, help="LoRA steps, instead of the calibration's (a first run's "
                        "measured rate is a better guide: a run's steps also save checkpoints)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)

    run(ES_PIPELINE, args.work / "es")
    es_seconds = mutation_seconds(args.work / "es")
    lora_file = args.work / "lora.yaml"
    if not lora_file.exists():
        step = es_seconds / args.lora_steps if args.lora_steps else lora_step_seconds()
        steps = max(1, math.floor(es_seconds / step))
        data = yaml.safe_load(ES_PIPELINE.read_text())
        data["name"] = "lora-arithmetic"
        data["population"] = str((ES_PIPELINE.parent / data["population"]).resolve())
        data["mutation"]["operators"] = [{**LORA, "steps": steps}]
        lora_file.write_text(yaml.safe_dump(data, sort_keys=False))
        print(f"LoRA step {step:.2f} s: {steps} steps in the ES mutation's {es_seconds:.0f} s")
    run(lora_file, args.work / "lora")
    lora_seconds = mutation_seconds(args.work / "lora")
    steps = yaml.safe_load(lora_file.read_text())["mutation"]["operators"][0]["steps"]

    print("\n| mutation of base | wall time | report acc (300 problems) | − parent, 95% paired interval | "
          "child wins / parent wins / ties |")
    print("|---|---:|---:|---|---|")
    parent = None
    for label, run_dir, seconds in (("noise ES, 20 iterations x 8 pairs", args.work / "es", es_seconds),
                                    (f"LoRA, {steps} steps", args.work / "lora", lora_seconds)):
        name, score, se, w, parent = gain(run_dir)
        noise = " within noise" if w.low <= 0 <= w.high else ""
        print(f"| {label} | {seconds:.0f} s | {score:.4f} ±{se:.3f} | {w.diff:+.4f} [{w.low:+.4f}, {w.high:+.4f}]"
              f"{noise} | {w.a_wins:.0%} / {w.b_wins:.0%} / {w.ties:.0%} |")
    print(f"\nparent (base): report {parent.weighted:.4f} ±{parent.weighted_se:.3f}")


if __name__ == "__main__":
    main()
