"""No answer outlives the weights it came from. lm-eval's request cache (`use_cache`) is keyed by the request, not by
the model (lm-eval issues #2715 and #4063), so with it one member would get another's answers. evomerge scores every
candidate of a crossover in one resident model whose weights are rewritten in place, and keeps one lm-eval model per
resident model: any cache keyed by request (lm-eval's, or one of ours) would show here as the old weights' answers."""
from __future__ import annotations

from pathlib import Path

import pytest

from evomerge.config import FitnessSpec
from evomerge.crossover.merge import load_into
from evomerge.fitness.lm_eval import Scorer
from evomerge.models import load_model, load_tokenizer

SPEC = {"tasks": [{"task": "evomerge_arith"}, {"task": "evomerge_arc_easy"}],
        "select": {"split": "select", "limit": 6}, "report": {"split": "report", "limit": 6}}
PROMPT = ("Question: What is 12 + 34?\nAnswer:", " 46")


def _loglikelihood(lm) -> float:
    from lm_eval.api.instance import Instance

    return lm.loglikelihood([Instance(request_type="loglikelihood", doc={}, arguments=PROMPT, idx=0)])[0][0]


@pytest.mark.parametrize("engine", ["fast", "reference"])
def test_a_scorer_answers_for_the_weights_its_model_holds_now(tiny_models: Path, engine: str):
    from safetensors.torch import load_file

    models = tiny_models / "models"
    spec = FitnessSpec.model_validate(SPEC)
    tok = load_tokenizer(models / "a")
    scorer = Scorer(spec, engine=engine)
    model = load_model(models / "a")
    scorer.evaluate(model, tok, "select")
    before = _loglikelihood(scorer._lm(model, tok))

    load_into(model, load_file(models / "b" / "model.safetensors"))  # what a crossover does to the next candidate
    after = _loglikelihood(scorer._lm(model, tok))
    scored = scorer.evaluate(model, tok, "select")

    fresh = Scorer(spec, engine=engine)
    b = load_model(models / "b")
    assert after == pytest.approx(_loglikelihood(fresh._lm(b, tok)), abs=1e-5)
    assert abs(after - before) > 1e-4  # the weights changed the answer: a cached one would be `before`
    reference = fresh.evaluate(b, tok, "select")
    assert scored.outcomes == reference.outcomes and scored.results == reference.results


def test_scoring_never_goes_through_lm_evals_cached_model(tiny_models: Path, monkeypatch):
    """lm-eval wraps a model in CachingLM only in `simple_evaluate(use_cache=...)`: the scorer calls `evaluate` with
    its own model object, so the wrapper cannot come in, whatever a caller sets."""
    import lm_eval.api.model

    def refuse(*args, **kwargs):
        raise AssertionError("the scorer built lm-eval's CachingLM")

    monkeypatch.setattr(lm_eval.api.model.CachingLM, "__init__", refuse)
    models = tiny_models / "models"
    scored = Scorer(FitnessSpec.model_validate(SPEC)).evaluate(load_model(models / "a"), load_tokenizer(models / "a"),
                                                               "select")
    assert scored.failure is None and set(scored.results) == {"evomerge_arith", "evomerge_arc_easy"}
