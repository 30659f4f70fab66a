"""``python -m allocator``: small utilities around the NMM library.

python -m allocator preload-path   absolute path of libnmm_preload.so
python -m allocator options        the NMM_OPTIONS table
python -m allocator demo           a short workload + benchmark, with stats
python -m allocator symbolize LOG  add file:line to the frames of NMM reports (offline)
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
    symbolize = sub.add_parser(
        "symbolize", help="add file:line to the frames of NMM reports (text or JSON lines)",
        description="Name the source line of every frame an NMM report wrote without one "
                    "(symbolize=0, no symbolizer where it ran, or a module whose line table "
                    "is in a separate debug package), with llvm-symbolizer or addr2line run "
                    "here over each frame's module and offset. Writes the log to stdout.")
    symbolize.add_argument("log", nargs="?", default="-",
                           help="a report log (stderr capture, PREFIX.<pid> or PREFIX.<pid>.json);"
                                " - or nothing: standard input")
    symbolize.add_argument("--symbolizer", metavar="PROGRAM",
                           help="llvm-symbolizer or addr2line to run (default: the first of "
                                "llvm-symbolizer, llvm-symbolizer-N, addr2line on PATH)")
    args = parser.parse_args(argv)

    if args.cmd == "symbolize":
        from allocator.errors import ReportLogError
        from allocator.symbolize import symbolize_file

        try:
            sys.stdout.write(symbolize_file(args.log, args.symbolizer))
        except ReportLogError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        return 0

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
