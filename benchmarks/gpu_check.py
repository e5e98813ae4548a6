"""Every GPU claim of evomerge measured by one command, within a time budget: one Markdown table and one JSON file.

    python benchmarks/gpu_check.py                                # on a GPU machine: cuda, 7B and 0.6B shapes, 480 s
    python benchmarks/gpu_check.py --steps merge --budget-s 400   # a second call for what the first had to skip
    python benchmarks/gpu_check.py --shape tiny --device cpu      # every step on tiny models (CI: tests/test_gpu_check.py)

Steps, in this order (each in its own process, so that a crash, a CUDA out-of-memory or a hang is recorded as that
step's failure, with its error, and the next step still runs; peak memory is per step):

- env: torch, CUDA, the GPUs, and the versions of the packages evomerge needs.
- merge (7B-shaped, Llama-2-7B dimensions, bfloat16): one crossover per method (linear, ties, dare_ties,
  task_arithmetic, slerp) of 2 and of 3 parents: a candidate's merge time against the bandwidth floor, peak memory
  (`torch.cuda.max_memory_allocated`) next to benchmarks/memory_plan.py's prediction, and whether it fits an
  80 GB GPU; and the scorer's time on 100 documents against its FLOP floor (benchmarks/candidate.py's floors);
  then a layer path over 2 parents: building a candidate against its own forward pass.
- masks (the 0.6B shape, float32): DARE-TIES's fast path on the device draws exactly the masks of mergekit's merge
  on the same device (`merge_in_memory(device=...)`), and TIES's fast path differs from mergekit only at exact ties
  of the k-th magnitude (where mergekit's unstable argsort decides).
- es (0.6B): one noise-ES iteration inside the forward pass (`pairs_per_forward` 1, 2, 4) and in place, against N
  plain forward passes; time and peak memory.
- run (0.6B): `evomerge run` of a one-generation pipeline with `device:` set, end to end; then the same run killed
  (-9) halfway and resumed, which must end with the same leaderboard and store.
- ray: with more than one GPU, the run step's pipeline with Ray at 1 worker and at one worker per GPU
  (benchmarks/ray_scaling.py's measure); on a CPU, 1 and 2 workers, so that the step itself is exercised.

The budget (--budget-s) is for all the steps: a step may use what is left less what the steps after it are kept
(RESERVE), the merge step starts no cell it cannot finish in that, and a step that would start too late is skipped
with the reason. The table and the JSON are rewritten after every step, so a command killed from outside
keeps what it measured. Random models are built in --work (default /dev/shm when it has room), with the tokenizer of
--tokenizer (default: .gpu/tok as ../shared/device/README.md sets it up, else the built-in SmolLM2's; the tiny
shape has its own). Nothing is downloaded.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]

STEPS = ("env", "merge", "masks", "es", "run", "ray")
# seconds each step is left when the steps before it run long (a step ends by its share: the budget less what the
# steps after it are left); about what each takes on an H100/H200 when its models are built
RESERVE = {"env": 10, "merge": 60, "masks": 45, "es": 45, "run": 120, "ray": 15}
SHAPES = {  # the 7B shape is Llama-2-7B's; the 0.6B one a Llama of about 0.55B weights (with SmolLM2's vocabulary)
    "7b": {"big": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=32),
           "mid": dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=28, num_attention_heads=16,
                       num_key_value_heads=8),
           "docs": 100, "run_docs": 20, "es_n": 8},
    "tiny": {"big": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2),
             "mid": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2),
             "docs": 8, "run_docs": 4, "es_n": 8},
}
METHODS = ("linear", "ties", "dare_ties", "task_arithmetic", "slerp")
GPU_GIB = 79.1  # an 80 GB GPU as torch reports it: the memory goal, whatever card runs the check
COLUMNS = ("step", "case", "status", "result", "reference", "ratio", "memory", "note")


# --------------------------------------------------------------------------------------------- the driver


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="7b", choices=sorted(SHAPES))
    ap.add_argument("--device", default="cuda", help="cuda | cuda:N | cpu (default cuda)")
    ap.add_argument("--dtype", default=None, choices=["bfloat16", "float32"],
                    help="the runs' and merges' dtype (default: bfloat16 on a GPU, float32 on a CPU)")
    ap.add_argument("--budget-s", type=float, default=480, help="seconds for all the steps (default 480)")
    ap.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated, in order (default {','.join(STEPS)})")
    ap.add_argument("--out", type=Path, default=None,
                    help="where gpu_check.md and gpu_check.json go (default $OUT, else runs/gpu_check)")
    ap.add_argument("--work", type=Path, default=None, help="where the random models are built (default: /dev/shm "
                                                            "when it has room, else a temporary folder)")
    ap.add_argument("--tokenizer", type=Path, default=None, help="a tokenizer folder for the 7b shape")
    ap.add_argument("--keep", action="store_true", help="keep --work's models afterwards")
    ap.add_argument("--step", help=argparse.SUPPRESS)      # internal: run one step in this process
    ap.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.dtype = args.dtype or ("float32" if args.device == "cpu" else "bfloat16")
    if args.step:
        _one_step(args)
        return

    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        _refuse(f"--steps names {', '.join(unknown)}, which is not a step", f"use some of {', '.join(STEPS)}")
    from evomerge.devices import unavailable

    why = unavailable(args.device)
    if why is not None:
        _refuse(f"--device {why}", "run it on the GPU machine, or check the CPU path with --shape tiny --device cpu")
    if args.tokenizer is not None and not (args.tokenizer / "tokenizer_config.json").exists():
        _refuse(f"--tokenizer {args.tokenizer} holds no tokenizer_config.json", "give a tokenizer folder")
    out = args.out or Path(os.environ.get("OUT") or ROOT / "runs" / "gpu_check")
    out.mkdir(parents=True, exist_ok=True)
    own_work = args.work is None
    work = args.work or _work_dir(args.shape)
    work.mkdir(parents=True, exist_ok=True)

    start = time.time()
    deadline = start + args.budget_s
    head = {"shape": args.shape, "device": args.device, "dtype": args.dtype, "budget_s": args.budget_s,
            "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(start)), "command": " ".join(sys.argv)}
    rows: list[dict] = []
    try:
        for i, step in enumerate(steps):
            left = deadline - time.time()
            share = max(min(left, RESERVE[step]), left - sum(RESERVE[s] for s in steps[i + 1:]))
            if left < 10:
                rows.append(_row(step, "-", "skipped", note=f"the budget of {args.budget_s:.0f} s was spent "
                                                            f"(rerun with --steps {step})"))
            else:
                print(f"gpu_check: {step} ({left:.0f} s of the budget left)", file=sys.stderr, flush=True)
                t0 = time.time()
                rows += _run_step(step, args, work, out, time.time() + share)
                head.setdefault("step_s", {})[step] = round(time.time() - t0, 1)
            head["wall_s"] = round(time.time() - start, 1)
            _write(out, head, rows)
    finally:
        if own_work and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print((out / "gpu_check.md").read_text())
    failed = [r for r in rows if r["status"] == "FAIL"]
    missed = [r for r in rows if r["status"] == "MISS"]
    print(f"gpu_check: {len(rows)} rows, {len(failed)} failed, {len(missed)} checks missed, "
          f"{sum(r['status'] == 'skipped' for r in rows)} skipped; {out / 'gpu_check.md'}", file=sys.stderr)
    sys.exit(1 if failed else 0)


def _refuse(problem: str, fix: str) -> None:
    print(f"error: {problem}. Fix: {fix}", file=sys.stderr)
    sys.exit(2)


def _work_dir(shape: str) -> Path:
    """/dev/shm (memory, fast to read back) when the 7B shape's 41 GB of models fit there and it has more room than
    the temporary folder's disk."""
    shm, tmp = Path("/dev/shm"), Path(tempfile.gettempdir())
    if shape == "7b" and shm.is_dir() and shutil.disk_usage(shm).free > max(45 * 2**30, shutil.disk_usage(tmp).free):
        return Path(tempfile.mkdtemp(prefix="evomerge-gpu-check-", dir=shm))
    return Path(tempfile.mkdtemp(prefix="evomerge-gpu-check-"))


def _run_step(step: str, args, work: Path, out: Path, deadline: float) -> list[dict]:
    """One step in a child process, given what is left of the budget; its rows, or one row saying why there are
    none (or no more)."""
    cmd = [sys.executable, __file__, "--step", step, "--shape", args.shape, "--device", args.device, "--dtype",
           args.dtype, "--work", str(work), "--deadline", str(deadline)]
    if args.tokenizer is not None:
        cmd += ["--tokenizer", str(args.tokenizer)]
    log_out, log_err = work / f"{step}.out", work / f"{step}.err"
    t0 = time.time()
    with open(log_out, "w") as so, open(log_err, "w") as se:
        proc = subprocess.Popen(cmd, stdout=so, stderr=se, start_new_session=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1"})
        try:
            code = proc.wait(timeout=max(1.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            code = None
    rows = [json.loads(line) for line in log_out.read_text().splitlines() if line.startswith("{")]
    err = log_err.read_text()
    shutil.copy(log_err, out / f"gpu_check.{step}.log")
    if code is None:
        rows.append(_row(step, "-", "skipped", note=f"its share of the budget ran out after {time.time() - t0:.0f} s: "
                                                    f"the rows above are what it finished (rerun with --steps {step})"))
    elif code != 0:
        last = [line for line in err.strip().splitlines() if line.strip()][-1:] or [f"exit status {code}"]
        rows.append(_row(step, "-", "FAIL", note=f"{last[0][:300]} (exit {code}; gpu_check.{step}.log)"))
        print(err[-4000:], file=sys.stderr)
    elif not rows:
        rows.append(_row(step, "-", "FAIL", note="the step reported nothing"))
    for r in rows:
        print(f"  {r['case']}: {r['status']} {r['result']} {r['note']}".rstrip(), file=sys.stderr)
    return rows


def _row(step: str, case: str, status: str, *, result: str = "", reference: str = "", ratio: str = "",
         memory: str = "", note: str = "") -> dict:
    return dict(step=step, case=case, status=status, result=result, reference=reference, ratio=ratio,
                memory=memory, note=note)


def _write(out: Path, head: dict, rows: list[dict]) -> None:
    (out / "gpu_check.json").write_text(json.dumps({**head, "rows": rows}, indent=1))
    lines = [f"gpu_check: shape {head['shape']}, {head['device']}, {head['dtype']}; budget {head['budget_s']:.0f} s, "
             f"{head.get('wall_s', 0):.0f} s used ("
             + ", ".join(f"{k} {v:.0f} s" for k, v in head.get("step_s", {}).items()) + f"); {head['started']}", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        lines.append("| " + " | ".join(str(r[c]).replace("|", "/").replace("\n", " ") for c in COLUMNS) + " |")
    (out / "gpu_check.md").write_text("\n".join(lines) + "\n")


# --------------------------------------------------------------------------------------------- one step


def _one_step(args) -> None:
    """Run `args.step`, printing each row as a JSON line as soon as it is measured."""
    import torch

    torch.manual_seed(0)
    try:
        STEP_FUNCTIONS[args.step](args, _emit(args.step))
    except Exception:  # noqa: BLE001 - the driver records it with the rows measured so far
        traceback.print_exc()
        sys.exit(1)


def _emit(step: str):
    def emit(case: str, status: str = "ok", **cells) -> None:
        print(json.dumps(_row(step, case, status, **cells)), flush=True)

    return emit


def _device(args) -> str:
    from evomerge.devices import resolve

    return resolve(args.device)


def _reset_peak(device: str) -> None:
    import gc

    import torch

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_gib(device: str) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None


def _timed(fn, device: str, repeats: int = 3) -> float:
    """Median seconds of `repeats` calls after one warm-up."""
    from candidate import _sync

    fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def step_env(args, emit) -> None:
    import platform
    from importlib import metadata

    import torch

    emit("python, torch", result=f"Python {platform.python_version()}, torch {torch.__version__}",
         note=f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU build of torch")
    if args.device.startswith("cuda"):
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            emit(f"GPU {i}", result=p.name, memory=f"{p.total_memory / 2**30:.1f} GiB",
                 note="" if p.total_memory / 2**30 >= GPU_GIB else f"under the {GPU_GIB} GiB goal: 7B cells may not fit")
    else:
        emit("device", result=f"cpu, {torch.get_num_threads()} threads")
    for pkg, needed in (("transformers", True), ("mergekit", True), ("lm_eval", True), ("peft", True), ("cma", True),
                        ("pydantic", True), ("safetensors", True), ("accelerate", False), ("ray", False)):
        try:
            version = metadata.version(pkg.replace("_", "-") if pkg == "lm_eval" else pkg)
        except metadata.PackageNotFoundError:
            emit(pkg, "FAIL" if needed else "skipped", result="missing",
                 note="install it (../shared/device/wheels)" if needed else "optional: the ray step is skipped")
            continue
        emit(pkg, result=version)


# ------------------------------------------------------------------ random models


def _tokenizer(args):
    if args.shape == "tiny":
        from conftest import make_tokenizer

        return make_tokenizer()
    from evomerge.models import load_tokenizer, resolve_model

    where = args.tokenizer or (ROOT / ".gpu" / "tok")
    return load_tokenizer(where if (where / "tokenizer_config.json").exists() else
                          resolve_model("smollm2-135m-instruct"))


def _models(args, which: str, dtype: str, emit) -> dict[str, str]:
    """base, p0, p1 (and p2, p0's files under another name) of the `which` shape in --work, built once: random
    weights on the device, each parent the base plus noise of 1% of each tensor's spread (a full fine-tune's kind of
    change, so every entry of every task vector is nonzero)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    root = args.work / f"{which}-{dtype}"
    names = ("base", "p0", "p1", "p2")
    if (root / "done").exists():
        return {n: str(root / n) for n in names}
    shutil.rmtree(root, ignore_errors=True)
    device = _device(args)
    t0 = time.time()
    tok = _tokenizer(args)
    cfg = LlamaConfig(vocab_size=len(tok), max_position_embeddings=2048, tie_word_embeddings=False,
                      pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      **SHAPES[args.shape][which])
    default = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, dtype))
    try:
        with torch.device(device):
            model = LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(default)
    model.save_pretrained(root / "base")
    tok.save_pretrained(root / "base")
    gen = torch.Generator(device=device).manual_seed(1)
    for name in ("p0", "p1"):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.01 * p.float().std().to(p.dtype) * torch.randn(p.shape, generator=gen, device=device,
                                                                        dtype=p.dtype))
        model.save_pretrained(root / name)
        tok.save_pretrained(root / name)
    (root / "p2").mkdir()
    for f in (root / "p0").iterdir():
        os.link(f, root / "p2" / f.name)
    weights = sum(p.numel() for p in model.parameters())
    del model
    (root / "done").touch()
    emit(f"{which} models", result=f"{weights / 1e6:,.1f}M weights, {dtype}", reference="base + 3 parents",
         note=f"built in {time.time() - t0:.0f} s")
    return {n: str(root / n) for n in names}


def _genome(method: str, parents: list[str], num_layers: int):
    from evomerge.config import CrossoverSpec
    from evomerge.crossover.genome import Genome
    from evomerge.registry import CROSSOVERS

    cls = CROSSOVERS.get(method)
    search = cls.parameters if method != "slerp" else ("weight",)
    return Genome(CrossoverSpec(method=method, search=search), tuple(parents), num_layers=num_layers)


# ------------------------------------------------------------------ masks


def step_masks(args, emit) -> None:
    import torch

    from evomerge.crossover.fast import ResidentMerge
    from evomerge.crossover.merge import merge_in_memory
    from evomerge.crossover.methods.ties import kth_largest
    from evomerge.models import load_model

    device = _device(args)
    paths = _models(args, "mid", "float32", emit)
    layers = SHAPES[args.shape]["mid"]["num_hidden_layers"]
    base = dict(load_model(paths["base"], device=device).named_parameters())

    def config(genome, x):
        return genome.merge_config(genome.params(x), paths={n: paths[n] for n in ("p0", "p1")},
                                   base_path=paths["base"], dtype="float32")

    # DARE-TIES: the masks (where an entry stays the base's) are mergekit's own, candidate after candidate
    genome = _genome("dare_ties", ["p0", "p1"], layers)
    xs = [[0.5, 0.37, 0.8, 0.61], [0.9, 0.2, 0.4, 0.95]]
    fast = ResidentMerge(genome, config(genome, xs[0]), seed=7, device=device)
    model = load_model(paths["base"], device=device)
    same = tensors = off = 0
    worst, where = 0.0, "-"
    with torch.no_grad():
        for x in xs:
            fast.write(genome.params(x), model)
            ours = dict(model.named_parameters())
            for name, theirs in merge_in_memory(config(genome, x), seed=7, device=device).items():
                theirs = theirs.to(device)
                tensors += 1
                same += bool(torch.equal(ours[name] == base[name], theirs == base[name]))
                diff = (ours[name] - theirs).abs()
                off += int((diff > 1e-6).sum())
                if float(diff.max()) > worst:
                    worst, where = float(diff.max()), name
    emit("DARE-TIES masks: fast path vs mergekit, both on " + device, "ok" if same == tensors and worst <= 1e-6
         else "MISS", result=f"{same}/{tensors} tensors with the same mask; max abs diff {worst:.1e}",
         reference="all equal, <= 1e-6", note=f"{len(xs)} candidates, float32, seed 7; {off} entries off by more "
                                             f"than 1e-6" + (f", the most in {where}" if off else ""))
    del fast

    # TIES: away from exact ties of the k-th magnitude the merges agree
    genome = _genome("ties", ["p0", "p1"], layers)
    x = [0.7, 0.33, 0.4, 0.61]
    params = genome.params(x)
    fast = ResidentMerge(genome, config(genome, x), seed=0, device=device)
    fast.write(params, model)
    ours = dict(model.named_parameters())
    differing = away = 0
    for name, reference in merge_in_memory(config(genome, x), seed=0, device=device).items():
        differs = (ours[name] - reference.to(device)).abs().reshape(-1) > 1e-6
        if not differs.any():
            continue
        at_a_tie = torch.zeros_like(differs)
        for parent in ("p0", "p1"):
            tv = (_tensor(paths[parent], name, device) - base[name]).abs().reshape(-1)
            k = max(1, int(params[parent]["density"][0] * tv.numel()))
            at_a_tie |= tv == kth_largest(tv, k)
        differing += int(differs.sum())
        away += int((differs & ~at_a_tie).sum())
    emit("TIES: fast path (kth_largest) vs mergekit on " + device, "ok" if away == 0 else "MISS",
         result=f"{differing} entries differ, {away} of them away from a tie", reference="0 away from a tie",
         note="mergekit's unstable argsort decides among equal magnitudes")


def _tensor(path: str, name: str, device: str):
    from safetensors import safe_open

    for f in sorted(Path(path).glob("*.safetensors")):
        with safe_open(str(f), framework="pt", device=device) as h:
            if name in h.keys():
                return h.get_tensor(name).float()
    raise KeyError(f"{path} has no tensor {name}")


# ------------------------------------------------------------------ es


def step_es(args, emit) -> None:
    import numpy as np

    from evomerge.config import FitnessSpec, TaskSpec
    from evomerge.fitness.lm_eval import Scorer
    from evomerge.models import load_model, load_tokenizer
    from evomerge.mutation import es
    from evomerge.mutation.inforward import InForward
    from evomerge.mutation.rewards import loglik

    device = _device(args)
    paths = _models(args, "mid", args.dtype, emit)
    model = load_model(paths["base"], dtype=args.dtype, device=device)
    tok = load_tokenizer(paths["base"])
    examples = Scorer(FitnessSpec(tasks=(TaskSpec(task="evomerge_arith"),))).train_examples("evomerge_arith")[:16]
    reward = loglik(model, tok, examples, max_length=96)
    n = SHAPES[args.shape]["es_n"]
    settings = es.EsSettings(sigma=0.001, learning_rate=0.0005, rank=4, shaping="rank")
    params = es.es_parameters(model)
    rng = np.random.default_rng(0)

    def forwards() -> None:
        for _ in range(n):
            reward()

    _reset_peak(device)
    base_s = _timed(forwards, device)
    base_mem = _peak_gib(device)
    emit(f"{n} forward passes", result=f"{base_s:.3f} s", memory=_gib(base_mem), note="16 examples x 96 tokens")
    cells = [("in place", None, 1)] + [(f"in the forward, {k} pair(s) per forward", "inforward", k)
                                       for k in (1, 2, 4) if k <= n // 2]
    for label, kind, ppf in cells:
        population = InForward(model, params, rank=4) if kind else None
        _reset_peak(device)
        s = _timed(lambda: es.iterate(params, reward, rng.integers(0, 2**31 - 1, size=n // 2).tolist(), settings,
                                      population=population, pairs_per_forward=ppf), device)
        mem = _peak_gib(device)
        emit(f"ES iteration, N={n}, {label}", result=f"{s:.3f} s", reference=f"{n} forwards {base_s:.3f} s",
             ratio=f"{s / base_s:.2f}x", memory=_gib(mem) + (f" ({mem / base_mem:.2f}x)" if mem else ""),
             note="rank 4")


def _gib(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f} GiB"


# ------------------------------------------------------------------ run


RUN_PIPELINE = """\
name: gpu-check
population: population.yaml
generations: 1
population_size: 3
children_per_generation: {children}
parents_per_child: 2
crossover: {{method: task_arithmetic, cma: {{sigma0: 0.3, popsize: 2, budget: 4}}}}
fitness:
  tasks: [{{task: evomerge_arith, metric: acc}}, {{task: evomerge_arc_easy, metric: acc}}]
  select: {{split: select, limit: {docs}}}
  report: {{split: report, limit: {docs}}}
seed: 0
dtype: {dtype}
device: {device}
executor: {executor}
"""


def _pipeline(args, emit, name: str, *, children: int = 1, executor: str = "{kind: serial}") -> Path:
    paths = _models(args, "mid", args.dtype, emit)
    root = args.work / name
    root.mkdir(exist_ok=True)
    members = "\n".join(f"  - {{name: {n}, model: {paths[n]}}}" for n in ("base", "p0", "p1"))
    (root / "population.yaml").write_text(f"name: gpu-check\nbase_model: base\nmembers:\n{members}\n")
    (root / "pipeline.yaml").write_text(RUN_PIPELINE.format(
        children=children, docs=SHAPES[args.shape]["run_docs"], dtype=args.dtype, device=args.device,
        executor=executor))
    return root


def _cli(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "evomerge.cli", *argv], capture_output=True, text=True)
    if check and done.returncode != 0:
        raise RuntimeError(f"evomerge {' '.join(argv[:1])} failed (exit {done.returncode}): {done.stderr[-2000:]}")
    return done


def step_run(args, emit) -> None:
    from conftest import run_and_kill, snapshot

    from evomerge.store import open_store

    root = _pipeline(args, emit, "run")
    t0 = time.time()
    _cli("run", str(root / "pipeline.yaml"), "--run-dir", str(root / "reference"), "--quiet")
    wall = time.time() - t0
    events = len(open_store(root / "reference").events())
    emit(f"evomerge run, device {args.device}", result=f"{wall:.1f} s",
         note=f"1 generation: 3 seeds, 1 child of 4 candidates, {SHAPES[args.shape]['run_docs']} documents per task "
              f"and split; {events} events")
    killed = root / "killed"
    if not run_and_kill(["run", str(root / "pipeline.yaml"), "--run-dir", str(killed), "--quiet"],
                        killed / "evomerge.db", events // 2):
        emit("kill -9 halfway, resume", "skipped", note="the run finished before it could be killed")
        return
    _cli("resume", str(killed), "--quiet")
    boards = [_cli("leaderboard", str(d)).stdout for d in (root / "reference", killed)]
    same_board, same_store = boards[0] == boards[1], snapshot(killed) == snapshot(root / "reference")
    emit("kill -9 halfway, resume", "ok" if same_board and same_store else "MISS",
         result=f"leaderboard {'the same' if same_board else 'DIFFERS'}, store {'the same' if same_store else 'DIFFERS'}",
         reference="the uninterrupted run", note=f"killed at event {events // 2} of {events}")


# ------------------------------------------------------------------ merge


def step_merge(args, emit) -> None:
    import torch
    from transformers import AutoConfig

    from candidate import _copy_bandwidth, _matmul_flops, _sync, _tokens_needed
    from evomerge.config import FitnessSpec
    from evomerge.crossover.fast import ResidentMerge
    from evomerge.fitness.lm_eval import Scorer
    from evomerge.models import load_model, load_tokenizer
    from memory_plan import plan_gib, tiny_parents

    device = _device(args)
    paths = _models(args, "big", args.dtype, emit)
    cfg = AutoConfig.from_pretrained(paths["base"])
    model = load_model(paths["base"], dtype=args.dtype, device=device)  # the resident evaluation model
    tok = load_tokenizer(paths["base"])
    numel = sum(p.numel() for p in model.parameters())
    largest = max(p.numel() for p in model.parameters())
    elem = torch.finfo(getattr(torch, args.dtype)).bits // 8
    docs = SHAPES[args.shape]["docs"]

    # the scorer against its FLOP floor
    scorer = Scorer(FitnessSpec.model_validate({"tasks": [{"task": "evomerge_arith"}],
                                                "select": {"split": "select", "limit": docs},
                                                "report": {"split": "report", "limit": docs}}),
                    device=device, engine="fast")
    score_s = _timed(lambda: scorer.evaluate(model, tok, "select"), device)
    run_tokens, cont_tokens = _tokens_needed(scorer, scorer._lm(model, tok), docs)
    body = numel - model.get_input_embeddings().weight.numel()
    flops = 2 * body * run_tokens + 2 * cfg.hidden_size * cfg.vocab_size * cont_tokens
    floor = flops / _matmul_flops(device, getattr(torch, args.dtype), cfg.hidden_size, cfg.intermediate_size)
    emit(f"score {docs} documents (evomerge-fast)", result=f"{score_s:.3f} s", reference=f"FLOP floor {floor:.3f} s",
         ratio=f"{score_s / floor:.1f}x", note=f"{numel / 1e6:,.1f}M weights; {run_tokens} tokens run, "
                                               f"{cont_tokens} scored")

    bandwidth = _copy_bandwidth(device)
    plan_root = tiny_parents(args.work / "plan")
    cells = [(m, 2) for m in METHODS] + [(m, 3) for m in METHODS if m != "slerp"]
    last = 0.0
    for i, (method, parents) in enumerate(cells):
        if args.deadline and time.time() + 1.2 * last > args.deadline:
            for m, k in cells[i:]:
                emit(f"{m}, {k} parents", "skipped", note="the budget would run out before it ends (rerun with "
                                                          "--steps merge)")
            return
        t0 = time.time()
        names = [f"p{j}" for j in range(parents)]
        genome = _genome(method, names, cfg.num_hidden_layers)
        gen = torch.Generator().manual_seed(0)
        xs = [[min(1.0, max(0.1, v + 0.15 * float(torch.randn(1, generator=gen)))) for v in genome.x0()]
              for _ in range(4)]
        config = genome.merge_config(genome.params(xs[0]), paths={n: paths[n] for n in names},
                                     base_path=paths["base"], dtype=args.dtype)
        _reset_peak(device)
        try:
            s = time.perf_counter()
            merger = ResidentMerge(genome, config, seed=0, device=device)
            setup = time.perf_counter() - s
            merger.write(genome.params(xs[0]), model)  # compiles the kernel
            times = []
            for x in xs[1:]:
                _sync(device)
                s = time.perf_counter()
                merger.write(genome.params(x), model)
                _sync(device)
                times.append(time.perf_counter() - s)
        except torch.OutOfMemoryError as e:
            emit(f"{method}, {parents} parents", "MISS", result="out of memory", note=str(e).splitlines()[0][:200])
            merger = None
            last = time.time() - t0
            continue
        peak = _peak_gib(device)
        del merger
        _, _, _, plan = plan_gib(method, parents, args.dtype, numel, largest, plan_root)
        inputs = parents + (1 if genome.method.uses_base else 0)
        floor = (inputs + 1) * numel * elem / bandwidth
        merge = statistics.median(times)
        fits = (peak if peak is not None else plan) <= GPU_GIB
        emit(f"{method}, {parents} parents", "ok" if fits else "MISS", result=f"merge {merge:.3f} s",
             reference=f"bandwidth floor {floor:.3f} s", ratio=f"{merge / floor:.1f}x",
             memory=f"peak {_gib(peak)}, plan {plan:.2f} GiB",
             note=("fits" if fits else "does NOT fit") + f" 80 GB; parents read in {setup:.0f} s")
        last = time.time() - t0
    if args.deadline and time.time() + 2 * last > args.deadline:
        emit("layer_path, 2 parents", "skipped", note="the budget would run out before it ends (rerun with --steps "
                                                      "merge)")
    else:
        del model
        _path_cell(args, paths, cfg, tok, scorer, device, emit)
    shutil.rmtree(Path(paths["base"]).parent, ignore_errors=True)  # 41 GB at 7B: room for the other steps


def _path_cell(args, paths: dict, cfg, tok, scorer, device: str, emit) -> None:
    """A layer path over two parents: building a candidate (pointing a shell at the resident parents' layers, no
    copy) against its own forward pass (the scoring), and the memory of the parents held for the crossover."""
    import torch

    from candidate import path_proposals, timed_path
    from evomerge.crossover.layer_path import LayerPath
    from evomerge.models import load_model

    genome, xs = path_proposals(("p0", "p1"), cfg.num_hidden_layers, 4)
    _reset_peak(device)
    try:
        s = time.perf_counter()
        resident = LayerPath.resident(genome, {n: paths[n] for n in ("p0", "p1")},
                                      lambda path: load_model(path, dtype=args.dtype, device=device))
        setup = time.perf_counter() - s
        scorer.evaluate(resident.build(genome.params(xs[0])["path"]), tok, "select")  # warm
        builds, forwards, layers = [], [], []
        for x in xs[1:]:
            params, build, forward, _ = timed_path(resident, genome, x, scorer, tok, device)
            builds.append(build)
            forwards.append(forward)
            layers.append(len(params["path"]))
    except torch.OutOfMemoryError as e:
        emit("layer_path, 2 parents", "MISS", result="out of memory", note=str(e).splitlines()[0][:200])
        return
    peak = _peak_gib(device)
    build, forward = statistics.median(builds), statistics.median(forwards)
    emit("layer_path, 2 parents", "ok", result=f"build {build * 1e3:.2f} ms",
         reference=f"its forward {forward:.3f} s", ratio=f"{build / forward:.1e}x",
         memory=f"peak {_gib(peak)}", note=f"paths of {min(layers)}-{max(layers)} layers; parents read in {setup:.0f} s")


# ------------------------------------------------------------------ ray


def step_ray(args, emit) -> None:
    import importlib.util

    import torch

    from ray_scaling import _measure

    if importlib.util.find_spec("ray") is None:
        emit("ray", "skipped", note="Ray is not installed here (pip install 'evomerge[ray]')")
        return
    if args.device.startswith("cuda"):
        n = torch.cuda.device_count()
        if n < 2:
            emit(f"ray: 1 vs {n} workers", "skipped", note=f"{n} GPU here: one worker per GPU needs more than one")
            return
        configs = [(k, f"{{kind: ray, workers: {k}, worker_resources: {{num_gpus: 1}}}}") for k in (1, n)]
    else:
        configs = [(k, f"{{kind: ray, workers: {k}}}") for k in (1, 2)]
    results = {}
    for workers, executor in configs:
        root = _pipeline(args, emit, f"ray{workers}", children=2, executor=executor)
        t0 = time.time()
        _cli("run", str(root / "pipeline.yaml"), "--run-dir", str(root / "run"), "--quiet")
        results[workers] = {**_measure(root / "run"), "wall": time.time() - t0}
    one = results[configs[0][0]]["per_minute"]
    for workers, r in results.items():
        emit(f"ray, {workers} worker(s)" + (" (one per GPU)" if args.device.startswith("cuda") else ""),
             result=f"{r['per_minute']:.1f} candidates/min", reference=f"1 worker {one:.1f}",
             ratio=f"{r['per_minute'] / one:.2f}x", note=f"start-up {r['startup']:.0f} s, run {r['wall']:.0f} s")


STEP_FUNCTIONS = {"env": step_env, "masks": step_masks, "es": step_es, "run": step_run, "merge": step_merge,
                  "ray": step_ray}


if __name__ == "__main__":
    main()
