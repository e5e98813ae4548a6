"""The run report: the HTML page driven in a real headless Chromium (loads cleanly, one node per member, a click shows
the recipe, a header click sorts, a hostile member name stays text, scores carry ± one standard error, the best member
is compared, paired, with its seeds and parents), the collected data checked against the one score query, the PNG
plots, the DOT output through Graphviz, and a layout whose nodes never overlap."""
from __future__ import annotations

import itertools
import json
import math
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import PIPELINE, POPULATION, evomerge

from evomerge.evolution import open_config
from evomerge.outcomes import fmt_pm
from evomerge.report import collect
from evomerge.report import html as report_html
from evomerge.report.data import layout
from evomerge.records import MemberRecord, MemberState, member_subject
from evomerge.scores import ScoreBoard
from evomerge.store import open_store

# linear crossover with LoRA and ES mutation: seed 2 mutates g1-c0 by LoRA and g2-c1 by ES, so the tree has every
# kind of edge, intermediates, and edges that skip a generation
MUTATION = """\
mutation:
  rate: 0.5
  operators:
    - {kind: lora, task: evomerge_arith, steps: 3, batch_size: 4}
    - {kind: es, iterations: 4, pairs: 2, sigma: 0.01, learning_rate: 0.005,
       reward: {kind: loglik, task: evomerge_arith, batch_size: 4}}
"""
HOSTILE = "<script>alert(1)</script>"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture(scope="module")
def run_dir(tiny_models: Path, tmp_path_factory) -> Path:
    """A finished tiny run, plus a seed named like an XSS attack (config names cannot be, so it is added directly)."""
    root = tmp_path_factory.mktemp("report")
    (root / "population.yaml").write_text(POPULATION.replace("MODELS", str(tiny_models / "models")))
    pipeline = PIPELINE.replace("method: ties, search: [weight, density], layer_group: 2, cma: "
                                "{sigma0: 0.3, popsize: 3, budget: 6}",
                                "method: linear, cma: {sigma0: 0.3, popsize: 2, budget: 4}")
    (root / "pipeline.yaml").write_text(pipeline.replace("seed: 3", "seed: 2") + MUTATION)
    result = evomerge("run", str(root / "pipeline.yaml"), "--run-dir", str(root / "run"), "--quiet")
    assert result.returncode == 0, result.stderr
    store = open_store(root / "run")
    with store.transaction():
        mid = store.add_member(name=HOSTILE, generation=0, operator="seed", parents=(),
                               params={"source": "<img src=x onerror=alert(2)>"},
                               recipe=json.dumps({"source": "</script><script>alert(3)</script>"}), weights=None)
        store.retire(mid)
        # last by select, first by report: sorting by report must move it
        for split, limit, value in (("select", 6, 0.0), ("report", 6, 1.0)):
            store.add_scores(member_subject(mid), split=split, limit=limit, fewshot=0,
                             results={"evomerge_arith": {"acc": value}, "evomerge_arc_easy": {"acc": value}},
                             docs={"evomerge_arith": limit, "evomerge_arc_easy": limit},
                             outcomes={t: {"acc": [value] * limit} for t in ("evomerge_arith", "evomerge_arc_easy")})
    store.close()
    return root / "run"


def _need(what: str, why: str):
    """A missing browser or Graphviz fails the test in CI and skips it on a developer's machine."""
    if os.environ.get("CI"):
        pytest.fail(f"{what} is missing: {why}")
    pytest.skip(f"{what} is missing: {why}")


def _browser(playwright):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        _need("chromium", "apt-get install -y chromium (the README's test command does this)")
    return playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)


def test_html_report_in_headless_chromium(run_dir: Path, tmp_path: Path):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _need("playwright", 'pip install -e ".[test]"')
    out = tmp_path / "report.html"
    result = evomerge("report", str(run_dir), "-o", str(out))
    assert result.returncode == 0, result.stderr
    html = out.read_text()
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "") and "https://" not in html
    assert HOSTILE not in html and "</script><script>" not in html  # only escaped inside the JSON blob

    store = open_store(run_dir)
    members = store.members()
    with sync_playwright() as p:
        browser = _browser(p)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        errors, dialogs, requests = [], [], []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.on("request", lambda r: requests.append(r.url))
        page.goto(out.as_uri())
        page.wait_for_selector("#tree g.node")

        # one node per member, intermediates included
        assert page.locator("#tree g.node").count() == len(members)
        assert sorted(page.eval_on_selector_all("#tree g.node", "gs => gs.map(g => g.dataset.name)")) == \
            sorted(m.name for m in members)

        # a click on a node shows its recipe: a merge's mergekit YAML, a LoRA mutant's JSON
        merge = next(m for m in members if m.operator == "linear" and m.state is MemberState.RETIRED)
        page.click(f'#tree g.node[data-id="{merge.id}"]')
        assert page.text_content("#details h3") == merge.name
        assert page.text_content("#recipe").strip() == merge.recipe.strip()
        assert "merge_method: linear" in page.text_content("#recipe")
        # at 1400 px the panel needs no horizontal scrollbar, and its parameters show without scrolling it
        assert page.eval_on_selector("#details", "e => e.scrollWidth <= e.clientWidth"), "a horizontal scrollbar"
        assert page.eval_on_selector_all("#details pre", "ps => ps.every(p => p.scrollWidth <= p.clientWidth)")
        assert page.eval_on_selector("#details", """e => { const h = [...e.querySelectorAll('h4')].find(
            x => x.textContent === 'Operator parameters'); return h.offsetTop - e.offsetTop < e.clientHeight; }""")
        page.locator("#details").screenshot(path=str(tmp_path / "details.png"))
        lora = next(m for m in members if m.operator == "lora")
        page.click(f'#tree g.node[data-id="{lora.id}"]')
        assert json.loads(page.text_content("#recipe")) == json.loads(lora.recipe)
        assert store.member(lora.parents[0]).name in page.text_content("#details .edges-list")

        # sorting: by report (the hostile seed jumps from last to first), then the other way round
        def column(key: str) -> list:
            return page.eval_on_selector_all(
                "#board tbody tr", f"""rows => rows.map(r => {json.dumps(key)} === 'name'
                    ? r.querySelector('td.member').textContent
                    : r.children[6].textContent)""")
        before = column("name")
        assert before[-1] == HOSTILE
        page.click('#board th[data-sort=":report"]')
        after = column("name")
        assert after != before and sorted(after) == sorted(before) and after[0] == HOSTILE
        values = [float(v.split("±")[0]) for v in column("report") if v != "–"]
        assert values == sorted(values, reverse=True)
        page.click('#board th[data-sort=":report"]')
        values = [float(v.split("±")[0]) for v in column("report") if v != "–"]
        assert values == sorted(values)

        # every score with ± one standard error, as `evomerge leaderboard` writes it (evomerge.outcomes.fmt_pm)
        data = collect(store, open_config(store).pipeline, run_dir=run_dir)
        by_id = {m["id"]: m for m in data["members"]}
        shown = page.eval_on_selector_all("#board tbody tr", "rs => rs.map(r => [+r.dataset.id, r.children[5]"
                                          ".textContent, r.children[8].textContent])")
        assert shown and all(select == fmt_pm(by_id[i]["select"], by_id[i]["select_se"]) and
                             arith == fmt_pm(by_id[i]["tasks"]["evomerge_arith"]["select"],
                                             by_id[i]["tasks"]["evomerge_arith"]["select_se"])
                             for i, select, arith in shown), shown
        best = by_id[data["run"]["best"]]
        page.click(f'#tree g.node[data-id="{best["id"]}"]')
        assert page.text_content("#details table.mini tbody tr td:nth-child(3)") == fmt_pm(best["report"],
                                                                                           best["report_se"])

        # the best member against each seed and each parent, paired, held-out documents first
        assert "paired, report split" in page.text_content("#paired h2")
        for split in ("report", "select"):
            page.click(f'#paired button[data-split="{split}"]')
            rows = page.eval_on_selector_all(
                "#paired tbody tr", "rs => rs.map(r => [+r.dataset.id, ...[...r.children].map(c => c.textContent)])")
            entries = [e for e in data["paired"] if e["split"] == split]
            assert [r[0] for r in rows] == [e["other"] for e in entries] and rows
            for (_, name, relation, diff, interval, docs, wins, verdict), e in zip(rows, entries):
                assert (name, relation) == (e["name"], e["relation"])
                if e["paired"]:
                    assert interval == f"[{_signed(e['low'])}, {_signed(e['high'])}]" and docs == str(e["docs"])
                    assert verdict == {"A better": "better", "B better": "worse"}.get(e["verdict"], e["verdict"])
                    assert wins.count("%") == 3
                else:
                    assert interval == "–" and verdict.startswith("not ")

        # the Pareto fronts: a scatter per split; the select front's members listed with their held-out gap; the
        # hostile seed, last on select and best on every report task, is the whole report front
        board = {split: json.loads(evomerge("leaderboard", str(run_dir), "--pareto", "--split", split, "--format",
                                            "json").stdout) for split in ("select", "report")}
        fronts = {split: sorted(r["member"] for r in rows if r["front"] == 1) for split, rows in board.items()}
        assert fronts["report"] == [HOSTILE] and HOSTILE not in fronts["select"]
        assert page.locator("#pareto svg.chart").count() == 2
        listed = page.eval_on_selector_all("#pareto table.fronts tbody tr", "rs => rs.map(r => r.children[0].textContent)")
        assert sorted(listed) == fronts["select"]
        assert all(cell.startswith(("+", "−", "±")) for cell in page.eval_on_selector_all(
            "#pareto table.fronts td.gap", "cs => cs.map(c => c.textContent)"))
        shot = tmp_path / "fronts.png"
        page.locator("#pareto").screenshot(path=str(shot))
        from matplotlib.image import imread

        pixels = imread(str(shot))[..., :3]
        select_blue = ((abs(pixels - [0x0b / 255, 0x5c / 255, 0xad / 255]) < 0.03).all(axis=-1)).sum()
        report_amber = ((abs(pixels - [0xb4 / 255, 0x53 / 255, 0x09 / 255]) < 0.03).all(axis=-1)).sum()
        assert pixels.shape[1] >= 800 and select_blue > 30 and report_amber > 10, (pixels.shape, select_blue,
                                                                                  report_amber)

        # filters: generation 2 only, then the ES operator only
        page.select_option("#filter-gen", "2")
        generations = page.eval_on_selector_all("#board tbody tr", "rs => rs.map(r => r.children[2].textContent)")
        assert set(generations) == {"2"}
        page.select_option("#filter-gen", "all")
        page.select_option("#filter-op", "es")
        assert column("name") == [m.name for m in members if m.operator == "es"]

        # the hostile name is text everywhere: in the tree, the panel, the table; no script ran, no element appeared
        hostile = next(m for m in members if m.name == HOSTILE)
        page.click(f'#tree g.node[data-id="{hostile.id}"]')
        assert page.text_content("#details h3") == HOSTILE
        assert "</script><script>alert(3)</script>" in page.text_content("#recipe")
        assert "<img src=x onerror=alert(2)>" in page.text_content("#details pre.params")
        assert page.eval_on_selector_all("script", "s => s.length") == 2
        assert page.eval_on_selector_all("img", "s => s.length") == 0
        page.select_option("#filter-op", "seed")
        assert HOSTILE in column("name")
        page.wait_for_timeout(200)
        browser.close()
    assert dialogs == [], "a script from the data ran"
    assert errors == [], errors
    assert all(u.startswith(("file://", "data:")) for u in requests), requests


def _signed(v: float) -> str:
    """The page's signed difference: +0.0833, −0.0833, ±0.0000."""
    return ("+" if v > 0 else "−" if v < 0 else "±") + f"{abs(v):.4f}"


def _plain(x) -> bool:
    """JSON's own types all the way down (no numpy scalar slipped in)."""
    if isinstance(x, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in x.items())
    if isinstance(x, (list, tuple)):
        return all(_plain(v) for v in x)
    return x is None or type(x) in (str, int, float, bool)


def test_report_data_has_standard_errors_and_paired_differences(run_dir: Path, tmp_path: Path):
    """Every score's SE is the one score query's (for an `acc` task, √(p(1−p)/n)); the best member is compared with
    each seed and each parent by ScoreBoard.compare, and with a seed scored before outcomes were kept by its point
    difference only."""
    shutil.copytree(run_dir, tmp_path / "run")
    store = open_store(tmp_path / "run")
    with store.transaction():
        legacy = store.add_member(name="legacy", generation=0, operator="seed", parents=(), params={}, recipe="{}",
                                  weights=None)
        store.retire(legacy)
        for split in ("select", "report"):
            store.add_scores(member_subject(legacy), split=split, limit=6, fewshot=0,
                             results={"evomerge_arith": {"acc": 0.0}, "evomerge_arc_easy": {"acc": 1 / 6}},
                             docs={"evomerge_arith": 6, "evomerge_arc_easy": 6})
    pipeline = open_config(store).pipeline
    data = collect(store, pipeline, run_dir=tmp_path / "run")
    assert _plain(data) and report_html.json_for_script(data)  # no numpy type, no NaN
    assert data["run"]["best"] not in (None, legacy)
    board = ScoreBoard(store, pipeline.fitness)

    for m in data["members"]:
        for which in ("select", "report"):
            s = board.member(m["id"], which)
            assert (m[which], m[f"{which}_se"]) == (s.weighted, s.weighted_se)
            for t in pipeline.fitness.tasks:
                p, se = m["tasks"][t.task][which], m["tasks"][t.task][f"{which}_se"]
                assert se == s.se[t.task]
                if p is not None:  # every task is an acc: the SE of a proportion
                    assert se == pytest.approx(math.sqrt(p * (1 - p) / s.docs[t.task]), abs=1e-12), (m["name"], t)
    scored = [m for m in data["members"] if m["report"] is not None]
    assert any(m["report_se"] > 0 for m in scored) and all(m["report_se"] is not None for m in scored)

    best = store.member(data["run"]["best"])
    seeds = {m.id for m in store.members() if m.generation == 0 and m.state is not MemberState.FAILED} - {best.id}
    for which in ("report", "select"):
        entries = {e["other"]: e for e in data["paired"] if e["split"] == which}
        a = board.member(best.id, which)
        expected = {i for i in seeds if board.member(i, which).weighted is not None} | set(best.parents)
        assert set(entries) == expected and legacy in entries
        for i, e in entries.items():
            assert e["relation"] == ", ".join(r for r, ids in (("seed", seeds), ("parent", set(best.parents)))
                                              if i in ids)
            b = board.member(i, which)
            compared = board.compare(a, b)
            if compared is None:
                assert e["paired"] is False and e["low"] is None and e["verdict"] is None
                assert e["diff"] == (None if b.weighted is None else pytest.approx(a.weighted - b.weighted))
                continue
            whole = compared[1]
            assert e["paired"] is True and e["low"] <= e["diff"] <= e["high"]
            assert (e["diff"], e["low"], e["high"], e["docs"], e["a_wins"], e["b_wins"], e["ties"], e["verdict"]) == (
                whole.diff, whole.low, whole.high, whole.docs, whole.a_wins, whole.b_wins, whole.ties, whole.verdict)
        assert entries[legacy]["paired"] is False and entries[legacy]["diff"] == pytest.approx(
            a.weighted - (0.0 + 1 / 6) / 2)
        assert sum(e["paired"] for e in entries.values()) >= 2
    hostile = next(e for e in data["paired"] if e["name"] == HOSTILE and e["split"] == "report")
    assert hostile["verdict"] == "B better" and hostile["high"] < 0  # 1.0 on every held-out document


def test_report_plots_and_errors(run_dir: Path, tmp_path: Path):
    plots = tmp_path / "plots"
    result = evomerge("report", str(run_dir), "--plots", str(plots))
    assert result.returncode == 0, result.stderr
    names = sorted(p.name for p in plots.iterdir())
    assert names == ["cmaes.png", "es.png", "fitness.png", "fronts.png", "lineage.png", "select_vs_report.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 10_000 for p in plots.iterdir())
    assert not (run_dir / "report.html").exists()  # --plots alone writes only the plots

    not_a_run = evomerge("report", str(tmp_path))
    assert not_a_run.returncode == 2 and "is not an evomerge run directory" in not_a_run.stderr
    to_a_dir = evomerge("report", str(run_dir), "-o", str(tmp_path))
    assert to_a_dir.returncode == 2 and "is a directory" in to_a_dir.stderr


def test_lineage_in_the_terminal_and_through_graphviz(run_dir: Path):
    from evomerge.lineage import ancestors

    store = open_store(run_dir)
    text = evomerge("lineage", str(run_dir), "g2-c1")
    assert text.returncode == 0, text.stderr
    assert text.stdout.splitlines()[0].startswith("g2-c1 (gen 2, ") and " report " in text.stdout.splitlines()[0]
    assert "[es iterations=4 pairs=2" in text.stdout and "intermediate" in text.stdout
    dot = evomerge("lineage", str(run_dir), "g2-c1", "--format", "dot")
    assert 'color="#D55E00"' in dot.stdout  # the ES edge in the report's ES colour
    if shutil.which("dot") is None:
        _need("Graphviz", "apt-get install -y graphviz (the README's test command does this)")
    svg = subprocess.run(["dot", "-Tsvg"], input=dot.stdout, capture_output=True, text=True, check=True).stdout
    assert "<svg" in svg and svg.count('class="node"') == len(ancestors(store, store.member("g2-c1")))


def _member(i: int, gen: int, parents: tuple[int, ...] = ()) -> MemberRecord:
    return MemberRecord(id=i, name=f"m{i}", generation=gen, operator="ties" if parents else "seed", parents=parents,
                        params={}, recipe="", state=MemberState.RETIRED, weights=None, created=0.0)


def test_layout_keeps_nodes_and_lanes_apart(run_dir: Path):
    store = open_store(run_dir)
    # the real run, and a wide one where old seeds breed into every later generation
    wide = [_member(i, 0) for i in range(1, 5)]
    for gen in range(1, 5):
        for slot in range(3):
            wide.append(_member(len(wide) + 1, gen, (1 + slot, len(wide) - slot)))
    for members in (store.members(), wide):
        tree = layout(members)
        items: dict[int, list[tuple[float, bool]]] = {}
        for m in members:
            col, row = tree.places[m.id]
            items.setdefault(col, []).append((row, True))
            for p in m.parents:
                lanes = tree.lanes.get((p, m.id), [])
                assert [c for c, _ in lanes] == list(range(tree.places[p][0] + 1, col))
                for c, r in lanes:
                    items.setdefault(c, []).append((r, False))
        for col, rows in items.items():
            rows.sort()
            for (a, node_a), (b, node_b) in itertools.pairwise(rows):
                need = 1.0 if node_a and node_b else 0.65 if node_a or node_b else 0.22
                assert b - a >= need - 1e-6, (col, rows)
        assert min(r for rows in items.values() for r, _ in rows) == 0


def test_the_data_blob_cannot_close_its_script_tag():
    data = {"name": "</script><script>alert(1)</script><!--", "amp": "&lt;", "line": "\u2028"}
    text = report_html.json_for_script(data)
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == data
