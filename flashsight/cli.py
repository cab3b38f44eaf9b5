"""The `flashsight` command: `serve` a model over HTTP, or `make-test-model` for tests.

Heavy imports (torch, the engine, uvicorn) happen inside the subcommands, so `--help` is instant.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from flashsight.engine.config import DEFAULT_MODEL, EngineConfig

if TYPE_CHECKING:
    from flashsight.engine.protocol import EngineClient
    from flashsight.server.settings import ServerSettings

EXIT_USAGE = 2


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flashsight",
        description="A self-hosted, OpenAI-compatible server for the GLM-4.6V-Flash vision-language model.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_serve(commands)
    # ---- security commands (keys, users) ----
    from flashsight.security.cli import add_security_commands

    add_security_commands(commands)

    # ---- operations commands (logs) ----
    from flashsight.ops.audit_cli import add_logs_command

    add_logs_command(commands)

    # ---- benchmark command ----
    from flashsight.bench.command import add_bench_command

    add_bench_command(commands)

    _add_make_test_model(commands)
    return parser


def _add_serve(commands: Any) -> None:
    serve_parser = commands.add_parser(
        "serve",
        help="serve a model at /v1/chat/completions",
        epilog="Every server setting can also be set as FLASHSIGHT_<NAME>, e.g. FLASHSIGHT_MAX_BODY_BYTES=1000000.",
    )
    serve_parser.add_argument(
        "--model", default=DEFAULT_MODEL, help="a local checkpoint directory or a hub id (default: %(default)s)"
    )
    serve_parser.add_argument("--host", help="address to listen on (default: 127.0.0.1)")
    serve_parser.add_argument("--port", type=int, help="port to listen on (default: 8000)")
    serve_parser.add_argument("--device", default="auto", metavar="{auto,cpu,cuda,cuda:N}")
    serve_parser.add_argument("--dtype", choices=["auto", "bf16", "fp16", "fp32"], default="auto")
    serve_parser.add_argument("--served-model-name", help="the model id clients send (default: the model's name)")
    serve_parser.add_argument("--max-model-len", type=int, help="longest prompt + output, in tokens")
    serve_parser.add_argument("--data-dir", help="where keys, users, conversations and logs are kept (default: ~/.local/share/flashsight)")
    _add_engine_capacity(serve_parser)
    serve_parser.add_argument(
        "--allow-image-host",
        action="append",
        default=None,
        metavar="HOST[:PORT]",
        help="let image URLs reach this host even if it is private or loopback (repeatable)",
    )
    from flashsight.security.cli import add_serve_options

    add_serve_options(serve_parser)
    serve_parser.set_defaults(handler=serve)


def _add_engine_capacity(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("engine capacity")
    group.add_argument("--kv-cache-gb", type=float, help="KV cache size (default: fill the GPU up to --gpu-memory-utilization)")
    group.add_argument("--gpu-memory-utilization", type=float, help="share of GPU memory to use (default: 0.9)")
    group.add_argument("--max-num-seqs", type=int, help="requests generating at once (default: 256)")
    group.add_argument("--max-num-batched-tokens", type=int, help="tokens per engine step; longer prompts are chunked (default: 8192)")
    group.add_argument("--max-queue", type=int, help="requests waiting beyond this get 503 (default: 256)")
    group.add_argument("--image-cache-mb", type=int, help="memory for re-sent images' vision outputs; 0 turns it off (default: 512)")
    group.add_argument("--no-prefix-caching", dest="enable_prefix_caching", action="store_false", default=None,
                       help="do not reuse the KV cache of earlier requests' common prefixes")  # fmt: skip


_CAPACITY_OPTIONS = ("kv_cache_gb", "gpu_memory_utilization", "max_num_seqs", "max_num_batched_tokens", "max_queue",
                     "image_cache_mb", "enable_prefix_caching")  # fmt: skip


def _add_make_test_model(commands: Any) -> None:
    make_parser = commands.add_parser("make-test-model", help="write a small random-weight checkpoint")
    make_parser.add_argument("dir", help="the directory to write")
    make_parser.add_argument("--size", choices=["tiny", "full"], default="tiny")
    make_parser.set_defaults(handler=make_test_model)


def serve(args: argparse.Namespace) -> int:
    from flashsight.server.app import create_app
    from flashsight.server.runner import run

    try:
        settings = server_settings(args)
        engine = load_engine(engine_config(args), settings)
        app = create_app(settings, engine)
    except Exception as exc:  # no traceback for a bad flag or a model that will not load
        return fail(_describe(exc))
    return 0 if run(app, settings, engine.info.name) else 1


def server_settings(args: argparse.Namespace) -> ServerSettings:
    from flashsight.security.cli import serve_settings_given
    from flashsight.server.settings import ServerSettings

    given = {"host": args.host, "port": args.port, "allowed_image_hosts": args.allow_image_host, "data_dir": args.data_dir}
    given |= serve_settings_given(args)
    return ServerSettings(**{name: value for name, value in given.items() if value is not None})


def engine_config(args: argparse.Namespace) -> EngineConfig:
    given = {"served_model_name": args.served_model_name, "max_model_len": args.max_model_len}
    given |= {name: getattr(args, name) for name in _CAPACITY_OPTIONS}
    options = {name: value for name, value in given.items() if value is not None}
    return EngineConfig(model=args.model, device=args.device, dtype=args.dtype, **options)


def load_engine(config: EngineConfig, settings: ServerSettings) -> EngineClient:
    """The engine in a supervised child process, once its model is loaded (an error if it cannot
    be: the message is one sentence)."""
    from flashsight.ops.messages import WorkerOptions
    from flashsight.ops.supervisor import RestartPolicy, SupervisedEngine

    options = WorkerOptions(settings.engine_heartbeat_s, settings.engine_gpu_trim_fraction,
                            settings.engine_test_hang_marker)  # fmt: skip
    policy = RestartPolicy(settings.engine_watchdog_s, settings.engine_restart_backoff_s,
                           settings.engine_restart_backoff_max_s)  # fmt: skip
    return SupervisedEngine(config, options, policy).start()


def make_test_model(args: argparse.Namespace) -> int:
    from flashsight.engine.testmodel import write_test_model

    write_test_model(args.dir, size=args.size)
    print(f"flashsight: wrote a {args.size} test model to {args.dir}")
    return 0


def fail(message: str) -> int:
    print(f"flashsight: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _describe(exc: BaseException) -> str:
    """One line, without pydantic's decorations or the exception's class name."""
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        first = exc.errors(include_url=False)[0]
        field = ".".join(str(part) for part in first["loc"])
        reason = first["msg"].removeprefix("Value error, ")
        text = f"invalid setting {field}: {reason}" if field else f"invalid settings: {reason}"
    else:
        text = " ".join(str(exc).split()) or type(exc).__name__
    return text if text.endswith(".") else text + "."


if __name__ == "__main__":
    sys.exit(main())
