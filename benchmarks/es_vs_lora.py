"""Cost of one noise-ES iteration vs one LoRA step vs N plain forward passes, on the real SmolLM2-135M.

    python benchmarks/es_vs_lora.py            # N in (8, 16, 32), 3 repeats
    python benchmarks/es_vs_lora.py --quick    # N = 2, 1 repeat: a smoke test
    python benchmarks/es_vs_lora.py --device cuda --dtype bfloat16

Every cell runs in a fresh subprocess (`--one KIND N`), because peak RSS is per process; each child times one
warm-up-then-repeats measurement on the same 16 evomerge_arith training examples and prints one JSON line.
Targets: ES peak memory <= 1.2x the forward run's; low-rank ES iteration time <= 1.2x N forward passes on a CPU,
1.3x on a GPU. `ES low-rank` is what a run does (the population inside the forward pass, one antithetic pair per
forward); `ES low-rank, in place` writes the same noise into the weights, as noise ES did before.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

MODEL = "smollm2-135m-instruct"
BATCH = 16
MAX_LENGTH = 96  # loglik's default and LoraSettings' default: both runs see the same tokens
KINDS = {"forward": "forward xN", "es-lowrank": "ES low-rank", "es-inplace": "ES low-rank, in place",
         "es-full": "ES full-rank", "lora": "LoRA step"}
ES_KINDS = ("es-lowrank", "es-inplace", "es-full")
MEM_TARGET, TIME_TARGET, CPU_TIME_TARGET = 1.2, 1.3, 1.2  # the goals: GPU time 1.3x, CPU time 1.2x


def _step(kind: str, n: int, model, tokenizer, examples: list[tuple[str, str]]) -> Callable[[], None]:
    """The work one iteration of `kind` does, as a zero-argument callable."""
    import numpy as np
    import torch

    from evomerge.mutation import es
    from evomerge.mutation.rewards import loglik

    if kind == "forward":
        reward = loglik(model, tokenizer, examples, max_length=MAX_LENGTH)

        def forwards() -> None:
            for _ in range(n):
                reward()

        return forwards
    if kind in ES_KINDS:
        from evomerge.mutation.inforward import InForward

        reward = loglik(model, tokenizer, examples, max_length=MAX_LENGTH)
        settings = es.EsSettings(sigma=0.001, learning_rate=0.0005, rank=None if kind == "es-full" else 4,
                                 shaping="rank")
        params = es.es_parameters(model)
        rng = np.random.default_rng(0)  # fresh seeds every iteration, as in a run
        # what a run does: low-rank noise is evaluated inside the forward pass (one antithetic pair per forward,
        # `pairs_per_forward: 1`); `es-inplace` is the same noise written into the weights, as before
        population = InForward(model, params, rank=4) if kind == "es-lowrank" else None

        def iteration() -> None:
            es.iterate(params, reward, rng.integers(0, 2**31 - 1, size=n // 2).tolist(), settings,
                       population=population)

        return iteration
    if kind == "lora":
        from peft import LoraConfig, get_peft_model

        from evomerge.mutation.lora import _batch

        torch.manual_seed(0)
        peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                      task_type="CAUSAL_LM"))
        peft_model.train()
        optimiser = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-3)
        device = next(model.parameters()).device
        input_ids, labels, mask = (t.to(device) for t in _batch(tokenizer, examples, MAX_LENGTH))

        def step() -> None:
            peft_model(input_ids=input_ids, attention_mask=mask, labels=labels).loss.backward()
            optimiser.step()
            optimiser.zero_grad(set_to_none=True)

        return step
    raise ValueError(f"unknown kind {kind!r}; choose one of {', '.join(KINDS)}")


def measure_one(kind: str, n: int, *, repeats: int, examples_file: Path, device: str, dtype: str) -> dict:
    """Time one cell in this process: load, one warm-up, `repeats` timed iterations; then read the peaks."""
    import torch

    from evomerge.devices import resolve
    from evomerge.models import load_model, load_tokenizer, resolve_model

    device = resolve(device)
    cuda = device.startswith("cuda")
    path = resolve_model(MODEL)
    model = load_model(path, device=device, dtype=dtype)
    tokenizer = load_tokenizer(path)
    examples = [tuple(p) for p in json.loads(examples_file.read_text())]
    step = _step(kind, n, model, tokenizer, examples)
    times = []
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - t0)
    return {"kind": kind, "n": n, "seconds": statistics.median(times), "times": times,
            "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # Linux: KiB
            "cuda_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None}


def _run_child(kind: str, n: int, *, repeats: int, examples_file: Path, device: str, dtype: str) -> dict:
    cmd = [sys.executable, __file__, "--one", kind, str(n), "--repeats", str(repeats), "--examples", str(examples_file),
           "--device", device, "--dtype", dtype]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} N={n} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads([line for line in proc.stdout.splitlines() if line.startswith("{")][-1])


def _ratio(value: Optional[float], base: Optional[float]) -> str:
    return f"{value / base:.2f}x" if value is not None and base else "-"


def _row(label: str, n: str, cell: dict, time_base: float, fwd: dict) -> str:
    cuda = (f"{cell['cuda_mib']:>9.0f} {_ratio(cell['cuda_mib'], fwd['cuda_mib']):>7}"
            if cell["cuda_mib"] is not None else "")
    return (f"{label:<14} {n:>3} {cell['seconds']:>9.3f} {_ratio(cell['seconds'], time_base):>7} "
            f"{cell['rss_mib']:>8.0f} {_ratio(cell['rss_mib'], fwd['rss_mib']):>7} {cuda}").rstrip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="N = 2 and 1 repeat: a smoke test")
    parser.add_argument("--one", nargs=2, metavar=("KIND", "N"), help="internal: measure one cell, print JSON")
    parser.add_argument("--examples", type=Path, help="internal: JSON file of the (prompt, completion) batch")
    parser.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: cuda if there is one)")
    parser.add_argument("--dtype", default="float32", help="float32 | bfloat16 (default float32)")
    parser.add_argument("--sizes", type=int, nargs="+", help="population sizes N (default 8 16 32)")
    parser.add_argument("--kinds", nargs="+", choices=[k for k in KINDS if k != "lora"],
                        help="which ES kinds besides the forward baseline (default: all)")
    args = parser.parse_args()
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.one:
        print(json.dumps(measure_one(args.one[0], int(args.one[1]), repeats=args.repeats, examples_file=args.examples,
                                     device=args.device, dtype=args.dtype)))
        return
    if args.kinds and "forward" not in args.kinds:
        args.kinds = ["forward", *args.kinds]

    import torch

    from evomerge.config import FitnessSpec, TaskSpec
    from evomerge.fitness.lm_eval import Scorer

    sizes, repeats = ((2,), 1) if args.quick else (tuple(args.sizes or (8, 16, 32)), args.repeats)
    device = (torch.cuda.get_device_name(0) if args.device.startswith("cuda")
              else f"cpu ({torch.get_num_threads()} threads)")
    time_target = TIME_TARGET if args.device.startswith("cuda") else CPU_TIME_TARGET
    print(f"device: {device}   torch {torch.__version__}   model {MODEL} ({args.dtype})   batch {BATCH} examples   "
          f"median of {repeats} after 1 warm-up", flush=True)
    examples = Scorer(FitnessSpec(tasks=(TaskSpec(task="evomerge_arith"),))).train_examples("evomerge_arith")[:BATCH]
    with tempfile.TemporaryDirectory() as tmp:
        examples_file = Path(tmp) / "examples.json"
        examples_file.write_text(json.dumps(examples))
        child = dict(repeats=repeats, examples_file=examples_file, device=args.device, dtype=args.dtype)
        cells = {(k, n): _run_child(k, n, **child) for n in sizes for k in (args.kinds or KINDS) if k != "lora"}
        cells["lora", 1] = _run_child("lora", 1, **child)

    cuda_head = f" {'CUDA MiB':>9} {'x fwd':>7}" if cells["forward", sizes[0]]["cuda_mib"] is not None else ""
    print(f"\n{'':<14} {'N':>3} {'s/iter':>9} {'x fwd':>7} {'RSS MiB':>8} {'x fwd':>7}{cuda_head}")
    checks = []
    for n in sizes:
        fwd = cells["forward", n]
        for kind in ("forward", *ES_KINDS):
            if (kind, n) in cells:
                print(_row(KINDS[kind], str(n), cells[kind, n], fwd["seconds"], fwd))
        for kind in (k for k in ES_KINDS if (k, n) in cells):
            for mem in ("rss_mib", "cuda_mib"):
                if fwd[mem] is not None:
                    r = cells[kind, n][mem] / fwd[mem]
                    checks.append((f"{KINDS[kind]} N={n} peak {mem[:-4].upper()} {r:.2f}x <= {MEM_TARGET}x",
                                   r <= MEM_TARGET))
        if ("es-lowrank", n) in cells:
            r = cells["es-lowrank", n]["seconds"] / fwd["seconds"]
            checks.append((f"ES low-rank N={n} time {r:.2f}x <= {time_target}x N forwards", r <= time_target))
    first = cells["forward", sizes[0]]
    print(_row(KINDS["lora"], "-", cells["lora", 1], first["seconds"] / sizes[0], first))
    print(f"(LoRA step: time ratio to ONE forward pass, memory ratios to the forward run at N={sizes[0]})")

    print(f"\ntargets: ES peak memory <= {MEM_TARGET}x plain forward's; "
          f"low-rank ES iteration <= {time_target}x N forward passes")
    for text, ok in checks:
        print(f"  [{'ok' if ok else 'MISS'}] {text}")


if __name__ == "__main__":
    main()
