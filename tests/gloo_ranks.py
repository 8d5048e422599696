"""Run a function on P local gloo processes (one spawn for a whole test module) and collect each rank's result."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def run_on_ranks(fn: Callable[[int], Any], world: int, out_dir: Path) -> list[Any]:
    """``[fn(0), ..., fn(world − 1)]``, each run in its own process of one gloo group (``fn`` at module level)."""
    mp.spawn(_main, args=(fn, world, str(out_dir)), nprocs=world, join=True)
    return [torch.load(out_dir / f"rank{rank}.pt", weights_only=False) for rank in range(world)]


def _main(rank: int, fn: Callable[[int], Any], world: int, out_dir: str) -> None:
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{out_dir}/init", rank=rank, world_size=world)
    try:
        torch.save(fn(rank), Path(out_dir) / f"rank{rank}.pt")
        dist.barrier()  # nobody leaves (and tears the group down) while another rank still talks
    finally:
        dist.destroy_process_group()
