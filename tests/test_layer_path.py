"""Layer paths (data-flow-space crossover): the fast model that references the parents' layers is the model
`mergekit-yaml` builds from the candidate's passthrough recipe; invalid paths are told worst; a run with layer_path
resumes after kill -9 to the same lineage, exports a loadable child of the path's depth, and rebuilds a retired child
bit-exactly."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import POPULATION, evomerge, make_model, model_tensors, run_and_kill, snapshot
from evomerge.config import CrossoverOperator, PathSpec
from evomerge.crossover.genome import Genome
from evomerge.crossover.kind import InvalidCandidate
from evomerge.crossover.layer_path import LayerPath


@pytest.fixture(scope="module")
def two_depths(tmp_path_factory) -> dict[str, str]:
    """Parents of different depths: a (4 layers) and b (6 layers)."""
    root = tmp_path_factory.mktemp("depths")
    return {"a": str(make_model(root / "a", seed=1)), "b": str(make_model(root / "b", seed=2, layers=6))}


def _genome(**path) -> Genome:
    return Genome(CrossoverOperator(method="layer_path", path=PathSpec(**path)), ("a", "b"), 4, depths=(4, 6))


def _vector(genome: Genome, on: list[int], scales: list[float]) -> list[float]:
    x = [0.1] * genome.dim()
    for i in on:
        x[i] = 0.9
    x[len(x) - len(scales):] = scales
    return x


def test_the_fast_path_model_is_what_mergekit_yaml_builds(two_depths: dict[str, str], tmp_path: Path,
                                                          tiny_pipeline: Path):
    import torch
    from transformers import AutoModelForCausalLM

    genome = _genome(repeats=2, scales="pair")
    assert genome.dim() == 2 * (4 + 6) + 2  # indicators over two passes, a scale per ordered pair of parents
    # a0 a1 b2 b3 b4 | a1 (again: a repeated layer) b5; crossings a->b scaled 0.8, b->a 1.3
    params = genome.params(_vector(genome, [0, 1, 6, 7, 8, 11, 19], [0.8, 1.3]))
    assert params["path"] == [["a", 0, 1.0], ["a", 1, 1.0], ["b", 2, 0.8], ["b", 3, 1.0], ["b", 4, 1.0],
                              ["a", 1, 1.3], ["b", 5, 0.8]]
    assert LayerPath.describe(params) == "a[0-1] b[2-4]×0.8 a[1]×1.3 b[5]×0.8"
    assert LayerPath.describe({"path": [["a", 0, 1.0], ["a", 1, 1.0], ["a", 3, 1.0], ["b", 0, 0.9]]}) == "a[0-1,3] b[0]×0.9"
    config = genome.merge_config(params, paths=two_depths, base_path=None, dtype="float32")
    (tmp_path / "path.yml").write_text(config.to_yaml())
    subprocess.run([str(Path(sys.executable).parent / "mergekit-yaml"), str(tmp_path / "path.yml"),
                    str(tmp_path / "built")], check=True, capture_output=True)
    built = AutoModelForCausalLM.from_pretrained(tmp_path / "built", dtype=torch.float32).eval()
    assert built.config.num_hidden_layers == 7

    def load(path):
        return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)

    paths = LayerPath.resident(genome, two_depths, load)
    fast = paths.build(params["path"])
    ids = torch.randint(2, 250, (3, 19), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for use_cache in (False, True):  # with a cache, the repeated layer must get its own slot
            assert (fast(ids, use_cache=use_cache).logits - built(ids, use_cache=use_cache).logits).abs().max() <= 1e-5
        unscaled = paths.build([[p, layer, 1.0] for p, layer, _ in params["path"]])
        assert (unscaled(ids).logits - built(ids).logits).abs().max() > 1e-3  # the scales are applied
        assert fast.config.num_hidden_layers == 3 + 4  # the shell is pointed anew per candidate
    assert sum(p.numel() for p in load(two_depths["a"]).parameters()) > 0
    assert fast.model.embed_tokens is paths.parents["a"].model.embed_tokens  # referenced, not copied

    # the reference engine's candidate: mergekit's tensors held in a model of the path's depth
    from evomerge.config import load_pipeline
    from evomerge.crossover.merge import merge_in_memory
    from evomerge.workbench import BenchSpec, Workbench

    bench = Workbench(BenchSpec(load_pipeline(tiny_pipeline).pipeline, (), str(tiny_pipeline), ""))
    held = bench.holding(merge_in_memory(config, seed=0), like=config).eval()
    assert held.config.num_hidden_layers == 7
    with torch.no_grad():
        assert (held(ids).logits - built(ids).logits).abs().max() <= 1e-5


def test_an_empty_or_too_long_path_is_an_invalid_candidate():
    genome = _genome(max_layers=5, scales="none")
    with pytest.raises(InvalidCandidate, match="no layers"):
        LayerPath.check(genome, genome.params([0.2] * genome.dim()))
    with pytest.raises(InvalidCandidate, match="more than max_layers 5"):
        LayerPath.check(genome, genome.params([0.9] * genome.dim()))
    start = genome.params(genome.x0())  # CMA-ES starts from parent `embed_from` as it is
    assert start["path"] == [["a", layer, 1.0] for layer in range(4)] and start["embed"] == "a"


def test_a_merge_method_takes_only_parents_of_the_base_depth_in_a_population_with_paths(tiny_pipeline: Path):
    """The decision for parameter-space crossover among members of several depths: restricted to the base's depth
    (task vectors subtract the base); too few of them is a clear error, not a shape error inside mergekit."""
    from evomerge.errors import EvomergeError
    from evomerge.evolution import Run

    text = tiny_pipeline.read_text()
    text = re.sub(r"crossover: \{.*\}\n", "crossover: {operators: [{method: ties, search: [weight, density]}, "
                                          "{method: layer_path}], cma: {popsize: 2, budget: 2}}\n", text)
    tiny_pipeline.write_text(text)
    run = Run.start(tiny_pipeline, run_dir=tiny_pipeline.parent / "run")
    try:
        run.seed_only()
        ids = [run.store.member(n).id for n in ("base", "a", "b")]
        for m in ids:
            run.artifacts.depth(m)
        stage = run.breeding.crossover
        assert stage._breedable(ids, "model_stock", 1) == ids[1:]  # mergekit's model_stock: the base apart
        run.artifacts._depths[ids[2]] = 6  # as if b were a path of 6 layers
        assert stage._breedable(ids, "ties", 1) == ids[:2]
        assert stage._breedable(ids, "layer_path", 1) == ids
        run.artifacts._depths[ids[1]] = 3
        with pytest.raises(EvomergeError, match=r"ties merges members of the base's depth \(4 layers\), and only 1 "):
            stage._breedable(ids, "ties", 1)
    finally:
        run.store.close()


PATH_PIPELINE = """\
name: paths
population: population.yaml
generations: 2
population_size: 2
children_per_generation: 2
parents_per_child: 2
crossover: {method: layer_path, path: {repeats: 2, max_layers: 9, scales: pair}, cma: {sigma0: 0.3, popsize: 3, budget: 6}}
fitness:
  tasks: [{task: evomerge_arith, metric: acc}, {task: evomerge_arc_easy, metric: acc}]
  select: {split: select, limit: 6}
  report: {split: report, limit: 6}
seed: 5
"""


def test_a_layer_path_run_resumes_exports_and_rebuilds_bit_exactly(tiny_models: Path, tmp_path: Path):
    from transformers import AutoModelForCausalLM

    from evomerge.artifacts import Artifacts
    from evomerge.evolution import Run
    from evomerge.records import MemberState

    (tmp_path / "population.yaml").write_text(POPULATION.replace("MODELS", str(tiny_models / "models")))
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(PATH_PIPELINE)

    # the reference run, in this process, keeping a copy of every member's weights as the run wrote them
    stash = tmp_path / "as-written"
    tidy = Artifacts.tidy

    def keeping(self):
        if self.members_dir.is_dir():
            shutil.copytree(self.members_dir, stash, dirs_exist_ok=True)
        tidy(self)

    Artifacts.tidy = keeping
    try:
        run = Run.start(pipeline, run_dir=tmp_path / "reference")
        run.run()
    finally:
        Artifacts.tidy = tidy
    store = run.store
    children = [m for m in store.members() if m.operator == "layer_path"]
    assert len(children) == 4 and all("merge_method: passthrough" in m.recipe for m in children)
    assert any(m.params["merge"]["path"] != [["a", i, 1.0] for i in range(4)] for m in children)

    # kill -9 halfway, resume: the same lineage, scores and candidates
    killed = tmp_path / "killed"
    events = len(store.events())
    assert run_and_kill(["run", str(pipeline), "--run-dir", str(killed), "--quiet"], killed / "evomerge.db",
                        events // 2)
    assert evomerge("resume", str(killed), "--quiet").returncode == 0
    assert snapshot(killed) == snapshot(tmp_path / "reference")

    # a retired child is rebuilt from its passthrough recipe, bit for bit what the run wrote
    retired = [m for m in children if m.state is MemberState.RETIRED and (stash / m.name).is_dir()]
    assert retired, "no layer-path child was written and then retired with this seed"
    rebuilt = Path(run.artifacts.materialise(retired[0]))
    original, again = model_tensors(stash / retired[0].name), model_tensors(rebuilt)
    assert original.keys() == again.keys() and all((original[k] == again[k]).all() for k in original)

    # the export loads with the path's depth, and lineage shows the path compactly
    member = retired[0]
    done = evomerge("export", str(tmp_path / "reference"), member.name, str(tmp_path / "exported"))
    assert done.returncode == 0, done.stderr
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "exported")
    assert model.config.num_hidden_layers == len(member.params["merge"]["path"])
    assert "merge_method: passthrough" in (tmp_path / "exported" / "mergekit_config.yml").read_text()
    lineage = evomerge("lineage", str(tmp_path / "reference"), member.name)
    assert f"layer_path {LayerPath.describe(member.params['merge'])}" in lineage.stdout
    board = evomerge("leaderboard", str(tmp_path / "reference"), "--format", "csv")
    assert f"{member.name},{member.generation},layer_path" in board.stdout
    assert LayerPath.describe(member.params["merge"]) in board.stdout

    # the report draws every path: one cell per layer, and the member's own in its details
    report = tmp_path / "report.html"
    assert evomerge("report", str(tmp_path / "reference"), "-o", str(report)).returncode == 0
    _report_draws_the_paths(report, children, member)
    store.close()


def _report_draws_the_paths(report: Path, children: list, member) -> None:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is missing: pip install -e \".[test]\"")
    from test_report import _browser

    with sync_playwright() as p:
        browser = _browser(p)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        errors = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(report.as_uri())
        page.wait_for_selector("#paths svg.path-strip")
        assert page.locator("#paths svg.path-strip").count() == len(children)
        cells = page.eval_on_selector_all("#paths .path-row", "rows => rows.map(r => r.querySelectorAll('g').length)")
        assert sorted(cells) == sorted(len(m.params["merge"]["path"]) for m in children)
        page.click(f'#tree g.node[data-id="{member.id}"]')
        layers = len(member.params["merge"]["path"])
        assert f"Layer path ({layers} layers)" in page.text_content("#details")
        assert page.locator("#details svg.path-strip g").count() == layers
        assert not errors, errors
        browser.close()


def test_crossover_operators_are_drawn_per_child_by_weight_and_misconfigurations_are_config_errors():
    from types import SimpleNamespace

    from evomerge.config import CrossoverSpec
    from evomerge.crossover.search import CrossoverStage

    spec = CrossoverSpec(operators=[{"method": "task_arithmetic", "weight": 3}, {"method": "layer_path", "weight": 1}])
    assert [op.method for op in spec.choices()] == ["task_arithmetic", "layer_path"]
    assert spec.operator("layer_path").path is None and spec.operator("task_arithmetic").search == ("weight",)
    stage = CrossoverStage(SimpleNamespace(cfg=SimpleNamespace(crossover=spec, seed=7)), parents=None, estimates=None)
    drawn = [stage._operator(g, s) for g in range(1, 41) for s in range(10)]
    assert drawn == [stage._operator(g, s) for g in range(1, 41) for s in range(10)]  # keyed, not by arrival
    assert 0.68 < drawn.count("task_arithmetic") / len(drawn) < 0.82  # 3 : 1 over 400 children
    single = CrossoverSpec(method="ties", search=["weight", "density"])
    assert single.choices() == (single,)

    wrong = {
        "give `method` .* or `operators`": dict(method="ties", operators=[{"method": "linear"}]),
        "listed twice in `operators`": dict(operators=[{"method": "linear"}, {"method": "linear", "weight": 2}]),
        "give search, layer_group, path and weight in each operator": dict(search=["weight", "density"],
                                                                             operators=[{"method": "ties"}]),
        "`path` settings are for layer_path": dict(method="ties", path={"repeats": 2}),
        "layer_path searches the path itself": dict(method="layer_path", search=["weight", "density"]),
        "model_stock has nothing to search": dict(method="model_stock", search=["density"]),
    }
    for message, data in wrong.items():
        with pytest.raises(ValueError, match=message):
            CrossoverSpec.model_validate(data)


def test_a_path_that_keeps_a_parent_that_is_not_there_is_refused_before_any_compute(tiny_pipeline: Path):
    text = re.sub(r"crossover: \{.*\}\n", "crossover: {method: layer_path, path: {embed_from: 2}}\n",
                  tiny_pipeline.read_text())
    tiny_pipeline.write_text(text)
    done = evomerge("run", str(tiny_pipeline), "--run-dir", str(tiny_pipeline.parent / "run"))
    assert done.returncode == 2 and "embed_from 2 is not a parent" in done.stderr and "Fix:" in done.stderr
    assert not (tiny_pipeline.parent / "run").exists()
