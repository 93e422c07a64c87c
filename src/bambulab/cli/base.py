"""What every command shares: the global options, and how to get a logged-in client.

Only the standard library and typer are imported at module level: this module
is loaded for ``bambu --help``. The cloud layer (httpx, pydantic) is imported
by the functions that return its objects, i.e. only when a command runs.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from ..cloud.auth import BambuAuthenticator
    from ..cloud.client import BambuClient
    from ..protocol.http import RetryPolicy

# A person waits at the terminal: fewer retries than the library's default
# (4 tries, up to 30 s), so an unreachable host is reported within ~2 s.
CLI_RETRY_ATTEMPTS = 3
CLI_RETRY_ELAPSED = 8.0
# Warn this long before the token expires (tokens live ~90 days).
EXPIRY_WARNING = 7 * 86400.0
# What the simulator's extra (``bambulab[sim]``) installs, and what they pull in.
SIM_EXTRA_MODULES = frozenset({"fastapi", "starlette", "uvicorn", "cryptography", "amqtt"})


@dataclass(slots=True)
class Options:
    """The global options, set once by the root command before any subcommand runs."""

    api_url: str | None = None
    region: str | None = None
    json: bool = False
    debug: bool = False
    token_file: str | None = None


OPTIONS = Options()


class CliError(Exception):
    """A failure the CLI itself detects (bad combination of flags, nothing to do).

    Shown as one ``error:`` line like a library error; ``exit_code`` is 1
    unless a usage problem calls for 2.
    """

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def not_empty(value: str | None) -> str | None:
    """Option callback: an empty (or blank) value is a usage error, not "no value".

    ``bambu device info ''`` or ``--serial ''`` (often an unset shell variable)
    would otherwise reach the server as a request for nothing, or silently
    fall back to a default printer.
    """
    if value is not None and not value.strip():
        raise typer.BadParameter("must not be empty")
    return value


def check_region(value: str | None) -> str | None:
    """Option callback of ``--region``: unknown regions are usage errors (exit 2)."""
    if value is None:
        return None
    from ..errors import ConfigurationError
    from ..regions import normalize_region

    try:
        return normalize_region(value)
    except ConfigurationError as exc:
        raise typer.BadParameter(str(exc)) from None


def check_api_url(value: str | None) -> str | None:
    """Option callback of ``--api-url``: it must be an http(s) URL (exit 2 otherwise)."""
    if value is None:
        return None
    from ..errors import excerpt

    url = value.strip()
    if not url.startswith(("http://", "https://")) or len(url) <= len("https://"):
        raise typer.BadParameter(f"expected an http:// or https:// URL, got {excerpt(value)}")
    return url


def new_typer(**kw: Any) -> typer.Typer:
    """A Typer configured the same way everywhere.

    ``rich_markup_mode=None`` keeps rich out of ``--help`` (rich-formatted
    help costs as much start-up time as importing httpx); our own exception
    handling in :func:`bambulab.cli.main` replaces typer's pretty tracebacks.
    """
    kw.setdefault("rich_markup_mode", None)
    kw.setdefault("pretty_exceptions_enable", False)
    kw.setdefault("no_args_is_help", False)
    kw.setdefault("add_completion", False)
    return typer.Typer(**kw)


@contextlib.contextmanager
def sim_extra(command: str) -> Iterator[None]:
    """Turn the import of a missing simulator dependency into one line naming the extra.

    ``pip install bambulab[cli]`` gives ``bambu`` without the simulator; ``bambu
    sim`` and ``bambu demo`` then say what to install instead of a traceback.
    """
    try:
        yield
    except ImportError as exc:
        missing = (exc.name or "").partition(".")[0]
        if missing not in SIM_EXTRA_MODULES:
            raise
        raise CliError(
            f"`bambu {command}` needs the simulator's extra ({missing} is not installed): "
            "pip install 'bambulab[sim]'"
        ) from exc


def interactive() -> bool:
    """Whether a person can answer a prompt (stdin and stderr are terminals).

    Prompting a pipe would hang a script, so every prompt checks this first
    and turns into an error that names the flag to pass instead.
    """
    try:
        return sys.stdin.isatty() and sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def retry_policy() -> RetryPolicy:
    """The retry policy of CLI requests."""
    from ..protocol.http import RetryPolicy

    return RetryPolicy(max_attempts=CLI_RETRY_ATTEMPTS, max_elapsed=CLI_RETRY_ELAPSED)


@dataclass(frozen=True, slots=True)
class TokenSource:
    """Where the token in use comes from; ``token`` is never printed."""

    token: str | None
    origin: str  # "BAMBU_TOKEN" or the token file's path
    region: str | None  # the region saved with the token, if any
    file: str  # the token file, whether or not it is in use


def token_source() -> TokenSource:
    """The token the client will use: ``BAMBU_TOKEN``, else the saved token file."""
    from ..cloud.tokens import ENV_TOKEN, TokenStore

    store = TokenStore(OPTIONS.token_file)
    env = os.environ.get(ENV_TOKEN, "").strip()
    if env:
        return TokenSource(env, ENV_TOKEN, None, str(store.path))
    saved = store.load()
    if saved is None:
        return TokenSource(None, str(store.path), None, str(store.path))
    return TokenSource(saved.token, str(store.path), saved.region, str(store.path))


def region(source: TokenSource | None = None) -> str:
    """``--region``, else the region saved with the token, else ``global``."""
    return OPTIONS.region or (source.region if source else None) or "global"


def open_client() -> BambuClient:
    """A client with the saved (or ``BAMBU_TOKEN``) token; a clear error when there is none."""
    from ..cloud.client import BambuClient
    from ..errors import ConfigurationError, TokenExpiredError
    from ..protocol.jwt import decode_claims

    source = token_source()
    if not source.token:
        raise ConfigurationError(
            f"not logged in (no token in {source.origin}): run `bambu login` or set BAMBU_TOKEN"
        )
    left = decode_claims(source.token).seconds_left()
    if left is not None and left <= 0:
        raise TokenExpiredError(
            f"the token in {source.origin} has expired: run `bambu login` again"
        )
    if left is not None and left < EXPIRY_WARNING:
        import logging

        logging.getLogger("bambulab.cli").warning(
            "the token expires in %.1f days: run `bambu login` again soon", left / 86400
        )
    return BambuClient(
        source.token,
        region(source),
        base_url=OPTIONS.api_url,
        retry=retry_policy(),
    )


def authenticator() -> BambuAuthenticator:
    """The authenticator for login/logout, honouring the global options."""
    from ..cloud.auth import BambuAuthenticator

    return BambuAuthenticator(
        region=OPTIONS.region or "global",
        base_url=OPTIONS.api_url,
        token_file=OPTIONS.token_file,
    )
