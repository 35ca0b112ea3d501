"""Count the work of every test and sanity attack on trained models and compare it with the cost model.

Usage: python benchmarks/count_work.py TEST_CACHE WEIGHTS... [--configfile ...] [--extra] [--json OUT]

For each model (e.g. the default run's results/models/0/std/mobilenet_v2/weights.pt and
.../sat/...): evaluates the config's test and sanity attacks (with --extra also APGD,
Square and AutoAttack at small budgets) with a `dpaat.work_count.WorkCounter`, and prints
per attack the counted forward-equivalents per image, the model's figure
(`dpaat.attack_kinds.forward_units` fed the measured clean and robust accuracy) and their ratio,
and for Square the mean queries an image it fooled took, implied by its count (the share of
the budget `dpaat.attack_kinds.SQUARE_FOOL_FRACTION` assumes).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from dpaat.attack_kinds import SQUARE_FOOL_FRACTION, forward_units, read_off  # noqa: E402
from dpaat.data import load_cache  # noqa: E402
from dpaat.evaluation import CLEAN, attack_specs, evaluate_model  # noqa: E402
from dpaat.job_resources import evaluation_attacks, load_config  # noqa: E402
from dpaat.trained import load_trained  # noqa: E402
from dpaat.work_count import WorkCounter  # noqa: E402

# Small-budget versions of the paper config's stronger attacks (config/paper.yaml: 100 steps, 5000 queries).
EXTRA = {
    "apgd": {"kind": "apgd", "eps": 0.15, "steps": 20},
    "square300": {"kind": "square", "eps": 0.15, "queries": 300},
    "autoattack": {"kind": "autoattack", "eps": 0.15, "steps": 20, "queries": 300},
    # Read off the AutoAttack run (its white-box stages: the black-box sanity check's reference).
    "autoattackwhitebox": {"kind": "autoattack", "eps": 0.15, "steps": 20, "queries": 0},
}


def count(weights: str, test_cache: str, attacks: dict, batch_size: int) -> list[dict]:
    """Per attack: counted units per image, the model's, accuracies."""
    trained = load_trained(weights, "cpu")
    test = load_cache(test_cache)
    work = WorkCounter(trained.model)
    logits = evaluate_model(
        trained.model, test.images, test.labels, attack_specs(attacks), batch_size=batch_size, device="cpu", work=work
    )
    n = len(test.labels)
    clean = float((logits[CLEAN].argmax(1) == test.labels).float().mean())
    rows = []
    read = read_off(attacks)
    for name, entry in attacks.items():
        robust = float((logits[name].argmax(1) == test.labels).float().mean())
        counted = work.units[name] / n
        # An entry read off another attack's run costs its prediction only.
        modelled = 1.0 if name in read else forward_units(entry, len(trained.classes), clean, robust)
        rows.append(
            {"model": weights, "attack": name, "kind": entry["kind"], "clean": clean, "robust": robust,
             "counted": counted, "model_units": modelled, "ratio": modelled / counted,
             "queries_to_fool": queries_to_fool(entry, counted, clean, robust)}
        )  # fmt: skip
    return rows


def queries_to_fool(entry: dict, counted: float, clean: float, robust: float) -> float | None:
    """Square's mean queries per image it fooled, from its counted units per image: what is left of the count
    after the first prediction, the start and check of each correct image, the robust images' full
    budgets and the final prediction (`dpaat.attack_kinds._square_units`), over the fooled fraction."""
    fooled = clean - robust
    if entry["kind"] != "square" or fooled <= 0:
        return None
    return (counted - (1 + 2 * clean + robust * entry["queries"] + 1)) / fooled


def main() -> int:
    """Count, compare and print."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("test_cache")
    parser.add_argument("weights", nargs="+")
    parser.add_argument("--configfile", nargs="*", default=[])
    parser.add_argument("--extra", action="store_true", help="also APGD, Square and AutoAttack at small budgets")
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args()
    config = load_config(args.configfile)
    attacks = evaluation_attacks(config)
    if args.extra:
        attacks.update(EXTRA)
    rows = []
    for weights in args.weights:
        rows += count(weights, args.test_cache, attacks, config["evaluation"]["batch_size"])
    print(
        f"{'model':<48} {'attack':<14} {'kind':<10} {'clean':>5} {'robust':>6} {'counted':>8} {'model':>8} {'ratio':>6}"
        f" {'to fool':>7}"
    )
    for r in rows:
        to_fool = "" if r["queries_to_fool"] is None else f"{r['queries_to_fool']:.1f}"
        print(
            f"{r['model'][-48:]:<48} {r['attack']:<14} {r['kind']:<10} {r['clean']:>5.2f} {r['robust']:>6.2f} "
            f"{r['counted']:>8.1f} {r['model_units']:>8.1f} {r['ratio']:>6.3f} {to_fool:>7}"
        )
    print(
        f"(to fool: Square's mean queries per image it fooled; the cost model assumes {SQUARE_FOOL_FRACTION:g} × queries)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
