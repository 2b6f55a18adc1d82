"""GUARD where its premise holds: `lethe demo unlearn` over knowledge overlaps and seeds (issue 11, item 7).

    python scripts/guard_overlap_sweep.py [key=value ...] [--run-dir DIR] [--quiet]

e.g. `overlaps=[0,0.5,1] seeds=[0,1,2] demo.world_authors=20` (the defaults). Keys: lethe.demo.guard_sweep's
GuardSweepConfig (overlaps, seeds, demo.* = every `lethe demo unlearn` key). Writes DIR/sweep.json and
DIR/report.md / report.html; each (overlap, seed) is a `lethe demo unlearn` run directory inside DIR,
reused when the sweep is re-run on DIR.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="dotted overrides key=value")
    parser.add_argument("--run-dir", help="run directory (re-run the same one to reuse finished runs)")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    from lethe.config import load_config
    from lethe.demo.guard_sweep import GuardSweepConfig, run_guard_sweep
    from lethe.errors import LetheError

    try:
        overrides = list(args.overrides) + ([f"run_dir={args.run_dir}"] if args.run_dir else [])
        run_guard_sweep(load_config(GuardSweepConfig, None, overrides), quiet=args.quiet)
    except LetheError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
