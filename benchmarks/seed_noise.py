"""How often issue 36's accuracy target is met when nothing but the seed changes, beside how often fine-tuning meets it.

    python benchmarks/seed_noise.py RESULTS [RESULTS ...] [--stacks fib_scale zoomed inverted harder blurred]
                                    [--models laptop=brief transfer=brief_from_scale_only,brief_from_transfer]

Each RESULTS is a ``fine_tuning.py --results`` folder (its ``workflow/`` inside); a stack's seed there is the one
its from-scratch model recorded (``training.options.seed``). The target's accuracy half
(``fine_tuning.accurate_enough``: held-out V_rand at least the reference's less 0.003) is counted

- for the from-scratch models against each other: every ordered pair of two seeds of one stack, so a rate of one
  half means that retraining from scratch with another seed "misses" the target half the time;
- for each ``--models`` entry against its seed's from-scratch model. An entry is ``label=preset[,preset...]``:
  the fine-tuned preset is ``{preset}_{stack}``, the first of the list that the folder has (a base's models were
  named differently in older folders); its training iterations are printed so that a stale model shows.

Both by the thresholded probabilities' V_rand and by the cells' (``cells_v_rand``). Time is not compared here:
``fine_tuning.py`` prints the whole target per folder.
"""

import argparse
import itertools
from pathlib import Path

from fine_tuning import SCORES, accurate_enough, model_row


def scratch_runs(folders: list[Path], stack: str) -> dict[int, dict]:
    """Seed -> the evaluated from-scratch model's row, with its folder, from the first folder that has the stack's."""
    runs = {}
    for folder in folders:
        results = folder / "workflow"
        if (results / stack / "evaluation" / f"scratch_{stack}" / "summary.json").exists():
            row = model_row(results, stack, f"scratch_{stack}", stack) | {"results": results}
            runs.setdefault(row["seed"], row)
    return runs


def tuned_row(results: Path, stack: str, presets: list[str]) -> dict | None:
    """The row of the first of ``presets`` fine-tuned on ``stack`` in ``results``, with its preset name."""
    for preset in presets:
        if (results / stack / "evaluation" / f"{preset}_{stack}" / "summary.json").exists():
            return model_row(results, stack, f"{preset}_{stack}", stack) | {"preset": f"{preset}_{stack}"}
    return None


def tuned_rows(stack: str, runs: dict[int, dict], models: dict[str, list[str]]) -> dict[str, dict[int, dict]]:
    """Label -> seed -> the fine-tuned model's row, for the seeds whose folder has one."""
    found = {}
    for label, presets in models.items():
        rows = {seed: tuned_row(run["results"], stack, presets) for seed, run in sorted(runs.items())}
        found[label] = {seed: row for seed, row in rows.items() if row}
    return found


def counts(runs: dict[int, dict], tuned: dict[str, dict[int, dict]]) -> dict[str, list[list[bool]]]:
    """Score -> [the seeds' ordered pairs, then each model against its seed's from scratch]: target met or not."""
    pairs = list(itertools.permutations(sorted(runs), 2))
    result = {}
    for score in SCORES:
        hits = [[accurate_enough(runs[a], runs[b], score) for a, b in pairs if score in runs[a] and score in runs[b]]]
        for rows in tuned.values():
            scored = {seed: row for seed, row in rows.items() if score in row and score in runs[seed]}
            hits.append([accurate_enough(row, runs[seed], score) for seed, row in scored.items()])
        result[score] = hits
    return result


def table_line(stack: str, score: str, seeds: str, hits: list[list[bool]]) -> str:
    rates = (f"{sum(h)}/{len(h)}" if h else "-" for h in hits)
    return f"| {stack} | {score} | {seeds} | " + " | ".join(rates) + " |"


def used_models(stack: str, runs: dict[int, dict], tuned: dict[str, dict[int, dict]]) -> list[str]:
    """Which preset each model entry found per seed, with its held-out V_rand and iterations."""
    return [
        f"{stack} seed {seed} {label}: {row['preset']} in {runs[seed]['results']}, {row['iterations']} iterations, "
        f"V_rand {row['v_rand']:.4f} against {runs[seed]['v_rand']:.4f}"
        for label, rows in tuned.items()
        for seed, row in rows.items()
    ]


def arguments():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, nargs="+", help="fine_tuning.py --results folders")
    parser.add_argument("--stacks", nargs="+", default=["fib_scale", "zoomed", "inverted", "harder", "blurred"])
    parser.add_argument(
        "--models",
        nargs="+",
        default=["laptop=brief", "transfer=brief_from_scale_only,brief_from_transfer"],
        help="label=preset[,preset...]: the fine-tuned models to count, by their preset name before _STACK",
    )
    return parser.parse_args()


def main():
    args = arguments()
    if missing := [str(folder) for folder in args.results if not (folder / "workflow").is_dir()]:
        raise SystemExit(f"not fine_tuning.py results folders (no workflow/ inside): {', '.join(missing)}")
    models = {label: presets.split(",") for label, presets in (entry.split("=", 1) for entry in args.models)}
    header = ["stack", "score", "seeds", "from scratch, pairs of seeds", *models]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    notes, totals = [], {score: [[] for _ in range(len(models) + 1)] for score in SCORES}
    for stack in args.stacks:
        runs = scratch_runs(args.results, stack)
        if not runs:
            continue
        tuned = tuned_rows(stack, runs, models)
        for score, hits in counts(runs, tuned).items():
            lines.append(table_line(stack, score, ", ".join(map(str, sorted(runs))), hits))
            for total, part in zip(totals[score], hits):
                total += part
        notes += used_models(stack, runs, tuned)
    lines += [table_line("all", score, "", hits) for score, hits in totals.items()]
    print("\n".join(lines + [""] + notes))


if __name__ == "__main__":
    main()
