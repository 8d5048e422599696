"""``python -m benchmarks --out benchmarks/results [--quick] [--only NAME]``: run the benchmarks.

For every benchmark module: each case runs in its own memory-capped process (:mod:`benchmarks.measure`), the
pairloss case and the peer's case of one size back to back, so that both see the same machine load; the
results go to ``<out>/<NAME>.json`` (``<NAME>-quick.json`` with ``--quick``) and the table in
``docs/benchmarks.md`` is regenerated (not by a quick run, unless ``--docs`` is given). An implementation that
ran out of memory or time at one size is not run at the larger sizes (reported as ``SKIPPED``).
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import tempfile
from pathlib import Path
from types import ModuleType

from benchmarks.measure import ROOT, Measurement, measure
from benchmarks.report import compare, markdown_table, update_docs, write_json

GIB = 2**30


def _available_memory() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("/proc/meminfo has no MemAvailable")


def discover() -> list[ModuleType]:
    """Every module of this package that defines a benchmark (``NAME``, ``TITLE``, ``cases``, ``setup``)."""
    modules = []
    for info in sorted(pkgutil.iter_modules([str(Path(__file__).parent)]), key=lambda info: info.name):
        if info.name.startswith("_") or info.name in ("measure", "report"):
            continue
        module = importlib.import_module(f"benchmarks.{info.name}")
        if all(hasattr(module, name) for name in ("NAME", "TITLE", "cases", "setup")):
            modules.append(module)
    return modules


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="JSON results folder")
    parser.add_argument("--quick", action="store_true", help="small sizes and fewer repeats (a smoke run)")
    parser.add_argument("--only", action="append", help="run only this benchmark (repeatable)")
    parser.add_argument("--repeats", type=int, help="timed runs after the warm-up (default 3, quick 2)")
    parser.add_argument("--time-cap", type=float, help="seconds of work per case (default 240, quick 60)")
    parser.add_argument(
        "--memory-cap-gb",
        type=float,
        help="address-space cap per case in GiB (default: 20 or 85%% of the available memory, the smaller)",
    )
    parser.add_argument(
        "--docs",
        type=Path,
        help="Markdown file whose tables to regenerate (default: docs/benchmarks.md, not in --quick)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run the selected benchmarks and write their JSON results and Markdown tables."""
    args = _parse(argv)
    repeats = args.repeats if args.repeats is not None else (2 if args.quick else 3)
    time_cap = args.time_cap if args.time_cap is not None else (60.0 if args.quick else 240.0)
    memory_cap = int(
        args.memory_cap_gb * GIB if args.memory_cap_gb is not None else min(20 * GIB, 0.85 * _available_memory())
    )
    docs = args.docs if args.docs is not None or args.quick else ROOT / "docs" / "benchmarks.md"
    modules = discover()
    if args.only:
        unknown = set(args.only) - {module.NAME for module in modules}
        if unknown:
            raise SystemExit(f"unknown benchmark(s) {sorted(unknown)}; known: {[m.NAME for m in modules]}")
        modules = [module for module in modules if module.NAME in args.only]
    settings = {
        "quick": args.quick,
        "repeats": repeats,
        "time_cap_s": time_cap,
        "memory_cap_bytes": memory_cap,
    }
    for module in modules:
        measurements: list[Measurement] = []
        failed: dict[tuple[str, str, str], str] = {}
        with tempfile.TemporaryDirectory(prefix="pairloss-bench-") as grad_dir:
            for case in module.cases(args.quick):
                reason = failed.get((case.loss, case.implementation, case.condition))
                if reason is not None:
                    result = Measurement(case, "skipped", message=reason)
                else:
                    result = measure(
                        case,
                        repeats=repeats,
                        time_cap=time_cap,
                        memory_cap=memory_cap,
                        grad_dir=Path(grad_dir),
                    )
                    if result.status in ("oom", "timeout"):
                        failed[(case.loss, case.implementation, case.condition)] = f"{result.status} at {case.params}"
                measurements.append(result)
                timing = f"{result.median_s:.3f} s" if result.median_s is not None else result.message
                peak = f"{result.peak_bytes / 2**20:,.0f} MiB" if result.peak_bytes is not None else ""
                label = f"{module.NAME} {case.loss} {case.params} {case.condition} {case.implementation}"
                print(f"{label}: {result.status} {timing} {peak}", flush=True)
                # written after every case, so that an interrupted run keeps what it measured
                stem = f"{module.NAME}-quick" if args.quick else module.NAME
                write_json(args.out / f"{stem}.json", module.NAME, module.TITLE, settings, measurements)
                table = markdown_table(compare(measurements))
                if docs is not None:
                    update_docs(docs, module.NAME, table)
        print(table)


if __name__ == "__main__":
    main()
