"""Run a load or fault scenario against the real program and record its figures.

    python -m bench soak       [--minutes 10 --sessions 1000]
    python -m bench virtual    [--hours 24]
    python -m bench storm      [--minutes 10 --drops-per-min 100]
    python -m bench slow       [--minutes 3 --sessions 500]
    python -m bench overload   [--overload-rate 150000 --phases 60,120,120]
    python -m bench shutdown   [--seconds 60 --sessions 1000]
    python -m bench crash      [--seconds 60 --rounds 3]
    python -m bench all        every scenario above, in that order (about 45 minutes)
    python -m bench perf       issue 8's side-by-side benches (codec, ws, ingest, fanout, memory;
                               about 15 minutes), each also runnable as python -m bench.perf_<name>
    python -m bench report     rebuild bench/RESULTS.md from bench/results/*.json

Each scenario prints a line per /health sample, then its criteria with PASS/FAIL,
writes ``bench/results/<scenario>.json`` and ``.png`` and rebuilds ``bench/RESULTS.md``.
``--out DIR`` puts results there instead (the test suite's short runs do). Exit code 0
when every criterion passed, 1 otherwise. Working files (logs, generated configs, the
recorder's data) go under ``bench/out/<scenario>/``.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import shlex
import sys
from pathlib import Path
from typing import Any

from bench import report
from bench.harness import machine
from bench.scenarios import SCENARIOS

OPTIONS: dict[str, dict[str, type]] = {
    "soak": {"minutes": float, "sessions": int, "loadgens": int, "every": float},
    "virtual": {"hours": int},
    "storm": {"minutes": float, "drops_per_min": float, "sessions": int, "every": float},
    "slow": {"minutes": float, "sessions": int, "every": float},
    "overload": {"normal_rate": float, "overload_rate": float, "phases": str, "sessions": int,
                 "every": float},
    "shutdown": {"seconds": float, "sessions": int, "every": float},
    "crash": {"seconds": float, "sessions": int, "rounds": int, "every": float},
}


def run_one(name: str, kwargs: dict[str, Any], work: Path, results: Path | None, argv: list[str],
            label: str | None = None) -> bool:
    print(f"== {name} {kwargs}", flush=True)
    result = SCENARIOS[name](work, **kwargs)
    if label:  # a second run of a scenario with other parameters, kept beside the first
        result["name"] = f"{name}-{label}"
        result["title"] += f" ({label})"
    command = "python -m bench " + " ".join(shlex.quote(a) for a in argv)
    if argv and argv[0] == "all":
        command += f" (its {name} scenario)"
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    if results is not None:
        report.RESULTS = results
    report.save(result, machine(), command, when)
    if results is None:
        report.write()
    passed = True
    for c in result["criteria"]:
        passed &= c["passed"]
        print(f"  {'PASS' if c['passed'] else 'FAIL'}  {c['text']}: {c['measured']}", flush=True)
    return passed


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("scenario", choices=[*SCENARIOS, "all", "perf", "report"])
    parser.add_argument("--out", type=Path, default=None, help="write results here, not bench/results")
    parser.add_argument("--label", default=None,
                        help="keep this run as <scenario>-<label> beside the default run")
    for opt in sorted({o for opts in OPTIONS.values() for o in opts}):
        kind = next(opts[opt] for opts in OPTIONS.values() if opt in opts)
        parser.add_argument("--" + opt.replace("_", "-"), type=kind, default=None)
    args = parser.parse_args(argv)
    if args.scenario == "report":
        print(report.write())
        return 0
    if args.scenario == "perf":
        ok = True
        for _, module in report.PERF:
            print(f"== {module}", flush=True)
            ok &= importlib.import_module(module).main([]) == 0
        print(report.write())
        return 0 if ok else 1
    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    work = (args.out or Path(__file__).resolve().parent / "out")
    ok = True
    for name in names:
        kwargs = {o: getattr(args, o) for o in OPTIONS[name] if getattr(args, o) is not None}
        ok &= run_one(name, kwargs, work, args.out, argv, args.label)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
