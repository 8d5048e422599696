"""Forward + backward wall time and peak memory of one benchmark case, in a fresh memory-capped process.

Method, per case:

1. The parent starts ``python -m benchmarks.measure`` (a fresh interpreter, so no allocator cache, no earlier
   peak and no other case's tensors), with ``RLIMIT_AS`` set to the memory cap: an allocation beyond it fails
   with an out-of-memory error that is reported, instead of taking the machine down.
2. The child builds the inputs, then records its resident set size (``VmRSS``) as the baseline and resets the
   kernel's high-water mark (writing ``5`` to ``/proc/self/clear_refs``; ``VmHWM`` then restarts from the
   current RSS).
3. It runs forward + backward once as a warm-up, then ``repeats`` more times, each timed with
   ``time.perf_counter``. The reported time is the median of the timed runs.
4. Peak memory = ``VmHWM − baseline``: the most memory the computation itself held at any instant, read by the
   kernel (so it counts every allocator: torch's, faiss's, numpy's).

The parent kills a child that runs past the time cap and reports it as such. In the ``busy`` condition the
parent starts one competing process that keeps a core busy (:func:`busy_process`) before the child and stops it
after the child has finished, so that the case runs while another job wants a core, as in training beside
DataLoader workers.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import re
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Case:
    """One measurement: ``implementation`` of ``loss`` on the input ``params`` that ``module`` builds, with the
    machine ``idle`` (nothing started by the benchmark) or ``busy`` (see :func:`busy_process`)."""

    module: str
    loss: str
    implementation: str
    params: dict[str, Any] = field(default_factory=dict)
    condition: str = "idle"


@dataclass
class Measurement:
    """What one case produced: ``status`` is ``ok``, ``oom``, ``timeout``, ``missing`` or ``error``."""

    case: Case
    status: str
    seconds: list[float] = field(default_factory=list)
    median_s: float | None = None
    peak_bytes: int | None = None
    value: float | None = None
    grad_file: str | None = None
    message: str = ""


def _status_kib(name: str) -> int:
    text = Path("/proc/self/status").read_text()
    match = re.search(rf"^{name}:\s+(\d+) kB", text, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"/proc/self/status has no {name}")
    return int(match.group(1))


def _reset_peak() -> int:
    """Reset the kernel's peak-RSS mark to the current RSS and return that RSS in bytes."""
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")
    return _status_kib("VmRSS") * 1024


def _is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, MemoryError) or (isinstance(error, RuntimeError) and "can't allocate memory" in str(error))


def _child(case: Case, repeats: int, time_cap: float, grad_path: Path) -> dict[str, Any]:
    """Run inside the capped process: set up, warm up, time, and read the peak."""
    module = importlib.import_module(case.module)
    try:
        step, leaf = module.setup(case)
    except ImportError as error:
        return {"status": "missing", "message": str(error)}
    baseline = _reset_peak()
    seconds: list[float] = []
    value = float("nan")
    started = time.perf_counter()
    try:
        for _ in range(repeats + 1):
            leaf.grad = None
            tick = time.perf_counter()
            loss = step()
            loss.backward()
            seconds.append(time.perf_counter() - tick)
            value = float(loss.detach())
            del loss
            if time.perf_counter() - started + seconds[-1] > time_cap:
                break
    except Exception as error:
        if _is_out_of_memory(error):
            return {"status": "oom", "message": str(error).splitlines()[0][:300]}
        raise
    peak = _status_kib("VmHWM") * 1024 - baseline
    np.save(grad_path, leaf.grad.detach().cpu().numpy())
    timed = seconds[1:] if len(seconds) > 1 else seconds
    return {
        "status": "ok",
        "seconds": seconds,
        "median_s": statistics.median(timed),
        "peak_bytes": peak,
        "value": value,
    }


#: The condition names of :class:`Case`.
CONDITIONS = ("idle", "busy")


def busy_process() -> subprocess.Popen[bytes]:
    """Start one Python process that spins on a core until it is killed (the "busy machine" competitor)."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"], stdout=subprocess.DEVNULL)


def measure(
    case: Case,
    *,
    repeats: int,
    time_cap: float,
    memory_cap: int,
    grad_dir: Path,
    grace: float = 60.0,
) -> Measurement:
    """Run ``case`` in a fresh process capped at ``memory_cap`` bytes and ``time_cap`` seconds of work.

    The benchmark module named by ``case.module`` provides ``setup(case) -> (step, leaf)``: ``step()`` returns
    the loss and ``leaf`` is the input whose gradient is kept. The gradient is written to ``grad_dir``
    (``.npy``) so that implementations can be compared. The child stops repeating once ``time_cap`` is
    spent; one still running ``time_cap + grace`` seconds after it started (a single run longer than the cap)
    is killed and reported as ``timeout``.
    """
    size = "-".join(f"{key}{value}" for key, value in sorted(case.params.items()))
    grad_path = grad_dir / f"{case.loss}-{case.implementation}-{size}-{case.condition}.npy"
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        result_path = Path(handle.name)
    command = [
        sys.executable,
        "-m",
        "benchmarks.measure",
        json.dumps(asdict(case)),
        str(repeats),
        str(time_cap),
        str(memory_cap),
        str(grad_path),
        str(result_path),
    ]
    if case.condition not in CONDITIONS:
        raise ValueError(f"condition must be one of {CONDITIONS}, got {case.condition!r}")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    competitor = busy_process() if case.condition == "busy" else None
    try:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            _, stderr = process.communicate(timeout=time_cap + grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            result_path.unlink(missing_ok=True)
            return Measurement(case, "timeout", message=f"no result within {time_cap + grace:.0f} s")
    finally:
        if competitor is not None:
            competitor.kill()
            competitor.wait()
    try:
        if process.returncode != 0:
            text = stderr.decode(errors="replace").strip().splitlines()
            if process.returncode == -signal.SIGKILL:
                return Measurement(case, "oom", message="killed by the system (out of memory)")
            oom = any("can't allocate memory" in line or "MemoryError" in line for line in text)
            return Measurement(case, "oom" if oom else "error", message=(text[-1] if text else "")[:300])
        result = json.loads(result_path.read_text())
    finally:
        result_path.unlink(missing_ok=True)
    return Measurement(
        case,
        result["status"],
        seconds=result.get("seconds", []),
        median_s=result.get("median_s"),
        peak_bytes=result.get("peak_bytes"),
        value=result.get("value"),
        grad_file=str(grad_path) if result["status"] == "ok" else None,
        message=result.get("message", ""),
    )


def _main(argv: list[str]) -> None:
    case_json, repeats, time_cap, memory_cap, grad_path, result_path = argv
    cap = int(memory_cap)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    case = Case(**json.loads(case_json))
    result = _child(case, int(repeats), float(time_cap), Path(grad_path))
    Path(result_path).write_text(json.dumps(result))


if __name__ == "__main__":
    _main(sys.argv[1:])
