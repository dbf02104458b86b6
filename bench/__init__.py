"""loyalcast's benchmarks (issue 6): speed and memory at a million members, against baselines.

Run as ``python -m bench <scenario|all> --members N`` (:mod:`bench.cli`). An
invocation makes a fresh PostgreSQL database, seeds it
(:mod:`loyalcast.demo.seed`, COPY), runs the scenarios (:mod:`bench.scenarios`)
and the baselines (:mod:`bench.baselines`) on the same data and the same
provider fakes, prints a table per scenario and writes them all as JSON.
Nothing here is a timed test: figures are recorded in ``bench/README.md``.
"""
