"""Every error the toolkit raises, rooted at :class:`BambuError`.

::

    BambuError
    ├── ConfigurationError          bad argument, missing token, unknown region
    │   └── TokenFileError          the saved token file is corrupt or unreadable
    ├── TransportError              the server could not be reached or answered nothing
    │   └── RequestTimeoutError     no complete answer within the request's deadline
    ├── ProtocolError               the answer broke the protocol or a limit (garbage, truncated,
    │                               larger than the cap, nested too deeply)
    ├── APIError                    the server answered with an error status or code
    │   ├── BadRequestError         400
    │   ├── AuthenticationError     401, and any refusal of credentials
    │   │   ├── TokenInvalidError   the token is not valid (1001)
    │   │   ├── TokenExpiredError   the token has expired (1002)
    │   │   └── InvalidCredentialsError   wrong account or password at login
    │   ├── ForbiddenError          403
    │   │   ├── CloudflareBlockedError    403 from the Cloudflare front
    │   │   └── CSRFBlockedError          403 from the CSRF gate (missing_cookie)
    │   ├── NotFoundError           404 (also 1003 device not found)
    │   ├── RateLimitError          429, carries ``retry_after`` seconds
    │   └── ServerError             5xx
    ├── UnsupportedCommandError     the printer's model cannot do this (refused before sending)
    ├── ThreeMFError                a 3MF or G-code file is unreadable, hostile, unsliced, plateless
    ├── PrintError                  a print cannot start; checked before anything was sent
    │   ├── PrinterOfflineError     the printer is offline
    │   ├── PrinterBusyError        the printer is printing, preparing or paused (``state``)
    │   ├── PrintFileError          the file is missing, or lacks the plate asked for
    │   └── AmsMappingError         the file's filaments cannot be mapped to the loaded trays
    ├── LoginError                  a login flow could not be completed
    │   ├── VerificationCodeError   the emailed/SMS/authenticator code was refused too often
    │   └── CodeRequiredError       a code is needed but no ``code_callback`` was given
    ├── FTPError                    the printer's FTPS server refused or broke a file operation
    │   ├── FTPAuthenticationError  wrong access code (530; also an AuthenticationError)
    │   ├── RemoteFileNotFoundError no such file or directory on the printer (550)
    │   ├── StorageFullError        the printer's storage is full (452/552)
    │   ├── SessionReuseError       the data channel did not reuse the TLS session (522)
    │   └── TransferInterruptedError  the connection dropped mid-transfer
    └── MQTTError                   live connection to a broker or printer
        ├── NotConnectedError       the connection is down and the call needs it
        ├── MQTTAuthenticationError wrong access code or token (also an AuthenticationError)
        ├── CertificateError        TLS verification failed (CA, pin, or CN != serial)
        │   └── CertificatePinMismatchError  the printer's certificate is not the pinned one
        └── CommandError            a printer refused a command (command, sequence_id, reason)
            ├── CommandTimeoutError no reply within the timeout
            └── CommandInterruptedError  the connection dropped before the reply (never re-sent)

Every error has a one-line human ``str()`` and never carries a secret: the
messages are built from status, code and the server's short message only.
"""

from __future__ import annotations

# How much of a value someone typed an error message may quote.
EXCERPT_LIMIT = 40

__all__ = [
    "APIError",
    "AmsMappingError",
    "AuthenticationError",
    "BadRequestError",
    "BambuError",
    "CSRFBlockedError",
    "CameraAuthenticationError",
    "CameraError",
    "CameraStallError",
    "CameraUnavailableError",
    "CertificateError",
    "CertificatePinMismatchError",
    "CloudflareBlockedError",
    "CodeRequiredError",
    "CommandError",
    "CommandInterruptedError",
    "CommandTimeoutError",
    "ConfigurationError",
    "FTPAuthenticationError",
    "FTPError",
    "ForbiddenError",
    "InvalidCredentialsError",
    "LoginError",
    "MQTTAuthenticationError",
    "MQTTError",
    "NotConnectedError",
    "NotFoundError",
    "PrintError",
    "PrintFileError",
    "PrinterBusyError",
    "PrinterOfflineError",
    "ProtocolError",
    "RateLimitError",
    "RemoteFileNotFoundError",
    "RequestTimeoutError",
    "ServerError",
    "SessionReuseError",
    "StorageFullError",
    "ThreeMFError",
    "TokenExpiredError",
    "TokenFileError",
    "TokenInvalidError",
    "TransferInterruptedError",
    "TransportError",
    "UnsupportedCommandError",
    "VerificationCodeError",
    "excerpt",
]


def excerpt(value: object, limit: int = EXCERPT_LIMIT) -> str:
    """``value`` quoted for an error message: at most ``limit`` characters, then ``…``.

    Messages quote what the user typed so they can see what was refused, but
    a pasted megabyte must not become a megabyte of error; ``repr`` escapes
    control characters, so the quote cannot drive the terminal either.
    """
    text = str(value)
    if len(text) <= limit:
        return repr(text)
    return repr(text[:limit])[:-1] + "…" + repr(text[:limit])[-1]


class BambuError(Exception):
    """Root of every error raised by :mod:`bambulab`."""


class ConfigurationError(BambuError):
    """A bad argument or missing setting, found before anything was sent."""


class TokenFileError(ConfigurationError):
    """The token file exists but holds no usable token (corrupt, unreadable); ``path`` says which.

    Not "not logged in": the person did log in, and something damaged the file.
    """

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message)
        self.path = path


class TransportError(BambuError):
    """The server could not be reached, or the connection broke mid-answer."""

    def __init__(self, message: str, *, url: str | None = None) -> None:
        super().__init__(message)
        self.url = url


class RequestTimeoutError(TransportError):
    """No complete answer arrived within the request's overall deadline."""


class ProtocolError(BambuError):
    """The peer answered something the protocol or our limits do not allow.

    Garbage, a truncated body, an answer over the size cap, JSON nested too
    deeply. ``url`` names the server (scheme, host, port) when known.
    """

    def __init__(self, message: str, *, url: str | None = None) -> None:
        super().__init__(message)
        self.url = url


class APIError(BambuError):
    """The server answered with an error.

    ``http_status`` is the HTTP status, ``code`` the application code from the
    error envelope (``None`` when absent), ``server_message`` the server's own
    short message.
    """

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        code: int | None = None,
        server_message: str | None = None,
        path: str | None = None,
    ) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.code = code
        self.server_message = server_message
        self.path = path


class BadRequestError(APIError):
    """HTTP 400: the request was refused as malformed or invalid."""


class AuthenticationError(APIError):
    """Credentials were refused (HTTP 401, a wrong password, a wrong access code)."""


class TokenInvalidError(AuthenticationError):
    """The access token is not valid: log in again."""


class TokenExpiredError(AuthenticationError):
    """The access token has expired: log in again."""


class InvalidCredentialsError(AuthenticationError):
    """The account or password was refused at login."""


class ForbiddenError(APIError):
    """HTTP 403: the account may not do this."""


class CloudflareBlockedError(ForbiddenError):
    """HTTP 403 from Cloudflare's bot protection, not from the API itself."""


class CSRFBlockedError(ForbiddenError):
    """HTTP 403 from the web host's CSRF gate (``missing_cookie``)."""


class NotFoundError(APIError):
    """HTTP 404, or application code 1003 (device not found)."""


class RateLimitError(APIError):
    """HTTP 429. ``retry_after`` is the server's ``Retry-After`` in seconds, if it sent one."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.retry_after = retry_after


class ServerError(APIError):
    """HTTP 5xx: the server failed."""


class LoginError(BambuError):
    """A login flow could not be completed."""


class VerificationCodeError(LoginError):
    """A verification code was refused (incorrect or expired) more often than allowed."""

    def __init__(self, message: str, *, kind: str, reason: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.reason = reason


class CodeRequiredError(LoginError):
    """The account needs a verification code and no way to ask for one was given."""

    def __init__(self, message: str, *, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


class FTPError(BambuError):
    """A file operation on a printer's storage (implicit FTPS, port 990) failed.

    ``host`` names the printer's address, ``code`` the FTP reply code when
    the server sent one, ``command`` the FTP verb (never its argument when it
    is ``PASS``), ``path`` the remote path concerned.
    """

    def __init__(
        self,
        message: str,
        *,
        host: str | None = None,
        code: int | None = None,
        command: str | None = None,
        path: str | None = None,
    ) -> None:
        super().__init__(message)
        self.host = host
        self.code = code
        self.command = command
        self.path = path


class FTPAuthenticationError(FTPError, AuthenticationError):
    """The printer refused ``bblp`` with this access code (530): not retried."""


class RemoteFileNotFoundError(FTPError):
    """No such file or directory on the printer's storage (550)."""


class StorageFullError(FTPError):
    """The printer's storage has no room for the file (452 or 552); nothing was left behind."""


class SessionReuseError(FTPError):
    """The server refused a data channel that did not resume the control channel's
    TLS session (522)."""


class TransferInterruptedError(FTPError):
    """The connection broke during a transfer; a partial upload was removed, a partial
    download was not kept."""


class MQTTError(BambuError):
    """A live (MQTT) connection problem."""

    def __init__(self, message: str, *, serial: str | None = None) -> None:
        super().__init__(message)
        self.serial = serial


class NotConnectedError(MQTTError):
    """The MQTT connection is down (or never came up) and the call needs it."""


class MQTTAuthenticationError(MQTTError, AuthenticationError):
    """The broker refused the credentials (wrong access code or token): not retried."""


class CertificateError(MQTTError):
    """The printer's or broker's TLS certificate failed verification."""


class CertificatePinMismatchError(CertificateError):
    """The printer offered another certificate than the one pinned for its serial.

    ``pinned`` and ``offered`` are SHA-256 fingerprints (hex with colons),
    ``pin_file`` the file holding the pin. Either the printer's certificate
    changed legitimately (a reset, new firmware), and the pin must be
    forgotten, or something else answers at the printer's address.
    """

    def __init__(
        self, message: str, *, serial: str, pinned: str, offered: str, pin_file: str
    ) -> None:
        super().__init__(message, serial=serial)
        self.pinned = pinned
        self.offered = offered
        self.pin_file = pin_file


class UnsupportedCommandError(BambuError):
    """The printer's model lacks what a command needs; nothing was sent.

    ``command`` names the command (``set_chamber_temp``...), ``model`` the
    printer's product name, ``reason`` says what is missing.
    """

    def __init__(
        self, message: str, *, serial: str | None, command: str, model: str, reason: str
    ) -> None:
        super().__init__(message)
        self.serial = serial
        self.command = command
        self.model = model
        self.reason = reason


class ThreeMFError(BambuError):
    """A 3MF (or G-code) file cannot be used: not a zip, corrupt, hostile, unsliced, no such plate.

    ``entry`` names the archive member concerned when there is one (already
    checked to be a plain relative name, or quoted with :func:`excerpt`).
    """

    def __init__(self, message: str, *, entry: str | None = None) -> None:
        super().__init__(message)
        self.entry = entry


class PrintError(BambuError):
    """A print could not be started; unless the message says otherwise, nothing was sent.

    ``serial`` names the printer, ``file`` the file, ``plate`` the plate.
    """

    def __init__(
        self,
        message: str,
        *,
        serial: str | None = None,
        file: str | None = None,
        plate: int | None = None,
    ) -> None:
        super().__init__(message)
        self.serial = serial
        self.file = file
        self.plate = plate


class PrinterOfflineError(PrintError):
    """The printer is offline."""


class PrinterBusyError(PrintError):
    """The printer is busy with another print; ``state`` is what it is doing."""

    def __init__(self, message: str, *, serial: str | None = None, state: str = "") -> None:
        super().__init__(message, serial=serial)
        self.state = state


class PrintFileError(PrintError):
    """The file to print is missing, or has no such plate."""


class AmsMappingError(PrintError):
    """A file's filaments cannot be fed from the printer's trays (or a given mapping is wrong).

    ``filament`` is the file's filament slot (1-based) concerned, ``None`` when
    the whole mapping is at fault; ``serial`` the printer when known.
    """

    def __init__(
        self, message: str, *, filament: int | None = None, serial: str | None = None
    ) -> None:
        super().__init__(message, serial=serial)
        self.filament = filament


class CommandError(MQTTError):
    """A printer answered a command with a failure.

    ``command``, ``sequence_id``, ``reason`` and ``err_code`` say which and why.
    """

    def __init__(
        self,
        message: str,
        *,
        serial: str | None = None,
        command: str | None = None,
        sequence_id: str | None = None,
        reason: str | None = None,
        err_code: int | None = None,
    ) -> None:
        super().__init__(message, serial=serial)
        self.command = command
        self.sequence_id = sequence_id
        self.reason = reason
        self.err_code = err_code


class CommandTimeoutError(CommandError):
    """No reply to a command arrived within the timeout."""


class CommandInterruptedError(CommandError):
    """The connection dropped while a command waited for its reply.

    The command may or may not have reached the printer: check its state
    before sending it again. It is never re-sent by the connection itself.
    """


class CameraError(BambuError):
    """A printer camera could not be read (TLS, connection, stream).

    ``serial`` names the printer when known. The access code never appears.
    """

    def __init__(self, message: str, *, serial: str | None = None) -> None:
        super().__init__(message)
        self.serial = serial


class CameraAuthenticationError(CameraError, AuthenticationError):
    """The camera refused the access code (the printer closes without a frame): not retried."""


class CameraUnavailableError(CameraError):
    """The camera is off or not reachable this way (LAN liveview disabled, no RTSPS, busy)."""


class CameraStallError(CameraError):
    """No frame arrived within the stall timeout."""
