"""``bambu login``, ``bambu logout``, ``bambu whoami``: the account and its token.

The token is saved to the token file and never shown. Logging in works three
ways: at a terminal (prompts for whatever is missing, password and code
hidden or plain as appropriate), from flags/environment in one go (accounts
without a code, or with an authenticator code), and in two steps for emailed
or texted codes in scripts: the first run sends the code and stops, the second
passes it with ``--code`` and does not send another one. Scripts give the
password on standard input (``--password-stdin``) or in ``BAMBU_PASSWORD``,
where ``ps`` does not show it. When the API host is not the region's own
(``BAMBU_API_URL``, as the simulator's env file sets it), login says where
the password is going before it sends it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .base import OPTIONS, CliError, authenticator, interactive, region, token_source

if TYPE_CHECKING:
    from ..cloud.auth import BambuAuthenticator
    from ..protocol.login import AskCode, LoginResult

ENV_ACCOUNT = "BAMBU_ACCOUNT"
ENV_PASSWORD = "BAMBU_PASSWORD"
ENV_CODE = "BAMBU_CODE"
# A password longer than this on standard input is not a password.
MAX_STDIN_PASSWORD = 4096


def login(
    ctx: typer.Context,
    account: Annotated[
        str | None,
        typer.Option(
            "--account",
            "-a",
            envvar=ENV_ACCOUNT,
            show_envvar=True,
            help="Email or phone number of the Bambu account.",
        ),
    ] = None,
    password: Annotated[
        str | None,
        typer.Option(
            "--password",
            envvar=ENV_PASSWORD,
            show_envvar=True,
            help="Password (prompted, hidden, when missing at a terminal). "
            "Leave it out to log in with an emailed code alone. On the command line "
            "it is visible to other users (ps): scripts use --password-stdin or the "
            "environment variable.",
        ),
    ] = None,
    password_stdin: Annotated[
        bool,
        typer.Option(
            "--password-stdin",
            help="Read the password from standard input (its first line), e.g. "
            "`pass show bambu | bambu login -a ME --password-stdin`.",
        ),
    ] = False,
    code: Annotated[
        str | None,
        typer.Option(
            "--code",
            envvar=ENV_CODE,
            show_envvar=True,
            help="Verification code (email, SMS or authenticator). In scripts: run once "
            "without it to have the code sent, then again with it.",
        ),
    ] = None,
) -> None:
    """Log in to the Bambu cloud and save the access token."""
    if password_stdin:
        password = read_password_stdin(given=_typed(ctx, "password"))
    people = interactive()
    account = (account or "").strip() or None
    if account is None:
        if not people:
            raise CliError("no account given: pass --account or set BAMBU_ACCOUNT", exit_code=2)
        account = _prompt("Account (email or phone)")
    if password is None and people:
        password = _prompt("Password (leave empty to log in with an emailed code)", secret=True)
    auth = authenticator()
    _say_where(auth)
    callback = CodeAnswer(code=(code or "").strip() or None, people=people)
    # A known emailed/SMS code is handed to the flow, which then tries it
    # without having a new one sent (a new one would replace it).
    auth.login(account, password or None, code_callback=callback, code=callback.code)
    result = _last_login(auth)
    path = auth.save_token(result.access_token, refresh_token=result.refresh_token)
    _report_login(auth, account, result, str(path))


def _typed(ctx: typer.Context, name: str) -> bool:
    """Whether the parameter ``name`` was typed on the command line (not from the environment)."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name == "COMMANDLINE"


def read_password_stdin(*, given: bool) -> str:
    """The password from the first line of standard input (``--password-stdin``)."""
    import sys

    if given:
        raise CliError("--password and --password-stdin exclude each other", exit_code=2)
    stdin = sys.stdin
    if stdin is None or stdin.closed:
        raise CliError("--password-stdin: there is no standard input", exit_code=2)
    if stdin.isatty():
        # Typed at a terminal it would echo; the prompt hides it instead.
        raise CliError(
            "--password-stdin reads a pipe or file, not a terminal: leave it out to be "
            "prompted (hidden)",
            exit_code=2,
        )
    line = stdin.readline(MAX_STDIN_PASSWORD + 1)
    if len(line.rstrip("\r\n")) > MAX_STDIN_PASSWORD:
        raise CliError(
            f"--password-stdin: the first line is longer than {MAX_STDIN_PASSWORD} characters",
            exit_code=2,
        )
    # Only the line end goes: spaces can be part of a password.
    password = line.rstrip("\r\n")
    if not password:
        raise CliError("--password-stdin: standard input has no password", exit_code=2)
    return password


def _say_where(auth: BambuAuthenticator) -> None:
    """One note on stderr when the password goes somewhere other than the region's cloud.

    Sourcing the simulator's env file exports ``BAMBU_API_URL``; a real account's
    login in that shell would go to the simulator. Saying so before anything is
    sent gives the person the chance to stop it.
    """
    from ..regions import ENV_API_URL, REGIONS
    from .output import esc, note

    host = auth.endpoints.api
    if host == REGIONS[auth.region].api:
        return
    source = "--api-url" if OPTIONS.api_url else ENV_API_URL
    undo = "" if OPTIONS.api_url else f"; unset {ENV_API_URL} for the Bambu cloud"
    note(f"note: logging in at {esc(host)} (from {source}), not the Bambu cloud{undo}")


def _prompt(label: str, *, secret: bool = False) -> str:
    from .output import ask

    return ask(label, secret=secret)


class CodeAnswer:
    """Answers the login flow's requests for a verification code.

    A code from ``--code`` is used once. Otherwise a person is asked at a
    terminal; in a script the request becomes an error saying where the code
    went and how to pass it, because there is nobody to type it.
    """

    def __init__(self, *, code: str | None, people: bool) -> None:
        self.code = code
        self.people = people
        self._given = False

    def __call__(self, step: AskCode) -> str:
        from ..errors import CodeRequiredError, LoginError

        # The flow itself tries a known emailed/SMS code first; being asked for
        # one of those means it was already used. An authenticator code is
        # only ever given here.
        if self.code and not self._given and step.kind == "tfa":
            self._given = True
            return self.code
        if self.code:
            # The code from --code was refused; asking a person now would wait
            # for a code nobody sent (we did not request a new one).
            if step.reason in ("expired", "too_many"):
                what = (
                    f"too many attempts with that {step.kind} code"
                    if step.reason == "too_many"
                    else f"that {step.kind} code has expired"
                )
                if step.kind == "tfa":
                    raise LoginError(f"{what}: run `bambu login` again with a fresh --code")
                raise LoginError(
                    f"{what}; a new one was sent to {step.destination}: "
                    "run `bambu login` again with the new --code"
                )
            raise LoginError(
                f"that {step.kind} code was {step.reason}: check it, or run `bambu login` "
                "without --code to have a new one sent"
            )
        if self.people:
            from .output import esc, note

            if step.reason == "initial" and step.kind != "tfa":
                note(f"A verification code was sent to {esc(step.destination)}.")
            return _prompt(step.prompt)
        if step.kind == "tfa":
            raise CodeRequiredError(
                "this account needs the code from your authenticator app: pass --code CODE "
                "(or set BAMBU_CODE)",
                kind=step.kind,
            )
        raise CodeRequiredError(
            f"a verification code was just sent to {step.destination}: run "
            "`bambu login` again with --code CODE (or BAMBU_CODE) to finish",
            kind=step.kind,
        )


def _last_login(auth: BambuAuthenticator) -> LoginResult:
    if auth.last_login is None:  # login() returned, so it is set; a library bug otherwise
        raise RuntimeError("the authenticator kept no record of the login")
    return auth.last_login


def _report_login(auth: BambuAuthenticator, account: str, result: LoginResult, path: str) -> None:
    from ..protocol.login import hint
    from .output import emit_json, esc, say

    claims = auth.token_claims(result.access_token)
    left = claims.seconds_left()
    if OPTIONS.json:
        emit_json(
            {
                "logged_in": True,
                "account": hint(account),
                "uid": claims.uid,
                "method": result.method,
                "region": auth.region,
                "token_file": path,
                "expires_at": claims.expires_at,
            }
        )
        return
    expiry = f", valid for {left / 86400:.0f} days" if left is not None else ""
    say(f"[green]Logged in[/green] as {esc(hint(account))} ({result.method}{expiry}).")
    say(f"Token saved to {esc(path)}")
    if os.environ.get("BAMBU_TOKEN"):
        say("[yellow]Note:[/yellow] BAMBU_TOKEN is set and takes precedence over the saved token.")


def logout() -> None:
    """Forget the saved access token (delete the token file)."""
    from .output import emit_json, esc, say

    auth = authenticator()
    removed = auth.logout()
    if OPTIONS.json:
        emit_json({"logged_out": removed, "token_file": str(auth.token_file)})
        return
    if removed:
        say(f"Logged out: removed {esc(auth.token_file)}")
    else:
        say(f"Not logged in: there was no token at {esc(auth.token_file)}")
    if os.environ.get("BAMBU_TOKEN"):
        say("[yellow]Note:[/yellow] BAMBU_TOKEN is still set in this environment.")


def whoami() -> None:
    """Who the saved token belongs to: uid, name, MQTT user, expiry (never the token)."""
    from ..protocol.jwt import decode_claims
    from .base import open_client
    from .output import emit_json, fields

    source = token_source()
    with open_client() as client:
        profile = client.get_profile()
        claims = decode_claims(source.token)
        uid = claims.uid or (str(profile.uid) if profile.uid else None)
        if not uid:
            uid = client.get_user_id()
        base_url = client.base_url
    left = claims.seconds_left()
    info: dict[str, Any] = {
        "uid": uid,
        "name": profile.name or profile.handle or None,
        "account": profile.account or None,
        "mqtt_username": f"u_{uid}",
        "token_expires_at": claims.expires_at,
        "token_days_left": round(left / 86400, 1) if left is not None else None,
        "token_source": source.origin,
        "token_file": source.file,
        "region": region(source),
        "api_url": base_url,
    }
    if OPTIONS.json:
        emit_json(info)
        return
    from .output import when

    expiry = (
        f"in {left / 86400:.1f} days ({when(claims.expires_at)} UTC)"
        if left is not None and claims.expires_at is not None
        else "unknown"
    )
    fields(
        None,
        [
            ("uid", uid),
            ("name", info["name"]),
            ("account", info["account"]),
            ("MQTT user", info["mqtt_username"]),
            ("token expires", expiry),
            ("token from", source.origin),
            ("token file", source.file),
            ("region", info["region"]),
            ("API", base_url),
        ],
    )
