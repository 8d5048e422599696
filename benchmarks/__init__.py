"""Benchmarks of pairloss against peer libraries: ``python -m benchmarks --out benchmarks/results``.

Each benchmark module of this package defines ``NAME``, ``TITLE``, ``cases(quick) -> list[Case]`` and
``setup(case)``, and is found by ``python -m benchmarks``; every case runs in a fresh, memory-capped process
(see :mod:`benchmarks.measure`) and the results go to ``<out>/<NAME>.json`` and to the table in
``docs/benchmarks.md``.
"""
