"""The servers' token store: shown once, stored hashed, scoped, per printer, expiring, revocable."""

from __future__ import annotations

import os
import stat
import threading
import time
from pathlib import Path

import pytest

from bambulab.errors import AuthenticationError, ConfigurationError
from bambulab.servers import tokens
from bambulab.servers.tokens import ServerTokenError, TokenStore, parse_duration


@pytest.fixture
def store(tmp_path: Path) -> TokenStore:
    return TokenStore(tmp_path / "state" / "tokens.sqlite3")


def test_the_secret_is_never_in_the_store(store: TokenStore) -> None:
    secret, row = store.create("control", printers=["S1"], label="farm")
    assert secret.startswith(f"bbt_{row.id}_")
    random_part = secret.removeprefix(f"bbt_{row.id}_")  # may itself hold "_"
    assert len(random_part) == 43
    stored = store.path.read_bytes()
    assert secret.encode() not in stored and random_part.encode() not in stored
    assert all(secret not in repr(r) and secret not in str(r.to_dict()) for r in store.tokens())
    assert store.verify(secret, "control", "S1").id == row.id


def test_the_store_is_private(store: TokenStore) -> None:
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(store.path.parent).st_mode) == 0o700


def test_scopes_are_ordered_and_printers_are_an_allowlist(store: TokenStore) -> None:
    read, _ = store.create("read")
    control, _ = store.create("control", printers=["S1", "S2"])
    admin, _ = store.create("admin")
    assert store.verify(read, "read", "ANY").scope == "read"
    with pytest.raises(ServerTokenError, match="may not control"):
        store.verify(read, "control")
    assert store.verify(control, "read", "S2").printers == ("S1", "S2")
    with pytest.raises(ServerTokenError, match="may not read on printer S3"):
        store.verify(control, "read", "S3")
    assert store.verify(control, "control").scope == "control"  # no printer named
    with pytest.raises(ServerTokenError, match="may not admin"):
        store.verify(control, "admin")
    assert store.verify(admin, "admin", "S9").scope == "admin"


def test_expired_revoked_unknown_and_forged_tokens_are_refused(store: TokenStore) -> None:
    short, row = store.create("read", expires_in=0.2)
    assert store.verify(short).id == row.id
    time.sleep(0.25)
    with pytest.raises(ServerTokenError, match="expired"):
        store.verify(short)
    kept, kept_row = store.create("read")
    assert store.revoke(kept_row.id) and not store.revoke(kept_row.id)
    with pytest.raises(ServerTokenError, match="revoked"):
        store.verify(kept)
    other, _ = store.create("read")
    forged = other[:-4] + ("AAAA" if not other.endswith("AAAA") else "BBBB")
    for bad in (forged, "bbt_000000000000_" + "A" * 43, "Bearer x", "", other + "x"):
        with pytest.raises(ServerTokenError) as caught:
            store.verify(bad)
        assert other not in str(caught.value) and (not bad or bad not in str(caught.value))
    assert isinstance(caught.value, AuthenticationError)


def test_last_use_is_recorded_at_most_once_a_minute(
    store: TokenStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret, _ = store.create("read")
    assert store.tokens()[0].last_used is None
    store.verify(secret)
    first = store.tokens()[0].last_used
    assert first is not None and abs(first - time.time()) < 5
    store.verify(secret)
    assert store.tokens()[0].last_used == first
    monkeypatch.setattr(tokens, "LAST_USE_EVERY", 0.0)
    store.verify(secret)
    assert store.tokens()[0].last_used != first


def test_threads_share_one_store(store: TokenStore) -> None:
    secret, _ = store.create("read")
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(20):
                store.create("read")
                store.verify(secret)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors and len(store.tokens()) == 81


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30d", 2_592_000), ("12h", 43_200), ("90m", 5400), ("2w", 1_209_600), ("45", 45)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0d", "3x", "-1d", "d"])
def test_bad_durations_are_one_line(text: str) -> None:
    with pytest.raises(ConfigurationError, match="not a duration"):
        parse_duration(text)


def test_bad_scope_and_lifetime(store: TokenStore) -> None:
    with pytest.raises(ConfigurationError, match="scope"):
        store.create("root")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="positive"):
        store.create("read", expires_in=0)
