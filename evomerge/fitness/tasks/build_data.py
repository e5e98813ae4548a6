"""Build the JSONL splits of the tasks that ship with evomerge (train / select / report, disjoint).

    python -m evomerge.fitness.tasks.build_data --shared ../shared/data

`arith` is generated here from a fixed seed; the others are cut from the real benchmark files in ``--shared``,
each redistributable with attribution (its LICENSE file beside it):

- `arc_easy` (the demo's): ARC-Easy train, and its validation split halved into select and report (CC BY-SA 4.0);
- the showcase's, each with a report split of at least 300 documents: `arc_easy_full` (ARC-Easy: select = the
  last 300 train questions, report = the whole validation split; CC BY-SA 4.0), `piqa` (AFL-3.0) and
  `boolq` (CC BY-SA 3.0), whose validation files are cut into train, select (300) and report (300).

Training, select and report documents are disjoint in every task. The output is committed, so nothing here runs
at install or run time.
"""
from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
SPLIT_SIZES = {"train": 2000, "select": 300, "report": 300}  # arith: train for LoRA, select for CMA-ES, report held out


def _arith_problem(rng: random.Random) -> tuple[str, int]:
    op = rng.choice("+-*")
    if op == "*":
        a, b = rng.randint(2, 19), rng.randint(2, 9)
        return f"{a} * {b}", a * b
    a, b = rng.randint(10, 99), rng.randint(10, 99)
    if op == "-" and b > a:
        a, b = b, a
    return f"{a} {op} {b}", a + b if op == "+" else a - b


def _distractors(rng: random.Random, answer: int) -> list[int]:
    # Near misses (off by one, off by ten, a slip of a digit) are what a small model confuses.
    pool = {answer + d for d in (-10, -2, -1, 1, 2, 10, 11, -11)} - {answer}
    pool = {p for p in pool if p >= 0}
    return rng.sample(sorted(pool), 3)


def build_arith(seed: int = 1234) -> dict[str, list[dict]]:
    rng = random.Random(seed)
    seen: set[str] = set()
    out: dict[str, list[dict]] = {name: [] for name in SPLIT_SIZES}
    for split, size in SPLIT_SIZES.items():
        while len(out[split]) < size:
            question, answer = _arith_problem(rng)
            if question in seen:  # a problem lives in exactly one split
                continue
            seen.add(question)
            choices = [answer, *_distractors(rng, answer)]
            rng.shuffle(choices)
            out[split].append({"question": question, "choices": [str(c) for c in choices],
                               "gold": choices.index(answer), "answer": str(answer)})
    return out


def build_arc_easy(shared: Path) -> dict[str, list[dict]]:
    def read(name: str) -> list[dict]:
        rows = [json.loads(line) for line in (shared / "arc_easy" / name).read_text().splitlines() if line.strip()]
        return [r for r in rows if len(r["choices"]["text"]) == 4]  # one choice count keeps chance level at 25%

    validation = read("validation.jsonl")
    half = len(validation) // 2
    return {"train": read("train.jsonl"), "select": validation[:half], "report": validation[half:]}


def _rows(shared: Path, name: str) -> list[dict]:
    return [json.loads(line) for line in (shared / name).read_text().splitlines() if line.strip()]


def _cut(rows: list[dict], seed: int) -> dict[str, list[dict]]:
    """A validation file shuffled once (fixed seed) and cut into report (300), select (300) and train (the rest, at
    most 1000: a few hundred fine-tuning steps' worth, and a small repository)."""
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    size = SPLIT_SIZES["report"]
    return {"train": rows[2 * size:2 * size + 1000], "select": rows[size:2 * size], "report": rows[:size]}


def build_arc_easy_full(shared: Path) -> dict[str, list[dict]]:
    def four(rows: list[dict]) -> list[dict]:
        return [r for r in rows if len(r["choices"]["text"]) == 4]

    train = four(_rows(shared, "arc_easy/train.jsonl"))
    size = SPLIT_SIZES["select"]
    return {"train": train[:-size], "select": train[-size:], "report": four(_rows(shared, "arc_easy/validation.jsonl"))}


def build_piqa(shared: Path) -> dict[str, list[dict]]:
    return _cut(_rows(shared, "piqa/validation.jsonl"), seed=1)


def build_boolq(shared: Path) -> dict[str, list[dict]]:
    rows = [{**r, "label": int(r["label"])} for r in _rows(shared, "boolq/validation.jsonl")]
    return _cut(rows, seed=2)


def write(task: str, splits: dict[str, list[dict]]) -> None:
    for split, rows in splits.items():
        (HERE / task).mkdir(exist_ok=True)
        path = HERE / task / f"{split}.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        print(f"{path.relative_to(HERE)}: {len(rows)} rows")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, required=True, help="the team's data folder (../shared/data)")
    args = parser.parse_args()
    write("arith", build_arith())
    write("arc_easy", build_arc_easy(args.shared))
    write("arc_easy_full", build_arc_easy_full(args.shared))
    write("piqa", build_piqa(args.shared))
    write("boolq", build_boolq(args.shared))


if __name__ == "__main__":
    main()
