"""Cost of one CMA-ES candidate (merge + fitness): mergekit-evolve's on-disk path vs evomerge's fast path.

    python benchmarks/candidate.py                     # SmolLM2-135M, TIES, 100 arithmetic documents, bf16, 3 rounds
    python benchmarks/candidate.py --task evomerge_arc_easy --dtype float32 --method linear
    python benchmarks/candidate.py --quick             # 10 documents, 1 round: a smoke test
    python benchmarks/candidate.py --method all --no-baseline   # every method's merge and the scorer vs their floors
    python benchmarks/candidate.py --shape 7b --device cuda --dtype bfloat16 --method all   # 7B-shaped, on a GPU
    python benchmarks/candidate.py --method layer_path --dtype float32   # a layer path: building vs one forward

Same process, same candidates, alternating rounds (a, b, a, b, ...), so that both paths see the same machine state:

(a) mergekit-evolve 0.1.5's OnDiskMergeEvaluator, step for step: mergekit `run_merge` to a directory, lm-eval's `hf`
    model loads the directory, `simple_evaluate` on the task, the directory is deleted. (mergekit-evolve itself does
    not start on a CPU-only install, so its two steps are called here directly; it loads the model in bfloat16,
    we give both paths the same dtype so that the work is identical.)
(b) evomerge: `ResidentMerge.write` into the resident model, then `Scorer.evaluate` with the evomerge-fast scorer.

The parents are two "children" of the base: the base plus Gaussian noise of 1% of each tensor's standard deviation
(every tensor changes, as in a full fine-tune, so TIES has every task vector to sparsify). Then the merge alone
is set against the bandwidth floor (base + parents + output bytes / measured copy bandwidth) and the fitness alone
against its FLOP floor (the matmul FLOPs of the tokens that must be run / measured matmul throughput).

`--method layer_path` times a data-flow-space candidate instead: (b) `PathModel.build` points a shell model at the
resident parents' layers in path order (no weights copied) and the scorer runs it, against (a) mergekit's
passthrough merge written to disk (what `mergekit-yaml` does), the model loaded from it, and the same scorer. Its
floor is the candidate's own forward pass (the scoring), which building must not add to.
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
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _children(base_dir: Path, root: Path, dtype: torch.dtype) -> dict[str, str]:
    from evomerge.models import load_model, load_tokenizer, save_model_dir

    paths = {"base": str(base_dir)}
    tok = load_tokenizer(base_dir)
    for name, seed in (("child-a", 1), ("child-b", 2)):
        model = load_model(base_dir, dtype=str(dtype).replace("torch.", ""))
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in model.parameters():
                p.add_((0.01 * p.float().std() * torch.randn(p.shape, generator=gen)).to(p.dtype))
        save_model_dir(model, tok, root / name)
        paths[name] = str(root / name)
        del model
    return paths


def _random_7b(root: Path, dtype: torch.dtype) -> Path:
    """A 7B-shaped Llama (Llama-2-7B dimensions) with random weights, for timing on a GPU."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from evomerge.models import resolve_model

    cfg = LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                      num_key_value_heads=32, vocab_size=49152, max_position_embeddings=4096)
    with torch.device("cpu"):
        model = LlamaForCausalLM(cfg).to(dtype)
    model.save_pretrained(root / "base7b")
    AutoTokenizer.from_pretrained(resolve_model("smollm2-135m-instruct")).save_pretrained(root / "base7b")
    return root / "base7b"


def _copy_bandwidth(device: str) -> float:
    """Bytes per second of a large tensor copy (read + write), median of 5."""
    x = torch.empty(128 * 2**20, dtype=torch.float32, device=device).normal_()
    y = torch.empty_like(x)
    times = []
    for _ in range(6):
        _sync(device)
        t = time.perf_counter()
        y.copy_(x)
        _sync(device)
        times.append(time.perf_counter() - t)
    return 2 * x.numel() * 4 / statistics.median(times[1:])


def _matmul_flops(device: str, dtype: torch.dtype, hidden: int, inter: int) -> float:
    """FLOP/s of the model's own MLP-shaped matmul on 2048 tokens, median of 5."""
    a = torch.randn(2048, hidden, dtype=dtype, device=device)
    b = torch.randn(hidden, inter, dtype=dtype, device=device)
    times = []
    for _ in range(6):
        _sync(device)
        t = time.perf_counter()
        a @ b
        _sync(device)
        times.append(time.perf_counter() - t)
    return 2 * 2048 * hidden * inter / statistics.median(times[1:])


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _tokens_needed(fitness, lm, limit: int) -> tuple[int, int]:
    """(tokens any exact scorer must run: the distinct prefixes of all inputs, positions it must project onto the
    vocabulary: the distinct prefixes that predict a continuation token)."""
    task = next(iter(fitness._tasks_for("select")["tasks"].values()))
    task.build_all_requests(limit=limit, rank=0, world_size=1)
    run, scored = set(), set()
    for inst in task.instances:
        ctx, cont = lm._encode_pair(*inst.args)
        seq = tuple(ctx + cont)[:-1]
        run.update(seq[:j] for j in range(1, len(seq) + 1))
        scored.update(seq[:j] for j in range(len(ctx), len(seq) + 1))
    return len(run), len(scored)


METHODS = ["linear", "ties", "dare_ties", "task_arithmetic", "slerp"]


def _resident_gib(merger) -> float:
    """GiB of the tensors a ResidentMerge holds (parents or task vectors, base, precompute), each storage once."""
    seen: dict = {}

    def walk(obj) -> None:
        if isinstance(obj, torch.Tensor):
            seen[obj.untyped_storage().data_ptr()] = obj.untyped_storage().nbytes()
        elif isinstance(obj, (list, tuple)):
            for x in obj:
                walk(x)
        elif isinstance(obj, dict):
            for x in obj.values():
                walk(x)

    for t in merger.tensors:
        walk([t.base, t.inputs, t.aux])
    walk(vars(merger.method))
    return sum(seen.values()) / 2**30


def _bench_method(method: str, args, paths: dict, model, tok, scorer, task_cfg, manager, root: Path, dtype) -> dict:
    """One merge method: (a) vs (b) in alternating rounds (unless --no-baseline), then the merge alone."""
    import lm_eval
    from mergekit.io.tasks import LoaderCache
    from transformers import AutoConfig

    from evomerge.config import CrossoverSpec
    from evomerge.crossover.fast import ResidentMerge
    from evomerge.crossover.genome import Genome
    from evomerge.crossover.merge import merge_to_disk

    spec = CrossoverSpec(method=method, search=("weight", "density") if "ties" in method else ("weight",))
    genome = Genome(spec, ("child-a", "child-b"), num_layers=AutoConfig.from_pretrained(paths["base"]).num_hidden_layers)
    # candidates as CMA-ES would propose them around its start point
    gen = torch.Generator().manual_seed(0)
    xs = [[min(1.0, max(0.1, v + 0.15 * float(torch.randn(1, generator=gen)))) for v in genome.x0()]
          for _ in range(args.rounds * 2 + 1)]
    configs = [genome.merge_config(genome.params(x), paths={"child-a": paths["child-a"], "child-b": paths["child-b"]},
                                   base_path=paths["base"], dtype=args.dtype) for x in xs]
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t1 = time.perf_counter()
    merger = ResidentMerge(genome, configs[0], seed=0, device=args.device)
    t2 = time.perf_counter()
    merger.write(genome.params(xs[0]), model)  # compiles the kernel (cached on disk by torch afterwards)
    scorer.evaluate(model, tok, "select")  # builds the tasks and tokenises the requests (once per run)
    t3 = time.perf_counter()
    setup = {"resident parents (precompute)": t2 - t1, "first candidate (compile, build tasks)": t3 - t2}

    def ours(x) -> tuple[float, float, float]:
        _sync(args.device)
        t = time.perf_counter()
        merger.write(genome.params(x), model)
        _sync(args.device)
        m = time.perf_counter()
        results = scorer.evaluate(model, tok, "select").results
        e = time.perf_counter()
        return e - t, m - t, results[args.task]["acc"]

    def theirs(config) -> tuple[float, float, float]:
        out = root / "merged"
        t = time.perf_counter()
        merge_to_disk(config, out, seed=0, device=args.device)
        m = time.perf_counter()
        # model_args' use_cache is the HF model's KV cache; lm-eval's request cache (simple_evaluate's use_cache,
        # keyed by request, not by model) stays off, or every candidate would get the first one's answers
        res = lm_eval.simple_evaluate(model="hf", model_args={"pretrained": str(out), "dtype": args.dtype,
                                                              "use_cache": True},
                                      tasks=[task_cfg], limit=args.docs, batch_size=args.batch_size,
                                      device=args.device, log_samples=False, verbosity="WARNING",
                                      task_manager=manager, bootstrap_iters=0)
        shutil.rmtree(out)
        LoaderCache().flush_all()
        e = time.perf_counter()
        return e - t, m - t, res["results"][args.task]["acc,none"]

    rows = {"a": [], "b": []}
    for r in range(args.rounds):
        for which in ("a", "b") if args.baseline else ("b",):
            i = 1 + 2 * r + (which == "b")
            total, merge, acc = theirs(configs[i]) if which == "a" else ours(xs[i])
            rows[which].append((total, merge, acc))
            print(f"{method} round {r + 1} ({which}): {total:7.2f} s (merge {merge:.3f} s) acc {acc:.3f}",
                  file=sys.stderr)
    # both paths on the same candidate give the same accuracy
    check = (theirs(configs[1])[2], ours(xs[1])[2]) if args.baseline else None
    merge_times = []
    for x in xs[:5]:
        _sync(args.device)
        t = time.perf_counter()
        merger.write(genome.params(x), model)
        _sync(args.device)
        merge_times.append(time.perf_counter() - t)
    out = {"method": method, "b": statistics.median(t for t, _, _ in rows["b"]), "merge": statistics.median(merge_times),
           "setup": setup, "check": check, "resident_gib": _resident_gib(merger),
           "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
           "inputs": 3 if genome.method.uses_base else 2}
    if args.baseline:
        out["a"] = statistics.median(t for t, _, _ in rows["a"])
        out["a_merge"] = statistics.median(m for _, m, _ in rows["a"])
    del merger
    return out


def path_proposals(parents: tuple[str, ...], depth: int, n: int):
    """A layer path's genome over parents of `depth` layers (paths of up to twice that), and `n` proposals as
    CMA-ES draws them around its start (sigma 0.2, seed 0)."""
    from evomerge.config import CrossoverOperator, PathSpec
    from evomerge.crossover.genome import Genome

    genome = Genome(CrossoverOperator(method="layer_path", path=PathSpec(max_layers=2 * depth)), parents, depth,
                    depths=(depth,) * len(parents))
    gen = torch.Generator().manual_seed(0)
    return genome, [[v + 0.2 * float(torch.randn(1, generator=gen)) for v in genome.x0()] for _ in range(n)]


def timed_path(resident, genome, x, scorer, tok, device: str) -> tuple[dict, float, float, Any]:
    """One layer-path candidate on the resident parents: (its params, seconds to build it, seconds to score it on
    the select split, the Scored)."""
    from evomerge.crossover.layer_path import LayerPath

    params = genome.params(x)
    LayerPath.check(genome, params)
    _sync(device)
    t = time.perf_counter()
    model = resident.build(params["path"])
    _sync(device)
    built = time.perf_counter()
    scored = scorer.evaluate(model, tok, "select")
    _sync(device)
    return params, built - t, time.perf_counter() - built, scored


def _bench_path(args, paths: dict, tok, scorer, root: Path) -> None:
    """A layer path per candidate: (b) build (no copy) + score, against (a) mergekit to disk + load + score."""
    from transformers import AutoConfig

    from evomerge.crossover.layer_path import LayerPath
    from evomerge.crossover.merge import merge_to_disk
    from evomerge.models import load_model

    parents = ("child-a", "child-b")
    depth = AutoConfig.from_pretrained(paths["base"]).num_hidden_layers
    genome, xs = path_proposals(parents, depth, args.rounds)
    t0 = time.perf_counter()
    resident = LayerPath.resident(genome, {p: paths[p] for p in parents},
                                  lambda path: load_model(path, dtype=args.dtype, device=args.device))
    setup = time.perf_counter() - t0
    scorer.evaluate(resident.build(genome.params(genome.x0())["path"]), tok, "select")  # builds the tasks once
    rows = []
    for r, x in enumerate(xs):
        params, built, forward, scored = timed_path(resident, genome, x, scorer, tok, args.device)
        row = {"layers": len(params["path"]), "label": LayerPath.describe(params), "build": built,
               "forward": forward, "acc_b": scored.results[args.task]["acc"]}
        if args.baseline:
            config = genome.merge_config(params, paths=paths, base_path=None, dtype=args.dtype)
            out = root / "merged"
            t = time.perf_counter()
            merge_to_disk(config, out, seed=0, device=args.device)
            m = time.perf_counter()
            loaded = load_model(out, dtype=args.dtype, device=args.device)
            loaded_at = time.perf_counter()
            row["acc_a"] = scorer.evaluate(loaded, tok, "select").results[args.task]["acc"]
            scorer.release(loaded)
            row.update(a_merge=m - t, a_load=loaded_at - m, a=time.perf_counter() - t)
            shutil.rmtree(out)
            del loaded
        rows.append(row)
        print(f"layer_path round {r + 1}: {row['layers']} layers, build {built * 1e3:.2f} ms, forward {forward:.2f} s"
              + (f"; mergekit {row['a_merge']:.2f} s + load {row['a_load']:.2f} s" if args.baseline else ""),
              file=sys.stderr)
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else \
        f"cpu ({torch.get_num_threads()} threads)"
    print(f"\nlayer_path, {args.shape} {args.dtype} on {device}: two {depth}-layer children of the base; {args.task} "
          f"select, {args.docs} documents; the parents held once per crossover (loaded in {setup:.1f} s)\n")
    print("| candidate | layers | (b) build ms | forward s | build / forward | (b) total s | (a) mergekit s | "
          "(a) load s | (a) total s | (a)/(b) | acc (a) = (b) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for i, r in enumerate(rows, 1):
        b = r["build"] + r["forward"]
        a = (f"{r['a_merge']:.2f} | {r['a_load']:.2f} | {r['a']:.2f} | {r['a'] / b:.1f}x | "
             f"{'yes' if r['acc_a'] == r['acc_b'] else 'NO'} ({r['acc_b']:.3f})") if args.baseline else "- | - | - | - | -"
        print(f"| {i}: `{r['label']}` | {r['layers']} | {r['build'] * 1e3:.2f} | {r['forward']:.2f} | "
              f"{r['build'] / r['forward']:.1e} | {b:.2f} | {a} |")
    print(json.dumps({"layer_path": rows, "setup": setup}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--method", default="ties", choices=[*METHODS, "all", "layer_path"],
                    help="a merge method, all five, or layer_path (a data-flow-space candidate)")
    ap.add_argument("--task", default="evomerge_arith", help="a 4-choice task shipped with evomerge")
    ap.add_argument("--docs", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--shape", default="smollm2", choices=["smollm2", "7b"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    ap.add_argument("--batch-size", type=int, default=None,
                    help="(a)'s lm-eval batch size; default: none given, as mergekit-evolve's OnDiskMergeEvaluator "
                         "(--batch-size unset), so lm-eval's HF model uses 1")
    ap.add_argument("--no-baseline", dest="baseline", action="store_false",
                    help="skip (a), mergekit-evolve's path: only evomerge's merge and scorer against their floors")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.docs, args.rounds = 10, 1

    from transformers import AutoConfig

    from evomerge.config import FitnessSpec
    from evomerge.devices import resolve
    from evomerge.fitness.lm_eval import Scorer, _read_task_config
    from evomerge.models import load_model, load_tokenizer, resolve_model

    args.device = resolve(args.device)
    dtype = getattr(torch, args.dtype)
    root = Path(tempfile.mkdtemp(prefix="evomerge-bench-"))
    try:
        t0 = time.perf_counter()
        base_dir = Path(resolve_model("smollm2-135m-instruct")) if args.shape == "smollm2" else _random_7b(root, dtype)
        paths = _children(base_dir, root, dtype)
        setup_children = time.perf_counter() - t0
        model_cfg = AutoConfig.from_pretrained(base_dir)
        fit_spec = FitnessSpec.model_validate({"tasks": [{"task": args.task}], "select": {"split": "select",
                                                                                    "limit": args.docs},
                                               "report": {"split": "report", "limit": args.docs}})
        scorer = Scorer(fit_spec, device=args.device, engine="fast")
        manager = scorer._manager
        task_cfg = {**_read_task_config(manager, args.task), "test_split": "select"}
        t0 = time.perf_counter()
        model = load_model(paths["base"], dtype=args.dtype, device=args.device)  # the resident evaluation model
        tok = load_tokenizer(paths["base"])
        load_time = time.perf_counter() - t0
        if args.method == "layer_path":
            del model
            return _bench_path(args, paths, tok, scorer, root)

        results = [_bench_method(m, args, paths, model, tok, scorer, task_cfg, manager, root, dtype)
                   for m in (METHODS if args.method == "all" else [args.method])]

        # floors
        numel = sum(p.numel() for p in model.parameters())
        elem = torch.finfo(dtype).bits // 8
        bandwidth = _copy_bandwidth(args.device)
        fast_lm = scorer._lm(model, tok)
        run_tokens, cont_tokens = _tokens_needed(scorer, fast_lm, args.docs)
        body = numel - model.get_input_embeddings().weight.numel()  # the tied head is counted below
        flops = 2 * body * run_tokens + 2 * model_cfg.hidden_size * model_cfg.vocab_size * cont_tokens
        matmul = _matmul_flops(args.device, dtype, model_cfg.hidden_size, model_cfg.intermediate_size)
        fit_times = []
        for _ in range(3):
            _sync(args.device)
            t = time.perf_counter()
            scorer.evaluate(model, tok, "select")
            _sync(args.device)
            fit_times.append(time.perf_counter() - t)
        bf = statistics.median(fit_times)
        model_gib = numel * elem / 2**30

        device = torch.cuda.get_device_name() if args.device.startswith("cuda") else \
            f"cpu ({torch.get_num_threads()} threads)"
        print(f"\n{args.shape} {args.dtype} on {device}; two children over their base; {args.task} select, "
              f"{args.docs} documents; (a) lm-eval batch size {args.batch_size or '1 (unset)'}; median of "
              f"{args.rounds} {'alternating ' if args.baseline else ''}rounds; evaluation model {model_gib:.2f} GiB "
              f"(loaded in {load_time:.1f} s)")
        print(f"\nfitness alone: evomerge-fast scorer {bf:.3f} s = {bf * matmul / flops:.2f}x its FLOP floor "
              f"{flops / matmul:.3f} s ({flops / 1e12:.2f} TFLOP: {run_tokens} tokens run, {cont_tokens} scored; "
              f"{matmul / 1e9:.0f} GFLOP/s matmul)")
        print(f"merge floor: (base + parents + output) bytes at {bandwidth / 1e9:.1f} GB/s copy\n")
        peak = "peak GiB" if args.device.startswith("cuda") else ""
        print(f"| method | (a) s | (b) s | (a)/(b) | merge s | merge floor s | x floor | mergekit run_merge s | "
              f"resident GiB | {peak} |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in results:
            floor = (r["inputs"] + 1) * numel * elem / bandwidth
            a = f"{r['a']:.3f}" if "a" in r else "-"
            ratio = f"{r['a'] / r['b']:.1f}x" if "a" in r else "-"
            am = f"{r['a_merge']:.3f}" if "a_merge" in r else "-"
            pk = f"{r['peak_gib']:.1f}" if r["peak_gib"] is not None else ""
            print(f"| {r['method']} | {a} | {r['b']:.3f} | {ratio} | {r['merge']:.3f} | {floor:.3f} | "
                  f"{r['merge'] / floor:.2f}x | {am} | {r['resident_gib']:.2f} | {pk} |")
        for r in results:
            print(f"{r['method']}: once per crossover " + ", ".join(f"{k} {v:.1f} s" for k, v in r["setup"].items())
                  + (f"; same candidate, accuracy (a) {r['check'][0]:.3f} vs (b) {r['check'][1]:.3f}"
                     if r["check"] else ""))
        print(f"children made in {setup_children:.1f} s")
        print(json.dumps({"results": results, "fitness": bf, "fitness_floor": flops / matmul,
                          "bandwidth": bandwidth, "numel": numel}))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
