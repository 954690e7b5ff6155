"""Write a scenario's result (JSON + PNG) and rebuild ``bench/RESULTS.md`` from all results.

Results live in ``bench/results/<name>.json`` (the committed record); each has a plot
``bench/results/<name>.png``. ``RESULTS.md`` lists every scenario in a fixed order with
its command, machine, date, criteria and pass/fail, and links the plot. A scenario not
run yet is listed as such, so the report never claims what was not measured.
"""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
#: hand-written: what the runs found and what was changed because of them
FINDINGS = BENCH / "findings.md"
#: issue 8's side-by-side benches, in report order: (result name, module); each module has
#: ``table(result) -> str``
PERF = (("perf-codec", "bench.perf_codec"), ("perf-ws", "bench.perf_ws"), ("perf-ingest", "bench.perf_ingest"),
        ("perf-fanout", "bench.perf_fanout"), ("perf-memory", "bench.perf_memory"), ("perf-nats", "bench.perf_nats"),
        ("perf-scaleout", "bench.perf_scaleout"), ("compaction-memory", "bench.compaction_memory"))
#: hand-written: what was tuned for issue 8, and why
PERFORMANCE = BENCH / "performance.md"
ORDER = ("soak", "virtual", "storm", "slow", "overload", "shutdown", "crash")
HEADER = """# bench/RESULTS.md: issue 7, the post-mortem's checklist run against the real program

Every figure below comes from `python -m bench <scenario>` (the command is given with each),
which starts the real `spreadwatch` process (`python -m app.cli run`) with a generated
config, the simulated venues (`python -m app.sim`) and, where needed, feed load generators
(`python -m bench.loadgen`) and a flooding venue (`python -m bench.flood`) as separate
processes on loopback. It samples `/health?objects=1` (RSS, trio tasks, GC-tracked objects,
event-loop lag, channel depths and drops) and the server's CPU share (psutil), judges the
criteria stated in issue 7, and writes `bench/results/<scenario>.json` and `.png`; this file
is rebuilt from those JSON files (`python -m bench report`).

The load generators and the simulator share the machine's two cores with the server, so
CPU-bound figures (latency, loop lag) include that contention.

The short, deterministic versions of each scenario's mechanism that CI runs are listed at
the end.

A labelled run (`<scenario>-<label>`) is an extra run kept beside the scenario's own, and
keeps the result it had when it ran: `bench/findings.md` says what each found and what
was changed because of it (a FAIL there may be the run that found a fault since fixed).
"""


def save(result: dict[str, Any], machine: dict[str, Any], command: str, when: str) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {**result, "machine": machine, "command": command, "when": when}
    path = RESULTS / f"{result['name']}.json"
    path.write_text(json.dumps(result, indent=1, default=_jsonable))
    plot(result, RESULTS / f"{result['name']}.png")
    return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "__dict__"):
        return value.__dict__
    return str(value)


def plot(result: dict[str, Any], path: Path) -> None:
    samples = result.get("samples") or []
    if not samples:
        return
    hours = result["name"] == "virtual"
    t = [s["t"] / (3600.0 if hours else 60.0) for s in samples]
    unit = "simulated hours" if hours else "minutes"
    fig, axes = plt.subplots(2, 2, figsize=(12, 7))
    fig.suptitle(result["title"], fontsize=11)
    ax = axes[0][0]
    ax.plot(t, [s["rss_mb"] for s in samples], label="RSS")
    # the probe's split of the RSS, where the run sampled it (bench/harness.py, Sampler)
    for key, label in (("anon_mb", "anonymous"), ("malloc_in_use_mb", "glibc heap in use"),
                       ("malloc_free_mb", "glibc heap free, held"), ("malloc_mmap_mb", "glibc mmapped"),
                       ("arrow_mb", "pyarrow pool")):
        if any(key in s for s in samples):
            ax.plot(t, [s.get(key, float("nan")) for s in samples], label=label, linewidth=1)
    if any("malloc_in_use_mb" in s for s in samples):
        ax.legend(fontsize=7)
    if "budget_mb" in samples[0]:
        ax.set_title(f"RSS (MB); budget {samples[-1]['budget_mb']:.0f} MB")
    else:
        ax.set_title("RSS (MB)")
    ax.set_xlabel(unit)
    ax = axes[0][1]
    ax.plot(t, [s["tasks"] for s in samples], color="tab:orange", label="trio tasks")
    ax.set_ylabel("tasks")
    ax.set_xlabel(unit)
    ax2 = ax.twinx()
    ax2.plot(t, [s.get("gc_objects") or 0 for s in samples], color="tab:green", label="GC objects")
    ax2.set_ylabel("objects")
    ax.set_title("tasks (orange) and GC-tracked objects (green)")
    ax = axes[1][0]
    if "lag_p99_ms" in samples[0]:
        ax.plot(t, [s["lag_p99_ms"] for s in samples], label="loop lag p99 (ms)")
        ax.plot(t, [s["cpu_pct"] for s in samples], label="server CPU (% of a core)")
        ax.set_title("event-loop lag p99 and CPU")
        ax.legend(fontsize=8)
    else:
        ax.plot(t, [s.get("series", 0) for s in samples], label="window series")
        ax.set_title("window series")
    ax.set_xlabel(unit)
    ax = axes[1][1]
    clients = _clients(result)
    if clients:
        labels, p50, p90, p99 = [], [], [], []
        for label, kinds in clients.items():
            for kind, stats in kinds.items():
                lat = stats.get("latency_ms") or {}
                if lat.get("p50") is None:
                    continue
                labels.append(f"{label}\n{kind}" if label else kind)
                p50.append(lat["p50"])
                p90.append(lat["p90"])
                p99.append(lat["p99"])
        x = range(len(labels))
        ax.bar([i - 0.25 for i in x], p50, width=0.25, label="p50")
        ax.bar(list(x), p90, width=0.25, label="p90")
        ax.bar([i + 0.25 for i in x], p99, width=0.25, label="p99")
        ax.set_xticks(list(x), labels, fontsize=8)
        ax.set_yscale("log")
        ax.set_title("feed delivery latency (ms), frame built -> client read")
        ax.legend(fontsize=8)
    else:
        ax.plot(t, [s.get("reconnects", 0) for s in samples])
        ax.set_title("venue reconnects (cumulative)")
        ax.set_xlabel(unit)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _clients(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    figures = result.get("figures", {})
    if "runs" in figures:
        return dict(figures["runs"])
    if figures.get("clients"):
        return {"": figures["clients"]}
    return {}


def render(short_tests: str = "") -> str:
    parts = [HEADER]
    machine = None
    summary = ["| scenario | result | when |", "|---|---|---|"]
    bodies = []
    paths = []
    for name in ORDER:
        if not (RESULTS / f"{name}.json").exists():
            summary.append(f"| {name} | not run yet | |")
        paths += [p for p in [RESULTS / f"{name}.json", *sorted(RESULTS.glob(f"{name}-*.json"))]
                  if p.exists()]
    for path in paths:
        name = path.stem
        result = json.loads(path.read_text())
        machine = machine or result.get("machine")
        passed = all(c["passed"] for c in result["criteria"])
        summary.append(f"| [{name}](#{name}) | {'PASS' if passed else 'FAIL'} | {result['when']} |")
        lines = [f'<a id="{name}"></a>', f"## {result['title']}", "",
                 f"- command: `{result['command']}`",
                 f"- machine: {_machine(result.get('machine', {}))}", f"- run: {result['when']}", "",
                 "| criterion | measured | pass |", "|---|---|---|"]
        for c in result["criteria"]:
            lines.append(f"| {c['text']} | {c['measured']} | {'yes' if c['passed'] else '**no**'} |")
        lines.append("")
        lines.extend(_figures(result))
        if (RESULTS / f"{name}.png").exists():
            lines += ["", f"![{name}](results/{name}.png)"]
        bodies.append("\n".join(lines) + "\n")
    parts.append("\n".join(summary) + "\n")
    if machine:
        parts.append(f"Machine: {_machine(machine)}.\n")
    if FINDINGS.exists():
        parts.append(FINDINGS.read_text())
    parts.extend(bodies)
    parts.append(render_performance())
    if short_tests:
        parts.append(short_tests)
    return "\n".join(parts)


def render_performance() -> str:
    """Issue 8's section: the hand-written account, then each bench's table as run."""
    lines = ["# Performance (issue 8): side by side with cryptofeed 2.4.1", ""]
    if PERFORMANCE.exists():
        lines += [PERFORMANCE.read_text(), ""]
    for name, module in PERF:
        path = RESULTS / f"{name}.json"
        if not path.exists():
            lines += [f"## {name}", "", "not run yet", ""]
            continue
        result = json.loads(path.read_text())
        table = importlib.import_module(module).table
        lines += [f'<a id="{name}"></a>', f"## {result.get('title', name)}", "",
                  f"- command: `{result.get('command', 'python -m ' + module)}`",
                  f"- machine: {_machine(result.get('machine', {}))}", f"- run: {result.get('when', '?')}", ""]
        criteria = result.get("criteria") or []
        if criteria:
            lines += ["| criterion | measured | pass |", "|---|---|---|"]
            lines += [f"| {c['text']} | {c['measured']} | {'yes' if c['passed'] else '**no**'} |"
                      for c in criteria]
            lines.append("")
        lines += ["```", table(result).rstrip(), "```", ""]
    return "\n".join(lines)


def _machine(m: dict[str, Any]) -> str:
    return (f"{m.get('cores')} cores ({m.get('cpu') or 'unknown CPU'}), {m.get('memory_gb')} GB, "
            f"Python {m.get('python')}")


def _figures(result: dict[str, Any]) -> list[str]:
    figures = result.get("figures", {})
    out = []
    clients = _clients(result)
    for label, kinds in clients.items():
        for kind, s in kinds.items():
            lat = s.get("latency_ms") or {}
            age = s.get("quote_age_ms") or {}
            out.append(f"- {label + ' ' if label else ''}{kind} sessions: {s.get('sessions')} "
                       f"(connects {s.get('connects')}), frames {s.get('frames'):,}"
                       + (f" in {s['messages']:,} messages" if s.get("messages") else "")
                       + f", resyncs {s.get('resyncs')}, "
                       f"gaps {s.get('gaps')}, closes {s.get('closes')}; delivery latency p50/p90/p99/max "
                       f"{lat.get('p50')}/{lat.get('p90')}/{lat.get('p99')}/{lat.get('max')} ms; quote age "
                       f"(venue receipt -> client) p50/p99 {age.get('p50')}/{age.get('p99')} ms")
    samples = result.get("samples") or []
    if samples and "cpu_pct" in samples[0]:
        cpu = [s["cpu_pct"] for s in samples[1:]] or [0.0]
        lag = [s["lag_p99_ms"] for s in samples]
        out.append(f"- server: RSS {samples[0]['rss_mb']:.1f} -> {samples[-1]['rss_mb']:.1f} MB (max "
                   f"{max(s['rss_mb'] for s in samples):.1f}); tasks {samples[0]['tasks']} -> "
                   f"{samples[-1]['tasks']}; CPU mean {sum(cpu) / len(cpu):.0f} % of a core; loop lag p99 "
                   f"median {sorted(lag)[len(lag) // 2]:.1f} ms, max {max(lag):.1f} ms; "
                   f"{len(samples)} samples")
    skip = {"clients", "runs"}
    for key, value in figures.items():
        if key not in skip:
            out.append(f"- {key}: `{json.dumps(value, default=str)[:600]}`")
    return out


def write() -> Path:
    """Rebuild RESULTS.md; ``bench/short-versions.md`` (the CI tests table) goes last."""
    short = BENCH / "short-versions.md"
    path = BENCH / "RESULTS.md"
    path.write_text(render(short.read_text() if short.exists() else ""))
    return path
