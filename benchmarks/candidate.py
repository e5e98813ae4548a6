"""Cost of one CMA-ES candidate (merge + fitness): mergekit-evolve's on-disk path vs evomerge's fast path.

    python benchmarks/candidate.py                     # SmolLM2-135M, TIES, 100 arithmetic documents, bf16, 3 rounds
    python benchmarks/candidate.py --task evomerge_arc_easy --dtype float32 --method linear
    python benchmarks/candidate.py --quick             # 10 documents, 1 round: a smoke test
    python benchmarks/candidate.py --shape 7b --device cuda --dtype bfloat16   # 7B-shaped random Llama on a GPU

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--method", default="ties", choices=["linear", "ties", "dare_ties", "task_arithmetic", "slerp"])
    ap.add_argument("--task", default="evomerge_arith", help="a 4-choice task shipped with evomerge")
    ap.add_argument("--docs", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--shape", default="smollm2", choices=["smollm2", "7b"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    ap.add_argument("--batch-size", type=int, default=None,
                    help="(a)'s lm-eval batch size; default: none given, as mergekit-evolve's OnDiskMergeEvaluator "
                         "(--batch-size unset), so lm-eval's HF model uses 1")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.docs, args.rounds = 10, 1

    import lm_eval
    from mergekit.io.tasks import LoaderCache

    from evomerge.config import CrossoverSpec, FitnessSpec
    from evomerge.crossover.fast import ResidentMerge
    from evomerge.crossover.genome import Genome
    from evomerge.crossover.merge import merge_to_disk
    from evomerge.fitness.lm_eval import Scorer, _read_task_config
    from evomerge.models import load_model, load_tokenizer, resolve_model

    dtype = getattr(torch, args.dtype)
    root = Path(tempfile.mkdtemp(prefix="evomerge-bench-"))
    try:
        t0 = time.perf_counter()
        base_dir = Path(resolve_model("smollm2-135m-instruct")) if args.shape == "smollm2" else _random_7b(root, dtype)
        paths = _children(base_dir, root, dtype)
        setup_children = time.perf_counter() - t0
        spec = CrossoverSpec(method=args.method, search=("weight", "density") if "ties" in args.method else ("weight",))
        from transformers import AutoConfig

        model_cfg = AutoConfig.from_pretrained(base_dir)
        genome = Genome(spec, ("child-a", "child-b"), num_layers=model_cfg.num_hidden_layers)
        # candidates as CMA-ES would propose them around its start point
        gen = torch.Generator().manual_seed(0)
        xs = [[min(1.0, max(0.1, v + 0.15 * float(torch.randn(1, generator=gen)))) for v in genome.x0()]
              for _ in range(args.rounds * 2 + 1)]
        configs = [genome.merge_config(genome.params(x), paths={"child-a": paths["child-a"], "child-b": paths["child-b"]},
                                       base_path=paths["base"], dtype=args.dtype) for x in xs]

        fit_spec = FitnessSpec.model_validate({"tasks": [{"task": args.task}], "select": {"split": "select",
                                                                                    "limit": args.docs},
                                               "report": {"split": "report", "limit": args.docs}})
        scorer = Scorer(fit_spec, device=args.device, engine="fast")
        manager = scorer._manager
        task_cfg = {**_read_task_config(manager, args.task), "test_split": "select"}

        # (b) set-up, once per crossover: resident model, resident parents, compiled kernels, built tasks
        t0 = time.perf_counter()
        model = load_model(paths["base"], dtype=args.dtype, device=args.device)
        tok = load_tokenizer(paths["base"])
        t1 = time.perf_counter()
        merger = ResidentMerge(genome, configs[0], seed=0, device=args.device)
        t2 = time.perf_counter()
        merger.write(genome.params(xs[0]), model)  # compiles the kernel (cached on disk by torch afterwards)
        scorer.evaluate(model, tok, "select")  # builds the tasks and tokenises the requests
        t3 = time.perf_counter()
        setup = {"load resident model": t1 - t0, "resident parents (precompute)": t2 - t1,
                 "first candidate (compile, build tasks)": t3 - t2}

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
            for which in ("a", "b"):
                i = 1 + 2 * r + (which == "b")
                x = xs[i]
                total, merge, acc = theirs(configs[i]) if which == "a" else ours(x)
                rows[which].append((total, merge, acc))
                print(f"round {r + 1} ({which}): {total:7.2f} s (merge {merge:.3f} s) acc {acc:.3f}", file=sys.stderr)
        # both paths on the same candidate give the same accuracy
        check_a = theirs(configs[1])[2]
        check_b = ours(xs[1])[2]

        # floors
        numel = sum(p.numel() for p in model.parameters())
        elem = torch.finfo(dtype).bits // 8
        inputs = 3 if args.method in ("ties", "dare_ties", "task_arithmetic") else 2
        bytes_moved = (inputs + 1) * numel * elem
        bandwidth = _copy_bandwidth(args.device)
        merge_times = []
        for x in xs[:5]:
            _sync(args.device)
            t = time.perf_counter()
            merger.write(genome.params(x), model)
            _sync(args.device)
            merge_times.append(time.perf_counter() - t)
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

        a = statistics.median(t for t, _, _ in rows["a"])
        b = statistics.median(t for t, _, _ in rows["b"])
        am = statistics.median(m for _, m, _ in rows["a"])
        bm = statistics.median(merge_times)
        bf = statistics.median(fit_times)
        device = torch.cuda.get_device_name() if args.device.startswith("cuda") else \
            f"cpu ({torch.get_num_threads()} threads)"
        print(f"\n{args.shape} {args.dtype} on {device}; {args.method} of two children over their base; {args.task} "
              f"select, {args.docs} documents; (a) lm-eval batch size {args.batch_size or '1 (unset)'}; median of {args.rounds} "
              f"alternating rounds")
        print(f"\n{'per candidate':<44}{'seconds':>10}{'ratio':>10}")
        print(f"{'(a) mergekit-evolve on-disk (merge+load+eval)':<44}{a:>10.3f}{1:>9.2f}x")
        print(f"{'    of which mergekit run_merge to disk':<44}{am:>10.3f}")
        print(f"{'(b) evomerge fast (resident merge + scorer)':<44}{b:>10.3f}{a / b:>9.1f}x faster")
        print(f"\n{'merge alone':<44}{'seconds':>10}{'x floor':>10}")
        print(f"{'bandwidth floor':<44}{bytes_moved / bandwidth:>10.3f}{1:>9.2f}x   "
              f"({bytes_moved / 1e9:.2f} GB at {bandwidth / 1e9:.1f} GB/s copy)")
        print(f"{'evomerge ResidentMerge.write':<44}{bm:>10.3f}{bm * bandwidth / bytes_moved:>9.2f}x")
        print(f"{'mergekit run_merge (to disk)':<44}{am:>10.3f}{am * bandwidth / bytes_moved:>9.1f}x")
        print(f"\n{'fitness alone':<44}{'seconds':>10}{'x floor':>10}")
        print(f"{'FLOP floor':<44}{flops / matmul:>10.3f}{1:>9.2f}x   ({flops / 1e12:.2f} TFLOP: {run_tokens} tokens "
              f"run, {cont_tokens} scored; {matmul / 1e9:.0f} GFLOP/s matmul)")
        print(f"{'evomerge-fast scorer':<44}{bf:>10.3f}{bf * matmul / flops:>9.2f}x")
        print(f"\nonce per crossover (b): " + ", ".join(f"{k} {v:.1f} s" for k, v in setup.items()))
        print(f"children made in {setup_children:.1f} s; same candidate, accuracy (a) {check_a:.3f} vs (b) {check_b:.3f}")
        print(json.dumps({"a": a, "b": b, "ratio": a / b, "merge": bm, "merge_floor": bytes_moved / bandwidth,
                          "fitness": bf, "fitness_floor": flops / matmul, "setup": setup}))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
