"""`lmforge serve RUN`: check the address, load the run, serve it with uvicorn.

The socket is bound here, before "serving on" is printed, so a bad host or port (or one in
use) is one clear line and exit 1. SIGTERM / Ctrl-C: uvicorn stops accepting, lets open
requests finish (at most --drain-seconds), then the scheduler stops.
"""

from __future__ import annotations

import argparse
import ipaddress
import re
import signal
import socket
import threading

from ..config import ConfigError


def check_address(host: str, port: int) -> None:
    """Refuse an impossible host or port with one line."""
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port {port}: a port is a number from 1 to 65535 (0: any free port)")
    if re.fullmatch(r"[\d.]+", host):  # looks like an IPv4 address: must be one
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ConfigError(f"--host {host}: not a valid IPv4 address") from None
    elif ":" in host:
        try:
            ipaddress.IPv6Address(host.strip("[]"))
        except ValueError:
            raise ConfigError(f"--host {host}: not a valid IPv6 address") from None


def bind(host: str, port: int) -> socket.socket:
    check_address(host, port)
    try:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as err:
        raise ConfigError(f"--host {host}: cannot resolve it ({err.strerror})") from None
    sock = socket.socket(info[0], socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(info[4])
    except OSError as err:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {err.strerror}") from None
    sock.listen(2048)
    return sock


def parse_origins(value: str | None) -> list[str]:
    return [o.strip() for o in (value or "").split(",") if o.strip()]


def cli(argv: list[str]) -> int:
    from .app import Settings, api_key_from_env

    defaults = Settings()
    parser = argparse.ArgumentParser(
        prog="lmforge serve", formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  lmforge serve runs/smollm2 --port 8000\n  lmforge serve runs/sst --api-key secret --cors http://localhost:3000",
        description="Serve a run over HTTP: OpenAI-compatible API, continuous batching, a chat "
                    "page at /. See docs/serve.md.")
    parser.add_argument("run", help="run directory (a language model or a classifier)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: "
                        "this machine only; 0.0.0.0 exposes the server to the network)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on /v1 routes "
                        "(default: $LMFORGE_API_KEY; none when unset)")
    parser.add_argument("--cors", metavar="ORIGINS", help="comma-separated origins allowed to call "
                        "the API from a browser, or '*'")
    parser.add_argument("--max-batch", type=int, default=defaults.max_batch,
                        help="sequences decoded together (1 = one at a time)")
    parser.add_argument("--max-queue", type=int, default=defaults.max_queue,
                        help="sequences waiting for a slot before requests get 429")
    parser.add_argument("--max-body-bytes", type=int, default=defaults.max_body_bytes)
    parser.add_argument("--max-prompt-tokens", type=int, default=defaults.max_prompt_tokens)
    parser.add_argument("--max-tokens", type=int, default=defaults.max_tokens,
                        help="largest max_tokens a request may ask for")
    parser.add_argument("--drain-seconds", type=float, default=30.0,
                        help="on SIGTERM, how long open requests may take to finish")
    args = parser.parse_args(argv)
    for name in ("max_batch", "max_queue", "max_body_bytes", "max_prompt_tokens", "max_tokens"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    try:
        import uvicorn
    except ImportError:
        raise ConfigError("serving needs fastapi and uvicorn: pip install 'lmforge[serve]'") from None
    sock = bind(args.host, args.port)
    from .app import create_app

    settings = Settings(api_key=api_key_from_env(args.api_key), cors=parse_origins(args.cors),
                        max_batch=args.max_batch, max_queue=args.max_queue,
                        max_body_bytes=args.max_body_bytes,
                        max_prompt_tokens=args.max_prompt_tokens, max_tokens=args.max_tokens)
    app = create_app(args.run, args.device, settings)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"serving {args.run} on http://{shown}:{sock.getsockname()[1]}/  (chat page at /)",
          flush=True)
    config = uvicorn.Config(app, log_level="warning",
                            timeout_graceful_shutdown=args.drain_seconds)
    if threading.current_thread() is threading.main_thread():
        # uvicorn drains on SIGTERM, then re-raises it to the previous handler: make that a
        # clean exit 0 instead of death by signal
        signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:  # Ctrl-C: uvicorn already drained, as for SIGTERM
        pass
    return 0
