"""Noise-multiplier search: Bastion's ``find_noise_multiplier`` vs Opacus' default search (issue 6).

Issue 6: "target ε → noise multiplier found in ≤ 0.1× the time of Opacus' default search, same
run". For each accountant and target ε, both searches solve the same problem (δ = 1e-5,
tolerance 0.01) in this process, one after the other, ``--repeats`` times with the rows
interleaved (a shared machine's load hits both alike); the σ each finds, the ε Opacus' own
accountant gives for Bastion's σ (must be ≤ the target) and the median times and their ratio are
printed. Prints JSON.

Setup (default): the 200-record digits MLP of the privacy tests, batch 64, 15 epochs, as
``dp-train`` trains it (q = 1/⌈200/64⌉ = 0.25, 60 steps).

    OMP_NUM_THREADS=1 python benchmarks/dp_noise.py
    OMP_NUM_THREADS=1 python benchmarks/dp_noise.py --sample-rate 0.01 --steps 3000
"""

from __future__ import annotations

import argparse
import json
import time
import warnings


def main() -> None:
    """Time both searches per (accountant, ε) and print JSON."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--sample-rate", type=float, default=0.25)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--delta", type=float, default=1e-5)
    ap.add_argument("--epsilons", default="1,3,8")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    from opacus.accountants import PRVAccountant, RDPAccountant
    from opacus.accountants.utils import get_noise_multiplier

    from bastion.defend.dp_sgd import find_noise_multiplier

    q, steps, delta = args.sample_rate, args.steps, args.delta
    # warm the imports
    find_noise_multiplier(target_epsilon=3.0, delta=delta, sample_rate=q, steps=10, accountant="prv")
    import statistics

    cases = [(a, float(e)) for a in ("rdp", "prv") for e in args.epsilons.split(",")]
    times: dict[tuple[str, float], tuple[list[float], list[float]]] = {c: ([], []) for c in cases}
    found: dict[tuple[str, float], tuple[float, float]] = {}
    for _ in range(args.repeats):
        for accountant, eps in cases:
            t0 = time.perf_counter()
            s_opacus = get_noise_multiplier(
                target_epsilon=eps,
                target_delta=delta,
                sample_rate=q,
                steps=steps,
                accountant=accountant,
                epsilon_tolerance=0.01,
            )
            t_opacus = time.perf_counter() - t0
            t0 = time.perf_counter()
            s_ours, _ = find_noise_multiplier(
                target_epsilon=eps, delta=delta, sample_rate=q, steps=steps, accountant=accountant
            )
            t_ours = time.perf_counter() - t0
            times[(accountant, eps)][0].append(t_opacus)
            times[(accountant, eps)][1].append(t_ours)
            found[(accountant, eps)] = (float(s_opacus), s_ours)
    rows = []
    for accountant, eps in cases:
        s_opacus, s_ours = found[(accountant, eps)]
        acc = PRVAccountant() if accountant == "prv" else RDPAccountant()
        acc.history = [(s_ours, q, steps)]
        spent = float(acc.get_epsilon(delta=delta))
        t_opacus = statistics.median(times[(accountant, eps)][0])
        t_ours = statistics.median(times[(accountant, eps)][1])
        rows.append(
            {
                "accountant": accountant,
                "epsilon_target": eps,
                "sigma_opacus": round(s_opacus, 5),
                "sigma_bastion": round(s_ours, 5),
                "epsilon_of_bastion_sigma_by_opacus": round(spent, 6),
                "within_target": spent <= eps,
                "seconds_opacus_median": round(t_opacus, 4),
                "seconds_bastion_median": round(t_ours, 4),
                "time_ratio": round(t_ours / t_opacus, 4),
            }
        )
    out = {
        "setup": {
            "sample_rate": q,
            "steps": steps,
            "delta": delta,
            "tolerance": 0.01,
            "repeats": args.repeats,
        },
        "points": rows,
        "max_time_ratio": max(r["time_ratio"] for r in rows),
        "total_time_ratio": round(
            sum(r["seconds_bastion_median"] for r in rows) / sum(r["seconds_opacus_median"] for r in rows),
            4,
        ),
        "all_within_target": all(r["within_target"] for r in rows),
        "target": "every time_ratio <= 0.1 (issue 6)",
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
