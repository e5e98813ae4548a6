"""The generational loop: seed, score, breed (crossover by CMA-ES over mergekit merges, then mutation), select
survivors; resumable at any instant.

    evomerge run pipelines/demo.yaml        # Run.start(...).run()
    evomerge resume runs/demo-...           # Run.resume(...).run()

The loop only orders the stages: seeding (population.py), breeding (breeding.py: crossover/search.py and
mutation/stage.py), scoring (scoring.py) and survivor selection (selection/). Each stage reads what the store holds
before computing and commits each result in one transaction, so a run killed at any moment and resumed ends
exactly where an uninterrupted run with the same seed ends. Computing goes through the executor (executor/).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

from evomerge.artifacts import Artifacts
from evomerge.breeding import Breeding
from evomerge.config import SPLITS, Loaded, load_pipeline, load_pipeline_dict
from evomerge.context import RunContext
from evomerge.errors import EvomergeError
from evomerge.mutation.stage import MutationStage
from evomerge.population import Seeding
from evomerge.progress import Reporter
from evomerge.records import MemberState
from evomerge.registry import EXECUTORS, SURVIVOR_SELECTORS
from evomerge.scores import ScoreBoard
from evomerge.scoring import Scoring
from evomerge.store import check_new_run_dir, create_store, open_store
from evomerge.store.base import Store
from evomerge.workbench import BenchSpec, Workbench


class Run:
    """A run directory: its configuration, its store, and the loop that advances it."""

    def __init__(self, run_dir: Path, loaded: Loaded, store: Store, *, reporter: Optional[Reporter] = None,
                 scorer: Any = None) -> None:
        self.dir = Path(run_dir)
        self.loaded = loaded
        self.cfg = loaded.pipeline
        self.store = store
        self.reporter = reporter or Reporter(quiet=True)
        spec = BenchSpec(pipeline=self.cfg, include_paths=tuple(loaded.include_paths()),
                         pipeline_file=loaded.pipeline_file,
                         tokenizer_source=loaded.model_source(loaded.population.members[0]))
        self.executor = EXECUTORS.get(self.cfg.executor.kind)(self.cfg.executor, spec, scorer=scorer,
                                                               progress=self.reporter, run_dir=self.dir)
        self._bench: Optional[Workbench] = getattr(self.executor, "bench", None)
        self.artifacts = Artifacts(self.dir, store, loaded, self._workbench, log=self.reporter.log)
        self.ctx = RunContext(dir=self.dir, loaded=loaded, store=store, board=ScoreBoard(store, self.cfg.fitness),
                              artifacts=self.artifacts, executor=self.executor, reporter=self.reporter)
        self.scoring = Scoring(self.ctx)
        mutation = MutationStage(self.ctx)
        self.seeding = Seeding(self.ctx, self.scoring, mutation)
        self.breeding = Breeding(self.ctx, mutation, self.scoring)
        self.survivors = SURVIVOR_SELECTORS.get(self.cfg.survivor_selection.kind)(self.cfg.survivor_selection)

    def _workbench(self) -> Workbench:
        """A workbench in this process, for rebuilding members (the serial executor's own, if it has one)."""
        if self._bench is None:
            self._bench = Workbench(self.executor.spec, progress=self.reporter)
        return self._bench

    # ------------------------------------------------------------ opening

    @classmethod
    def start(cls, pipeline_file: str | Path, *, run_dir: Optional[Path] = None, reporter: Optional[Reporter] = None,
              store: str = "sqlite") -> "Run":
        """Validate everything (config, tasks, splits, data), then create the run directory and its store."""
        from evomerge.fitness.lm_eval import Scorer
        from evomerge.preflight import Preflight

        loaded = load_pipeline(pipeline_file)
        cfg = loaded.pipeline
        scorer = Scorer(cfg.fitness, include_paths=loaded.include_paths(), device=cfg.device, engine=cfg.engine,
                        pipeline_file=loaded.pipeline_file)  # tasks, metrics, split overlap: before any directory
        Preflight(loaded, scorer).run()  # device, seeds, data, module names
        run_dir = Path(run_dir) if run_dir is not None else Path("runs") / f"{cfg.name}-{datetime.now():%Y%m%d-%H%M%S}"
        check_new_run_dir(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        created = create_store(store, run_dir, config={
            "pipeline": cfg.model_dump(mode="json"), "population": loaded.population.model_dump(mode="json"),
            "pipeline_file": loaded.pipeline_file, "population_file": loaded.population_file,
        })
        with created.transaction():
            created.add_event("run_started", pipeline=loaded.pipeline_file)
        return cls(run_dir, loaded, created, reporter=reporter, scorer=scorer)

    @classmethod
    def resume(cls, run_dir: Path, *, reporter: Optional[Reporter] = None) -> "Run":
        from evomerge.devices import unavailable

        store = open_store(run_dir)
        loaded = open_config(store)
        why = unavailable(loaded.pipeline.device)  # a run made on a GPU and resumed where there is none
        if why is not None:
            raise EvomergeError(f"{run_dir} was made with device {why}. Fix: resume it on a machine with that GPU "
                                "(a run keeps the device it was started with)")
        return cls(Path(run_dir), loaded, store, reporter=reporter)

    # ------------------------------------------------------------ the loop

    def run(self) -> None:
        self.artifacts.lock()
        try:
            with self.reporter:
                self._run()
        except KeyboardInterrupt:
            with self.store.transaction():  # so that `evomerge status` says so; a fine-tune saved its state
                self.store.add_event("interrupted")
            raise
        finally:
            self.executor.close()
            self.artifacts.unlock()

    def _run(self) -> None:
        self.artifacts.tidy()
        if self.store.events(kind="run_finished"):
            self.reporter.log(f"{self.dir}: the run has finished already")
            return
        self.executor.start()
        overall = self.reporter.phase("run", total=len(self.loaded.population.members) + self.cfg.generations)
        for index, member in enumerate(self.loaded.population.members):
            self.seeding.seed(index, member)
            self.reporter.advance(overall)
        self.scoring.estimates.prepare()  # the anchors, once every seed is scored (where the select split is estimated)
        for gen in range(1, self.cfg.generations + 1):
            self._generation(gen)
            self.reporter.advance(overall, description=f"run (generation {gen}/{self.cfg.generations} done)")
        with self.store.transaction():
            self.store.add_event("run_finished")

    def _generation(self, gen: int) -> None:
        if self.store.survivors(gen) is not None:
            return
        pool = self._healthy(self.seeding.population(gen - 1))
        if len(pool) < (self.cfg.parents_per_child if self.cfg.crossover is not None else 1):
            raise EvomergeError(f"generation {gen} cannot be bred: too few members of the population are healthy "
                                f"({len(pool)}; the others failed, see `evomerge status {self.dir}`). Fix: replace "
                                "the failed seeds in the population file and start a new run")
        children = self._each(lambda slot: self.breeding.child(gen, slot, pool),
                              range(self.cfg.children_per_generation))
        self._each(lambda child: [self.scoring.ensure(self.store.member(child), which) for which in SPLITS],
                   children)  # a crossover child's select scores exist already: its best candidate's
        candidates = pool + self._healthy(children)
        scores = self.ctx.board.members(candidates)
        kept = self.survivors.select(candidates, scores, size=self.cfg.population_size)
        with self.store.transaction():
            self.store.set_survivors(gen, kept)
            for m in candidates:
                if m not in kept:
                    self.store.retire(m)
            self.store.add_event("generation_done", generation=gen, survivors=kept,
                                 best=max((scores[m].weighted for m in kept if scores[m].weighted is not None),
                                          default=None))
        self.artifacts.tidy()
        self.reporter.log(f"generation {gen}: survivors "
                          + ", ".join(f"{self.store.member(m).name} ({_fmt(scores[m].weighted)})" for m in kept))

    def population(self, generation: int) -> list[int]:
        return self.seeding.population(generation)

    def seed_only(self) -> None:
        """Seed and score the population file's members, and breed nothing: benchmarks that compare several
        pipelines fine-tune their seeds once this way (benchmarks/racing.py, benchmarks/baselines.py)."""
        self.artifacts.lock()
        try:
            self.executor.start()
            for index, member in enumerate(self.loaded.population.members):
                self.seeding.seed(index, member)
        finally:
            self.executor.close()
            self.artifacts.unlock()

    def _each(self, work, items) -> list:
        """`work` for each item, in order; at once (one driver thread each) when the executor has the workers."""
        items = list(items)
        if self.executor.capacity <= 1 or len(items) <= 1:
            return [work(item) for item in items]
        pool = ThreadPoolExecutor(max_workers=len(items), thread_name_prefix="evomerge-child")
        try:
            return [f.result() for f in [pool.submit(work, item) for item in items]]
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def _healthy(self, ids: list[int]) -> list[int]:
        """The members of `ids` that did not fail: only they breed and compete."""
        return [m for m in ids if self.store.member(m).state is not MemberState.FAILED]


def open_config(store: Store) -> Loaded:
    """The configuration a run was started with (its files may have changed since)."""
    stored = store.config()
    return load_pipeline_dict(stored, pipeline_file=stored["pipeline_file"], population_file=stored["population_file"])


def _fmt(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.4f}"
