"""Pipeline and population files: frozen pydantic models, validated in full before any compute.

A *population file* names the seed members and the base model that task-vector merges need; a *pipeline file*
names a population and says how to evolve it. Every error names the file, the key path, the problem and the fix.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from evomerge.errors import ConfigError

BUILTIN_MODELS = ("smollm2-135m-instruct",)
MERGE_METHODS = ("linear", "ties", "dare_ties", "task_arithmetic", "slerp")
# Methods that add task vectors (member - base) and so need the population's base model.
BASE_METHODS = ("ties", "dare_ties", "task_arithmetic")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# ---------------------------------------------------------------- population file


class LoraSettings(_Frozen):
    """A short LoRA fine-tune (peft). Data: the training split of an lm-eval task, or a JSONL file of
    {"prompt", "completion"} objects (relative to the file that names it)."""

    task: Optional[str] = Field(None, description="lm-eval task whose training split is the data")
    data: Optional[str] = Field(None, description="JSONL file of prompt/completion pairs")
    steps: int = Field(60, gt=0)
    learning_rate: float = Field(1e-3, gt=0)
    batch_size: int = Field(8, gt=0)
    max_length: int = Field(96, gt=8, description="tokens per example, prompt + completion")
    r: int = Field(8, gt=0)
    alpha: int = Field(16, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    seed: int = 0

    @model_validator(mode="after")
    def _one_data_source(self) -> "LoraSettings":
        if (self.task is None) == (self.data is None):
            raise ValueError("give exactly one of `task` (an lm-eval task's training split) or `data` (a JSONL file)")
        return self


class LoraSpec(LoraSettings):
    """A seed made by fine-tuning another member: how the demo makes its specialists."""

    parent: str = Field(description="name of the member to fine-tune")


class SeedMember(_Frozen):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)
    model: Optional[str] = Field(None, description="local HF model directory, or a built-in model name")
    lora: Optional[LoraSpec] = None

    @model_validator(mode="after")
    def _one_source(self) -> "SeedMember":
        if (self.model is None) == (self.lora is None):
            raise ValueError("give exactly one of `model` (a path or built-in name) or `lora` (a fine-tune of a member)")
        return self


class PopulationConfig(_Frozen):
    name: str
    base_model: str = Field(description="name of the member whose weights task-vector methods subtract")
    members: tuple[SeedMember, ...] = Field(min_length=1)


# ---------------------------------------------------------------- pipeline file


class Tournament(_Frozen):
    kind: Literal["tournament"]
    k: int = Field(2, ge=1)


class Uniform(_Frozen):
    kind: Literal["uniform"]


class CmaSpec(_Frozen):
    sigma0: float = Field(0.25, gt=0, description="initial step size, in parameter units")
    popsize: int = Field(4, ge=2, description="proposals per CMA-ES iteration")
    budget: int = Field(8, ge=1, description="merges evaluated per crossover")


class CrossoverSpec(_Frozen):
    method: Literal["linear", "ties", "dare_ties", "task_arithmetic", "slerp"]
    search: tuple[Literal["weight", "density"], ...] = ("weight",)
    layer_group: Optional[int] = Field(
        None, ge=1, description="one parameter set per group of N layers; omit for one set per parent"
    )
    cma: CmaSpec = CmaSpec()

    @model_validator(mode="after")
    def _method_params(self) -> "CrossoverSpec":
        if "density" in self.search and self.method not in ("ties", "dare_ties"):
            raise ValueError(f"`density` is searched only by ties and dare_ties, not by {self.method}")
        if self.method == "slerp" and self.search != ("weight",):
            raise ValueError("slerp has one parameter, the interpolation factor t: use search: [weight]")
        if len(set(self.search)) != len(self.search):
            raise ValueError("a parameter is listed twice in `search`")
        return self


class SplitSpec(_Frozen):
    split: str = Field(description="split name in the task's data files (select / report for shipped tasks)")
    limit: Optional[int] = Field(None, gt=0, description="first N documents; omit for all")


class TaskSpec(_Frozen):
    task: str = Field(description="lm-eval task name (shipped with evomerge, or in an include_path folder)")
    weight: float = Field(1.0, gt=0)
    metric: str = "acc"


class FitnessSpec(_Frozen):
    tasks: tuple[TaskSpec, ...] = Field(min_length=1)
    select: SplitSpec = SplitSpec(split="select")
    report: SplitSpec = SplitSpec(split="report")
    num_fewshot: int = Field(0, ge=0)
    batch_size: int = Field(32, ge=1)
    include_path: tuple[str, ...] = Field((), description="extra folders of lm-eval task YAML, relative to this file")

    def weighted(self, results: dict[str, dict[str, float]]) -> Optional[float]:
        """The pipeline's fitness: the weighted mean of each task's chosen metric; None if one is missing."""
        try:
            values = [t.weight * results[t.task][t.metric] for t in self.tasks]
        except KeyError:
            return None
        return sum(values) / sum(t.weight for t in self.tasks)

    @model_validator(mode="after")
    def _disjoint(self) -> "FitnessSpec":
        if self.select.split == self.report.split:
            raise ValueError(
                f"select and report both use split {self.select.split!r}: the report split must be held out from selection"
            )
        if len({t.task for t in self.tasks}) != len(self.tasks):
            raise ValueError("a task is listed twice")
        return self


class LoraOperator(LoraSettings):
    """Mutation by LoRA fine-tune. Defaults keep the adapter (the member's recipe) under 1 MB for SmolLM2-135M."""

    kind: Literal["lora"]
    weight: float = Field(1.0, gt=0, description="relative chance of this operator among the mutation operators")
    steps: int = Field(20, gt=0)
    r: int = Field(4, gt=0)
    alpha: int = Field(8, gt=0)
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")


class RewardSpec(_Frozen):
    kind: Literal["loglik", "exact_match", "select"] = Field(
        "loglik", description="loglik: mean log-prob of train targets; exact_match: greedy answers on a train batch; "
                              "select: the pipeline's lm-eval select fitness")
    task: Optional[str] = Field(None, description="lm-eval task whose training split gives the batches")
    data: Optional[str] = Field(None, description="JSONL file of prompt/completion pairs")
    batch_size: int = Field(16, gt=0, description="pairs per iteration, drawn anew each iteration")
    max_new_tokens: int = Field(8, gt=0, description="exact_match only")

    @model_validator(mode="after")
    def _source(self) -> "RewardSpec":
        if self.kind == "select":
            if self.task or self.data:
                raise ValueError("the select reward uses the pipeline's fitness tasks: drop `task` and `data`")
        elif (self.task is None) == (self.data is None):
            raise ValueError(f"a {self.kind} reward needs exactly one of `task` or `data`")
        return self


class EsOperator(_Frozen):
    """Mutation by noise Evolution Strategies: forward passes only; recipe = seeds and coefficients."""

    kind: Literal["es"]
    weight: float = Field(1.0, gt=0, description="relative chance of this operator among the mutation operators")
    iterations: int = Field(10, gt=0)
    pairs: int = Field(8, gt=0, description="antithetic pairs per iteration (2x forward evaluations)")
    sigma: float = Field(0.001, gt=0, description="noise scale, in weight units")
    learning_rate: float = Field(0.0005, gt=0)
    shaping: Literal["rank", "zscore"] = "rank"
    rank: Optional[int] = Field(4, ge=1, description="low-rank noise A·Bᵀ/√r for matrices (EGGROLL); null: full rank")
    reward: RewardSpec


class MutationSpec(_Frozen):
    rate: float = Field(ge=0, le=1, description="probability that a child is mutated")
    operators: tuple[Annotated[Union[LoraOperator, EsOperator], Field(discriminator="kind")], ...] = Field(min_length=1)


class PipelineConfig(_Frozen):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)
    population: str = Field(description="population file, relative to this file")
    generations: int = Field(ge=1)
    population_size: int = Field(ge=1, description="survivors kept after each generation")
    children_per_generation: int = Field(ge=1)
    parents_per_child: int = Field(2, ge=1, description="parents of a crossover; a mutation-only child has one")
    parent_selection: Annotated[Union[Tournament, Uniform], Field(discriminator="kind")] = Tournament(kind="tournament")
    survivor_selection: Literal["elitist"] = "elitist"
    crossover: Optional[CrossoverSpec] = None
    mutation: Optional[MutationSpec] = None
    fitness: FitnessSpec
    seed: int = 0
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    device: str = Field("cpu", pattern=r"^(cpu|cuda(:\d+)?|mps)$")
    engine: Literal["fast", "reference"] = Field(
        "fast", description="fast: resident parents, fused merges, the evomerge-fast scorer; reference: mergekit's "
                            "merge and lm-eval's HFLM for every candidate (slower; for debugging and comparison)")

    @model_validator(mode="after")
    def _breeding(self) -> "PipelineConfig":
        if self.crossover is None and self.mutation is None:
            raise ValueError("give `crossover`, `mutation` or both: children need an operator")
        if self.crossover is None and self.mutation.rate != 1:
            raise ValueError("without crossover every child is a mutant of one parent: set mutation.rate: 1")
        if self.crossover is not None and self.crossover.method == "slerp" and self.parents_per_child != 2:
            raise ValueError("slerp merges exactly two parents: set parents_per_child: 2")
        return self


# ---------------------------------------------------------------- loading


class Loaded(_Frozen):
    """A pipeline with its population, and the folders their relative paths are resolved from."""

    pipeline: PipelineConfig
    population: PopulationConfig
    pipeline_file: str
    population_file: str

    def include_paths(self) -> list[str]:
        root = Path(self.pipeline_file).parent
        return [str((root / p).resolve()) for p in self.pipeline.fitness.include_path]

    def model_source(self, member: SeedMember) -> str:
        """The member's model as a built-in name or an absolute path."""
        assert member.model is not None
        if member.model in BUILTIN_MODELS:
            return member.model
        return str((Path(self.population_file).parent / member.model).resolve())


_FIXES = {
    "extra_forbidden": "remove it, or check its spelling against the reference in README.md",
    "missing": "add it",
    "literal_error": "use one of the values listed",
    "union_tag_invalid": "use one of the kinds listed",
    "string_pattern_mismatch": "use letters, digits, '.', '_' and '-' only",
}


def _describe(file: str, err: ValidationError) -> ConfigError:
    parts = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        fix = _FIXES.get(e["type"], "correct the value")
        msg = e["msg"]
        if isinstance(e.get("input"), (str, int, float, bool)) and e["type"] != "missing":
            msg += f" (got {e['input']!r})"
        parts.append((key, msg, fix))
    key, msg, fix = parts[0]
    if len(parts) > 1:
        msg += "; also " + "; ".join(f"{k}: {m}" for k, m, _ in parts[1:])
    return ConfigError(file=file, key=key, problem=msg, fix=fix)


def _read_yaml(path: Path, what: str) -> dict:
    if not path.is_file():
        raise ConfigError(file=str(path), key="", problem=f"the {what} file does not exist",
                          fix=f"check the path; {what} files live in {what}s/")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(file=str(path), key="", problem=f"not valid YAML ({e})".replace("\n", " "),
                          fix="correct the YAML syntax at the line shown") from None
    if not isinstance(data, dict):
        raise ConfigError(file=str(path), key="", problem="expected a mapping of keys to values at the top level",
                          fix="see the pipeline and population reference in README.md")
    return data


def load_population(path: str | Path) -> PopulationConfig:
    path = Path(path)
    try:
        pop = PopulationConfig.model_validate(_read_yaml(path, "population"))
    except ValidationError as e:
        raise _describe(str(path), e) from None
    names = [m.name for m in pop.members]
    for i, m in enumerate(pop.members):
        if names.count(m.name) > 1:
            raise ConfigError(file=str(path), key=f"members.{i}.name", problem=f"member name {m.name!r} is used twice",
                              fix="give every member a distinct name")
        if m.model is not None and m.model not in BUILTIN_MODELS:
            local = (path.parent / m.model).resolve()
            if not (local / "config.json").is_file():
                raise ConfigError(
                    file=str(path), key=f"members.{i}.model",
                    problem=f"{m.model!r} is neither a built-in model ({', '.join(BUILTIN_MODELS)}) nor a local "
                            f"Hugging Face model directory (no config.json in {local})",
                    fix="point it at a directory saved with save_pretrained (paths are relative to the population "
                        "file), or use a built-in name; hub names are not downloaded")
        if m.lora is not None and m.lora.parent not in names[:i]:
            raise ConfigError(file=str(path), key=f"members.{i}.lora.parent",
                              problem=f"{m.lora.parent!r} is not a member listed before {m.name!r}",
                              fix="name a member defined earlier in the file")
    if pop.base_model not in names:
        raise ConfigError(file=str(path), key="base_model", problem=f"{pop.base_model!r} is not a member name",
                          fix=f"use one of: {', '.join(names)}")
    return pop


def load_pipeline(path: str | Path) -> Loaded:
    """Read and validate a pipeline file and its population file; raises ConfigError."""
    path = Path(path).resolve()
    try:
        pipe = PipelineConfig.model_validate(_read_yaml(path, "pipeline"))
    except ValidationError as e:
        raise _describe(str(path), e) from None
    pop_path = (path.parent / pipe.population).resolve()
    if not pop_path.is_file():
        raise ConfigError(file=str(path), key="population", problem=f"population file {pop_path} does not exist",
                          fix="give the path of a population file, relative to the pipeline file")
    pop = load_population(pop_path)
    if pipe.parents_per_child > len(pop.members):
        raise ConfigError(file=str(path), key="parents_per_child",
                          problem=f"{pipe.parents_per_child} parents per child but the population has "
                                  f"{len(pop.members)} seed members",
                          fix=f"use at most {len(pop.members)}")
    for i, inc in enumerate(pipe.fitness.include_path):
        if not (path.parent / inc).is_dir():
            raise ConfigError(file=str(path), key=f"fitness.include_path.{i}", problem=f"{inc!r} is not a folder",
                              fix="give a folder of lm-eval task YAML files, relative to the pipeline file")
    return Loaded(pipeline=pipe, population=pop, pipeline_file=str(path), population_file=str(pop_path))


def load_pipeline_dict(data: dict, *, pipeline_file: str, population_file: str) -> Loaded:
    """Rebuild a Loaded from the copy stored in a run (resume uses this, not the files, which may have changed)."""
    return Loaded(pipeline=PipelineConfig.model_validate(data["pipeline"]),
                  population=PopulationConfig.model_validate(data["population"]),
                  pipeline_file=pipeline_file, population_file=population_file)
