"""kill -9 soak: runs on tiny models killed at random instants, resumes killed too, and whether they all end where an
uninterrupted run ends.

    python benchmarks/soak.py                 # 20 runs of the golden 'linear' pipeline (LoRA, ES, intermediates)
    python benchmarks/soak.py --runs 40 --pipeline ties --seed 1

Each run is started with `evomerge run` and SIGKILLed once its store holds a number of events drawn uniformly from
the uninterrupted run's; then `evomerge resume` is started, and with probability --kill-resume killed again at a
later random point, until a resume finishes. Every ending is compared with the uninterrupted run's snapshot (every
member, parameter, survivor, score, CMA-ES candidate and mutation step), and each store is checked for a score
computed twice and for half-written directories. Prints one table.
"""
from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "golden")]

from conftest import events_count, make_model, run_and_kill  # noqa: E402
from record import write_pipelines  # noqa: E402
from snapshot import run_snapshot  # noqa: E402


def _cli(*args: str) -> int:
    return subprocess.run([sys.executable, "-m", "evomerge.cli", *args], capture_output=True).returncode


def _ending(run_dir: Path) -> tuple[dict, int, int]:
    """The run's snapshot, the scores computed more than once, and the half-written directories left."""
    from evomerge.store import open_store

    store = open_store(run_dir)
    scored = Counter((d["subject"], d["split"]) for _, _, d in store.events(kind="scored"))
    store.close()
    tmp = sum(p.name.startswith(".tmp-") for p in (run_dir / "members").iterdir()) if (run_dir / "members").exists() \
        else 0
    return run_snapshot(run_dir), sum(n - 1 for n in scored.values()), tmp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--pipeline", default="linear", help="a pipeline of tests/golden/record.py")
    parser.add_argument("--kill-resume", type=float, default=0.4, help="chance that a resume is killed too")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="evomerge-soak-"))
    for name, seed in (("base", 0), ("a", 1), ("b", 2)):
        make_model(root / "models" / name, seed=seed)
    pipeline = write_pipelines(root, root / "models")[args.pipeline]
    assert _cli("run", str(pipeline), "--run-dir", str(root / "reference"), "--quiet") == 0
    reference = run_snapshot(root / "reference")
    total = events_count(root / "reference" / "evomerge.db")
    kills = kills_in_resume = identical = duplicates = leftovers = 0
    for r in range(args.runs):
        run_dir = root / f"run{r}"
        db = run_dir / "evomerge.db"
        kills += run_and_kill(["run", str(pipeline), "--run-dir", str(run_dir), "--quiet"], db, rng.randint(1, total - 1))
        while True:
            done = events_count(db)
            if done < total - 1 and rng.random() < args.kill_resume:
                killed = run_and_kill(["resume", str(run_dir), "--quiet"], db, rng.randint(done + 1, total - 1))
                kills, kills_in_resume = kills + killed, kills_in_resume + killed
                if killed:
                    continue
            if _cli("resume", str(run_dir), "--quiet") == 0:
                break
        snapshot, twice, tmp = _ending(run_dir)
        identical += snapshot == reference
        duplicates, leftovers = duplicates + twice, leftovers + tmp
        print(f"run {r + 1}/{args.runs}: {'identical' if snapshot == reference else 'DIFFERENT'}", file=sys.stderr)
    print(f"\nkill -9 soak: pipeline '{args.pipeline}' (tests/golden/record.py), {total} events uninterrupted\n")
    print("| runs | SIGKILLs | of which during a resume | endings identical to the uninterrupted run | "
          "scores computed twice | .tmp- directories left |")
    print("|---:|---:|---:|---:|---:|---:|")
    print(f"| {args.runs} | {kills} | {kills_in_resume} | {identical}/{args.runs} | {duplicates} | {leftovers} |")
    print(json.dumps({"runs": args.runs, "kills": kills, "kills_in_resume": kills_in_resume, "identical": identical,
                      "duplicates": duplicates, "leftovers": leftovers}))


if __name__ == "__main__":
    main()
