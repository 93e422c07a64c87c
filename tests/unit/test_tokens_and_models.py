"""Token file, JWT claims, wire models and secret masking."""

from __future__ import annotations

import base64
import json
import logging
import os
import stat
import time
from pathlib import Path

import pytest

from bambulab.cloud.tokens import TokenStore
from bambulab.errors import TokenFileError
from bambulab.models import CameraCredentials, Device, Task
from bambulab.protocol.jwt import decode_claims
from bambulab.secrets import redact


def fake_jwt(payload: dict[str, object]) -> str:
    def seg(d: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()

    return f"{seg({'alg': 'RS256'})}.{seg(payload)}.c2ln"


def test_token_file_is_0600_atomic_and_round_trips(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tok")
    path = store.save("secret-token", "china")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert json.loads(path.read_text()) == {"region": "china", "token": "secret-token"}
    assert store.load() is not None and store.load().token == "secret-token"  # type: ignore[union-attr]
    store.save("second", "global")
    assert [p.name for p in tmp_path.iterdir()] == ["tok"]  # no temp file left behind
    assert "second" not in repr(store.load())
    assert store.delete() and store.load() is None


def test_token_file_replaces_a_world_readable_one(tmp_path: Path) -> None:
    path = tmp_path / "tok"
    path.write_text('{"region": "global", "token": "old"}')
    path.chmod(0o644)
    TokenStore(path).save("new")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_token_file_takes_plain_tokens_and_calls_garbage_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "tok"
    path.write_text("plain-token\n")
    assert TokenStore(path).load().token == "plain-token"  # type: ignore[union-attr]
    path.write_text('{"token": "abc.def.ghi"}')
    assert TokenStore(path).load().token == "abc.def.ghi"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ("", "it is empty"),
        ("\n  \n", "it is empty"),
        ("[1, 2]", "expected a JSON object, found a list"),
        ("null", "expected a JSON object, found null"),
        ('{"region": "global"}', 'no "token" string in it'),
        ('{"token": ""}', 'no "token" string in it'),
        ('{"token": "secret-abc", "region"', "not JSON (Expecting ':' delimiter at line 1"),
        ("secret token with spaces", "not JSON (Expecting value at line 1 column 1)"),
        ("[" * 70_000, "it is larger than 64 KiB"),
    ],
)
def test_a_corrupt_token_file_says_so_with_its_path(tmp_path: Path, content: str, why: str) -> None:
    path = tmp_path / "tok"
    path.write_text(content)
    path.chmod(0o600)
    with pytest.raises(TokenFileError) as info:
        TokenStore(path).load()
    message = str(info.value)
    assert message.startswith(f"token file {path} is corrupt: {why}"), message
    assert message.endswith("; run `bambu login`")
    assert info.value.path == str(path)
    assert "secret" not in message  # the file's text is never quoted


def test_a_token_file_others_can_read_is_made_private_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "tok"
    path.write_text('{"region": "global", "token": "abc"}')
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="bambulab.auth"):
        assert TokenStore(path).load().token == "abc"  # type: ignore[union-attr]
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        TokenStore(path).load()  # already private: no second warning
    assert [r.getMessage() for r in caplog.records] == [
        f"the token file {path} was open to others (mode 644); changed it to 600"
    ]


def test_saving_a_token_makes_missing_directories_private(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        path = TokenStore(tmp_path / "a" / "b" / "tok").save("t")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(tmp_path / "a").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_claims_from_new_and_old_tokens() -> None:
    exp = time.time() + 3600
    new = decode_claims(fake_jwt({"uid": "1873420516", "exp": exp}))
    assert new.uid == "1873420516" and new.mqtt_username == "u_1873420516"
    assert 3500 < (new.seconds_left() or 0) <= 3600
    old = decode_claims(fake_jwt({"username": "u_42", "exp": 1}))
    assert old.uid == "42" and old.expired()
    assert decode_claims("opaque-token").uid is None
    assert decode_claims("a.!!!.c").uid is None


def test_models_keep_wire_keys_and_survive_wrong_types() -> None:
    device = Device.from_wire(
        {"dev_id": "00M1", "online": {"weird": 1}, "dev_access_code": "12345678\n", "new": 5}
    )
    assert device["dev_id"] == "00M1" and device.serial == "00M1"
    assert device.online is False  # the wrong-typed field fell back to its default
    assert device["dev_access_code"] == "12345678" and device["new"] == 5
    assert "12345678" not in repr(device)
    task = Task.from_wire({"id": 9, "designTitle": "Benchy", "status": 2})
    assert task.design_title == "Benchy" and task["designTitle"] == "Benchy"
    assert task.status_text == "finished"
    with pytest.raises(KeyError):
        task["missing"]


def test_secrets_are_masked_in_reprs_and_redact() -> None:
    creds = CameraCredentials.from_wire(
        {"ttcode": "TT", "authkey": "AK", "passwd": "PW", "region": "us"}
    )
    text = repr(creds)
    assert "AK" not in text and "PW" not in text and "TT" not in text
    assert creds.url == "bambu:///tutk?uid=TT&authkey=AK&passwd=PW&region=us"
    assert creds.masked_url == "bambu:///tutk?uid=***&authkey=***&passwd=***&region=us"
    odd = CameraCredentials.from_wire({"ttcode": "A&B", "authkey": "k=1", "passwd": "p w"})
    assert "uid=A%26B&authkey=k%3D1&passwd=p%20w" in odd.url
    assert redact({"accessToken": "x", "nested": [{"password": "y"}], "name": "n"}) == {
        "accessToken": "***",
        "nested": [{"password": "***"}],
        "name": "n",
    }
