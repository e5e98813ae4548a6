"""The generational loop: seed, score, cross over (CMA-ES over mergekit merges), select survivors; resumable.

    evomerge run pipelines/demo.yaml        # Run.start(...).run()
    evomerge resume runs/demo-...           # Run.resume(...).run()

Every step reads what the store already holds before computing, and commits its result in one transaction, so a
run killed at any moment and resumed ends exactly where an uninterrupted run with the same seed ends.
"""
from __future__ import annotations

import json
import shutil
from datetime import datetime
from pathlib import Path
from typing import Optional

from evomerge.config import EsOperator, Loaded, LoraSettings, SeedMember, load_pipeline, load_pipeline_dict
from evomerge.crossover import cma
from evomerge.crossover.genome import Genome
from evomerge.crossover.fast import ResidentMerge
from evomerge.crossover.merge import load_into, merge_in_memory, merge_to_disk
from evomerge.errors import EvomergeError
from evomerge.fitness.lm_eval import Fitness
from evomerge.models import load_model, load_tokenizer, resolve_model, save_model_dir
from evomerge.progress import Reporter
from evomerge.selection import rng_for, select_parents, survivors
from evomerge.store import CrossoverRecord, MemberRecord, MemberState, Store, by_task, candidate_subject, member_subject


class Run:
    """A run directory: its config, its store, and the loop that advances it."""

    def __init__(self, run_dir: Path, loaded: Loaded, store: Store, *, reporter: Optional[Reporter] = None) -> None:
        self.dir = run_dir
        self.loaded = loaded
        self.cfg = loaded.pipeline
        self.store = store
        self.reporter = reporter or Reporter(quiet=True)
        self._fitness: Optional[Fitness] = None
        self._resident = None  # the one model candidates are written into, kept for the whole run
        self._merger: Optional[tuple[int, ResidentMerge]] = None  # (crossover id, its parents held in memory)
        self._tokenizer = None

    # ------------------------------------------------------------ opening

    @classmethod
    def start(cls, pipeline_file: str | Path, *, run_dir: Optional[Path] = None,
              reporter: Optional[Reporter] = None) -> "Run":
        """Validate everything (config, tasks, splits), then create the run directory and its store."""
        loaded = load_pipeline(pipeline_file)
        fitness = Fitness(loaded.pipeline.fitness, include_paths=loaded.include_paths(), device=loaded.pipeline.device,
                          pipeline_file=loaded.pipeline_file)  # tasks, metrics, split overlap: before any directory
        _check_data_sources(loaded, fitness)
        if run_dir is None:
            run_dir = Path("runs") / f"{loaded.pipeline.name}-{datetime.now():%Y%m%d-%H%M%S}"
        run_dir = Path(run_dir)
        if run_dir.exists() and any(run_dir.iterdir()):
            raise EvomergeError(f"{run_dir} already exists and is not empty. "
                                f"Fix: `evomerge resume {run_dir}` to continue it, or choose another --run-dir")
        run_dir.mkdir(parents=True, exist_ok=True)
        store = Store.create(run_dir, config={
            "pipeline": loaded.pipeline.model_dump(mode="json"), "population": loaded.population.model_dump(mode="json"),
            "pipeline_file": loaded.pipeline_file, "population_file": loaded.population_file,
        })
        with store.transaction():
            store.add_event("run_started", pipeline=loaded.pipeline_file)
        run = cls(run_dir, loaded, store, reporter=reporter)
        run._fitness = fitness
        return run

    @classmethod
    def resume(cls, run_dir: Path, *, reporter: Optional[Reporter] = None) -> "Run":
        store = Store.open(run_dir)
        stored = store.config()
        loaded = load_pipeline_dict(stored, pipeline_file=stored["pipeline_file"],
                                    population_file=stored["population_file"])
        return cls(Path(run_dir), loaded, store, reporter=reporter)

    @property
    def fitness(self) -> Fitness:
        if self._fitness is None:
            self._fitness = Fitness(self.cfg.fitness, include_paths=self.loaded.include_paths(),
                                    device=self.cfg.device, engine=self.cfg.engine,
                                    pipeline_file=self.loaded.pipeline_file)
        return self._fitness

    # ------------------------------------------------------------ the loop

    def run(self) -> None:
        with self.reporter:
            self._tidy()
            done = self.store.events(kind="run_finished")
            if done:
                self.reporter.log(f"{self.dir}: the run has finished already")
                return
            total = len(self.loaded.population.members) + self.cfg.generations
            overall = self.reporter.phase("run", total=total)
            for member in self.loaded.population.members:
                self._seed(member)
                self.reporter.advance(overall)
            for gen in range(1, self.cfg.generations + 1):
                self._generation(gen)
                self.reporter.advance(overall, description=f"run (generation {gen}/{self.cfg.generations} done)")
            with self.store.transaction():
                self.store.add_event("run_finished")

    def population(self, generation: int) -> list[int]:
        """Member ids of the population that breeds generation `generation` + 1."""
        if generation == 0:
            return [self.store.member(m.name).id for m in self.loaded.population.members]
        ids = self.store.survivors(generation)
        if ids is None:
            raise RuntimeError(f"generation {generation} has no survivors yet")
        return ids

    def select_fitness(self, member_id: int) -> Optional[float]:
        """The weighted select score of a member, or None before it is scored."""
        key = self.fitness_key("select")
        rows = self.store.scores(member_subject(member_id), **key)
        return self.cfg.fitness.weighted(by_task(rows))

    def fitness_key(self, which: str) -> dict:
        spec = {"select": self.cfg.fitness.select, "report": self.cfg.fitness.report}[which]
        return {"split": spec.split, "limit": spec.limit, "fewshot": self.cfg.fitness.num_fewshot}

    # ------------------------------------------------------------ seeds

    def _seed(self, seed: SeedMember) -> None:
        record = self.store.member(seed.name)
        if record is None:
            if seed.model is not None:
                source = self.loaded.model_source(seed)
                path = resolve_model(source)
                with self.store.transaction():
                    mid = self.store.add_member(name=seed.name, generation=0, operator="seed", parents=(),
                                                params={"source": source}, recipe=json.dumps({"source": source}),
                                                weights=path)
                    self.store.add_event("member_added", member=mid, name=seed.name, operator="seed")
            else:
                self._lora_seed(seed)
            record = self.store.member(seed.name)
        for which in ("select", "report"):
            self._score_member(record, which)

    def _lora_seed(self, seed: SeedMember) -> None:
        parent = self.store.member(seed.lora.parent)
        self._lora_member(seed.name, 0, parent, seed.lora, root=Path(self.loaded.population_file).parent)

    def _lora_member(self, name: str, generation: int, parent: MemberRecord, settings: LoraSettings, *,
                     root: Path, mutation_id: Optional[int] = None) -> int:
        """Fine-tune `parent` with LoRA (peft), save the merged model and the adapter (its recipe); returns its id."""
        from evomerge.mutation.lora import train_lora

        pairs = self._pairs(settings.task, settings.data, root)
        source = settings.task or settings.data
        out = self.dir / "members" / name
        adapter = self.dir / "adapters" / name
        bar = self.reporter.step(f"LoRA fine-tune {name} on {source}", total=settings.steps)
        parent_dir = self.materialise(parent)
        model = load_model(parent_dir, dtype=self.cfg.dtype, device=self.cfg.device)
        tokenizer = load_tokenizer(parent_dir)
        merged = train_lora(model, tokenizer, pairs, settings, adapter_dir=adapter,
                            on_step=lambda step, loss: self.reporter.advance(
                                bar, description=f"LoRA fine-tune {name} on {source} (loss {loss:.3f})"))
        out.parent.mkdir(parents=True, exist_ok=True)
        save_model_dir(merged, tokenizer, out)
        params = settings.model_dump(mode="json")
        with self.store.transaction():
            mid = self.store.add_member(
                name=name, generation=generation, operator="lora", parents=(parent.id,), params=params,
                recipe=json.dumps({"parent": parent.name, "adapter": str(adapter.relative_to(self.dir)),
                                   "lora": params, "train_examples": len(pairs)}),
                weights=str(out))
            if mutation_id is not None:  # same transaction: a resume never finds the member without its mutation
                self.store.set_mutation_child(mutation_id, mid)
            self.store.add_event("member_added", member=mid, name=name, operator="lora")
        self.reporter.log(f"{name}: LoRA fine-tune of {parent.name} on {source} ({settings.steps} steps)")
        return mid

    def _pairs(self, task: Optional[str], data: Optional[str], root: Path) -> list[tuple[str, str]]:
        """Training pairs from an lm-eval task's training split or a JSONL file of prompt/completion objects."""
        if task is not None:
            return self.fitness.train_pairs(task)
        rows = [json.loads(line) for line in (root / data).read_text().splitlines() if line.strip()]
        return [(r["prompt"], r["completion"]) for r in rows]

    # ------------------------------------------------------------ scoring

    def _score_member(self, record: MemberRecord, which: str) -> None:
        key = self.fitness_key(which)
        if self.store.scores(member_subject(record.id), **key):
            return
        path = self.materialise(record)
        bar = self.reporter.step(f"scoring {record.name} on the {which} split", total=1)
        model = load_model(path, dtype=self.cfg.dtype, device=self.cfg.device)
        results, docs = self.fitness.evaluate(model, self._tok(), which)
        self.fitness.release(model)
        with self.store.transaction():
            self.store.add_scores(member_subject(record.id), **key, results=results, docs=docs)
            self.store.add_event("scored", subject=member_subject(record.id), split=key["split"],
                                 fitness=self.cfg.fitness.weighted(results))
        self.reporter.advance(bar)
        self.reporter.log(f"{record.name:>16} {which:>6}: {_fmt(results)}  weighted {self.cfg.fitness.weighted(results):.4f}")

    def _tok(self):
        if self._tokenizer is None:
            first = self.store.member(self.loaded.population.members[0].name)
            self._tokenizer = load_tokenizer(self.materialise(first))
        return self._tokenizer

    # ------------------------------------------------------------ generations

    def _generation(self, gen: int) -> None:
        if self.store.survivors(gen) is not None:
            return
        parents_pool = self.population(gen - 1)
        children = [self._breed(gen, slot, parents_pool) for slot in range(self.cfg.children_per_generation)]
        for child in children:
            for which in ("select", "report"):  # a crossover child's select scores exist already: its best candidate's
                self._score_member(self.store.member(child), which)
        pool = parents_pool + children
        fitness = {m: self.select_fitness(m) for m in pool}
        kept = survivors(pool, fitness, size=self.cfg.population_size)
        with self.store.transaction():
            self.store.set_survivors(gen, kept)
            for m in pool:
                if m not in kept:
                    self.store.retire(m)
            self.store.add_event("generation_done", generation=gen, survivors=kept,
                                 best=max(fitness[m] for m in kept))
        self._tidy()
        best = max(kept, key=lambda m: fitness[m])
        self.reporter.log(f"generation {gen}: survivors "
                          + ", ".join(f"{self.store.member(m).name} ({fitness[m]:.4f})" for m in kept)
                          + f"; best {self.store.member(best).name}")

    def _breed(self, gen: int, slot: int, pool: list[int]) -> int:
        """One child: crossover, then (with probability mutation.rate) a mutation of the crossover's product."""
        operator = self._mutation_operator(gen, slot)
        name = f"g{gen}-c{slot}"
        if self.cfg.crossover is not None:
            parent = self._crossover(gen, slot, pool, name=name if operator is None else f"{name}-merge")
        else:
            fitness = {m: self.select_fitness(m) for m in pool}
            parent = select_parents(pool, fitness, n=1, how=self.cfg.parent_selection,
                                    rng=rng_for(self.cfg.seed, gen, slot))[0]
        if operator is None:
            return parent
        child = self._mutate(gen, slot, parent, operator, name=name)
        intermediate = self.store.member(parent)
        if intermediate.generation == gen and intermediate.state is MemberState.ALIVE:
            with self.store.transaction():  # the merge was a step towards the mutant, not a member of the population
                self.store.retire(intermediate.id, state=MemberState.INTERMEDIATE)
            self._tidy()
        return child

    def _mutation_operator(self, gen: int, slot: int):
        """Whether this child is mutated and by which operator: a draw that depends only on (seed, gen, slot)."""
        spec = self.cfg.mutation
        if spec is None:
            return None
        rng = rng_for(self.cfg.seed, gen, slot, 1)
        if rng.random() >= spec.rate:
            return None
        weights = [op.weight for op in spec.operators]
        return spec.operators[int(rng.choice(len(weights), p=[w / sum(weights) for w in weights]))]

    def _mutate(self, gen: int, slot: int, parent_id: int, operator, *, name: str) -> int:
        rec = self.store.mutation(gen, slot)
        if rec is None:
            with self.store.transaction():
                self.store.add_mutation(generation=gen, slot=slot, parent_id=parent_id,
                                        operator=operator.model_dump(mode="json"))
                self.store.add_event("mutation_started", generation=gen, slot=slot, parent=parent_id,
                                     operator=operator.kind)
            rec = self.store.mutation(gen, slot)
        if rec.child_id is not None:
            return rec.child_id
        parent = self.store.member(parent_id)
        if operator.kind == "lora":
            return self._lora_member(name, gen, parent, operator, root=Path(self.loaded.pipeline_file).parent,
                                     mutation_id=rec.id)
        return self._es_member(rec, name, parent, operator)

    def _es_member(self, rec, name: str, parent: MemberRecord, op: EsOperator) -> int:
        """Noise ES from `parent`, committing every iteration's seeds and coefficients; resumes by replaying them."""
        from evomerge.mutation import es

        settings = es.EsSettings(sigma=op.sigma, learning_rate=op.learning_rate, rank=op.rank, shaping=op.shaping)
        model = load_model(self.materialise(parent), dtype=self.cfg.dtype, device=self.cfg.device)
        params = es.es_parameters(model)
        done = self.store.es_iterations(rec.id)
        es.replay(params, [es.IterationRecord(tuple(d["seeds"]), tuple(d["coefficients"])) for d in done], settings)
        bar = self.reporter.step(f"ES {name} from {parent.name} ({op.reward.kind} reward)", total=op.iterations,
                                 completed=len(done))
        pairs = None if op.reward.kind == "select" else self._pairs(op.reward.task, op.reward.data,
                                                                      Path(self.loaded.pipeline_file).parent)
        for it in range(len(done), op.iterations):
            reward = self._reward(op, model, pairs, rng_for(self.cfg.seed, rec.generation, rec.slot, 2, it))
            seeds = rng_for(self.cfg.seed, rec.generation, rec.slot, 3, it).integers(0, 2**31 - 1, size=op.pairs)
            record = es.iterate(params, reward, seeds.tolist(), settings)
            with self.store.transaction():
                self.store.add_es_iteration(rec.id, it, seeds=record.seeds, coefficients=record.coefficients,
                                            rewards_plus=record.rewards_plus, rewards_minus=record.rewards_minus)
                self.store.add_event("es_iteration", mutation=rec.id, iteration=it,
                                     reward=sum(record.rewards_plus + record.rewards_minus) / (2 * op.pairs))
            mean = sum(record.rewards_plus + record.rewards_minus) / (2 * op.pairs)
            self.reporter.advance(bar, description=f"ES {name} from {parent.name}: mean reward {mean:.4f}")
        self.fitness.release(model)
        out = self.dir / "members" / name
        out.parent.mkdir(parents=True, exist_ok=True)
        save_model_dir(model, self._tok(), out)
        iterations = [{"seeds": d["seeds"], "coefficients": d["coefficients"]} for d in self.store.es_iterations(rec.id)]
        recipe = {"parent": parent.name, "operator": "es", "sigma": op.sigma, "learning_rate": op.learning_rate,
                  "rank": op.rank, "shaping": op.shaping, "device_type": model.device.type, "dtype": self.cfg.dtype,
                  "iterations": iterations}
        with self.store.transaction():
            mid = self.store.add_member(name=name, generation=rec.generation, operator="es", parents=(parent.id,),
                                        params=op.model_dump(mode="json"), recipe=json.dumps(recipe),
                                        weights=str(out))
            self.store.set_mutation_child(rec.id, mid)
            self.store.add_event("member_added", member=mid, name=name, operator="es")
        self.reporter.log(f"{name}: ES from {parent.name}, {op.iterations} iterations of {op.pairs} pairs")
        return mid

    def _reward(self, op: EsOperator, model, pairs, rng):
        """The ES reward for one iteration: both members of every pair see the same batch."""
        from evomerge.mutation import rewards

        if op.reward.kind == "select":
            return lambda: self.cfg.fitness.weighted(self.fitness.evaluate(model, self._tok(), "select")[0])
        batch = [pairs[i] for i in rng.choice(len(pairs), size=min(op.reward.batch_size, len(pairs)), replace=False)]
        if op.reward.kind == "loglik":
            return rewards.loglik(model, self._tok(), batch)
        return rewards.exact_match(model, self._tok(), batch, max_new_tokens=op.reward.max_new_tokens)

    def _crossover(self, gen: int, slot: int, pool: list[int], *, name: str) -> int:
        """Breed one child: pick parents, run CMA-ES over merge parameters, keep the best merge. Returns its id."""
        spec = self.cfg.crossover
        rec = self.store.crossover(gen, slot)
        if rec is None:
            fitness = {m: self.select_fitness(m) for m in pool}
            parents = select_parents(pool, fitness, n=self.cfg.parents_per_child, how=self.cfg.parent_selection,
                                     rng=rng_for(self.cfg.seed, gen, slot))
            genome = self._genome(parents)
            state = cma.new_strategy(genome, sigma0=spec.cma.sigma0, popsize=spec.cma.popsize,
                                     seed=self.cfg.seed * 100_003 + gen * 1009 + slot)
            with self.store.transaction():
                cid = self.store.add_crossover(generation=gen, slot=slot, parents=tuple(parents), es_state=state)
                self.store.add_event("crossover_started", crossover=cid, generation=gen, slot=slot, parents=parents)
            rec = self.store.crossover(gen, slot)
        if rec.child_id is not None:
            return rec.child_id
        genome = self._genome(list(rec.parents))
        iterations = max(1, spec.cma.budget // spec.cma.popsize)
        names = " × ".join(self.store.member(p).name for p in rec.parents)
        bar = self.reporter.step(f"gen {gen} child {slot + 1}/{self.cfg.children_per_generation}: "
                                 f"{spec.method} {names}", total=iterations * spec.cma.popsize,
                                 completed=sum(c.fitness is not None for c in self.store.candidates(rec.id)))
        while rec.iteration < iterations:
            self._cma_iteration(rec, genome, bar)
            rec = self.store.crossover(gen, slot)
        return self._finish_crossover(rec, genome, name=name)

    def _cma_iteration(self, rec: CrossoverRecord, genome: Genome, bar) -> None:
        it = rec.iteration
        cands = self.store.candidates(rec.id, iteration=it)
        if not cands:
            xs, state = cma.ask(rec.es_state, seed=self.cfg.seed * 7919 + rec.id * 104_729 + it)
            with self.store.transaction():
                self.store.add_candidates(rec.id, it, [(x, genome.params(x)) for x in xs])
                self.store.update_crossover(rec.id, es_state=state)
                self.store.add_event("cma_ask", crossover=rec.id, iteration=it, proposals=len(xs))
            cands = self.store.candidates(rec.id, iteration=it)
            rec = self.store.crossover(rec.generation, rec.slot)
        key = self.fitness_key("select")
        for cand in cands:
            if cand.fitness is not None:
                continue
            self._write_candidate(rec, genome, cand.params)
            results, docs = self.fitness.evaluate(self._resident_model(), self._tok(), "select")
            value = self.cfg.fitness.weighted(results)
            with self.store.transaction():
                self.store.add_scores(candidate_subject(cand.id), **key, results=results, docs=docs)
                self.store.set_candidate_fitness(cand.id, value)
                self.store.add_event("scored", subject=candidate_subject(cand.id), split=key["split"], fitness=value)
            best = max([c.fitness for c in self.store.candidates(rec.id) if c.fitness is not None])
            self.reporter.advance(bar)
            self.reporter.log(f"  candidate {it}.{cand.idx}: fitness {value:.4f} (best so far {best:.4f}) "
                              f"{_fmt_params(cand.params)}")
        cands = self.store.candidates(rec.id, iteration=it)
        state = cma.tell(rec.es_state, [list(c.x) for c in cands], [c.fitness for c in cands])
        with self.store.transaction():
            self.store.update_crossover(rec.id, iteration=it + 1, es_state=state)
            self.store.add_event("cma_tell", crossover=rec.id, iteration=it, sigma=cma.sigma(state),
                                 best=max(c.fitness for c in cands))

    def _write_candidate(self, rec: CrossoverRecord, genome: Genome, params: dict) -> None:
        """Put a candidate's merge into the resident evaluation model."""
        config = genome.merge_config(params, paths=self._paths(rec.parents), base_path=self._base_path(),
                                     dtype=self.cfg.dtype)
        if self.cfg.engine == "reference":
            load_into(self._resident_model(), merge_in_memory(config, seed=self.cfg.seed, device=self.cfg.device))
            return
        if self._merger is None or self._merger[0] != rec.id:
            self._merger = None  # one crossover's parents in memory at a time
            self._merger = (rec.id, ResidentMerge(genome, config, seed=self.cfg.seed, device=self.cfg.device))
        self._merger[1].write(params, self._resident_model())

    def _finish_crossover(self, rec: CrossoverRecord, genome: Genome, *, name: str) -> int:
        self._merger = None
        cands = self.store.candidates(rec.id)
        best = max(cands, key=lambda c: (c.fitness, -c.id))
        out = self.dir / "members" / name
        config = genome.merge_config(best.params, paths=self._paths(rec.parents), base_path=self._base_path(),
                                     dtype=self.cfg.dtype)
        if not out.exists():
            out.parent.mkdir(parents=True, exist_ok=True)
            merge_to_disk(config, out, seed=self.cfg.seed, device=self.cfg.device)
        key = self.fitness_key("select")
        rows = self.store.scores(candidate_subject(best.id), **key)
        results, docs = by_task(rows), {r.task: r.docs for r in rows}
        with self.store.transaction():
            child = self.store.add_member(
                name=name, generation=rec.generation, operator=self.cfg.crossover.method, parents=rec.parents,
                params={"merge": best.params, "candidate": best.id, "seed": self.cfg.seed},
                recipe=config.to_yaml(), weights=str(out))
            self.store.add_scores(member_subject(child), **key, results=results, docs=docs,
                                  reused_from=candidate_subject(best.id))
            self.store.update_crossover(rec.id, child_id=child)
            self.store.add_event("member_added", member=child, name=name, operator=self.cfg.crossover.method,
                                 fitness=best.fitness)
        self.reporter.log(f"child {name}: {self.cfg.crossover.method} of "
                          f"{', '.join(self.store.member(p).name for p in rec.parents)}, select {best.fitness:.4f}")
        return child

    def _genome(self, parents: list[int]) -> Genome:
        return Genome(self.cfg.crossover, tuple(self.store.member(p).name for p in parents), self._num_layers())

    def _num_layers(self) -> int:
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(self._base_path()).num_hidden_layers

    def _paths(self, ids: tuple[int, ...]) -> dict[str, str]:
        return {self.store.member(m).name: self.materialise(self.store.member(m)) for m in ids}

    def _base_path(self) -> str:
        return self.materialise(self.store.member(self.loaded.population.base_model))

    def _resident_model(self):
        if self._resident is None:
            self._resident = load_model(self._base_path(), dtype=self.cfg.dtype, device=self.cfg.device)
        return self._resident

    # ------------------------------------------------------------ weights on disk

    def materialise(self, record: MemberRecord) -> str:
        """The member's model directory, rebuilt from its recipe if it left the population."""
        record = self.store.member(record.id)
        if record.weights is not None:
            return record.weights
        out = self.dir / "members" / record.name
        if not out.exists():
            out.parent.mkdir(parents=True, exist_ok=True)
            if record.operator == "lora":
                from evomerge.mutation.lora import apply_adapter

                recipe = json.loads(record.recipe)
                parent = self.store.member(record.parents[0])
                model = apply_adapter(load_model(self.materialise(parent), dtype=self.cfg.dtype),
                                      self.dir / recipe["adapter"])
                save_model_dir(model, load_tokenizer(self.materialise(parent)), out)
            elif record.operator == "es":
                from evomerge.mutation import es

                recipe = json.loads(record.recipe)
                parent = self.store.member(record.parents[0])
                model = load_model(self.materialise(parent), dtype=recipe["dtype"], device=recipe["device_type"])
                es.replay(es.es_parameters(model),
                          [es.IterationRecord(tuple(i["seeds"]), tuple(i["coefficients"])) for i in recipe["iterations"]],
                          es.EsSettings(sigma=recipe["sigma"], learning_rate=recipe["learning_rate"],
                                        rank=recipe["rank"], shaping=recipe["shaping"]))
                save_model_dir(model, self._tok(), out)
            elif record.operator == "seed":
                return resolve_model(json.loads(record.recipe)["source"])
            else:
                merge_to_disk(self.merge_config(record), out, seed=record.params["seed"], device=self.cfg.device)
        with self.store.transaction():
            self.store.set_weights(record.id, str(out))
        return str(out)

    def merge_config(self, record: MemberRecord):
        """A merged member's mergekit configuration, with its parents at their current paths (rebuilt if needed).

        The stored recipe names the paths the parents had when the child was bred; this one stays valid after the
        run directory moves or a parent's weights were deleted and rebuilt.
        """
        genome = self._genome(list(record.parents))
        return genome.merge_config(record.params["merge"], paths=self._paths(record.parents),
                                   base_path=self._base_path(), dtype=self.cfg.dtype)

    def _tidy(self) -> None:
        """Remove half-written directories and the weights of members that left the population."""
        members_dir = self.dir / "members"
        if not members_dir.is_dir():
            return
        keep = {Path(m.weights).name for m in self.store.members() if m.weights}
        for child in members_dir.iterdir():
            if child.name.startswith(".tmp-") or child.name not in keep:
                shutil.rmtree(child, ignore_errors=True)


def _fmt(results: dict) -> str:
    return "  ".join(f"{task} {m.get('acc', next(iter(m.values()))):.3f}" for task, m in results.items())


def _fmt_params(params: dict) -> str:
    parts = []
    for slot, values in params.items():
        parts.append(f"{slot}: " + ", ".join(f"{k}={'/'.join(f'{v:.2f}' for v in vs)}" for k, vs in values.items()))
    return "[" + "; ".join(parts) + "]"



def _check_data_sources(loaded: Loaded, fitness: Fitness) -> None:
    """Every task or JSONL file that LoRA or an ES reward trains on exists: checked before a run directory exists."""
    from evomerge.errors import ConfigError

    def check(task: Optional[str], data: Optional[str], *, file: str, key: str) -> None:
        if task is not None:
            fitness.check_training_task(task, file=file, key=f"{key}.task")
        elif data is not None and not (Path(file).parent / data).is_file():
            raise ConfigError(file=file, key=f"{key}.data", problem=f"{data!r} is not a file",
                              fix="give a JSONL file of {\"prompt\": ..., \"completion\": ...} lines, "
                                  "relative to this file")

    for i, member in enumerate(loaded.population.members):
        if member.lora is not None:
            check(member.lora.task, member.lora.data, file=loaded.population_file, key=f"members.{i}.lora")
    mutation = loaded.pipeline.mutation
    for i, op in enumerate(mutation.operators if mutation else ()):
        if op.kind == "lora":
            check(op.task, op.data, file=loaded.pipeline_file, key=f"mutation.operators.{i}")
        else:
            check(op.reward.task, op.reward.data, file=loaded.pipeline_file, key=f"mutation.operators.{i}.reward")
