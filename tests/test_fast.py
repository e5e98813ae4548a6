"""The fast paths equal the reference ones: ResidentMerge equals mergekit for every method, and the fast scorer's
log-likelihoods and accuracies equal lm-eval's HFLM."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from evomerge.config import CrossoverSpec
from evomerge.crossover.fast import ResidentMerge
from evomerge.crossover.genome import Genome
from evomerge.crossover.merge import merge_in_memory


def _model(path: Path, dtype=torch.float32):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype)


@pytest.mark.parametrize("method,search,layer_group", [
    ("linear", ("weight",), None),
    ("ties", ("weight", "density"), 2),
    ("dare_ties", ("weight", "density"), None),
    ("dare_ties", ("weight", "density"), 2),
    ("task_arithmetic", ("weight",), 2),
    ("slerp", ("weight",), 3),
])
def test_resident_merge_equals_mergekit(tiny_models: Path, method, search, layer_group):
    models = tiny_models / "models"
    genome = Genome(CrossoverSpec(method=method, search=search, layer_group=layer_group), ("a", "b"), num_layers=4)
    paths = {"a": str(models / "a"), "b": str(models / "b")}

    def config(x):
        return genome.merge_config(genome.params(x), paths=paths, base_path=str(models / "base"), dtype="float32")

    x0 = [0.2 + 0.6 * (i % 3) / 2 for i in range(genome.dim())]
    fast = ResidentMerge(genome, config(x0), seed=7)
    model = _model(models / "base")
    # several candidates through the same resident parents, including densities clipped to 1 (no sparsification,
    # and for dare_ties no random draws, which shifts mergekit's random stream for every later tensor)
    for x in (x0, [1.3 - v for v in x0], [2.0 if i % 2 else 0.3 for i in range(genome.dim())]):
        fast.write(genome.params(x), model)
        reference = merge_in_memory(config(x), seed=7)
        ours = dict(model.named_parameters())
        assert reference.keys() <= ours.keys()
        diff = max(float((ours[k] - v).abs().max()) for k, v in reference.items())
        assert diff <= 1e-6, f"{method}: max abs diff {diff}"
        base = _model(models / "base")
        assert max(float((ours[k] - p).abs().max()) for k, p in base.named_parameters()) > 1e-4  # it did merge


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("kept", [True, False], ids=["stream kept (a CPU)", "redrawn per candidate (a GPU)"])
def test_dare_draws_mergekits_masks_in_either_mode_and_dtype(tiny_models: Path, monkeypatch, dtype, kept):
    """DARE's masks are mergekit's own: from the kept stream of uniforms (CPU) or redrawn with mergekit's op per
    candidate (GPU; run here on the CPU), in float32 and in bfloat16 (where the density is rounded to bfloat16
    before the uniform is compared with it), including candidates whose density is clipped to 1 (no draw)."""
    from evomerge.crossover.methods.dare_ties import DareTies

    monkeypatch.setattr(DareTies, "keeps_stream", staticmethod(lambda device: kept))
    models = tiny_models / "models"
    genome = Genome(CrossoverSpec(method="dare_ties", search=("weight", "density")), ("a", "b"), num_layers=4)
    paths = {"a": str(models / "a"), "b": str(models / "b")}

    def config(x):
        return genome.merge_config(genome.params(x), paths=paths, base_path=str(models / "base"), dtype=dtype)

    torch_dtype = getattr(torch, dtype)
    fast = ResidentMerge(genome, config([0.5, 0.37, 0.8, 0.61]), seed=7)
    assert (getattr(fast.method, "_stream") is not None) == kept
    model = _model(models / "base", torch_dtype)
    base = dict(_model(models / "base", torch_dtype).named_parameters())
    for x in ([0.5, 0.37, 0.8, 0.61], [0.9, 0.2, 0.4, 2.0], [1.2, 0.5, 0.7, 0.05]):
        fast.write(genome.params(x), model)
        ours = dict(model.named_parameters())
        for name, theirs in merge_in_memory(config(x), seed=7).items():
            # an entry is the base's exactly where every parent's delta was dropped (or disagreed): the masks
            assert torch.equal(ours[name] == base[name], theirs == base[name]), f"{name}: other entries dropped"
            if dtype == "float32":
                assert float((ours[name] - theirs).abs().max()) <= 1e-6


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_kth_largest_is_kthvalue(dtype):
    """TIES's threshold on a GPU (radix select by bincount, since torch's CUDA kthvalue runs one thread block per
    slice) is torch's kthvalue exactly: every k at the edges and in between, with ties, zeros and subnormals."""
    from evomerge.crossover.methods.ties import kth_largest

    gen = torch.Generator().manual_seed(0)
    for n in (1, 2, 255, 257, 4099):
        x = (0.02 * torch.randn(n, generator=gen)).abs().to(getattr(torch, dtype))
        if n > 8:
            x[::5] = x[3]  # thousands of exact ties
            x[1::7] = 0.0
            x[2::11] = torch.finfo(x.dtype).tiny / 4  # subnormal
        for k in sorted({1, 2, n // 3, n // 2, n - 1, n} & set(range(1, n + 1))):
            ours, theirs = kth_largest(x, k), x.kthvalue(n - k + 1).values
            assert ours.dtype == x.dtype and torch.equal(ours, theirs), (n, k, ours, theirs)
    with pytest.raises(ValueError, match="outside"):
        kth_largest(x, 0)


@pytest.mark.parametrize("bands", [True, False], ids=["rank bands (a CPU)", "kth_largest per candidate (a GPU)"])
def test_ties_masks_differ_from_mergekits_only_at_exact_ties(tmp_path: Path, monkeypatch, bands):
    """Task vectors whose magnitudes take three values, so the k-th largest is tied with thousands of entries.
    mergekit keeps k of them in its argsort's order (not a stable sort, so arbitrary among equals); the fast path
    keeps every entry equal to the k-th, holding one byte per weight instead of an int32 rank (a CPU), or nothing
    besides the task vector (a GPU: kth_largest per candidate; run here on the CPU). The merges may differ at those
    entries and nowhere else."""
    from safetensors.torch import load_file, save_file

    from conftest import make_model
    from evomerge.crossover.methods.ties import Ties

    monkeypatch.setattr(Ties, "keeps_bands", staticmethod(lambda device: bands))

    for name in ("base", "a", "b"):
        make_model(tmp_path / name, seed=0, layers=2)
    base = load_file(tmp_path / "base" / "model.safetensors")
    for name, seed in (("a", 1), ("b", 2)):
        gen = torch.Generator().manual_seed(seed)
        save_file({k: v + 0.01 * torch.randint(-2, 3, v.shape, generator=gen).float() for k, v in base.items()},
                  tmp_path / name / "model.safetensors", metadata={"format": "pt"})
    genome = Genome(CrossoverSpec(method="ties", search=("weight", "density")), ("a", "b"), num_layers=2)
    paths = {"a": str(tmp_path / "a"), "b": str(tmp_path / "b")}
    params = genome.params([0.7, 0.33, 0.4, 0.61])
    config = genome.merge_config(params, paths=paths, base_path=str(tmp_path / "base"), dtype="float32")
    model = _model(tmp_path / "base")
    fast = ResidentMerge(genome, config, seed=0)
    assert all(("bands" in t.aux) == bands for t in fast.tensors)
    fast.write(params, model)
    ours = dict(model.named_parameters())
    differing = 0
    for name, reference in merge_in_memory(config, seed=0).items():
        differs = (ours[name] - reference).abs().reshape(-1) > 1e-6
        at_a_tie = torch.zeros_like(differs)
        for parent in ("a", "b"):
            tv = (load_file(tmp_path / parent / "model.safetensors")[name] - base[name]).abs().reshape(-1)
            k = max(1, int(params[parent]["density"][0] * tv.numel()))
            at_a_tie |= tv == tv.kthvalue(tv.numel() - k + 1).values
        assert not (differs & ~at_a_tie).any(), f"{name}: differs from mergekit away from a tie"
        differing += int(differs.sum())
    assert differing > 0  # the ties are real: mergekit's order among them is not reproduced


def _lms(model_dir: Path):
    from lm_eval.models.huggingface import HFLM

    from evomerge.fitness.fast_lm import FastLM

    model = _model(model_dir)
    kwargs = dict(pretrained=model, device="cpu", batch_size=4)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    return FastLM(tokenizer=tok, **kwargs), HFLM(tokenizer=tok, **kwargs)


def test_fast_scorer_equals_hflm(tiny_models: Path):
    """Shared contexts, one- and many-token continuations, an empty context and a window longer than the model's."""
    from lm_eval.api.instance import Instance

    fast, ref = _lms(tiny_models / "models" / "a")
    fast._max_length = ref._max_length = 40  # so that the long request below is truncated on the left
    pairs = [("Question: What is 12 + 34?\nAnswer:", c) for c in (" 46", " 47", " 4", " 146 and more")]
    pairs += [("Question: What is 3 + 4?\nAnswer:", " 7"), ("", "What is it?"),
              ("Question: " + "12 + 34 " * 20 + "?\nAnswer:", " 46 46")]
    requests = [Instance("loglikelihood", {}, p, i) for i, p in enumerate(pairs)]
    ours, theirs = fast.loglikelihood(requests), ref.loglikelihood(requests)
    assert len(ours) == len(pairs)
    for (a, ga), (b, gb) in zip(ours, theirs):
        assert abs(a - b) <= 1e-4 and ga == gb
    rolling = [Instance("loglikelihood_rolling", {}, ("What is 12 + 34? " * 8,), 0)]
    assert abs(fast.loglikelihood_rolling(rolling)[0] - ref.loglikelihood_rolling(rolling)[0]) <= 1e-4


@pytest.mark.parametrize("task", ["evomerge_arith", "evomerge_arc_easy"])
def test_fast_scorer_gives_hflms_accuracy_on_a_task(tiny_models: Path, task):
    from evomerge.config import FitnessSpec
    from evomerge.fitness.lm_eval import Scorer

    spec = FitnessSpec.model_validate({"tasks": [{"task": task}], "select": {"split": "select", "limit": 30},
                                       "report": {"split": "report", "limit": 30}})
    fast, ref = _lms(tiny_models / "models" / "a")  # one model behind both

    def scorer_with(lm) -> Scorer:
        scorer = Scorer(spec)
        scorer._lms[id(lm.model)] = lm
        return scorer

    scorer = scorer_with(fast)
    ours = scorer.evaluate(fast.model, fast.tokenizer, "select")
    theirs = scorer_with(ref).evaluate(ref.model, ref.tokenizer, "select")
    assert (ours.lm, theirs.lm) == ("FastLM", "HFLM")
    assert (ours.results, ours.docs) == (theirs.results, theirs.docs)
    # requests are built once and reused: another model scored through the same Scorer gets the scores a fresh
    # Scorer gives it, and the first model's scores do not change
    other, _ = _lms(tiny_models / "models" / "b")
    scorer._lms[id(other.model)] = other
    assert scorer.evaluate(other.model, other.tokenizer, "select") == scorer_with(other).evaluate(
        other.model, other.tokenizer, "select")
    assert scorer.evaluate(fast.model, fast.tokenizer, "select") == ours


def test_fast_scorer_is_an_lm_eval_model(tiny_models: Path):
    """Registered by name, so lm-eval's own entry points run any task on it; generate_until works too."""
    import lm_eval
    from lm_eval.api.instance import Instance
    from lm_eval.api.registry import get_model
    from lm_eval.tasks import TaskManager

    from evomerge.fitness.fast_lm import FastLM
    from evomerge.fitness.lm_eval import TASKS_DIR, _read_task_config

    assert get_model("evomerge-fast") is FastLM
    fast, ref = _lms(tiny_models / "models" / "b")
    req = [Instance("generate_until", {}, ("Question: What is 12 + 34?\nAnswer:", {"until": ["\n"], "max_gen_toks": 8}),
                    0)]
    assert fast.generate_until(req) == ref.generate_until(req)
    manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=False)
    task = _read_task_config(manager, "evomerge_arith")  # its data files resolved against the YAML's folder
    out = lm_eval.simple_evaluate(model="evomerge-fast", model_args=f"pretrained={tiny_models / 'models' / 'b'}",
                                  device="cpu", tasks=[task], limit=5, task_manager=manager)
    assert out["results"]["evomerge_arith"]["acc,none"] >= 0
