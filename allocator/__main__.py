"""``python -m allocator``: small utilities around the NMM library.

python -m allocator preload-path   absolute path of libnmm_preload.so
python -m allocator options        the NMM_OPTIONS table
python -m allocator demo           a short workload + benchmark, with stats
"""

from __future__ import annotations

import argparse
import sys


def _ops_count(text: str) -> int:
    """``--ops``: a whole number of operations the demo can time (a quarter go to pairs)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 4 <= value <= 1_000_000_000:
        raise argparse.ArgumentTypeError(f"expected 4..1000000000, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m allocator", description="NMM utilities.")
    sub = parser.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    sub.add_parser("preload-path", help="print the absolute path of libnmm_preload.so")
    sub.add_parser("options", help="print the NMM_OPTIONS keys, defaults and meanings")
    demo = sub.add_parser("demo", help="run a short demo workload and benchmark, print stats")
    demo.add_argument("--seed", type=int, default=1, help="seed of the workload (default 1)")
    demo.add_argument("--ops", type=_ops_count, default=200_000,
                      help="operations per level, 4..1000000000 (default 200000)")
    args = parser.parse_args(argv)

    from allocator import _binding

    if args.cmd == "preload-path":
        path = _binding.preload_path()
        if not path.exists():
            print(f"error: {path} does not exist; run `pip install -e .`", file=sys.stderr)
            return 1
        print(path)
        return 0
    if args.cmd == "options":
        _binding.options_help()
        return 0
    from allocator import _demo

    return _demo.run(seed=args.seed, ops=args.ops)


if __name__ == "__main__":
    sys.exit(main())
