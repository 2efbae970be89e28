"""`python -m iwc.host.sandbox` / `invoke kaggle.sandbox`: serve the sandbox in the foreground for a rehearsal.

In: command-line options (data root, workdir, owner, port, faults). Out: the env vars a client needs, printed;
exit 0 after Ctrl-C, 2 with one `iwc: error:` line on bad options or data.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
import threading
from pathlib import Path

from iwc.errors import IwcError
from iwc.host.cli import Parser
from iwc.host.sandbox.faults import FAULTS, parse_fault

MAX_PORT = 65535


def main(argv: list[str] | None = None) -> int:
    """Serve the sandbox in the foreground until Ctrl-C, after printing the env vars a client needs."""
    args = build_parser().parse_args(argv)
    try:
        return _serve(args)
    except IwcError as e:
        print(f"iwc: error: {e}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    """The sandbox's command line (also what `invoke kaggle.sandbox` forwards)."""
    parser = Parser(prog="python -m iwc.host.sandbox", description=main.__doc__)
    parser.add_argument("--data", default="data/demo/medium-seed0",
                        help="data root laid out like `iwc demo-data`; a missing data/demo/<scale>-seed<N>[-quirks] "
                             "folder is written first")
    parser.add_argument("--workdir", default="runs/kaggle-sandbox", help="where kernels run, zips and uploads go")
    parser.add_argument("--owner", default="sandbox-user", help="the Kaggle user name the made-up token belongs to")
    parser.add_argument("--port", type=port_number, default=0,
                        help=f"port on 127.0.0.1, 1..{MAX_PORT} (default 0: any free one)")
    parser.add_argument("--fault", action="append", default=[],
                        help="name[:times][,key=value...], repeatable; names: " + ", ".join(FAULTS))
    return parser


def port_number(text: str) -> int:
    """A TCP port from the command line: an integer in 0..65535 (0: any free one), else a usage error."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0..{MAX_PORT})") from None
    if not 0 <= port <= MAX_PORT:
        raise argparse.ArgumentTypeError(f"{port} is outside 0..{MAX_PORT} (0: any free port)")
    return port


def _serve(args: argparse.Namespace) -> int:
    from iwc.layout import COMPETITION_SLUG

    data = Path(args.data)
    if not (data / COMPETITION_SLUG).is_dir():
        demo = re.fullmatch(r"(small|medium)-seed(\d+)(-quirks)?", data.name)
        if not demo:
            raise IwcError(f"no competition in {data} (no {COMPETITION_SLUG}/ folder): write the synthetic one "
                           f"with `invoke data.demo --out {data}` or pass --data with a data root")
        from iwc.host.synth import write_demo

        print(write_demo(data, seed=int(demo[2]), scale=demo[1], quirks=bool(demo[3])).summary())
    from iwc.host.sandbox.server import Sandbox

    faults = [parse_fault(text) for text in args.fault]
    with Sandbox(data, Path(args.workdir), owner=args.owner, port=args.port) as sb:
        for name, times, params in faults:
            sb.inject(name, times, **params)
        print(f"Kaggle sandbox serving {data} at {sb.url} (kernels run in {sb.workdir}). In another shell:")
        for name, value in sb.env.items():
            print(f"  export {name}={shlex.quote(value)}")
        print("then run `iwc reproduce --backend kaggle ...` or the `kaggle` CLI; Ctrl-C stops the sandbox.",
              flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            print("sandbox stopped")
    return 0
