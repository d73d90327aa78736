"""Every knob of the server, read from the environment once (docs/protocol.md section 1).

``Settings`` holds the values (each field's default is the one default); ``VARIABLES``
is the table of the environment variables that set them: name, field, parser with its
bounds, and a line of description. Parsing and validation (``load_settings``), the
variables listed by ``paylive serve --help`` (``describe``), the secrets read from
``<NAME>_FILE`` and the check of docs/configuration.md (tests/test_docs.py) all come
from it. Components do not take ``Settings`` whole: each takes its part (a frozen
dataclass below it, ``settings.redis`` and so on), which the wiring hands out.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import ipaddress
import os
import re
import secrets
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from .core.decision import Rules
from .core.merchant import MODES
from .core.standard_webhooks import secret_key
from .errors import PayliveError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance


class SettingsError(PayliveError, ValueError):
    """A configuration variable has a value the server cannot run with."""


MIN_SECRET_LENGTH = 16


@dataclass(frozen=True)
class Settings:
    attempt_timeout_ms: int = 30_000
    max_attempts: int = 3
    retry_delay_ms: int = 2_000
    session_ttl_ms: int = 900_000
    countdown_interval_ms: int = 1_000
    redis_url: str | None = None
    # A secret is a list while it is rotated: the first entry signs, every entry is
    # accepted. ``api_key`` is ``api_keys[0]`` (and so on), kept for the signers.
    api_key: str = ""
    admin_token: str = ""
    # Named staff credentials, (name, role, token) each (docs/protocol.md section 8.1).
    staff_tokens: tuple[tuple[str, str, str], ...] = ()
    secret: str = ""
    api_keys: tuple[str, ...] = ()
    admin_tokens: tuple[str, ...] = ()
    signing_secrets: tuple[str, ...] = ()
    webhook_secrets: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] | None = None
    env: str = "development"
    sandbox_delay_ms: int = 1_500
    host: str = "127.0.0.1"
    port: int = 8000
    # Proxies whose X-Forwarded-For and X-Forwarded-Proto are believed (addresses or
    # networks; "*" any); empty: none, the connection's own address is the client's.
    trusted_proxies: tuple[str, ...] = ("127.0.0.1", "::1")
    # Where the sandbox gateway posts its webhooks; by default this server itself.
    sandbox_webhook_url: str | None = None
    # The sandbox authorizes first and moves money on capture (an addition).
    sandbox_authorize_first: bool = False
    # The outbox of gateway effects: backoff between tries (capped exponential with
    # jitter), and when an effect still failing flags its session for review.
    effect_retry_base_ms: int = 1_000
    effect_retry_cap_ms: int = 60_000
    effect_review_after_ms: int = 900_000
    # The payment provider: the built-in sandbox, or Stripe (docs/protocol.md section 1).
    gateway: str = "sandbox"
    allow_sandbox: bool = False
    stripe_secret_key: str = ""
    stripe_webhook_secrets: tuple[str, ...] = ()
    # Unset: Stripe itself; set: another server that speaks its API (localstripe in tests).
    stripe_api_base: str | None = None
    stripe_publishable_key: str = ""
    # The shop's backend: signed webhooks of merchant events, and the archive.
    merchant_webhook_url: str | None = None
    merchant_webhook_secrets: tuple[str, ...] = ()
    merchant_events: str = "outcomes"
    database_url: str | None = None
    archive_days: int = 400
    # Operating it: log lines as text or one JSON object each; spans exported through
    # OpenTelemetry (the otel extra) to an OTLP collector or a JSON-lines file; the
    # bearer tokens GET /metrics asks for (a list while rotating: any entry is accepted).
    log_format: str = "text"
    otel_exporter: str = "off"
    otel_file: str | None = None
    metrics_tokens: tuple[str, ...] = ()

    # Limits: each is one field so that it can be tuned (docs/configuration.md).
    max_body_bytes: int = 16 * 1024
    # A request's line and headers (a socket's handshake): past this, 431 and closed.
    max_header_bytes: int = 32 * 1024
    max_message_bytes: int = 4 * 1024
    send_queue_size: int = 256
    history_cap: int = 512
    idempotency_ttl_ms: int = 24 * 3600 * 1000
    retention_after_end_ms: int = 24 * 3600 * 1000
    webhook_tolerance_s: int = 300
    ws_ping_interval_s: float = 20.0
    summary_interval_ms: int = 1_000
    timer_poll_ms: int = 50
    admin_list_max: int = 500
    redis_pool_size: int = 64
    redis_timeout_ms: int = 1_000
    # /readyz reuses its engine write probe's answer this long (0: asks every time).
    ready_cache_ms: int = 1_000
    # Commands worked on at once per worker; past it a command is refused at once
    # (503 overloaded, Retry-After in seconds) instead of queueing.
    max_in_flight: int = 64
    # The bound follows latency (limits.gradient) between these two unless turned off.
    adaptive_in_flight: bool = True
    min_in_flight: int = 8
    # While a worker is refusing, each turn of its loop starts at most this many new
    # commands, so that a refusal does not wait behind a long turn (limits/admission.py).
    max_starts_per_turn: int = 16
    # While the worker's loop runs later than this by its own work (not waiting for a
    # core), the adaptive bound shrinks: headroom to answer refusals at once. Off by
    # default: a burst's own work passes 10 ms, and the bound it shrank refused part of
    # a burst of 30 payments on a worker with room for them (the checkout shows a
    # refused payment as an error to retry by hand).
    in_flight_lag_target_ms: int = 0
    # One session's and one client address's share of those places (429 rate_limited
    # past it), so that nobody holds them all. The address share is 0, all of them, by
    # default: behind a proxy every customer comes from the proxy's address.
    max_in_flight_per_session: int = 8
    max_in_flight_per_address: int = 0
    # Sessions a Redis worker keeps to decide commands on without reading them first.
    session_cache_size: int = 10_000
    overload_retry_after_s: int = 1
    # The Redis subscription's health check: a probe every interval, expected back
    # within the timeout; a lost subscription is rebuilt with capped exponential backoff.
    redis_probe_interval_ms: int = 2_000
    redis_probe_timeout_ms: int = 2_000
    redis_backoff_base_ms: int = 100
    redis_backoff_cap_ms: int = 5_000
    # Stripe: how long one API call may take, how often the library retries a call that
    # got no answer (always under the same idempotency key), and the largest event body.
    # Every provider call made inside one request or timer (charge, void, lookup) ends
    # within this of the first, all of them together: shorter than the locks the
    # request holds (the 60 s Idempotency-Key lock, its place at the door).
    provider_deadline_ms: int = 15_000
    stripe_timeout_s: float = 20.0
    stripe_network_retries: int = 1
    stripe_webhook_max_bytes: int = 256 * 1024
    # After a lost subscription, local channels catch up from their history this many
    # at a time, with this pause between batches (snapshots spread, not a burst).
    resync_batch: int = 32
    resync_pause_ms: int = 20
    # Customer commands per session: a burst, then a steady rate (429 past it).
    command_burst: int = 20
    command_rate_per_s: float = 5.0
    # Timer loop: due deadlines claimed per round, how long a claim holds, and how many
    # fire at once on one worker.
    timer_batch: int = 200
    timer_lease_ms: int = 10_000
    timer_concurrency: int = 64
    # Effect loop, the same way: due effects claimed per round (by session), how long a
    # claim holds (longer than one provider call may take), calls at once per worker.
    effect_poll_ms: int = 100
    effect_batch: int = 100
    effect_lease_ms: int = 15_000
    effect_concurrency: int = 16
    effect_call_timeout_ms: int = 5_000
    # The most a sandbox outage (POST /api/admin/sandbox/outage) may last.
    sandbox_outage_max_s: int = 3_600
    # On Redis Cluster: SPUBLISH/SSUBSCRIBE (each message on its slot's node) rather
    # than PUBLISH, which the cluster bus copies to every node.
    redis_sharded_pubsub: bool = True
    # The loop-lag timer's period (0: off): how late it runs is the time the worker's
    # event loop was held (paylive_loop_lag_seconds, read by paylive load).
    loop_lag_interval_ms: int = 25
    # Countdowns go out in up to this many slices per interval rather than one burst
    # (a slice every 20 ms at most).
    countdown_slices: int = 50
    # Merchant webhooks: a 2xx within the timeout is success; failures are retried with
    # capped exponential backoff for ``merchant_retry_for_ms``, then marked failed.
    merchant_webhook_timeout_ms: int = 10_000
    merchant_retry_for_ms: int = 3 * 24 * 3600 * 1000
    merchant_backoff_ms: int = 1_000
    merchant_backoff_cap_ms: int = 3_600_000
    # Webhooks posted at once per worker, beside the effect loop's provider calls.
    webhook_concurrency: int = 32
    # Delivered webhooks kept for the admin list (pending and failed ones are all kept).
    deliveries_kept: int = 1_000
    # The archive loop: merchant events written per transaction, and how often.
    archive_batch: int = 500
    archive_poll_ms: int = 200
    # uvicorn: frames past this are refused before they reach the app; the listen
    # backlog.
    ws_max_frame_bytes: int = 64 * 1024
    # uvicorn's WebSocket implementation. Measured at 20,000 idle sockets on 2 workers
    # (RSS per socket): wsproto 21.1 KB, websockets-sansio 23.2 KB, websockets (the
    # legacy one) 37 KB; the CPU per state change was the same within the noise.
    ws_protocol: str = "wsproto"
    listen_backlog: int = 4096
    # After the drain, requests still in flight get this long before they are cut
    # (uvicorn's timeout_graceful_shutdown, whose 10 s paylive always passed).
    shutdown_grace_ms: int = 10_000
    # A stopping worker (SIGTERM) refuses new sockets and closes the ones it holds
    # spread over this window, with 1012 and a reconnect hint, so that a deploy sends
    # its customers back a few at a time instead of all in the same second. 0: all at
    # once with 1001 (section 4 as first written).
    drain_ms: int = 10_000
    # A session whose outcome no checkout acknowledged this long after it ended gets
    # the merchant event session.outcome_unseen (0: never).
    outcome_unseen_ms: int = 120_000
    # Connections: a request's headers (a socket's handshake) and then its body must
    # arrive within the timeout; past the limit a worker answers 503 ``overloaded``
    # and refuses socket handshakes; sockets on one session past the cap close 1013.
    header_timeout_ms: int = 10_000
    # An idle kept-alive connection is closed this long after its last answer
    # (uvicorn's keep-alive timer, whose default it keeps).
    keepalive_ms: int = 5_000
    # A connection whose client takes none of what the worker writes (an answer, a
    # stream's events, a socket's frames) is let go once its writes have waited this
    # long: a client that never reads holds nothing for ever.
    write_timeout_ms: int = 30_000
    max_connections: int = 10_000
    max_sockets_per_session: int = 8
    # Server-Sent Events and long-polling (docs/protocol.md 4.2): a comment this often
    # so that idle proxies keep a stream open; a stream ends after its lifetime (the
    # client reopens it with Last-Event-ID); a poll with nothing new is held this long;
    # a ticket is good this long, once.
    sse_heartbeat_ms: int = 15_000
    stream_lifetime_ms: int = 600_000
    poll_hold_ms: int = 25_000
    ticket_ttl_ms: int = 30_000
    # GET /demo creates a session: this many per client address at once, and as many
    # again each minute (429 past it).
    demo_per_minute: int = 10
    # JSON and msgpack input nesting deeper than this is refused (every real body is
    # three levels deep).
    max_json_depth: int = 16

    # Names of the variables whose values were generated because they were unset.
    generated: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        # The single value and its list agree: an override of one value (tests,
        # embedding) replaces the list, and a list alone gives its first entry.
        for one, many in (
            ("api_key", "api_keys"),
            ("admin_token", "admin_tokens"),
            ("secret", "signing_secrets"),
        ):
            value: str = getattr(self, one)
            entries: tuple[str, ...] = getattr(self, many)
            if value and (not entries or entries[0] != value):
                object.__setattr__(self, many, (value,))
            elif entries and not value:
                object.__setattr__(self, one, entries[0])

    @property
    def outbox_lease_ms(self) -> int:
        """How long the effect loop's claim of a session holds: longer than a provider
        call and a webhook post together, so that no other worker claims it meanwhile."""
        return max(
            self.effect_lease_ms, self.effect_call_timeout_ms + self.merchant_webhook_timeout_ms
        )

    @property
    def drain_hint_ms(self) -> int:
        """The reconnect hint of a drain's close: a client waits a random delay up to
        this, so that the sockets closed in one slice of the window do not come back
        together (a fifth of the window, at least a second)."""
        return max(1_000, self.drain_ms // 5)

    @property
    def production(self) -> bool:
        return self.env == "production"

    @property
    def webhook_target(self) -> str:
        if self.sandbox_webhook_url:
            return self.sandbox_webhook_url
        host = self.host
        if host in ("0.0.0.0", ""):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/webhooks/sandbox"

    # The parts: what each component reads, handed out by the wiring (runtime.py,
    # server/, create_engine, create_gateway). Each is a projection of the fields and
    # properties above (``_part``), made once per ``Settings``.

    @functools.cached_property
    def rules(self) -> Rules:
        """The machine's part (``machine_rules``)."""
        return machine_rules(self)

    @functools.cached_property
    def engine(self) -> EngineSettings:
        return _part(EngineSettings, self)

    @functools.cached_property
    def redis(self) -> RedisSettings:
        return _part(RedisSettings, self)

    @functools.cached_property
    def sandbox(self) -> SandboxSettings:
        return _part(SandboxSettings, self)

    @functools.cached_property
    def stripe(self) -> StripeSettings:
        return _part(StripeSettings, self)

    @functools.cached_property
    def service(self) -> ServiceSettings:
        return _part(ServiceSettings, self)

    @functools.cached_property
    def reads(self) -> ReadsSettings:
        return _part(ReadsSettings, self)

    @functools.cached_property
    def archive(self) -> ArchiveSettings:
        return _part(ArchiveSettings, self)

    @functools.cached_property
    def admission(self) -> AdmissionSettings:
        return _part(AdmissionSettings, self)

    @functools.cached_property
    def credentials(self) -> Credentials:
        return _part(Credentials, self)

    @functools.cached_property
    def bodies(self) -> BodySettings:
        return _part(BodySettings, self)

    @functools.cached_property
    def connections(self) -> ConnectionSettings:
        return _part(ConnectionSettings, self)

    @functools.cached_property
    def telemetry(self) -> TelemetrySettings:
        return _part(TelemetrySettings, self)


# The parts of the settings, one per concern. A part's fields carry the names of the
# ``Settings`` fields (or properties) they copy and have no defaults of their own: the
# one default is the table's, and a test takes a part of ``Settings(...)``. A new
# setting that a component reads is a field of ``Settings``, a row of ``VARIABLES``,
# and a field of that component's part (docs/architecture.md, "Settings").

_P = TypeVar("_P", bound="DataclassInstance")


def _part(cls: type[_P], settings: Settings) -> _P:
    """``cls`` filled from ``settings``, field by field of the same name."""
    return cls(**{f.name: getattr(settings, f.name) for f in dataclasses.fields(cls)})


@dataclass(frozen=True)
class EngineSettings:
    """What every engine reads: how long sessions and their history are kept."""

    history_cap: int
    retention_after_end_ms: int
    session_ttl_ms: int
    attempt_timeout_ms: int
    deliveries_kept: int


@dataclass(frozen=True)
class RedisSettings(EngineSettings):
    """The Redis engine's part: an engine's, and its connection (pool, timeouts, the
    subscription's probe and backoff, sharded pub/sub) and its copies of sessions."""

    redis_pool_size: int
    redis_timeout_ms: int
    redis_probe_interval_ms: int
    redis_probe_timeout_ms: int
    redis_backoff_base_ms: int
    redis_backoff_cap_ms: int
    redis_sharded_pubsub: bool
    session_cache_size: int


@dataclass(frozen=True)
class SandboxSettings:
    """The sandbox gateway's: its delays, authorize-first, and its own webhooks."""

    sandbox_authorize_first: bool
    sandbox_delay_ms: int
    attempt_timeout_ms: int
    webhook_secrets: tuple[str, ...]
    webhook_target: str


@dataclass(frozen=True)
class StripeSettings:
    """The Stripe gateway's: the key, where its API is, and how calls are made."""

    stripe_secret_key: str
    stripe_api_base: str | None
    stripe_timeout_s: float
    stripe_network_retries: int


@dataclass(frozen=True)
class ServiceSettings:
    """The payment service's, which the outbox's runners (effects, deliveries) read
    through it: the machine's rules, the provider deadline, the outbox's timings."""

    rules: Rules
    provider_deadline_ms: int
    retention_after_end_ms: int
    effect_call_timeout_ms: int
    webhook_concurrency: int
    outbox_lease_ms: int


@dataclass(frozen=True)
class ReadsSettings:
    """The read model's: the longest list staff are given."""

    admin_list_max: int


@dataclass(frozen=True)
class ArchiveSettings:
    """The archive's follower and housekeeping (service/retention.py)."""

    archive_batch: int
    archive_poll_ms: int
    archive_days: int
    retention_after_end_ms: int


@dataclass(frozen=True)
class AdmissionSettings:
    """The door's count of commands in flight (limits/admission.py)."""

    max_in_flight: int
    min_in_flight: int
    max_starts_per_turn: int
    in_flight_lag_target_ms: int
    adaptive_in_flight: bool
    max_in_flight_per_session: int
    max_in_flight_per_address: int
    overload_retry_after_s: int


@dataclass(frozen=True)
class Credentials:
    """Who may ask (web/auth.py): the merchant's keys, the admin tokens, the named
    staff tokens, the secrets that sign client secrets (each list's first entry signs)."""

    api_keys: tuple[str, ...]
    admin_tokens: tuple[str, ...]
    staff_tokens: tuple[tuple[str, str, str], ...]
    signing_secrets: tuple[str, ...]


@dataclass(frozen=True)
class BodySettings:
    """A request body's limits: its size, and the time it has to arrive."""

    max_body_bytes: int
    header_timeout_ms: int


@dataclass(frozen=True)
class ConnectionSettings:
    """uvicorn's connections (server/connections.py): the header and write timeouts, the
    header size, the limit, and the proxies trusted to name the client."""

    header_timeout_ms: int
    write_timeout_ms: int
    max_header_bytes: int
    max_connections: int
    # Whose X-Forwarded-For names the client (web/clients.py): the protocol counts a
    # command in its client's share before the app runs.
    trusted_proxies: tuple[str, ...]


@dataclass(frozen=True)
class TelemetrySettings:
    """Where spans go (telemetry/)."""

    otel_exporter: str
    otel_file: str | None


_FLAGS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}

# A parser turns a variable's raw value (set and not blank, unless the variable is
# required) into its field's value, or raises SettingsError naming the variable.
Parser = Callable[[str, str], object]


@dataclass(frozen=True)
class Variable:
    """One row of the settings table: an environment variable, the ``Settings`` field
    it sets, how it is parsed and held to its bounds, and the line that describes it.

    The default is the field's own (``Settings``); ``shown`` is how the docs and
    ``--help`` say it when the field's value is not what a reader sets ("this
    server")."""

    env: str
    field: str | None
    parse: Parser | None
    doc: str
    shown: str | None = None
    # May also come from ``<env>_FILE`` (the file's content, stripped).
    secret: bool = False
    # A list (rotation): in ``<env>_FILE`` one entry a line, as well as commas.
    listed: bool = False
    # Unset: generated outside production, and production refuses to start without it.
    generate: bool = False
    # Read only when this holds of the values read before it (the rows above).
    when: Callable[[Mapping[str, object]], bool] | None = None
    # Parsed even when unset or blank: the parser says it is required.
    required: bool = False
    # Where the value comes from, when not simply ``env``: the name errors give and the
    # raw value (None: unset).
    source: Callable[[Mapping[str, str]], tuple[str, str | None]] | None = None
    # A rule across variables, checked once this row and those above it are read.
    then: Callable[[Mapping[str, object]], None] | None = None
    # Bounds, for the docs and --help (the parser holds the value to them).
    bounds: tuple[int, int] | None = None

    @property
    def default(self) -> str:
        if self.shown is not None:
            return self.shown
        if self.generate:
            return "generated"
        if self.field is None:
            return "unset"
        value = _FIELDS[self.field].default
        if value is None or value == "" or value == ():
            return "unset"
        if isinstance(value, bool):
            return "1" if value else "0"
        if isinstance(value, tuple):
            return ",".join(str(item) for item in value)
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        return str(value)


_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}


def _or(options: tuple[str, ...]) -> str:
    return ", ".join(options[:-1]) + " or " + options[-1]


def _integer(lo: int, hi: int) -> Parser:
    def parse(name: str, raw: str) -> int:
        digits = raw.strip()
        if not re.fullmatch(r"-?[0-9]{1,18}", digits):
            raise SettingsError(f"{name} must be an integer, got {raw!r}")
        value = int(digits)
        if not lo <= value <= hi:
            raise SettingsError(f"{name} must be between {lo} and {hi}, got {value}")
        return value

    return parse


def _flag(name: str, raw: str) -> bool:
    """Every yes/no variable alike: 1, true, yes or 0, false, no (any case)."""
    value = raw.strip().lower()
    if value not in _FLAGS:
        raise SettingsError(f"{name} must be 1 or 0 (true or false), got {value!r}")
    return _FLAGS[value]


def _choice(*options: str, lower: bool = False) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        value = raw.strip().lower() if lower else raw.strip()
        if value not in options:
            raise SettingsError(f"{name} must be {_or(options)}, got {value!r}")
        return value

    return parse


def _text(name: str, raw: str) -> str:
    return raw.strip()


def _split(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _shown_url(url: str) -> str:
    """``url`` for an error message, which ``paylive check`` prints into CI logs: its
    credentials (before an ``@``) and its query (a token) left out."""
    url = url.partition("?")[0].partition("#")[0]
    if "@" not in url:
        return url
    scheme, sep, _ = url.partition("://")
    return f"{scheme}{sep}***@{url.rpartition('@')[2]}" if sep else f"***@{url.rpartition('@')[2]}"


def _redis_url(name: str, raw: str) -> str:
    url = raw.strip()
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise SettingsError(
            f"{name} must start with redis://, rediss:// or unix://, got {_shown_url(url)!r}"
        )
    return url


def _web_url(name: str, raw: str) -> str:
    url = raw.strip()
    shown = _shown_url(url)
    if not url.startswith(("http://", "https://")):
        raise SettingsError(f"{name} must start with http:// or https://, got {shown!r}")
    # A host and, if given, a port a client can use: a URL no post can be made to (a
    # mistyped port, an unclosed bracket) stops the server here, not every post later.
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises for a port out of range or not a number
    except ValueError as exc:
        raise SettingsError(f"{name} is not a usable URL ({exc}), got {shown!r}") from None
    if not parts.hostname:
        raise SettingsError(f"{name} has no host, got {shown!r}")
    return url


def _database_url(name: str, raw: str) -> str:
    url = raw.strip()
    if not url.startswith(("postgres://", "postgresql://")):
        raise SettingsError(
            f"{name} must start with postgresql:// or postgres://, got {_shown_url(url)!r}"
        )
    return url


def _origins(name: str, raw: str) -> tuple[str, ...]:
    parsed = _split(raw)
    for origin in parsed:
        if origin != "*" and not origin.startswith(("http://", "https://")):
            raise SettingsError(
                f"{name} must list origins such as https://shop.example, got {origin!r}"
            )
    return parsed


def _proxies(name: str, raw: str) -> tuple[str, ...]:
    """Addresses or networks, as uvicorn reads them (10.1.2.3/8 is 10.0.0.0/8); none; *."""
    if raw.strip().lower() == "none":
        return ()
    entries = _split(raw)
    if "*" in entries:
        return ("*",)
    parsed: list[str] = []
    for entry in entries:
        try:
            parsed.append(
                str(ipaddress.ip_network(entry, strict=False))
                if "/" in entry
                else str(ipaddress.ip_address(entry))
            )
        except ValueError:
            raise SettingsError(
                f"{name} must list IP addresses or networks (such as 10.0.0.0/8), "
                f"none, or *; got {entry!r}"
            ) from None
    return tuple(parsed)


def _secrets(name: str, raw: str) -> tuple[str, ...]:
    """A secret is a list (rotation: the first signs, all are accepted); each entry is
    held to the rule."""
    entries = _split(raw)
    if not entries:
        raise SettingsError(f"{name} lists no value")
    for entry in entries:
        if len(entry) < MIN_SECRET_LENGTH:
            which = " entry" if len(entries) > 1 else ""
            raise SettingsError(
                f"{name}{which} must be at least {MIN_SECRET_LENGTH} characters long"
            )
    if len(set(entries)) != len(entries):
        raise SettingsError(f"{name} lists the same value twice")
    return entries


def _stripe_key(name: str, raw: str) -> str:
    key = raw.strip()
    if not key.startswith(("sk_", "rk_")):
        raise SettingsError(
            f"{name} must be a Stripe secret or restricted key (sk_... or "
            "rk_...) with PAYLIVE_GATEWAY=stripe"
        )
    return key


# Stripe's signing secrets are whsec_ and 32 letters and digits; a value cut short (a
# bare "whsec_" left by a template) would be a key anyone can guess.
_STRIPE_HOOK = re.compile(r"whsec_[A-Za-z0-9_+/=-]{16,}")


def _stripe_hooks(name: str, raw: str) -> tuple[str, ...]:
    hooks = _split(raw)
    if not hooks or not all(_STRIPE_HOOK.fullmatch(h) for h in hooks):
        raise SettingsError(
            f"{name} must be the endpoint's signing secret (whsec_ and at least 16 "
            "letters or digits; a comma-separated list while rotating) with "
            "PAYLIVE_GATEWAY=stripe"
        )
    return hooks


def _stripe_base(name: str, raw: str) -> str | None:
    base = raw.strip().rstrip("/")
    if base and not base.startswith(("http://", "https://")):
        raise SettingsError(f"{name} must be an http(s) URL, got {base!r}")
    return base or None


def _publishable(name: str, raw: str) -> str:
    key = raw.strip()
    if not key.startswith("pk_"):
        raise SettingsError(f"{name} must be a publishable key (pk_...)")
    return key


def _merchant_secrets(name: str, raw: str) -> tuple[str, ...]:
    parsed = _split(raw)
    if not parsed:
        # Only commas: an empty list would sign no webhook, and every post would go out
        # with an empty webhook-signature.
        raise SettingsError(f"{name} lists no value")
    for entry in parsed:
        try:
            secret_key(entry)
        except ValueError as exc:
            raise SettingsError(
                f"{name} must list Standard Webhooks secrets "
                f"(whsec_ and the base64 of 24 to 64 random bytes): {exc}"
            ) from None
    return parsed


_OTEL_EXPORTERS = ("off", "otlp", "file")


def _exporter(name: str, raw: str) -> str:
    exporter = _choice(*_OTEL_EXPORTERS, lower=True)(name, raw)
    if exporter != "off":
        needed = "opentelemetry.sdk"
        if exporter == "otlp":
            needed = "opentelemetry.exporter.otlp.proto.http"
        if not _importable(needed):
            raise SettingsError(
                f"{name}={exporter} needs OpenTelemetry: pip install 'paylive[otel]'"
            )
    return exporter


def _otel_file(name: str, raw: str) -> str:
    path = raw.strip()
    if not path:
        raise SettingsError(f"{name} is required with PAYLIVE_OTEL_EXPORTER=file")
    return path


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


STAFF_ROLES = ("viewer", "operator", "admin")
# A staff name, as a staff token gives it and the audit is searched by it.
STAFF_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


def _staff_entries(name: str, lines: list[str]) -> list[tuple[str, str, str]]:
    """Each line ``name:role:token``; an error names the entry by its place, never by
    its text, which may hold a token."""
    entries: list[tuple[str, str, str]] = []
    for number, line in enumerate(lines, 1):
        staff, _, rest = line.partition(":")
        role, _, token = rest.partition(":")
        staff, role, token = staff.strip(), role.strip(), token.strip()
        where = f"{name}: entry {number}"
        if not STAFF_NAME.fullmatch(staff):
            raise SettingsError(
                f"{where} must be name:role:token, the name 1 to 64 letters, digits or ._@-"
            )
        if role not in STAFF_ROLES:
            raise SettingsError(f"{where}: the role must be {_or(STAFF_ROLES)}")
        if len(token) < MIN_SECRET_LENGTH:
            raise SettingsError(
                f"{where}: the token must be at least {MIN_SECRET_LENGTH} characters"
            )
        entries.append((staff, role, token))
    return entries


def _staff(name: str, raw: str) -> tuple[tuple[str, str, str], ...]:
    """Entries separated by commas or new lines; blank lines and lines starting with #
    are skipped."""
    lines = [part.strip() for line in raw.splitlines() for part in line.split(",")]
    entries = _staff_entries(name, [ln for ln in lines if ln and not ln.startswith("#")])
    tokens = [token for _, _, token in entries]
    if len(set(tokens)) != len(tokens):
        raise SettingsError(f"{name}: a token is listed twice")
    return tuple(entries)


def _staff_source(env: Mapping[str, str]) -> tuple[str, str | None]:
    """PAYLIVE_STAFF_TOKENS, or the file PAYLIVE_STAFF_TOKENS_FILE names (then errors
    name the file's variable)."""
    raw = (env.get("PAYLIVE_STAFF_TOKENS") or "").strip()
    path = (env.get("PAYLIVE_STAFF_TOKENS_FILE") or "").strip()
    if not path:
        return "PAYLIVE_STAFF_TOKENS", raw
    try:
        with open(path, encoding="utf-8-sig") as handle:  # a byte order mark is no name
            text = handle.read(_MAX_SECRET_FILE_BYTES + 1)
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"PAYLIVE_STAFF_TOKENS_FILE cannot be read: {exc}") from None
    if len(text) > _MAX_SECRET_FILE_BYTES:
        # Refused, as every other secret file is: cut at the bound, the staff past it
        # would be left out without a word, and the last token be a shorter one.
        raise SettingsError(f"PAYLIVE_STAFF_TOKENS_FILE names a file over 64 KiB ({path!r})")
    text = text.strip()
    # The same text twice is the file already read into the variable: not a clash.
    if raw and raw != text:
        raise SettingsError(
            "PAYLIVE_STAFF_TOKENS and PAYLIVE_STAFF_TOKENS_FILE are both set: set only one"
        )
    return "PAYLIVE_STAFF_TOKENS_FILE", text


def _proxies_source(env: Mapping[str, str]) -> tuple[str, str | None]:
    """PAYLIVE_TRUSTED_PROXIES; unset, uvicorn's FORWARDED_ALLOW_IPS (the variable this
    one names for paylive)."""
    raw = env.get("PAYLIVE_TRUSTED_PROXIES")
    if (raw is None or not raw.strip()) and (env.get("FORWARDED_ALLOW_IPS") or "").strip():
        return "FORWARDED_ALLOW_IPS", env.get("FORWARDED_ALLOW_IPS")
    return "PAYLIVE_TRUSTED_PROXIES", raw


def _webhooks_signed(values: Mapping[str, object]) -> None:
    if values.get("merchant_webhook_url") and "merchant_webhook_secrets" not in values:
        raise SettingsError(
            "PAYLIVE_MERCHANT_WEBHOOK_SECRET is required with PAYLIVE_MERCHANT_WEBHOOK_URL: "
            "the shop verifies every webhook with it"
        )


def _retention_archived(values: Mapping[str, object]) -> None:
    retention = values.get("retention_after_end_ms")
    if retention is not None and not values.get("database_url") and int(str(retention)) < _DAY:
        raise SettingsError(
            "PAYLIVE_REDIS_RETENTION_MS below 86400000 (24 h) needs PAYLIVE_DATABASE_URL: "
            "without the archive, ended sessions would be forgotten sooner"
        )


def _stripe(values: Mapping[str, object]) -> bool:
    return values.get("gateway") == "stripe"


def _file_exporter(values: Mapping[str, object]) -> bool:
    return values.get("otel_exporter") == "file"


def _bounded(name: str, field: str, lo: int, hi: int, doc: str) -> Variable:
    """An integer variable between ``lo`` and ``hi``."""
    return Variable(name, field, _integer(lo, hi), doc, bounds=(lo, hi))


_DAY = 24 * 3_600_000

# Every variable paylive reads, in the order they are read (a row's ``when`` looks at
# the rows above it). docs/configuration.md describes each PAYLIVE_* one exactly once
# (tests/test_docs.py), and ``paylive serve --help`` lists them from here.
# fmt: off
VARIABLES: tuple[Variable, ...] = (
    _bounded("PAYLIVE_ATTEMPT_TIMEOUT_MS", "attempt_timeout_ms", 50, 3_600_000,
             "an attempt with no provider result by then is interrupted"),
    _bounded("PAYLIVE_MAX_ATTEMPTS", "max_attempts", 1, 20, "attempts per session"),
    _bounded("PAYLIVE_RETRY_DELAY_MS", "retry_delay_ms", 0, 3_600_000,
             "after an interruption, a retry is allowed from ended_at + this"),
    _bounded("PAYLIVE_SESSION_TTL_MS", "session_ttl_ms", 100, 30 * _DAY,
             "unfinished sessions expire after this"),
    _bounded("PAYLIVE_COUNTDOWN_INTERVAL_MS", "countdown_interval_ms", 20, 60_000,
             "period of countdown messages"),
    _bounded("PAYLIVE_SANDBOX_DELAY_MS", "sandbox_delay_ms", 0, 3_600_000,
             "how long the sandbox provider takes to answer"),
    _bounded("PORT", "port", 0, 65_535, "port paylive serve listens on (--port overrides)"),
    _bounded("PAYLIVE_SEND_QUEUE_SIZE", "send_queue_size", 1, 100_000,
             "messages queued per customer socket before it is closed with 1013"),
    _bounded("PAYLIVE_HISTORY_CAP", "history_cap", 16, 100_000,
             "durable events kept per session for since= replay"),
    _bounded("PAYLIVE_REDIS_POOL_SIZE", "redis_pool_size", 1, 10_000,
             "Redis connections per worker for listings, probes and counters"),
    _bounded("PAYLIVE_REDIS_TIMEOUT_MS", "redis_timeout_ms", 50, 60_000,
             "connect, read and pool-wait timeout of Redis commands"),
    _bounded("PAYLIVE_READY_CACHE_MS", "ready_cache_ms", 0, 60_000,
             "/readyz reuses its engine write probe's answer this long"),
    _bounded("PAYLIVE_EFFECT_REVIEW_AFTER_MS", "effect_review_after_ms", 100, 30 * _DAY,
             "an effect unconfirmed this long flags its session for review"),
    _bounded("PAYLIVE_EFFECT_RETRY_BASE_MS", "effect_retry_base_ms", 10, 3_600_000,
             "first delay between tries of a failing effect (doubling)"),
    _bounded("PAYLIVE_EFFECT_RETRY_CAP_MS", "effect_retry_cap_ms", 10, _DAY,
             "the longest delay between tries of a failing effect"),
    _bounded("PAYLIVE_EFFECT_CALL_TIMEOUT_MS", "effect_call_timeout_ms", 50, 60_000,
             "a capture, release or refund of the outbox with no answer by then failed"),
    _bounded("PAYLIVE_EFFECT_LEASE_MS", "effect_lease_ms", 100, 600_000,
             "how long a claim of a session's outbox holds (at least a call and a post)"),
    _bounded("PAYLIVE_HEADER_TIMEOUT_MS", "header_timeout_ms", 100, 600_000,
             "a request's headers, then its body, must arrive within this"),
    _bounded("PAYLIVE_KEEPALIVE_MS", "keepalive_ms", 100, 600_000,
             "an idle kept-alive connection is closed this long after its last answer"),
    _bounded("PAYLIVE_WRITE_TIMEOUT_MS", "write_timeout_ms", 100, 600_000,
             "a connection whose writes waited this long for its client to read is reset"),
    _bounded("PAYLIVE_MAX_CONNECTIONS", "max_connections", 1, 1_000_000,
             "open connections per worker; past it 503 overloaded"),
    _bounded("PAYLIVE_MAX_SOCKETS_PER_SESSION", "max_sockets_per_session", 1, 10_000,
             "sockets on one session per worker; the next is closed with 1013"),
    _bounded("PAYLIVE_DEMO_PER_MINUTE", "demo_per_minute", 1, 100_000,
             "GET /demo sessions per client address a minute"),
    _bounded("PAYLIVE_ARCHIVE_DAYS", "archive_days", 1, 36_500,
             "archived sessions and events are deleted this long after their last change"),
    _bounded("PAYLIVE_REDIS_RETENTION_MS", "retention_after_end_ms", 1_000, 30 * _DAY,
             "how long an ended session is kept (below 24 h only with the archive)"),
    _bounded("PAYLIVE_MERCHANT_WEBHOOK_TIMEOUT_MS", "merchant_webhook_timeout_ms", 100, 60_000,
             "a 2xx within this is a delivery"),
    _bounded("PAYLIVE_MERCHANT_RETRY_MS", "merchant_backoff_ms", 10, 3_600_000,
             "first retry delay of a merchant webhook (doubling to 1 h)"),
    _bounded("PAYLIVE_MERCHANT_RETRY_FOR_MS", "merchant_retry_for_ms", 100, 30 * _DAY,
             "how long merchant webhooks are retried"),
    _bounded("PAYLIVE_MAX_IN_FLIGHT", "max_in_flight", 1, 100_000,
             "the most commands one worker works on at once (503 overloaded past it)"),
    _bounded("PAYLIVE_MIN_IN_FLIGHT", "min_in_flight", 1, 100_000,
             "the adaptive bound's floor"),
    _bounded("PAYLIVE_MAX_STARTS_PER_TURN", "max_starts_per_turn", 0, 100_000,
             "new commands a worker starts per turn of its event loop (0: no such bound)"),
    _bounded("PAYLIVE_IN_FLIGHT_LAG_TARGET_MS", "in_flight_lag_target_ms", 0, 10_000,
             "the adaptive bound shrinks while the loop's own lag is past this (0: off)"),
    _bounded("PAYLIVE_LOOP_LAG_INTERVAL_MS", "loop_lag_interval_ms", 0, 10_000,
             "period of the loop-lag timer (0: off)"),
    _bounded("PAYLIVE_PROVIDER_DEADLINE_MS", "provider_deadline_ms", 100, 50_000,
             "every provider call inside one request or timer ends within this"),
    _bounded("PAYLIVE_MAX_IN_FLIGHT_PER_SESSION", "max_in_flight_per_session", 1, 100_000,
             "commands in flight one session may hold (429 past it)"),
    _bounded("PAYLIVE_MAX_IN_FLIGHT_PER_ADDRESS", "max_in_flight_per_address", 0, 100_000,
             "commands in flight one client address may hold (0: all)"),
    _bounded("PAYLIVE_SSE_HEARTBEAT_MS", "sse_heartbeat_ms", 100, 300_000,
             "an event stream sends a comment and a ping event this often"),
    _bounded("PAYLIVE_STREAM_LIFETIME_MS", "stream_lifetime_ms", 100, _DAY,
             "an event stream ends after this (the client reopens it)"),
    _bounded("PAYLIVE_SUMMARY_INTERVAL_MS", "summary_interval_ms", 20, 60_000,
             "period of the admin feed's summary messages"),
    _bounded("PAYLIVE_POLL_HOLD_MS", "poll_hold_ms", 0, 120_000,
             "a long-poll with nothing new is held this long"),
    _bounded("PAYLIVE_TICKET_TTL_MS", "ticket_ttl_ms", 1_000, 600_000,
             "a ticket opens one stream, poll or socket within this"),
    _bounded("PAYLIVE_DRAIN_MS", "drain_ms", 0, 600_000,
             "a stopping worker closes its sockets spread over this (0: at once)"),
    _bounded("PAYLIVE_SHUTDOWN_GRACE_MS", "shutdown_grace_ms", 0, 600_000,
             "after the drain, requests in flight get this long, then are cut"),
    _bounded("PAYLIVE_OUTCOME_UNSEEN_MS", "outcome_unseen_ms", 0, 7 * _DAY,
             "an outcome no checkout acknowledged by then makes session.outcome_unseen (0: never)"),
    Variable("PAYLIVE_ENV", "env", _choice("development", "production", "test"),
             "production refuses to start without its secrets and serves no demo"),
    Variable("PAYLIVE_REDIS_URL", "redis_url", _redis_url,
             "unset: in-memory engine, one process; set: the Redis engine", secret=True),
    Variable("HOST", "host", _text, "address paylive serve listens on (--host overrides)"),
    Variable("PAYLIVE_ALLOWED_ORIGINS", "allowed_origins", _origins,
             "origins that may open sockets and use the API (CORS); unset: same origin, localhost"),
    Variable("PAYLIVE_TRUSTED_PROXIES", "trusted_proxies", _proxies,
             "proxies whose X-Forwarded-For/-Proto are believed (addresses, networks, none or *)",
             source=_proxies_source),
    Variable("PAYLIVE_SANDBOX_AUTHORIZE_FIRST", "sandbox_authorize_first", _flag,
             "the sandbox authorizes first and moves money on capture"),
    Variable("PAYLIVE_ADAPTIVE_IN_FLIGHT", "adaptive_in_flight", _flag,
             "the in-flight bound follows latency (0: fixed at the maximum)"),
    Variable("PAYLIVE_REDIS_SHARDED_PUBSUB", "redis_sharded_pubsub", _flag,
             "on Redis Cluster, SPUBLISH/SSUBSCRIBE (0: plain PUBLISH)"),
    Variable("PAYLIVE_SANDBOX_WEBHOOK_URL", "sandbox_webhook_url", _text,
             "where the sandbox posts its webhooks", shown="this server"),
    Variable("PAYLIVE_GATEWAY", "gateway", _choice("sandbox", "stripe"),
             "the payment provider: sandbox or stripe"),
    Variable("PAYLIVE_ALLOW_SANDBOX", "allow_sandbox", _flag,
             "production may run the sandbox on purpose, with no real money"),
    Variable("PAYLIVE_STRIPE_SECRET_KEY", "stripe_secret_key", _stripe_key,
             "sk_... or rk_...; required with stripe", secret=True, when=_stripe,
             required=True),
    Variable("PAYLIVE_STRIPE_WEBHOOK_SECRET", "stripe_webhook_secrets", _stripe_hooks,
             "the webhook endpoint's whsec_... (a list while rotating); required with stripe",
             secret=True, listed=True, when=_stripe, required=True),
    Variable("PAYLIVE_STRIPE_API_BASE", "stripe_api_base", _stripe_base,
             "another server that speaks Stripe's API (localstripe in tests)", when=_stripe),
    Variable("PAYLIVE_STRIPE_PUBLISHABLE_KEY", "stripe_publishable_key", _publishable,
             "pk_... for checkout pages", when=_stripe),
    Variable("PAYLIVE_MERCHANT_WEBHOOK_URL", "merchant_webhook_url", _web_url,
             "where signed merchant events are posted; unset: no webhooks"),
    Variable("PAYLIVE_MERCHANT_WEBHOOK_SECRET", "merchant_webhook_secrets",
             _merchant_secrets, "signs merchant webhooks (Standard Webhooks whsec_...)",
             secret=True, listed=True, then=_webhooks_signed),
    Variable("PAYLIVE_MERCHANT_EVENTS", "merchant_events", _choice(*MODES),
             f"which merchant events are made: {_or(MODES)}"),
    Variable("PAYLIVE_DATABASE_URL", "database_url", _database_url,
             "postgresql://...: the archive in PostgreSQL", secret=True,
             then=_retention_archived),
    Variable("PAYLIVE_LOG_FORMAT", "log_format", _choice("text", "json", lower=True),
             "log lines as text or one JSON object each"),
    Variable("PAYLIVE_OTEL_EXPORTER", "otel_exporter", _exporter,
             "OpenTelemetry spans: off, otlp or file"),
    Variable("PAYLIVE_OTEL_FILE", "otel_file", _otel_file,
             "with file: the JSON-lines file of the spans", when=_file_exporter,
             required=True),
    Variable("PAYLIVE_METRICS_TOKEN", "metrics_tokens", _secrets,
             "GET /metrics asks for it as a bearer token (a list while rotating)",
             secret=True, listed=True),
    Variable("PAYLIVE_STAFF_TOKENS", "staff_tokens", _staff,
             "named staff credentials, name:role:token separated by commas or new lines",
             source=_staff_source),
    Variable("PAYLIVE_STAFF_TOKENS_FILE", None, None,
             "the same from a file, one a line (not with PAYLIVE_STAFF_TOKENS)"),
    # The secrets a server cannot run without: generated when unset outside production.
    Variable("PAYLIVE_API_KEY", "api_keys", _secrets,
             "the merchant's key (a list while rotating)", generate=True, secret=True,
             listed=True),
    Variable("PAYLIVE_ADMIN_TOKEN", "admin_tokens", _secrets,
             "the admin token (a list while rotating)", generate=True, secret=True,
             listed=True),
    Variable("PAYLIVE_SECRET", "signing_secrets", _secrets,
             "signs client secrets (the first of a list signs)", generate=True,
             secret=True, listed=True),
    Variable("PAYLIVE_WEBHOOK_SECRET", "webhook_secrets", _secrets,
             "verifies sandbox webhooks (a list while rotating)", generate=True,
             secret=True, listed=True),
)
# fmt: on

# Secrets that may also come from a file (``<NAME>_FILE``: the file's content, stripped),
# as container orchestrators mount them (PAYLIVE_STAFF_TOKENS reads its own file, one
# token a line).
SECRET_VARIABLES: tuple[str, ...] = tuple(v.env for v in VARIABLES if v.secret)
# Of those, the rotation lists: their file holds one entry a line, or commas, or both.
LISTED_VARIABLES: frozenset[str] = frozenset(v.env for v in VARIABLES if v.secret and v.listed)

# A secret file is a few lines at most; anything bigger is a wrong path.
_MAX_SECRET_FILE_BYTES = 64 * 1024


def resolve_secret_files(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` with each ``<NAME>_FILE`` of ``SECRET_VARIABLES`` replaced by its content.

    Setting a variable and its ``_FILE`` both is refused: which one wins would be a
    guess, and a rotation that forgot one of them would silently keep the old value.
    """
    resolved = dict(env)
    for name in SECRET_VARIABLES:
        file_name = f"{name}_FILE"
        path = (env.get(file_name) or "").strip()
        if not path:
            continue
        if (env.get(name) or "").strip():
            raise SettingsError(f"{name} and {file_name} are both set: set only one of them")
        try:
            with open(path, "rb") as handle:
                raw = handle.read(_MAX_SECRET_FILE_BYTES + 1)
        except OSError as exc:
            raise SettingsError(
                f"{file_name} names a file that cannot be read ({path!r}: {exc.strerror})"
            ) from None
        if len(raw) > _MAX_SECRET_FILE_BYTES:
            raise SettingsError(f"{file_name} names a file over 64 KiB ({path!r})")
        try:
            # utf-8-sig: Notepad and Windows PowerShell open a UTF-8 file with a byte
            # order mark, which strip() keeps (U+FEFF is no whitespace): the first key
            # would start with it and match nothing a client sends.
            text = raw.decode("utf-8-sig").strip()
        except UnicodeDecodeError:
            raise SettingsError(f"{file_name} names a file that is not UTF-8 text") from None
        if not text:
            raise SettingsError(f"{file_name} names an empty file ({path!r})")
        if name in LISTED_VARIABLES:
            # A rotation written into a file goes a line an entry: kept whole, the
            # lines would make one secret with a newline in it, matching nothing sent.
            text = ",".join(line.strip() for line in text.splitlines() if line.strip())
        resolved[name] = text
        del resolved[file_name]  # resolved: nothing downstream reads the file again
    return resolved


def secret_list(name: str, env: Mapping[str, str]) -> tuple[str, ...]:
    """One rotation list (a ``listed`` secret of ``VARIABLES``) read from ``env`` as the
    server reads it: from ``<name>_FILE`` too, and parsed by its row, for a tool beside
    the server (``paylive load``). Empty when unset; SettingsError naming the variable
    for a bad value. Only this variable's file is read: another secret's file, mounted
    for the server alone, is no business of the tool's."""
    row = next((v for v in VARIABLES if v.env == name and v.listed), None)
    if row is None or row.parse is None:
        raise ValueError(f"{name} is not a listed secret")
    own = {key: env[key] for key in (name, f"{name}_FILE") if key in env}
    raw = resolve_secret_files(own).get(name, "")
    if not raw.strip():
        return ()
    parsed = row.parse(name, raw)
    return tuple(str(entry) for entry in parsed) if isinstance(parsed, tuple) else ()


def _read(env: Mapping[str, str]) -> dict[str, object]:
    """Each row of the table in order: its parsed value, for the variables that are set
    (or required), and the rules across variables as their rows come."""
    values: dict[str, object] = {}
    for var in VARIABLES:
        if var.parse is None or var.field is None:
            continue
        if var.when is not None and not var.when(values):
            continue
        name, raw = var.source(env) if var.source else (var.env, env.get(var.env))
        if raw is not None and raw.strip():
            values[var.field] = var.parse(name, raw)
        elif var.required:
            values[var.field] = var.parse(name, "")
        if var.then is not None:
            var.then(values)
    return values


def _check(values: dict[str, object]) -> list[str]:
    """The secrets generated when unset (their names returned), or refused missing in
    production, and production's refusal of the sandbox."""
    production = values.get("env") == "production"
    gateway = values.get("gateway", _FIELDS["gateway"].default)
    generated: list[str] = []
    missing: list[str] = []
    for var in VARIABLES:
        if not var.generate or var.field is None or var.field in values:
            continue
        # With Stripe the sandbox's webhook is off, so its secret is not needed.
        if production and not (var.env == "PAYLIVE_WEBHOOK_SECRET" and gateway == "stripe"):
            missing.append(var.env)
            continue
        if var.env == "PAYLIVE_SECRET" and values.get("redis_url") is not None:
            # Workers must agree on the secret that signs client secrets.
            raise SettingsError(
                "PAYLIVE_SECRET is required with PAYLIVE_REDIS_URL: every worker must sign "
                "client secrets with the same key"
            )
        values[var.field] = (secrets.token_urlsafe(24),)
        generated.append(var.env)
    if missing:
        raise SettingsError("PAYLIVE_ENV=production refuses to start without " + ", ".join(missing))
    if production and gateway == "sandbox" and not values.get("allow_sandbox"):
        raise SettingsError(
            "PAYLIVE_ENV=production refuses the sandbox gateway (any card that passes the "
            "Luhn check pays): set PAYLIVE_GATEWAY=stripe, or PAYLIVE_ALLOW_SANDBOX=1 to "
            "run production with no real money on purpose"
        )
    return generated


def _bearers(settings: Settings) -> list[tuple[str, str]]:
    """Every bearer token a client may send, each with the variable (and staff name)
    that holds it: the rotation lists entry by entry, as each entry is accepted."""
    listed = [("PAYLIVE_API_KEY", key) for key in settings.api_keys]
    listed += [("PAYLIVE_ADMIN_TOKEN", token) for token in settings.admin_tokens]
    listed += [
        (f"PAYLIVE_STAFF_TOKENS ({name})", token) for name, _, token in settings.staff_tokens
    ]
    # The scraper's token reads counts only; shared with another credential, whoever
    # holds the scraper's configuration would hold that one's rights too.
    listed += [("PAYLIVE_METRICS_TOKEN", token) for token in settings.metrics_tokens]
    return listed


def _credentials_apart(settings: Settings) -> None:
    """Refuse one token listed for two credentials. The API key is tried first, then
    the staff tokens, then the admin token (``web.auth.principal_for``): a viewer's
    token that is also the API key would be the shop's, with refunds and ``complete``,
    and an admin token that is also a viewer's would be the viewer's. The error names
    the variables and staff names, never the token."""
    holders: dict[str, str] = {}
    for holder, token in _bearers(settings):
        first = holders.setdefault(token, holder)
        if first != holder:
            raise SettingsError(
                f"{first} and {holder} hold the same token: each credential needs its own, "
                "or one would be taken for the other (and its role with it)"
            )


def _signers_apart(settings: Settings) -> None:
    """Refuse a signing secret that is also a bearer token or another role's signing
    secret: whoever holds the one could sign what the other vouches for (a client
    secret or ticket for any session with PAYLIVE_SECRET, a provider's payment result
    with a webhook secret, a merchant event the shop would believe). Every entry of a
    rotation counts, as each is accepted. Named by variables, never by value."""
    holders: dict[str, str] = {}
    for holder, token in _bearers(settings):
        holders.setdefault(token, holder)
    signers = (
        ("PAYLIVE_SECRET", settings.signing_secrets),
        ("PAYLIVE_WEBHOOK_SECRET", settings.webhook_secrets),
        ("PAYLIVE_STRIPE_WEBHOOK_SECRET", settings.stripe_webhook_secrets),
        ("PAYLIVE_MERCHANT_WEBHOOK_SECRET", settings.merchant_webhook_secrets),
    )
    for signer, values in signers:
        for value in values:
            other = holders.setdefault(value, signer)
            if other != signer:
                raise SettingsError(
                    f"{signer} and {other} hold the same secret: a signing secret needs "
                    f"its own value, or whoever holds {other} could sign what {signer} "
                    "vouches for"
                )


def load_settings(environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Read the variables of ``VARIABLES`` from ``environ``; raise SettingsError naming
    a bad variable.

    Outside production, a missing API key, admin token or signing secret is generated
    (and listed in ``generated`` so that ``paylive serve`` can print it). ``overrides``
    set fields directly (tests, embedding); a list of secrets given alone brings its
    first entry as the single value (``Settings.__post_init__``).
    """
    env = resolve_secret_files(os.environ if environ is None else environ)
    values = _read(env)
    values["generated"] = tuple(_check(values))
    values.update(overrides)
    unknown = set(values) - set(_FIELDS)
    if unknown:
        raise SettingsError(f"unknown settings: {sorted(unknown)}")
    settings = Settings(**values)  # type: ignore[arg-type]
    _credentials_apart(settings)
    _signers_apart(settings)
    if settings.effect_retry_cap_ms < settings.effect_retry_base_ms:
        raise SettingsError(
            "PAYLIVE_EFFECT_RETRY_CAP_MS must be at least PAYLIVE_EFFECT_RETRY_BASE_MS"
        )
    return settings


def describe() -> str:
    """The variables for ``paylive serve --help``: each with its default, its bounds and
    its line, in the table's order."""
    lines = ["environment variables (secrets also as <NAME>_FILE):"]
    for var in VARIABLES:
        bounds = f", {var.bounds[0]}..{var.bounds[1]}" if var.bounds else ""
        lines.append(f"  {var.env} (default: {var.default}{bounds})")
        lines.append(f"      {var.doc}")
    return "\n".join(lines)


def machine_rules(settings: Settings) -> Rules:
    """The part of the settings the machine decides by (the core never reads settings)."""
    return Rules(
        attempt_timeout_ms=settings.attempt_timeout_ms,
        max_attempts=settings.max_attempts,
        retry_delay_ms=settings.retry_delay_ms,
        session_ttl_ms=settings.session_ttl_ms,
        effect_retry_base_ms=settings.effect_retry_base_ms,
        effect_retry_cap_ms=settings.effect_retry_cap_ms,
        effect_review_after_ms=settings.effect_review_after_ms,
        merchant_events=settings.merchant_events,
        webhooks=settings.merchant_webhook_url is not None,
        merchant_retry_base_ms=settings.merchant_backoff_ms,
        merchant_retry_cap_ms=settings.merchant_backoff_cap_ms,
        merchant_retry_for_ms=settings.merchant_retry_for_ms,
        outcome_unseen_ms=settings.outcome_unseen_ms,
        archive=settings.database_url is not None,
    )
