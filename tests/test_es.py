"""Noise ES: replay is bit-exact, equal antithetic rewards change nothing, noise is independent per tensor,
the update is accumulated in float32, and ES raises a real reward on a tiny model within a few iterations."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from evomerge.mutation.es import EsSettings, IterationRecord, es_parameters, iterate, perturb, replay, shape, update
from evomerge.mutation.rewards import loglik


def _model(tiny_models: Path, dtype=torch.float32):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_models / "models" / "base", dtype=dtype).eval()


def _tokenizer(tiny_models: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_models / "models" / "base")


TARGET = [("Question: What is 12 + 34?\nAnswer:", " 46")]


@pytest.mark.parametrize("rank", [None, 2])
def test_replay_rebuilds_the_member_bit_exactly(tiny_models: Path, rank):
    settings = EsSettings(sigma=0.01, learning_rate=0.005, rank=rank, shaping="rank")
    model, tok = _model(tiny_models), _tokenizer(tiny_models)
    reward = loglik(model, tok, TARGET)
    params = es_parameters(model)
    records = [iterate(params, reward, seeds=[100 * it + k for k in range(4)], settings=settings) for it in range(3)]
    child = {k: v.clone() for k, v in model.state_dict().items()}

    parent = _model(tiny_models)
    assert any(not torch.equal(parent.state_dict()[k], child[k]) for k in child)
    # the recipe keeps only seeds and coefficients
    replay(es_parameters(parent), [IterationRecord(r.seeds, r.coefficients) for r in records], settings)
    assert all(torch.equal(parent.state_dict()[k], child[k]) for k in child)


def test_equal_antithetic_rewards_give_a_zero_update(tiny_models: Path):
    assert shape([0.3, 0.7, 0.1], [0.3, 0.7, 0.1], "rank") == (0.0, 0.0, 0.0)
    assert shape([0.3, 0.7, 0.1], [0.3, 0.7, 0.1], "zscore") == (0.0, 0.0, 0.0)
    model = _model(tiny_models)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for rank in (None, 2):
        update(es_parameters(model), IterationRecord(seeds=(1, 2, 3), coefficients=shape([0.5] * 3, [0.5] * 3, "rank")),
               EsSettings(sigma=0.01, learning_rate=1.0, rank=rank, shaping="rank"))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_shaping_rewards_the_better_side_of_each_pair():
    c = shape([0.9, 0.1], [0.2, 0.8], "rank")
    assert c[0] > 0 > c[1]
    z = shape([2.0, 0.0], [0.0, 0.0], "zscore")
    assert z[0] > 0 and z[1] == 0


def test_noise_is_independent_per_tensor_and_regenerated_from_the_seed():
    a, b = torch.zeros(8, 8), torch.zeros(8, 8)
    perturb([a, b], seed=5, scale=1.0, rank=None)
    assert not torch.equal(a, b)  # same shape, same seed, different tensors: different noise
    a2, b2 = torch.zeros(8, 8), torch.zeros(8, 8)
    perturb([a2, b2], seed=5, scale=1.0, rank=None)
    assert torch.equal(a, a2) and torch.equal(b, b2)
    low = torch.zeros(64, 32)
    perturb([low], seed=5, scale=1.0, rank=2)
    assert torch.linalg.matrix_rank(low) == 2  # EGGROLL: A·Bᵀ of rank r
    assert 0.5 < float(low.std()) < 1.5       # unit variance entries whatever r


def test_update_is_accumulated_in_float32_for_bfloat16_models():
    """Many small coefficients: summed in bf16 each term would round away; in float32 they add up."""
    w = torch.zeros(4, 4, dtype=torch.bfloat16)
    seeds = tuple(range(64))
    settings = EsSettings(sigma=1.0, learning_rate=2 * 64, rank=None, shaping="rank")
    update([w], IterationRecord(seeds=seeds, coefficients=(1e-3,) * 64), settings)
    expected = torch.zeros(4, 4)
    for s in seeds:
        e = torch.zeros(4, 4)
        perturb([e], seed=s, scale=1e-3, rank=None)
        expected += e
    assert torch.allclose(w.float(), expected.to(torch.bfloat16).float(), atol=0, rtol=0)


def test_es_raises_a_synthetic_reward_within_a_few_iterations(tiny_models: Path):
    model, tok = _model(tiny_models), _tokenizer(tiny_models)
    reward = loglik(model, tok, TARGET)
    before = reward()
    settings = EsSettings(sigma=0.02, learning_rate=0.25, rank=4, shaping="rank")
    params = es_parameters(model)
    for it in range(6):
        iterate(params, reward, seeds=[1000 * it + k for k in range(8)], settings=settings)
    assert reward() > before + 0.5


def test_loglik_reward_is_minus_the_model_loss_on_the_targets(tiny_models: Path):
    """The reward projects to the vocabulary only at target positions; it must still be the usual token mean."""
    from evomerge.mutation.lora import _batch

    model, tok = _model(tiny_models), _tokenizer(tiny_models)
    pairs = TARGET + [("Question: 3 + 4?\nAnswer:", " 7 and more")]
    ids, labels, mask = _batch(tok, pairs, 96)
    with torch.no_grad():
        loss = float(model(input_ids=ids, attention_mask=mask, labels=labels).loss)
    assert abs(loglik(model, tok, pairs)() + loss) < 1e-5


def _llama(tmp_path: Path, *, tied: bool, bias: bool):
    """A tiny Llama with tied embeddings and biased projections: every kind of weight the in-forward hooks cover."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from conftest import make_tokenizer

    tok = make_tokenizer()
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, pad_token_id=0, bos_token_id=1, eos_token_id=1,
                      tie_word_embeddings=tied, attention_bias=bias, mlp_bias=bias)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():  # biases and norms away from their zero and one inits
            p.add_(0.05 * torch.randn(p.shape))
    return model, tok


@pytest.mark.parametrize("tied,bias", [(False, False), (True, True)])
@pytest.mark.parametrize("kind", ["loglik", "exact_match"])
def test_a_population_in_one_forward_equals_separate_perturbed_forwards(tmp_path: Path, tied, bias, kind):
    """EGGROLL's batched evaluation: group g of one forward sees θ + s_g·ε(seed_g) through hooks; each reward equals
    the reward of a copy of the model perturbed in place by the same noise (1e-5 in float32), and θ is untouched."""
    import copy

    from evomerge.mutation.es import forward_rewards
    from evomerge.mutation.inforward import InForward
    from evomerge.mutation.rewards import exact_match

    model, tok = _llama(tmp_path, tied=tied, bias=bias)
    seeds, sigma, rank = (11, 12, 13), 0.05, 2
    prompts = ["Question: What is 12 + 34?\nAnswer:", "Question: What is 3 + 4?\nAnswer:", "Question: 9 - 5?\n"]
    pairs = list(zip(prompts, [" 46", " 7", " 4"]))
    if kind == "exact_match":  # the answers one perturbation gives, so that the members' rewards differ
        one = copy.deepcopy(model)
        perturb(es_parameters(one), seeds[0], sigma, rank=rank)
        enc = tok(prompts[:2], return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
        out = one.generate(**enc, max_new_tokens=8, do_sample=False, pad_token_id=0)
        pairs[:2] = zip(prompts, tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True))
    make = {"loglik": lambda m: loglik(m, tok, pairs), "exact_match": lambda m: exact_match(m, tok, pairs)}[kind]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    expected = {}
    for i, s in enumerate(seeds):
        for sign in (1, -1):
            other = copy.deepcopy(model)
            perturb(es_parameters(other), s, sign * sigma, rank=rank)
            expected.setdefault(i, []).append(make(other)())
    params = es_parameters(model)
    pop = InForward(model, params, rank=rank)
    assert pop.plan is not None
    reward = make(model)
    for chunks in ([[0, 1, 2]], [[0], [1, 2]]):
        with pop:
            ours = forward_rewards(pop, reward, seeds, sigma, chunks)
        for i in range(len(seeds)):
            assert max(abs(a - b) for a, b in zip(ours[i], expected[i])) <= 1e-5, (chunks, i, ours[i], expected[i])
    rewards = [v for vs in expected.values() for v in vs]  # the perturbations do differ
    assert len({round(v, 6) for v in rewards}) == 6 if kind == "loglik" else min(rewards) < max(rewards)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not model._forward_hooks and reward() == make(copy.deepcopy(model))()  # hooks gone on exit


def test_in_forward_iterations_replay_bit_exactly_with_updates_only(tiny_models: Path):
    from evomerge.mutation.inforward import InForward

    settings = EsSettings(sigma=0.01, learning_rate=0.005, rank=2, shaping="rank")
    model, tok = _model(tiny_models), _tokenizer(tiny_models)
    params = es_parameters(model)
    reward, pop = loglik(model, tok, TARGET), InForward(model, params, rank=2)
    records = [iterate(params, reward, [100 * it + k for k in range(4)], settings, population=pop) for it in range(3)]
    assert all(r.in_forward for r in records)
    child = {k: v.clone() for k, v in model.state_dict().items()}
    parent = _model(tiny_models)
    replay(es_parameters(parent), [IterationRecord.of({"seeds": r.seeds, "coefficients": r.coefficients,
                                                       "in_forward": True}) for r in records], settings)
    assert all(torch.equal(parent.state_dict()[k], child[k]) for k in child)
    # the walk of an in-place iteration rounds θ; an in-forward iteration's replay must not walk
    walked = _model(tiny_models)
    replay(es_parameters(walked), [IterationRecord(r.seeds, r.coefficients) for r in records], settings)
    assert any(not torch.equal(walked.state_dict()[k], child[k]) for k in child)
