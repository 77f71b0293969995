"""What tracing costs: ``python -m bench.tracing [--rounds 5]``.

The service as shipped serves single-image ``/denoise`` to wrk at 32 connections, in alternating
rounds: with tracing off (no ``OTEL_TRACES_EXPORTER``), and on, exporting over OTLP/gRPC to a collector
on a loopback port, with 10% of requests sampled (``parentbased_traceidratio``, as a busy service
would run it) and with every request sampled. Each round measures the service's CPU time from /proc
over every process of it (the load generator shares the cores); each round starts with the next
set-up. Prints each round, the means, and each set-up's CPU per request against tracing off in the
same round (the median of the rounds, and each round's).

``--before REV`` adds the service at another commit (a git worktree of it) to the rounds, tracing off
and with every request sampled: what a change did to tracing's cost, and to the service untraced.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from bench.cpu import measure, ours
from bench.services import checkout
from tests.otlp import otlp_collector
from tests.server import REPO


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per set-up per round")
    parser.add_argument(
        "--before", metavar="REV", help="also measure the service at this commit, tracing off and all sampled"
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk not found: apt-get install wrk", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="bench-tracing-"))
    with ExitStack() as stack:
        collector, endpoint = stack.enter_context(otlp_collector())
        before = stack.enter_context(checkout(args.before, work)) if args.before else None
        traced = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}
        all_sampled = {**traced, "OTEL_TRACES_SAMPLER": "parentbased_always_on"}
        setups: dict[str, tuple[dict[str, str], Path]] = {
            "off": ({}, REPO),
            "on, 10% sampled": (
                {**traced, "OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"},
                REPO,
            ),
            "on, all sampled": (all_sampled, REPO),
        }
        if before is not None:
            setups[f"off at {args.before}"] = ({}, before)
            setups[f"all sampled at {args.before}"] = (all_sampled, before)
        rounds: dict[str, list[dict[str, float]]] = {name: [] for name in setups}
        names = list(setups)
        for number in range(args.rounds):
            for name in names[number % len(names) :] + names[: number % len(names)]:  # each round starts further on
                env, source = setups[name]
                index = names.index(name)
                exported = collector.spans()
                with ours(work, env, name=f"setup{index}", source=source) as (url, pids):
                    rounds[name].append(measure(url, pids, args.seconds))
                rounds[name][-1]["spans_exported"] = collector.spans() - exported
                shown = json.dumps({k: round(v, 3) for k, v in rounds[name][-1].items()})
                print(f"round {number + 1} tracing {name:20} {shown}")
    means = {name: {key: float(np.mean([r[key] for r in runs])) for key in runs[0]} for name, runs in rounds.items()}
    off = [row["cpu_ms_per_request"] for row in rounds["off"]]
    for name, mean in means.items():
        # Against tracing off in the same round (the rounds' median): the machine's drift between rounds,
        # as large as what is measured, cancels out.
        changes = [(row["cpu_ms_per_request"] / base - 1) * 100 for row, base in zip(rounds[name], off, strict=True)]
        change = float(np.median(changes))
        print(
            f"tracing {name:20} CPU {mean['cpu_ms_per_request']:.3f} ms/request ({change:+.1f}% against off,"
            f" median of the rounds: {', '.join(f'{c:+.0f}%' for c in changes)})"
            f"  {mean['requests_per_s']:.0f} requests/s  p99 {mean['p99_ms']:.2f} ms  errors {mean['errors']:.0f}"
            f"  spans exported {mean['spans_exported']:.0f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
