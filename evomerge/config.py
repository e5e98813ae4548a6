"""Pipeline and population files: frozen pydantic models, validated in full before any compute.

A *population file* names the seed members and the base model that task-vector merges need; a *pipeline file*
names a population and says how to evolve it. Every error names the file, the key path, the problem and the fix.
"""
from __future__ import annotations

import importlib
import json
import math
import os
import re
import sys
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Optional

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    SerializeAsAny,
    ValidationError,
    field_validator,
    model_validator,
)

from evomerge.errors import ConfigError, EvomergeError
from evomerge.registry import (
    CROSSOVERS,
    ESTIMATORS,
    EXECUTORS,
    MUTATION_OPERATORS,
    PARENT_SELECTORS,
    SURVIVOR_SELECTORS,
    Registry,
)

BUILTIN_MODELS = ("smollm2-135m-instruct",)


def _exact(value: float) -> Fraction:
    """A score as the fraction it stands for: k/n for a share of n ≤ 10⁶ documents (a float within 1e-13 of it),
    the float's own exact value otherwise."""
    exact = Fraction(value)
    near = exact.limit_denominator(1_000_000)
    return near if abs(near - exact) < 1e-13 else exact


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


_Finite = dict(allow_inf_nan=False)  # a weight, rate or scale of inf or nan is refused where it is read


# ---------------------------------------------------------------- population file


class LoraSettings(Frozen):
    """A short LoRA fine-tune (peft). Data: the training split of an lm-eval task, or a JSONL file of
    {"prompt", "completion"} objects (relative to the file that names it)."""

    task: Optional[str] = Field(None, description="lm-eval task whose training split is the data")
    data: Optional[str] = Field(None, description="JSONL file of prompt/completion examples")
    steps: int = Field(60, gt=0)
    learning_rate: float = Field(1e-3, gt=0, **_Finite)
    batch_size: int = Field(8, gt=0)
    max_length: int = Field(96, gt=8, description="tokens per example, prompt + completion")
    r: int = Field(8, gt=0)
    alpha: int = Field(16, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    seed: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _one_data_source(self) -> "LoraSettings":
        if (self.task is None) == (self.data is None):
            raise ValueError("give exactly one of `task` (an lm-eval task's training split) or `data` (a JSONL file)")
        return self


class LoraSpec(LoraSettings):
    """A seed made by fine-tuning another member: how the demo makes its specialists."""

    parent: str = Field(description="name of the member to fine-tune")


CHILD_NAME = re.compile(r"^g\d+-c\d+(-merge)?$")  # the names evomerge gives children


class SeedMember(Frozen):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)
    model: Optional[str] = Field(None, description="local HF model directory, or a built-in model name")
    lora: Optional[LoraSpec] = None

    @model_validator(mode="after")
    def _one_source(self) -> "SeedMember":
        if (self.model is None) == (self.lora is None):
            raise ValueError("give exactly one of `model` (a path or built-in name) or `lora` (a fine-tune of a member)")
        return self


class PopulationConfig(Frozen):
    name: str
    base_model: str = Field(description="name of the member whose weights task-vector methods subtract")
    members: tuple[SeedMember, ...] = Field(min_length=1)


# ---------------------------------------------------------------- pipeline file


class KindSettings(Frozen):
    """The settings of a registered class (a selector, an executor, a mutation operator): `kind` names the class,
    whose `Settings` model validates the rest."""

    kind: str


class OperatorSettings(KindSettings):
    """A mutation operator's settings: the operator's own fields plus its relative chance among the operators."""

    weight: float = Field(1.0, gt=0, description="relative chance of this operator among the mutation operators",
                          **_Finite)

    # settings added after runs were stored without them: the value that keeps such a run doing what it did
    # (a fresh pipeline gets the field's default; a stored run is resumed with this)
    earlier_defaults: ClassVar[dict[str, Any]] = {}


def _registered(registry: Registry, *, shorthand: bool = False):
    """A pydantic validator for a `{kind: NAME, ...}` block: the class registered as NAME validates it with its
    `Settings` model, so that errors keep their key path. `shorthand` also accepts the bare name."""
    def validate(value: Any) -> KindSettings:
        if isinstance(value, KindSettings):
            return value
        if shorthand and isinstance(value, str):
            value = {"kind": value}
        if not isinstance(value, dict) or not isinstance(value.get("kind"), str):
            raise ValueError(f"expected a mapping with `kind` (one of: {', '.join(registry.names())})")
        return registry.get(value["kind"]).Settings.model_validate(value)

    return PlainValidator(validate, json_schema_input_type=dict)


class CmaSpec(Frozen):
    sigma0: float = Field(0.25, gt=0, description="initial step size, in parameter units", **_Finite)
    popsize: int = Field(4, ge=2, description="proposals per CMA-ES iteration")
    budget: int = Field(8, ge=1, description="merges evaluated per crossover, in whole iterations of popsize")

    @model_validator(mode="after")
    def _whole_iterations(self) -> "CmaSpec":
        if self.budget < self.popsize:
            raise ValueError(f"budget {self.budget} is less than one CMA-ES iteration of popsize {self.popsize}: "
                             f"raise budget to at least {self.popsize} or lower popsize")
        return self


class RacingSpec(Frozen):
    """Racing CMA-ES candidates (evomerge/crossover/racing.py): score each on growing shares of the select
    documents and stop it once it is worse than the best fully scored candidate beyond noise: `paired`, by the upper
    bound of its document-by-document difference; `wilson` or `hoeffding`, by independent bounds on each."""

    schedule: tuple[float, ...] = Field((0.25, 0.5, 1.0), min_length=1,
                                        description="shares of the select documents, increasing, the last 1.0")
    confidence: float = Field(0.95, gt=0.5, lt=1, description="one-sided confidence of each bound")
    bound: Literal["paired", "wilson", "hoeffding"] = "paired"

    @field_validator("schedule")
    @classmethod
    def _increasing(cls, schedule: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0 < f <= 1 for f in schedule) or list(schedule) != sorted(set(schedule)) or schedule[-1] != 1:
            raise ValueError(f"{list(schedule)} is not a schedule: give increasing shares in (0, 1] ending at 1.0, "
                             "e.g. [0.25, 0.5, 1.0]")
        return schedule


class PathSpec(Frozen):
    """A layer path's settings (evomerge/crossover/layer_path.py): the path a token takes through the parents' layers,
    searched as one on/off indicator per slot of `repeats` passes over every parent's layers."""

    repeats: int = Field(1, ge=1, le=4, description="passes over the parents' layers: above 1 a layer may appear again")
    max_layers: Optional[int] = Field(None, ge=1, description="the longest path allowed (longer ones score worst); "
                                                              "omit: no bound but the slots")
    scales: Literal["pair", "slot", "none"] = Field(
        "pair", description="where the path crosses from one parent to another, the next layer's o_proj and down_proj "
                            "are scaled: pair, one scale per ordered pair of parents; slot, one per slot; none")
    embed_from: int = Field(0, ge=0, description="whose embedding, final norm and head the child keeps: a parent's "
                                                 "index in selection order (0: the first parent)")


class CrossoverOperator(Frozen):
    """One crossover kind with its settings: a merge method (`search`, `layer_group`) or layer_path (`path`)."""

    method: str = Field(description="a registered crossover kind (evomerge.registry.CROSSOVERS): a merge method or "
                                    "layer_path")
    weight: float = Field(1.0, gt=0, description="its share of the children, among `crossover.operators`", **_Finite)
    search: tuple[str, ...] = ("weight",)
    layer_group: Optional[int] = Field(
        None, ge=1, description="one parameter set per group of N layers; omit for one set per parent"
    )
    path: Optional[PathSpec] = Field(None, description="layer_path's settings; omit for its defaults")

    @field_validator("method")
    @classmethod
    def _known(cls, method: Optional[str]) -> Optional[str]:
        if method is not None:
            CROSSOVERS.get(method)
        return method

    @model_validator(mode="after")
    def _method_params(self) -> "CrossoverOperator":
        if len(set(self.search)) != len(self.search):
            raise ValueError("a parameter is listed twice in `search`")
        if self.method is not None:
            CROSSOVERS.get(self.method).check_spec(self)
        return self


class CrossoverSpec(CrossoverOperator):
    """The crossover: one operator (`method` and its settings), or several (`operators`), one drawn per child by
    weight; CMA-ES and racing settings are shared."""

    method: Optional[str] = Field(None, description="a registered crossover kind (evomerge.registry.CROSSOVERS); or "
                                                    "give `operators`")
    operators: tuple[CrossoverOperator, ...] = Field((), description="crossover kinds, one drawn per child by weight")
    cma: CmaSpec = CmaSpec()
    racing: Optional[RacingSpec] = Field(None, description="race candidates on growing document shares; omit: "
                                                           "every candidate is scored on every select document")

    @model_validator(mode="after")
    def _one_or_many(self) -> "CrossoverSpec":
        if (self.method is None) == (not self.operators):
            raise ValueError("give `method` (one crossover kind) or `operators` (several, drawn by weight), not both")
        if self.operators and (self.search != ("weight",) or self.layer_group is not None or self.path is not None
                               or self.weight != 1):  # (a stored configuration holds these defaults)
            raise ValueError("with `operators`, give search, layer_group, path and weight in each operator")
        methods = [op.method for op in self.operators]
        if len(set(methods)) != len(methods):
            raise ValueError("a crossover kind is listed twice in `operators`")
        return self

    def choices(self) -> tuple[CrossoverOperator, ...]:
        """The operators a child's crossover is drawn from."""
        return self.operators or (self,)

    def operator(self, method: str) -> CrossoverOperator:
        """The settings of the operator `method` (a member's operator)."""
        for op in self.choices():
            if op.method == method:
                return op
        raise EvomergeError(f"this pipeline's crossover has no operator {method!r} (it has: "
                            f"{', '.join(op.method for op in self.choices())})")


class SplitSpec(Frozen):
    split: str = Field(description="split name in the task's data files (select / report for shipped tasks)")
    limit: Optional[int] = Field(None, gt=0, description="first N documents; omit for all")
    estimator: Optional[Annotated[SerializeAsAny[KindSettings], _registered(ESTIMATORS)]] = Field(
        None, description="estimate a score from a few of the split's documents (select split only): "
                          "{kind: anchors, n: 30}; omit: every score is computed on every document")


class TaskSpec(Frozen):
    task: str = Field(description="lm-eval task name (shipped with evomerge, or in an include_path folder); with "
                                  "`python`, the name its scores go by (default: the function's name)")
    python: Optional[str] = Field(None, pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
                                  description="a Python fitness function, module:function, called as "
                                              "f(model, tokenizer, *, split, limit, device, **args) -> {metric: value}")
    args: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the python function; a "
                                                                   "`data` path is relative to the pipeline file")
    weight: float = Field(1.0, gt=0, **_Finite)
    metric: str = "acc"

    @model_validator(mode="before")
    @classmethod
    def _name(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("python"), str) and "task" not in data:
            data = {**data, "task": data["python"].rpartition(":")[2]}
        return data

    @model_validator(mode="after")
    def _args(self) -> "TaskSpec":
        if self.args and self.python is None:
            raise ValueError("`args` are keyword arguments of a `python` fitness function: drop them, or add `python`")
        return self


class FitnessSpec(Frozen):
    """What a member is scored on: lm-eval tasks with weights, a select split for selection and a held-out report
    split for the leaderboard."""

    tasks: tuple[TaskSpec, ...] = Field(min_length=1)
    select: SplitSpec = SplitSpec(split="select")
    report: SplitSpec = SplitSpec(split="report")
    num_fewshot: int = Field(0, ge=0)
    batch_size: int = Field(32, ge=1)
    include_path: tuple[str, ...] = Field((), description="extra folders of lm-eval task YAML, relative to this file")

    def weighted(self, results: dict[str, dict[str, float]]) -> Optional[float]:
        """The weighted mean of each task's chosen metric; None if one is missing. The only place it is computed.

        It is computed exactly, in rationals, and rounded once: a share of n documents is read as the fraction k/n
        it stands for, so equal scores are equal floats whatever the order of the sums ((0.8 + 0.625)/2 and
        (0.825 + 0.6)/2 are both 57/80), and "ties: the older member" holds wherever scores are compared."""
        try:
            values = [results[t.task][t.metric] for t in self.tasks]
        except KeyError:
            return None
        if not all(math.isfinite(v) for v in values):
            return sum(t.weight * v for t, v in zip(self.tasks, values)) / sum(t.weight for t in self.tasks)
        total = sum((Fraction(t.weight) * _exact(v) for t, v in zip(self.tasks, values)), Fraction(0))
        return float(total / sum(Fraction(t.weight) for t in self.tasks))

    def weighted_se(self, ses: dict[str, Optional[float]]) -> Optional[float]:
        """The standard error of `weighted` from each task's (None if a task has none): evomerge/outcomes.py."""
        from evomerge.outcomes import weighted_se

        return weighted_se([ses.get(t.task) for t in self.tasks], [t.weight for t in self.tasks])

    def split(self, which: str) -> SplitSpec:
        """The select or the report split."""
        splits = {"select": self.select, "report": self.report}
        if which not in splits:
            raise ValueError(f"unknown split {which!r}: use one of {', '.join(splits)}")
        return splits[which]

    @model_validator(mode="after")
    def _disjoint(self) -> "FitnessSpec":
        if self.select.split == self.report.split:
            raise ValueError(
                f"select and report both use split {self.select.split!r}: the report split must be held out from selection"
            )
        if len({t.task for t in self.tasks}) != len(self.tasks):
            raise ValueError("a task is listed twice")
        if self.report.estimator is not None:
            raise ValueError("fitness.report.estimator: the report split is the held-out, honest number, scored on "
                             "every document; estimate the select split instead (fitness.select.estimator)")
        return self


SPLITS = ("select", "report")


class MutationSpec(Frozen):
    rate: float = Field(ge=0, le=1, description="probability that a child is mutated")
    operators: tuple[Annotated[SerializeAsAny[OperatorSettings], _registered(MUTATION_OPERATORS)], ...] = Field(min_length=1)
    keep: Literal["better", "always"] = Field(
        "better", description="better: a crossover child's mutant replaces its merge only if its select score is not "
                              "lower (else the merge is the child); always: the mutant is the child")

    earlier_defaults: ClassVar[dict[str, Any]] = {"keep": "always"}  # runs stored before the setting existed


class PipelineConfig(Frozen):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64)
    population: str = Field(description="population file, relative to this file")
    plugins: tuple[str, ...] = Field((), description="modules imported first: they register merge methods, mutation "
                                                     "operators, selectors... (found next to this file too)")
    generations: int = Field(ge=1)
    population_size: int = Field(ge=1, description="survivors kept after each generation")
    children_per_generation: int = Field(ge=1)
    parents_per_child: int = Field(2, ge=1, description="parents of a crossover; a mutation-only child has one")
    parent_selection: Annotated[SerializeAsAny[KindSettings], _registered(PARENT_SELECTORS)] = Field(
        default_factory=lambda: PARENT_SELECTORS.get("tournament").Settings(kind="tournament"))
    survivor_selection: Annotated[SerializeAsAny[KindSettings], _registered(SURVIVOR_SELECTORS, shorthand=True)] = Field(
        default_factory=lambda: SURVIVOR_SELECTORS.get("elitist").Settings(kind="elitist"))
    crossover: Optional[CrossoverSpec] = None
    mutation: Optional[MutationSpec] = None
    fitness: FitnessSpec
    seed: int = Field(0, ge=0, le=2**32 - 1, description="any seed numpy accepts: 0 to 2**32 - 1")
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    device: str = Field("cpu", pattern=r"^(cpu|cuda(:\d+)?|mps)$")
    engine: Literal["fast", "reference"] = Field(
        "fast", description="fast: resident parents, fused merges, the evomerge-fast scorer; reference: mergekit's "
                            "merge and lm-eval's HFLM for every candidate (slower; for debugging and comparison)")
    executor: Annotated[SerializeAsAny[KindSettings], _registered(EXECUTORS)] = Field(
        default_factory=lambda: EXECUTORS.get("serial").Settings(kind="serial"))

    @model_validator(mode="after")
    def _breeding(self) -> "PipelineConfig":
        if self.crossover is None and self.mutation is None:
            raise ValueError("give `crossover`, `mutation` or both: children need an operator")
        if self.crossover is None and self.mutation.rate != 1:
            raise ValueError("without crossover every child is a mutant of one parent: set mutation.rate: 1")
        for op in self.crossover.choices() if self.crossover is not None else ():
            CROSSOVERS.get(op.method).check_parents(self.parents_per_child)
            if op.path is not None and op.path.embed_from >= self.parents_per_child:
                raise ValueError(f"crossover path.embed_from {op.path.embed_from} is not a parent: give 0 to "
                                 f"{self.parents_per_child - 1} (parents_per_child is {self.parents_per_child})")
        if self.crossover is not None and self.crossover.racing is not None:
            from evomerge.crossover.racing import PROPORTIONS, proportion_tasks

            if self.fitness.select.estimator is not None:
                raise ValueError("crossover.racing and fitness.select.estimator both score a candidate on part of "
                                 "the select documents: use one of them (anchors cost less per candidate)")

            if self.fitness.select.limit is None:
                raise ValueError("crossover.racing scores shares of the select documents: set fitness.select.limit")
            other = [t.task for t in self.fitness.tasks if t.task not in proportion_tasks(self.fitness)]
            if other:
                raise ValueError(f"crossover.racing bounds a share of documents, which task(s) {', '.join(other)} "
                                 f"do not score: race only lm-eval tasks scored by {', '.join(PROPORTIONS)}, or drop "
                                 "crossover.racing")
        return self


# ---------------------------------------------------------------- loading


class Loaded(Frozen):
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


def _settings_names() -> set[str]:
    """Every setting's name, in every block of a pipeline or population file (registered kinds included)."""
    import typing

    names: set[str] = set()
    seen: set[type] = set()
    todo: list[Any] = [PipelineConfig, PopulationConfig]
    for registry in (CROSSOVERS, MUTATION_OPERATORS, PARENT_SELECTORS, SURVIVOR_SELECTORS, EXECUTORS, ESTIMATORS):
        todo += [getattr(registry.get(n), "Settings", None) for n in registry.names()]
    while todo:
        t = todo.pop()
        if isinstance(t, type) and issubclass(t, BaseModel):
            if t in seen:
                continue
            seen.add(t)
            for name, f in t.model_fields.items():
                names.add(name)
                todo.append(f.annotation)
        else:
            todo += [a for a in typing.get_args(t) if a is not None]
    return names


def _did_you_mean(e: dict, errors: list[dict]) -> str:
    """For a misspelt key: the setting it most likely meant."""
    import difflib

    key = str(e["loc"][-1]) if e["loc"] else ""
    if e["type"] == "missing":  # a required key missing beside an unknown one: the unknown one is likely it
        extra = [str(o["loc"][-1]) for o in errors if o["type"] == "extra_forbidden" and o["loc"][:-1] == e["loc"][:-1]]
        close = difflib.get_close_matches(key, extra, n=1, cutoff=0.6)
        return f" (did you mean to write `{close[0]}` as `{key}`?)" if close else ""
    if e["type"] == "extra_forbidden":
        close = difflib.get_close_matches(key, sorted(_settings_names()), n=1, cutoff=0.7)
        return f" (did you mean `{close[0]}`?)" if close else ""
    return ""


def _describe(file: str, err: ValidationError) -> ConfigError:
    parts = []
    errors = err.errors()
    for e in errors:
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        hint = _did_you_mean(e, errors)
        fix = _FIXES.get(e["type"], "correct the value") + hint
        msg = e["msg"].removeprefix("Value error, ")
        if "registered:" in msg:
            fix = "use a registered name, or list the module that registers yours under `plugins`"
        if isinstance(e.get("input"), (str, int, float, bool)) and e["type"] != "missing":
            msg += f" (got {e['input']!r})"
        parts.append((key, msg, fix, hint))
    key, msg, fix, _ = parts[0]
    if len(parts) > 1:
        msg += "; also " + "; ".join(f"{k}: {m}{h}" for k, m, _, h in parts[1:])
    return ConfigError(file=file, key=key, problem=msg, fix=fix)


def _read_yaml(path: Path, what: str) -> dict:
    if path.is_dir():
        raise ConfigError(file=str(path), key="", problem=f"this is a directory, not a {what} file",
                          fix=f"give the {what} YAML file itself, e.g. {what}s/demo.yaml")
    if not path.is_file():
        raise ConfigError(file=str(path), key="", problem=f"the {what} file does not exist",
                          fix=f"check the path; {what} files live in {what}s/")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(file=str(path), key="", problem=f"not a text file: the {what} file must be YAML",
                          fix=f"give the {what} YAML file") from None
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
        _check_member(path, i, m, names)
    if pop.base_model not in names:
        raise ConfigError(file=str(path), key="base_model", problem=f"{pop.base_model!r} is not a member name",
                          fix=f"use one of: {', '.join(names)}")
    return pop


def _check_member(path: Path, i: int, m: SeedMember, names: list[str]) -> None:
    def error(key: str, problem: str, fix: str) -> ConfigError:
        return ConfigError(file=str(path), key=f"members.{i}.{key}", problem=problem, fix=fix)

    if names.count(m.name) > 1:
        raise error("name", f"member name {m.name!r} is used twice", "give every member a distinct name")
    if CHILD_NAME.match(m.name):
        raise error("name", f"{m.name!r} is how evomerge names the children it breeds",
                    "give the seed another name (not g<generation>-c<slot>)")
    if m.model is not None and m.model not in BUILTIN_MODELS:
        local = (path.parent / m.model).resolve()
        if not (local / "config.json").is_file():
            raise error("model", f"{m.model!r} is neither a built-in model ({', '.join(BUILTIN_MODELS)}) nor a local "
                        f"Hugging Face model directory (no config.json in {local})",
                        "point it at a directory saved with save_pretrained (paths are relative to the population "
                        "file), or use a built-in name; hub names are not downloaded")
        if not any(local.glob("*.safetensors")) and not any(local.glob("pytorch_model*.bin")):
            raise error("model", f"{local} has a config.json but no weights (*.safetensors or pytorch_model*.bin)",
                        "save the model there with save_pretrained, or point at the directory that has its weights")
    if m.lora is not None and m.lora.parent not in names[:i]:
        raise error("lora.parent", f"{m.lora.parent!r} is not a member listed before {m.name!r}",
                    "name a member defined earlier in the file")


def load_pipeline(path: str | Path) -> Loaded:
    """Read and validate a pipeline file and its population file; raises ConfigError."""
    path = Path(path).resolve()
    data = _read_yaml(path, "pipeline")
    import_plugins(data.get("plugins"), root=path.parent, file=str(path))
    try:
        pipe = PipelineConfig.model_validate(data)
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
    pool = len(pop.members) + pipe.children_per_generation
    if pipe.population_size > pool:
        raise ConfigError(file=str(path), key="population_size",
                          problem=f"{pipe.population_size} survivors, but the first generation has only {pool} "
                                  f"members to keep ({len(pop.members)} seeds and {pipe.children_per_generation} "
                                  "children)", fix=f"use at most {pool}, or breed more children per generation")
    for i, inc in enumerate(pipe.fitness.include_path):
        _check_include_path(path, i, inc)
    return Loaded(pipeline=pipe, population=pop, pipeline_file=str(path), population_file=str(pop_path))


def _check_include_path(path: Path, i: int, inc: str, *, most: int = 5000) -> None:
    """A folder of task YAML: lm-eval reads every file below it, so the root of a disk would take forever."""
    folder = path.parent / inc
    fix = "give the folder that holds your lm-eval task YAML files, relative to the pipeline file"
    if not folder.is_dir():
        raise ConfigError(file=str(path), key=f"fitness.include_path.{i}", problem=f"{inc!r} is not a folder", fix=fix)
    seen = yaml_files = 0
    for _root, dirs, files in os.walk(folder):
        seen += len(dirs) + len(files)
        yaml_files += sum(f.endswith((".yaml", ".yml")) for f in files)
        if seen > most:
            raise ConfigError(file=str(path), key=f"fitness.include_path.{i}",
                              problem=f"{folder.resolve()} holds more than {most} files and folders, all of which "
                                      "lm-eval would read", fix=fix)
    if yaml_files == 0:
        raise ConfigError(file=str(path), key=f"fitness.include_path.{i}",
                          problem=f"{folder.resolve()} holds no .yaml files", fix=fix)


def load_pipeline_dict(data: dict, *, pipeline_file: str, population_file: str) -> Loaded:
    """Rebuild a Loaded from the copy stored in a run (resume uses this, not the files, which may have changed)."""
    import_plugins(data["pipeline"].get("plugins"), root=Path(pipeline_file).parent, file=pipeline_file)
    pipeline = json.loads(json.dumps(data["pipeline"]))
    if pipeline.get("mutation"):
        for key, value in MutationSpec.earlier_defaults.items():
            pipeline["mutation"].setdefault(key, value)
        for op in pipeline["mutation"].get("operators", ()):
            for key, value in MUTATION_OPERATORS.get(op["kind"]).Settings.earlier_defaults.items():
                op.setdefault(key, value)
    return Loaded(pipeline=PipelineConfig.model_validate(pipeline),
                  population=PopulationConfig.model_validate(data["population"]),
                  pipeline_file=pipeline_file, population_file=population_file)


def import_plugins(modules: Any, *, root: Path, file: str) -> None:
    """Import the modules a pipeline lists under `plugins` (from its own folder too): they register classes."""
    if not isinstance(modules, (list, tuple)):
        return  # absent, or malformed: the pipeline's validation reports it
    if modules and str(root) not in sys.path:
        sys.path.insert(0, str(root))
    for i, name in enumerate(modules):
        if not isinstance(name, str):
            continue
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001 - any failure of a user's module is a config problem to report
            raise ConfigError(file=file, key=f"plugins.{i}", problem=f"cannot import {name!r} "
                              f"({type(e).__name__}: {e})".replace("\n", " "),
                              fix="give an importable module name (a file NAME.py next to the pipeline works)") from None
