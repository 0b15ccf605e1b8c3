"""Serve trained models: a JSON API under /api/ (with dynamic batching) and a web page at /.

    python recipes/serve.py --textgen runs/textgen/best.pt --translate @runs/translate/ensemble.args \\
                            --caption runs/caption/best.pt [--host 127.0.0.1] [--port 8000]

Any of the three models, at least one; each is loaded once. The page shows a tab for each; the API is
described at /docs. Ctrl-C or SIGTERM stops taking requests, answers those in flight, and exits.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from captioning.captioner import Captioner
from core.cli import DTYPES, Parser, add_config_flags, add_device_flag, add_dtype_flag, config_from_args, path_arg
from core.console import keep_freed_memory, run_main
from core.errors import UserError, check_device, check_range
from core.lm import LanguageModel
from recipes.server.limits import Limits
from seq2seq.translate import build_parser as translate_parser
from seq2seq.translator import MAX_SOURCE_LEN, load_ensemble

try:
    import uvicorn

    from recipes.server.api import create_app
    from recipes.server.tasks import Served, ServedCaptioner, ServedTextgen, ServedTranslator
except ModuleNotFoundError as missing:  # one line, as every command's errors are
    sys.exit(f"error: {missing.name} is not installed: the server needs the serve extra (pip install -e '.[serve]')")


def translation_arg(value: str) -> str:
    """--translate: a checkpoint, or @FILE of the translate command line's flags (a run's ensemble.args)."""
    return value if value.startswith("@") else path_arg(stream=False)(value)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(description=__doc__)
    p.add_argument("--textgen", type=path_arg(), metavar="CK", help="a text generation checkpoint")
    p.add_argument(
        "--translate",
        type=translation_arg,
        metavar="CK|@FILE",
        help="a translation checkpoint, or a run's @ensemble.args (an ensemble)",
    )
    p.add_argument("--caption", type=path_arg(), metavar="CK", help="a captioning checkpoint")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="the address to listen on (default: %(default)s; 0.0.0.0 opens it to the network)",
    )
    p.add_argument("--port", type=int, default=8000, help="(default: %(default)s)")
    p.add_argument("--max-source-len", type=int, default=MAX_SOURCE_LEN, help="source tokens a sentence may have")
    add_device_flag(p)
    add_dtype_flag(p)
    add_config_flags(p, Limits(), "bounds and batching")
    return p


def load(args: argparse.Namespace, limits: Limits) -> dict[str, Served]:
    """Each model named, loaded once."""
    device, dtype = check_device("--device", args.device), DTYPES[args.dtype]
    served: dict[str, Served] = {}
    if args.textgen:
        served["textgen"] = ServedTextgen(LanguageModel.load(args.textgen, device, dtype), args.textgen, limits)
    if args.translate:
        checkpoints = translate_parser().parse_args([args.translate]).checkpoint if args.translate.startswith(
            "@") else [args.translate]  # fmt: skip
        model, others = load_ensemble(checkpoints, device, dtype)
        served["translation"] = ServedTranslator(model, others, checkpoints, limits, args.max_source_len)
    if args.caption:
        served["captioning"] = ServedCaptioner(Captioner.load(args.caption, device, dtype), args.caption, limits)
    return served


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to host:port and listening, or one line saying why not (a port in use, an address that is
    not this machine's)."""
    try:
        return socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    except OSError as err:
        reason = str(err.strerror or err).split(" (while attempting")[0]  # (create_server adds the address tried)
        raise UserError(f"cannot listen on {host}:{port}: {reason}") from None


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if not (args.textgen or args.translate or args.caption):
        raise UserError("no model to serve: give --textgen, --translate or --caption (or several)")
    check_range("--port", args.port, 0, 65535)
    check_range("--max-source-len", args.max_source_len, 1)
    limits = config_from_args(Limits, args)
    keep_freed_memory()
    served = load(args, limits)
    app = create_app(served, limits)
    listening = listen(args.host, args.port)  # before the address is printed: whoever reads it may connect at once
    port = listening.getsockname()[1]  # (--port 0: the one the system chose)
    print(f"serving {', '.join(served)} at http://{args.host}:{port}/ (API: /docs)", flush=True)
    for number in (signal.SIGINT, signal.SIGTERM):  # uvicorn raises the signal again once it has stopped cleanly
        signal.signal(number, lambda *_: None)
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[listening])
    print("stopped: every request in flight was answered", flush=True)


if __name__ == "__main__":
    run_main(main, memory_flags="--max-batch or --max-beam")
