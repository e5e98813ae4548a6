"""Noise Evolution Strategies on model weights: forward passes only, noise regenerated from integer seeds.

One iteration (Salimans et al. 2017, sec. 2, antithetic sampling; ES at scale, arXiv 2509.24372, alg. 1):
    for each antithetic pair i with seed s_i:   r_i+ = R(θ + σ ε_i),  r_i- = R(θ - σ ε_i)
    θ <- θ + lr / (2P) · Σ_i (f(r_i+) - f(r_i-)) ε_i            f = rank or z-score fitness shaping
As in ES at scale, σ does not divide the step: lr is a step size in weight units (their α = 5e-4 with σ = 1e-3).
Differences from the ES-at-scale code, on purpose:
- every tensor draws from its own stream, seeded from (s_i, tensor index) through numpy's SeedSequence, so tensors
  of the same shape never share noise (re-seeding each tensor with s_i would give them identical noise);
- the update is accumulated in float32 whatever the model dtype, then rounded once into the weights.
Low-rank noise (EGGROLL, arXiv 2511.16652): a matrix W (m×n) is perturbed by A·Bᵀ/√r with A (m×r), B (n×r) standard
normal from the seed, so entries keep unit variance; the update Σ c_i A_i B_iᵀ is one matmul of rank P·r.
Two ways to evaluate the perturbations, recorded per iteration:
- in the forward pass (low-rank noise with the loglik or exact_match reward; evomerge/mutation/inforward.py): the
  population's perturbations are applied inside one batched forward, x·(W + σ·A·Bᵀ) = x·W + σ·(x·A)·Bᵀ, as EGGROLL
  does; θ is never written while rewards are computed, one forward evaluates `pairs_per_forward` antithetic pairs;
- in place (full-rank noise, the select reward, `evaluation: in_place`): perturbation and restoration are written
  into the weights, tensor by tensor and, for large tensors, in chunks of at most CHUNK elements: the extra memory
  is one chunk of noise and one float32 accumulator of the same size.
The update is written in place either way.

A member made by ES is recorded as its parent plus, per iteration, the pair seeds and the shaped coefficients:
`replay` repeats exactly the same floating-point operations (the updates, and for in-place iterations the
perturbations and restorations), so it rebuilds the member bit-exactly on the same device type.
"""
from __future__ import annotations

import dataclasses
import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable, Literal, Optional

import numpy as np
from pydantic import Field, model_validator

from evomerge.config import Frozen, OperatorSettings
from evomerge.errors import EvomergeError
from evomerge.executor.base import MutationJob
from evomerge.mutation.base import Checkpoint, Mutant, MutationOperator
from evomerge.records import MemberRecord, MutationStep

if TYPE_CHECKING:
    from evomerge.preflight import Preflight
    from evomerge.workbench import Workbench


@dataclass(frozen=True)
class EsSettings:
    sigma: float
    learning_rate: float
    rank: Optional[int]   # None: full-rank noise everywhere; r: A·Bᵀ/√r for matrices (vectors stay full-rank)
    shaping: str          # "rank" | "zscore"


@dataclass(frozen=True)
class IterationRecord:
    """What replay needs from one iteration: a seed per antithetic pair and its shaped coefficient."""
    seeds: tuple[int, ...]
    coefficients: tuple[float, ...]
    rewards_plus: tuple[float, ...] = ()
    rewards_minus: tuple[float, ...] = ()
    in_forward: bool = False  # evaluated inside the forward pass: θ was not written before the update

    @classmethod
    def of(cls, data: dict) -> "IterationRecord":
        """From a committed step's or a recipe's data."""
        return cls(tuple(data["seeds"]), tuple(data["coefficients"]), in_forward=bool(data.get("in_forward")))

    def recipe(self) -> dict:
        """What a recipe keeps of it: what replay needs."""
        return {"seeds": list(self.seeds), "coefficients": list(self.coefficients),
                **({"in_forward": True} if self.in_forward else {})}


def _stream_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, index]).generate_state(1, dtype=np.uint64)[0] >> 1)


def _generator(seed: int, index: int, device):
    import torch

    return torch.Generator(device=device).manual_seed(_stream_seed(seed, index))


def _low_rank(p, rank: Optional[int]) -> bool:
    return rank is not None and p.ndim == 2 and rank < min(p.shape)


def _factors(p, seed: int, index: int, rank: int):
    import torch

    g = _generator(seed, index, p.device)
    a = torch.randn(p.shape[0], rank, generator=g, device=p.device, dtype=torch.float32)
    b = torch.randn(p.shape[1], rank, generator=g, device=p.device, dtype=torch.float32)
    return a, b


def _chunks(p, seed: int, index: int):
    """Full-rank noise for a tensor, as (flat slice of p, float32 noise for it) pairs: each chunk of CHUNK elements has
    its own stream, seeded from (seed, tensor, chunk), so no buffer ever exceeds one chunk."""
    import torch

    flat = p.view(-1)
    for k, start in enumerate(range(0, flat.numel(), CHUNK)):
        part = flat[start:start + CHUNK]
        g = _generator(seed, index * 65_536 + k, p.device)
        yield part, torch.randn(part.shape, generator=g, device=p.device, dtype=torch.float32)


CHUNK = 1 << 21  # 2M elements (8 MB of float32): the largest noise buffer full-rank ES ever holds


def noise(p, seed: int, index: int, rank: Optional[int]):
    """ε of tensor `index` for `seed`, whole and in float32: what `perturb` adds to it with scale 1."""
    import torch

    if _low_rank(p, rank):
        a, b = _factors(p, seed, index, rank)
        return (a @ b.t()) / math.sqrt(rank)
    return torch.cat([n.reshape(-1) for _, n in _chunks(p, seed, index)]).view(p.shape)


def perturb(params: list, seed: int, scale: float, *, rank: Optional[int]) -> None:
    """θ_t += scale · ε_t for every tensor t, in place; ε regenerated from (seed, t)."""
    perturb_many(params, [(seed, scale)], rank=rank)


def perturb_many(params: list, terms: list[tuple[int, float]], *, rank: Optional[int]) -> None:
    """θ_t += Σ scale_k · ε_t(seed_k) in one pass over the weights (low-rank: one matmul of rank r·len(terms))."""
    import torch

    with torch.no_grad():
        for index, p in enumerate(params):
            if _low_rank(p, rank):
                factors = [(_factors(p, seed, index, rank), scale) for seed, scale in terms]
                a = torch.cat([f[0] * scale for f, scale in factors], dim=1).to(p.dtype)
                b = torch.cat([f[1] for f, _ in factors], dim=1).to(p.dtype)
                p.addmm_(a, b.t(), alpha=1 / math.sqrt(rank))
            else:
                for seed, scale in terms:
                    for part, noise in _chunks(p, seed, index):
                        part.add_(noise.to(p.dtype), alpha=scale)


def update(params: list, record: IterationRecord, settings: EsSettings) -> None:
    """θ += lr / (2P) · Σ_i c_i ε_i, accumulated in float32 chunk by chunk and rounded once into θ."""
    import torch

    step = settings.learning_rate / (2 * len(record.seeds))
    if not any(record.coefficients):
        return  # equal rewards in every pair: no information, no change
    with torch.no_grad():
        for index, p in enumerate(params):
            if _low_rank(p, settings.rank):
                factors = [_factors(p, s, index, settings.rank) for s in record.seeds]
                a = torch.cat([f[0] * c for f, c in zip(factors, record.coefficients)], dim=1)
                a.mul_(step / math.sqrt(settings.rank))
                b = torch.cat([f[1] for f in factors], dim=1)
                rows = max(1, CHUNK // p.shape[1])
                for start in range(0, p.shape[0], rows):  # Σ c_i A_i B_iᵀ, one block of rows at a time
                    acc = a[start:start + rows] @ b.t()
                    acc.add_(p[start:start + rows].float())
                    p[start:start + rows].copy_(acc.to(p.dtype))
            else:
                streams = [(_chunks(p, s, index), c) for s, c in zip(record.seeds, record.coefficients)]
                for part in p.view(-1).split(CHUNK):
                    acc = torch.zeros(part.shape, dtype=torch.float32, device=p.device)
                    for stream, c in streams:
                        acc.add_(next(stream)[1], alpha=c)
                    acc.mul_(step).add_(part.float())
                    part.copy_(acc.to(p.dtype))


def shape(plus: list[float], minus: list[float], how: str) -> tuple[float, ...]:
    """Coefficient per pair: f(r+) - f(r-), f = centred ranks in [-0.5, 0.5] (ties averaged) or z-scores."""
    rewards = np.asarray(list(plus) + list(minus), dtype=np.float64)
    if how == "rank":
        order = rewards.argsort(kind="stable")
        ranks = np.empty(len(rewards))
        ranks[order] = np.arange(len(rewards))
        for value in np.unique(rewards):  # equal rewards share their mean rank, so an equal pair cancels
            tied = rewards == value
            ranks[tied] = ranks[tied].mean()
        f = ranks / max(1, len(rewards) - 1) - 0.5
    elif how == "zscore":
        std = rewards.std()
        f = (rewards - rewards.mean()) / std if std > 0 else np.zeros_like(rewards)
    else:
        raise ValueError(f"unknown fitness shaping {how!r}")
    n = len(plus)
    return tuple(float(x) for x in (f[:n] - f[n:]))


def _walk(params: list, seeds: tuple[int, ...], settings: EsSettings, evaluate: Callable[[], None]) -> None:
    """Visit θ + σε_i and θ - σε_i for every pair, calling `evaluate` at each; θ is restored at the end (up to
    rounding). Restoring pair i and perturbing pair i+1 share one pass over the weights: 2P + 1 passes in all."""
    sigma, rank = settings.sigma, settings.rank
    previous = None
    for s in seeds:
        perturb_many(params, ([] if previous is None else [(previous, sigma)]) + [(s, sigma)], rank=rank)
        evaluate()
        perturb(params, s, -2 * sigma, rank=rank)
        evaluate()
        previous = s
    if previous is not None:
        perturb(params, previous, sigma, rank=rank)


def walk_rewards(params: list, seeds: tuple[int, ...], settings: EsSettings, reward: Callable[[], float],
                 mine: Optional[set[int]] = None) -> dict[int, tuple[float, float]]:
    """(r+, r-) of the antithetic pairs in `mine` (all if None). Every pair is walked whoever evaluates it, so θ goes
    through the same perturbations and roundings on every worker: workers sharing an iteration's pairs give the
    rewards, and after the update the weights, of one process doing them all."""
    out: dict[int, list[float]] = {}
    visits = iter(range(2 * len(seeds)))

    def evaluate() -> None:
        pair = next(visits) // 2
        if mine is None or pair in mine:
            out.setdefault(pair, []).append(float(reward()))

    _walk(params, seeds, settings, evaluate)
    return {pair: (plus, minus) for pair, (plus, minus) in out.items()}


def record_of(seeds: tuple[int, ...], rewards: dict[int, tuple[float, float]], shaping: str) -> IterationRecord:
    """An iteration's record from every pair's rewards: the shaped coefficients replay needs."""
    plus = [rewards[i][0] for i in range(len(seeds))]
    minus = [rewards[i][1] for i in range(len(seeds))]
    return IterationRecord(seeds=tuple(seeds), coefficients=shape(plus, minus, shaping), rewards_plus=tuple(plus),
                           rewards_minus=tuple(minus))


def iterate(params: list, reward: Callable[[], float], seeds: Iterable[int], settings: EsSettings,
            population: Any = None, pairs_per_forward: int = 1) -> IterationRecord:
    """One ES iteration: evaluate every antithetic pair (in place, or inside the forward pass, `pairs_per_forward`
    pairs at a time, when `population`, an InForward over `params`, is given), then update. Returns its record."""
    seeds = tuple(int(s) for s in seeds)
    if population is None:
        rewards = walk_rewards(params, seeds, settings, reward)
    else:
        with population as pop:
            rewards = forward_rewards(pop, reward, seeds, settings.sigma, pair_groups(len(seeds), pairs_per_forward))
    record = dataclasses.replace(record_of(seeds, rewards, settings.shaping), in_forward=population is not None)
    update(params, record, settings)
    return record


def replay(params: list, records: Iterable[IterationRecord], settings: EsSettings) -> None:
    """Rebuild an ES member from its parent: the same updates (and, for iterations evaluated in place, the same
    perturbations and restorations), no forward pass."""
    for record in records:
        if not record.in_forward:
            _walk(params, tuple(record.seeds), settings, lambda: None)
        update(params, record, settings)


def pair_groups(pairs: int, per_forward: int) -> list[list[int]]:
    """The antithetic pairs of an iteration in groups of `per_forward`: what one forward pass evaluates."""
    return [list(range(start, min(start + per_forward, pairs))) for start in range(0, pairs, per_forward)]


def forward_rewards(pop, reward, seeds: tuple[int, ...], sigma: float,
                    chunks: Iterable[list[int]]) -> dict[int, tuple[float, float]]:
    """(r+, r-) of the antithetic pairs in `chunks`, each chunk's pairs in one forward pass (`pop`: an open
    InForward): the groups are θ + σε_i and θ − σε_i for each pair i of the chunk, in order."""
    out = {}
    for pairs in chunks:
        pop.set([(seeds[i], sign * sigma) for i in pairs for sign in (1, -1)])
        values = reward.groups(2 * len(pairs))
        for j, i in enumerate(pairs):
            out[i] = (float(values[2 * j]), float(values[2 * j + 1]))
    return out


def es_parameters(model) -> list:
    """The tensors ES perturbs, in a fixed order: every parameter once (tied weights count once)."""
    return list(model.parameters())


# ---------------------------------------------------------------- the mutation operator (`kind: es`)

class RewardSpec(Frozen):
    kind: Literal["loglik", "exact_match", "select"] = Field(
        "loglik", description="loglik: mean log-prob of train targets; exact_match: greedy answers on a train batch; "
                              "select: the pipeline's lm-eval select score")
    task: Optional[str] = Field(None, description="lm-eval task whose training split gives the batches")
    data: Optional[str] = Field(None, description="JSONL file of prompt/completion examples")
    batch_size: int = Field(16, gt=0, description="examples per iteration, drawn anew each iteration")
    max_new_tokens: int = Field(8, gt=0, description="exact_match only")

    @model_validator(mode="after")
    def _source(self) -> "RewardSpec":
        if self.kind == "select":
            if self.task or self.data:
                raise ValueError("the select reward uses the pipeline's fitness tasks: drop `task` and `data`")
        elif (self.task is None) == (self.data is None):
            raise ValueError(f"a {self.kind} reward needs exactly one of `task` or `data`")
        return self


class NoiseEs(MutationOperator):
    """Mutation by noise ES from the parent, committing every iteration's seeds and coefficients (its steps):
    a resume replays them, and they are the member's recipe."""

    class Settings(OperatorSettings):
        iterations: int = Field(10, gt=0)
        pairs: int = Field(8, gt=0, description="antithetic pairs per iteration (2x forward evaluations)")
        sigma: float = Field(0.001, gt=0, description="noise scale, in weight units", allow_inf_nan=False)
        learning_rate: float = Field(0.0005, gt=0, allow_inf_nan=False)
        shaping: Literal["rank", "zscore"] = "rank"
        rank: Optional[int] = Field(4, ge=1, description="low-rank noise A·Bᵀ/√r for matrices (EGGROLL); null: full")
        reward: RewardSpec
        evaluation: Literal["auto", "in_place"] = Field(
            "auto", description="auto: low-rank noise with a loglik or exact_match reward is evaluated inside the "
                                "forward pass (EGGROLL), anything else in place; in_place: always write the "
                                "perturbations into the weights")
        pairs_per_forward: int = Field(1, ge=1, description="antithetic pairs evaluated in one forward pass, in the "
                                                            "forward (a GPU likes more; activations grow with it)")

        # a run stored before in-forward evaluation existed keeps evaluating in place, as it was started
        earlier_defaults: ClassVar[dict] = {"evaluation": "in_place"}

    color = "#D55E00"
    step_event = "es_iteration"

    @classmethod
    def check(cls, settings: Any, preflight: "Preflight", *, key: str) -> None:
        if settings.reward.kind != "select":
            preflight.data(settings.reward.task, settings.reward.data, key=f"{key}.reward")

    @classmethod
    def mutate(cls, bench: "Workbench", model: Any, job: MutationJob, checkpoint: Checkpoint) -> Mutant:
        session = cls.Session(bench, model, job)
        bar = bench.progress.step(f"ES {job.name} from {job.parent_name} ({job.settings.reward.kind} reward)",
                                  total=job.settings.iterations, completed=session.done)
        for it in range(session.done, job.settings.iterations):
            data, event = cls.record(job, it, session.rewards(it))
            session.apply(data)
            checkpoint(it, data, **event)
            bench.progress.advance(bar, description=f"ES {job.name} from {job.parent_name}: mean reward "
                                                    f"{event['reward']:.4f}")
        return session.finish()

    @classmethod
    def units(cls, job: MutationJob) -> int:
        """The independent evaluations of a step that workers can share: groups of `pairs_per_forward` antithetic
        pairs (one forward pass each when evaluated in the forward)."""
        return len(_pair_groups(job))

    @classmethod
    def steps(cls, job: MutationJob) -> int:
        return job.settings.iterations

    @classmethod
    def record(cls, job: MutationJob, it: int, rewards: dict[int, tuple[float, float]]) -> tuple[dict, dict]:
        """A step's committed data (seeds, shaped coefficients, rewards) from every pair's rewards, and its event."""
        op = job.settings
        record = record_of(_pair_seeds(job, it), rewards, op.shaping)
        mean = sum(record.rewards_plus + record.rewards_minus) / (2 * op.pairs)
        return ({"seeds": list(record.seeds), "coefficients": list(record.coefficients),
                 "rewards_plus": list(record.rewards_plus), "rewards_minus": list(record.rewards_minus),
                 **({"in_forward": True} if _in_forward(job) else {})},
                {"reward": mean})

    @classmethod
    def rebuild(cls, bench: "Workbench", model: Any, member: MemberRecord, run_dir: Path) -> Any:
        recipe = json.loads(member.recipe)
        replay(es_parameters(model), [IterationRecord.of(i) for i in recipe["iterations"]],
               EsSettings(sigma=recipe["sigma"], learning_rate=recipe["learning_rate"], rank=recipe["rank"],
                          shaping=recipe["shaping"]))
        return model

    @classmethod
    def edge_label(cls, params: dict) -> str:
        reward = params["reward"]
        source = reward.get("task") or reward.get("data") or "select split"
        return (f"{cls.name} iterations={params['iterations']} pairs={params['pairs']} sigma={params['sigma']:g} "
                f"lr={params['learning_rate']:g} rank={params['rank'] if params['rank'] is not None else 'full'} "
                f"reward={reward['kind']}:{source}")

    @classmethod
    def curve(cls, steps: list[MutationStep]) -> list[dict]:
        out = []
        for s in steps:
            rewards = s.data["rewards_plus"] + s.data["rewards_minus"]
            out.append({"iteration": s.step, "mean": statistics.fmean(rewards), "best": max(rewards),
                        "worst": min(rewards)})
        return out


class EsSession:
    """One noise-ES mutation in one process: the model being mutated (its parent plus the committed iterations),
    the reward's examples, and the iterations applied so far. A worker sharing an ES mutation's pairs keeps one."""

    def __init__(self, bench: "Workbench", model: Any, job: MutationJob) -> None:
        from evomerge.mutation.inforward import InForward

        op = job.settings
        self.bench, self.model, self.job, self.settings = bench, model, job, _settings(op)
        self.params = es_parameters(model)
        self.steps = [IterationRecord.of(d) for d in job.steps_done]
        replay(self.params, self.steps, self.settings)
        self.examples = None if op.reward.kind == "select" else bench.examples(op.reward.task, op.reward.data,
                                                                               job.data_root)
        self.population = InForward(model, self.params, rank=op.rank) if _in_forward(job) else None
        if self.population is not None and self.population.plan is None:
            raise EvomergeError(f"{job.name}: this model has weights that noise ES cannot perturb inside the forward "
                                "pass (a large weight outside its Linear and Embedding modules). Fix: set "
                                "`evaluation: in_place` on the es operator")

    @property
    def done(self) -> int:
        return len(self.steps)

    def rewards(self, it: int, mine: Optional[set[int]] = None) -> dict[int, tuple[float, float]]:
        """(r+, r-) of iteration `it`'s pairs in `mine` (all if None); θ is back where it was afterwards."""
        from evomerge.streams import rng_for

        job = self.job
        reward = _reward(self.bench, job.settings, self.model, self.examples,
                         rng_for(job.seed, job.generation, job.slot, 2, it))
        groups = _pair_groups(job)
        chosen = groups if mine is None else [groups[u] for u in sorted(mine)]
        seeds = _pair_seeds(job, it)
        if self.population is not None:
            with self.population as pop:
                return forward_rewards(pop, reward, seeds, self.settings.sigma, chosen)
        return walk_rewards(self.params, seeds, self.settings, reward,
                            None if mine is None else {i for pairs in chosen for i in pairs})

    def apply(self, data: dict) -> None:
        """The update of a step (its seeds and coefficients)."""
        record = IterationRecord.of(data)
        update(self.params, record, self.settings)
        self.steps.append(record)

    def finish(self) -> Mutant:
        op, job = self.job.settings, self.job
        self.bench.scorer.release(self.model)
        recipe = {"parent": job.parent_name, "operator": job.kind, "sigma": op.sigma,
                  "learning_rate": op.learning_rate, "rank": op.rank, "shaping": op.shaping,
                  "device_type": self.model.device.type,
                  "dtype": str(next(self.model.parameters()).dtype).removeprefix("torch."), "iterations": [r.recipe() for r in self.steps]}
        self.bench.progress.log(f"{job.name}: ES from {job.parent_name}, {op.iterations} iterations of {op.pairs} "
                                "pairs")
        return Mutant(self.model, recipe)


NoiseEs.Session = EsSession


def _in_forward(job: MutationJob) -> bool:
    """Whether the job's iterations are evaluated inside the forward pass: as its first committed step was, or, for
    a mutation not yet begun, as its settings say."""
    if job.steps_done:
        return bool(job.steps_done[0].get("in_forward"))
    op = job.settings
    return op.evaluation == "auto" and op.rank is not None and op.reward.kind != "select"


def _pair_groups(job: MutationJob) -> list[list[int]]:
    return pair_groups(job.settings.pairs, job.settings.pairs_per_forward)


def _pair_seeds(job: MutationJob, it: int) -> tuple[int, ...]:
    from evomerge.streams import rng_for

    seeds = rng_for(job.seed, job.generation, job.slot, 3, it).integers(0, 2**31 - 1, size=job.settings.pairs)
    return tuple(int(s) for s in seeds)


def _settings(op: Any) -> EsSettings:
    return EsSettings(sigma=op.sigma, learning_rate=op.learning_rate, rank=op.rank, shaping=op.shaping)


def _reward(bench: "Workbench", op: Any, model: Any, examples: Optional[list], rng) -> Callable[[], float]:
    """The reward of one iteration: both members of every pair see the same batch."""
    from evomerge.mutation import rewards

    if op.reward.kind == "select":
        return lambda: bench.weighted(bench.scorer.evaluate(model, bench.tokenizer, "select").results)
    batch = [examples[i] for i in rng.choice(len(examples), size=min(op.reward.batch_size, len(examples)),
                                             replace=False)]
    made = {"loglik": lambda: rewards.loglik(model, bench.tokenizer, batch),
            "exact_match": lambda: rewards.exact_match(model, bench.tokenizer, batch,
                                                       max_new_tokens=op.reward.max_new_tokens)}
    return made[op.reward.kind]()
