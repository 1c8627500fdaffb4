"""The ``convspectra`` command."""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="convspectra", description="Spectra of convolutional layers.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("bench", help="microbenchmarks against the plain-PyTorch reference", add_help=False)
    sub.add_parser("info", help="print what this install runs (compiled library, CUDA kernels, torch)")
    args, rest = parser.parse_known_args(argv)
    if args.command == "bench":
        from . import bench

        return bench.main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    import json

    import convspectra

    print(json.dumps(convspectra.backend_info(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
