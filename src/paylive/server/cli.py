"""``paylive serve``, ``check``, ``migrate`` and ``load`` (docs/protocol.md section 5)."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence

from .. import __version__
from ..settings import Settings, SettingsError, describe, load_settings
from .logs import announce, log_config


def _banner(settings: Settings, host: str, port: int, workers: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else ("[::1]" if host == "::" else host)
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    base = f"http://{shown}:{port}"
    engine = (
        f"redis ({workers} worker{'s' if workers > 1 else ''})" if settings.redis_url else "memory"
    )
    lines = [
        f"paylive {__version__} listening on {base} (engine: {engine}, gateway: {settings.gateway})"
    ]
    if not settings.production:
        lines.append(f"  demo checkout:    {base}/demo")
    admin = f"{base}/admin"
    if "PAYLIVE_ADMIN_TOKEN" in settings.generated:
        admin = f"{base}/client/admin.html#token={settings.admin_token}"
    lines.append(f"  admin dashboard:  {admin}")
    shown_values = {
        "PAYLIVE_API_KEY": settings.api_key,
        "PAYLIVE_ADMIN_TOKEN": settings.admin_token,
    }
    for name in settings.generated:
        if name in shown_values:
            lines.append(f"  generated {name}={shown_values[name]}")
        else:
            # Signing secrets are never printed: nobody needs to type them.
            lines.append(f"  generated {name} (random, this run only)")
    if settings.generated:
        lines.append("  (generated values last until this server stops; set them to keep them)")
    return "\n".join(lines)


def serve(host: str | None, port: int | None, workers: int, log_level: str) -> int:
    from .connections import BoundedHttpProtocol, PayliveConfig
    from .websocket import ws_protocol

    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"paylive: {exc}", file=sys.stderr)
        return 2
    host = host or settings.host
    port = settings.port if port is None else port
    if workers > 1 and not settings.redis_url:
        print(
            "paylive: --workers above 1 needs PAYLIVE_REDIS_URL: the in-memory engine lives in "
            "one process, and workers must share sessions, timers and fan-out",
            file=sys.stderr,
        )
        return 2
    # Every worker reads the environment again: make them agree on the generated
    # secrets and on where the sandbox posts its webhooks.
    os.environ["HOST"] = host
    os.environ["PORT"] = str(port)
    exported = {
        "PAYLIVE_API_KEY": settings.api_key,
        "PAYLIVE_ADMIN_TOKEN": settings.admin_token,
        "PAYLIVE_SECRET": settings.secret,
        "PAYLIVE_WEBHOOK_SECRET": ",".join(settings.webhook_secrets),
    }
    for name in settings.generated:
        os.environ[name] = exported[name]
    print(announce(_banner(settings, host, port, workers), settings.log_format), flush=True)
    if settings.production and settings.redis_url:
        from .checks import redis_persistence_warning

        warning = redis_persistence_warning(settings.redis_url, settings.redis_timeout_ms / 1000)
        if warning:
            print(
                announce(f"paylive: warning: {warning}", settings.log_format, "warning"),
                file=sys.stderr,
                flush=True,
            )
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Workers share the port, so /metrics must add up all of them.
        metrics_dir = tempfile.TemporaryDirectory(prefix="paylive-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir.name

    config = PayliveConfig(
        "paylive.server.app:create_app",
        settings=settings.connections,
        factory=True,
        http=BoundedHttpProtocol,
        host=host,
        port=port,
        workers=workers,
        log_config=log_config(log_level, settings.log_format),
        log_level=log_level,
        ws=ws_protocol(settings.ws_protocol),
        ws_max_size=settings.ws_max_frame_bytes,
        ws_ping_interval=settings.ws_ping_interval_s,
        ws_ping_timeout=settings.ws_ping_interval_s,
        # Compression costs tens of KB of zlib state per socket; events are small.
        ws_per_message_deflate=False,
        timeout_graceful_shutdown=settings.shutdown_grace_ms / 1000,  # type: ignore[arg-type]
        timeout_keep_alive=settings.keepalive_ms / 1000,  # type: ignore[arg-type]
        backlog=settings.listen_backlog,
        server_header=False,
        # X-Forwarded-For and -Proto are paylive's to read (web/clients.py), in the
        # connection protocol as well as the app: uvicorn's middleware, which only the
        # app passes, would name a client the protocol had counted as its proxy.
        proxy_headers=False,
    )
    from .uvicorn import run

    run(config)
    return 0


class _Help(argparse.HelpFormatter):
    """Each option's default shown after its help, unless the help says it already."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            action.option_strings
            and default is not None
            and default is not False
            and default != argparse.SUPPRESS
            and "default" not in text
        ):
            text += " (default: %(default)s)"
        return text


class _ServeHelp(_Help):
    """Its description and the list of variables (``settings.describe``) kept as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "".join(indent + line for line in text.splitlines(keepends=True))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="paylive",
        description="Live payment sessions. Every setting is a PAYLIVE_* environment "
        "variable (README: Configuration); the options below override a few of them.",
    )
    parser.add_argument("--version", action="version", version=f"paylive {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    p_serve = commands.add_parser(
        "serve",
        help="run the server",
        formatter_class=_ServeHelp,
        description="Run the server. Settings come from the environment: the variables below\n"
        "(docs/configuration.md), secrets also from <NAME>_FILE. A bad value stops it,\n"
        "naming the variable.",
        epilog=describe(),
    )
    p_serve.add_argument(
        "--host", default=None, help="address to listen on [env: HOST] (default: 127.0.0.1)"
    )
    p_serve.add_argument(
        "--port", type=int, default=None, help="port to listen on [env: PORT] (default: 8000)"
    )
    p_serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes; above 1 needs PAYLIVE_REDIS_URL",
    )
    p_serve.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="the least important log lines shown",
    )

    p_check = commands.add_parser(
        "check",
        help="validate the configuration and reach Redis, PostgreSQL and the provider",
        formatter_class=_Help,
        description="Read the settings as `paylive serve` would, then reach every service "
        "they name: Redis (PAYLIVE_REDIS_URL), PostgreSQL (PAYLIVE_DATABASE_URL) and "
        "Stripe (PAYLIVE_STRIPE_SECRET_KEY). Exit 0 when all is well, 1 when a service "
        "fails, 2 when a setting is wrong; each failure names its variable.",
    )
    p_check.add_argument(
        "--timeout", type=float, default=5.0, help="seconds allowed to each service"
    )
    p_migrate = commands.add_parser(
        "migrate",
        help="apply the archive's database migrations and exit",
        formatter_class=_Help,
        description="Apply the archive's migrations (shipped in the package) to "
        "PAYLIVE_DATABASE_URL and exit; `paylive serve` also applies them at start.",
    )
    p_migrate.add_argument("--timeout", type=float, default=10.0, help="seconds allowed to connect")

    p_load = commands.add_parser("load", help="the load generator", formatter_class=_Help)
    from ..load.cli import add_arguments

    add_arguments(p_load)

    args = parser.parse_args(argv)
    if args.command == "serve":
        if args.workers < 1:
            parser.error("--workers must be at least 1")
        return serve(args.host, args.port, args.workers, args.log_level)
    if args.command in ("check", "migrate"):
        if not 0 < args.timeout <= 600:
            parser.error("--timeout must be above 0 and at most 600 seconds")
        from . import preflight

        return (
            preflight.check(args.timeout)
            if args.command == "check"
            else preflight.migrate(args.timeout)
        )
    from ..load.cli import run_load

    return run_load(args)


if __name__ == "__main__":
    raise SystemExit(main())
