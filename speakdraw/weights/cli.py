"""`speakdraw models list | pull NAME... | path NAME` — the weights registry from a shell.

Exit codes: 0 done, 1 weights unavailable (message lists what was tried), 2 usage error.
"""

from __future__ import annotations

import argparse
import os
import sys

from speakdraw import weights


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="speakdraw models", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("list", help="every weight: status, licence, sources in order")
    ls.add_argument("-v", "--verbose", action="store_true", help="also print each source")
    pull = sub.add_parser("pull", help="download (once) and verify; prints the local path")
    pull.add_argument("names", nargs="+", metavar="NAME", help="registry name(s); globs like 'faster-whisper-*' work")
    pull.add_argument("--quiet", action="store_true", help="no progress bars")
    where = sub.add_parser("path", help="print the local path; exit 1 when not present (never downloads)")
    where.add_argument("name", metavar="NAME")
    return parser


def _names(patterns: list[str]) -> list[str]:
    names: list[str] = []
    for pattern in patterns:
        found = weights.match(pattern)
        if not found:
            raise KeyError(f"unknown weights {pattern!r}; known: {', '.join(weights.REGISTRY)}")
        names += [n for n in found if n not in names]
    return names


def _list(verbose: bool) -> int:
    print(f"cache dir: {weights.home()}")
    width = max(len(name) for name in weights.REGISTRY)
    for name, w in weights.REGISTRY.items():
        kind = "file" if w.is_file else "folder"
        print(f"{name:<{width}}  {weights.status(w):<7}  {kind:<6}  {w.licence}")
        if verbose:
            print(f"{'':<{width}}  {w.description}")
            if w.sha256:
                print(f"{'':<{width}}  sha256 {w.sha256}")
            for source in w.sources:
                print(f"{'':<{width}}  <- {source.describe()}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.command == "list":
            return _list(args.verbose)
        if args.command == "path":
            found = weights.path(args.name)
            if found is None:
                print(f"{args.name}: not present locally; run `speakdraw models pull {args.name}`", file=sys.stderr)
                return 1
            print(found)
            return 0
        status = 0
        for name in _names(args.names):
            try:
                print(weights.fetch(name, progress=not args.quiet))
            except weights.WeightsUnavailable as exc:
                print(exc, file=sys.stderr)
                status = 1
        return status
    except KeyError as exc:
        print(exc.args[0], file=sys.stderr)
        return 2
    except BrokenPipeError:  # `speakdraw models list | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
