"""``bambu serve token create|list|revoke``: the secret printed once, then never again."""

from __future__ import annotations

from pathlib import Path

import pytest

from bambulab.servers.tokens import ServerTokenError, TokenStore
from tests.cli.conftest import Bambu


def test_create_list_revoke(tmp_path: Path) -> None:
    bambu = Bambu(home=tmp_path, api_url="http://127.0.0.1:9")
    store = tmp_path / "tokens.sqlite3"
    made = bambu(
        "serve", "token", "create", "--scope", "control", "--printers", "S1,S2",
        "--expires", "30d", "--label", "farm", BAMBU_TOKEN_STORE=str(store),
    )  # fmt: skip
    assert made.returncode == 0, made
    secret = made.stdout.strip()
    assert secret.startswith("bbt_") and "\n" not in secret
    assert "control on S1, S2" in made.stderr and "shown once" in made.stderr
    bambu.secrets.add(secret)  # from here on no output may carry it
    assert TokenStore(store).verify(secret, "control", "S2").label == "farm"
    listed = bambu("--json", "serve", "token", "list", BAMBU_TOKEN_STORE=str(store))
    assert listed.returncode == 0, listed
    [row] = listed.json()
    assert row["scope"] == "control" and row["printers"] == ["S1", "S2"] and not row["revoked"]
    assert row["last_used"] is not None  # the verify above used it
    table = bambu("serve", "token", "list", BAMBU_TOKEN_STORE=str(store))
    assert row["id"] in table.stdout and "active" in table.stdout
    gone = bambu("serve", "token", "revoke", row["id"], BAMBU_TOKEN_STORE=str(store))
    assert gone.returncode == 0, gone
    again = bambu("serve", "token", "revoke", row["id"], BAMBU_TOKEN_STORE=str(store))
    assert again.returncode == 1 and again.stderr.count("\n") == 1, again
    assert "revoked" in bambu("serve", "token", "list", BAMBU_TOKEN_STORE=str(store)).stdout
    with pytest.raises(ServerTokenError, match="revoked"):
        TokenStore(store).verify(secret)


def test_bad_options_are_one_line(tmp_path: Path) -> None:
    bambu = Bambu(home=tmp_path, api_url="http://127.0.0.1:9")
    env = {"BAMBU_TOKEN_STORE": str(tmp_path / "t.sqlite3")}
    for args, code, text in (
        (("--scope", "root"), 2, "--scope must be one of read, control, admin"),
        (("--expires", "3x"), 1, "not a duration"),
    ):
        result = bambu("serve", "token", "create", *args, **env)
        assert result.returncode == code, result
        assert text in result.stderr and "Traceback" not in result.stderr
        assert result.stdout == ""
