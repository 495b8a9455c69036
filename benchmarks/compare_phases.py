"""Where the time of one ``mfjax compare`` process goes (issue 11, "the main job").

Runs ``mfjax.cli.main(argv)`` in this process with ``jax.monitoring`` duration
listeners (tracing, lowering to MLIR, backend compilation, persistent-cache
loads) and optionally cProfile, then prints the wall time per phase.

    python benchmarks/compare_phases.py [--profile FILE] -- compare --out DIR --no-progress
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import sys
import time

T_START = time.perf_counter()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default=None, help="write a cProfile dump here")
    p.add_argument("argv", nargs=argparse.REMAINDER)
    a = p.parse_args()
    argv = a.argv[1:] if a.argv[:1] == ["--"] else a.argv
    import jax.monitoring

    totals = collections.defaultdict(float)
    counts = collections.Counter()

    def on_duration(event, duration, **kw):
        totals[event] += float(duration)
        counts[event] += 1

    def on_event(event, **kw):
        counts[event] += 1

    jax.monitoring.register_event_duration_secs_listener(on_duration)
    jax.monitoring.register_event_listener(on_event)
    from mfjax import cli

    t_import = time.perf_counter() - T_START
    prof = cProfile.Profile() if a.profile else None
    t0 = time.perf_counter()
    if prof:
        prof.enable()
    rc = cli.main(argv)
    if prof:
        prof.disable()
        prof.dump_stats(a.profile)
    t_main = time.perf_counter() - t0
    print(f"\n--- phases (process wall {time.perf_counter() - T_START:.2f} s; imports {t_import:.2f} s, "
          f"main {t_main:.2f} s)")
    for ev in sorted(set(totals) | set(counts)):
        print(f"{ev:70s} {totals.get(ev, 0.0):8.2f} s  x{counts[ev]}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
