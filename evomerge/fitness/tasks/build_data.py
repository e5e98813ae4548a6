"""Build the JSONL splits of the tasks that ship with evomerge (train / select / report, disjoint).

    python -m evomerge.fitness.tasks.build_data --shared ../shared/data

`arith` is generated here from a fixed seed; `arc_easy` is cut from the ARC-Easy files in ``--shared``
(CC BY-SA 4.0, redistributable with attribution: see ``arc_easy/LICENSE``). The output is committed, so
nothing here runs at install or run time.
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


def write(task: str, splits: dict[str, list[dict]]) -> None:
    for split, rows in splits.items():
        path = HERE / task / f"{split}.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        print(f"{path.relative_to(HERE)}: {len(rows)} rows")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, required=True, help="the team's data folder (../shared/data)")
    args = parser.parse_args()
    write("arith", build_arith())
    write("arc_easy", build_arc_easy(args.shared))


if __name__ == "__main__":
    main()
