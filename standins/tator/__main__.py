"""Run the Tator stand-in: `python -m standins.tator serve [options]`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import standins.tator
from standins.http import serve_until_signalled
from standins.tator.model import empty, generate
from standins.tator.server import TatorStandin


def main(argv=None) -> int:
    """Run the stand-in from the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m standins.tator", description=standins.tator.__doc__
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve a generated project")
    serve.add_argument("--root", help="where an --empty project is kept between runs")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8767)
    serve.add_argument("--media", type=int, default=4)
    serve.add_argument("--frames-per-media", type=int, default=6)
    serve.add_argument("--seed", type=int, default=0)
    serve.add_argument("--token", default="standin-token")
    serve.add_argument("--stream-height", type=int, default=270)
    serve.add_argument("--plain", action="store_true", help="random boxes only, no edge cases")
    serve.add_argument("--warm", action="store_true", help="render every annotated frame first")
    serve.add_argument("--delay", type=float, default=0.0, help="seconds added to responses")
    serve.add_argument(
        "--empty",
        action="store_true",
        help="a project with types only (to import into), kept in --root between runs",
    )
    serve.add_argument("--stable-ids", action="store_true", help="media ids from content")
    serve.add_argument("--annotate", action="store_true", help="label each new media")
    args = parser.parse_args(argv)
    if args.empty:
        data = empty()
    else:
        data = generate(
            args.media,
            args.frames_per_media,
            args.seed,
            args.stream_height,
            special=not args.plain,
        )
    server = TatorStandin(data, token=args.token, host=args.host, port=args.port, delay=args.delay)
    server.stable_ids, server.annotate = args.stable_ids, args.annotate
    state = Path(args.root, "project.json") if args.empty and args.root else None
    if state is not None:
        server.load(state)
    if args.warm:
        server.warm()
    serve_until_signalled(server, f"Tator stand-in serving {server.url}")
    if state is not None:
        server.save(state)
    return 0


if __name__ == "__main__":
    sys.exit(main())
