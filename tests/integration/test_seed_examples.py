"""The user's own cloud examples (API_INDEX.md) run as written against the simulator.

The snippets below are copied verbatim from the user's documentation. Only
what the documentation leaves to the reader is supplied: the token (the
literal ``your_token_here``) and the API URL come from the environment, and
the placeholder path ``/path/to/model.3mf`` names a real file.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import httpx
import pytest

from bambulab.sim import CloudSimulator

PYTHON_CLIENT_LIBRARY = """
from bambulab.bambuclient import BambuClient

# Initialize client
client = BambuClient(token="your_token_here", region="global")

# Get devices
devices = client.get_devices()
print(f"Found {len(devices)} printers")

# Get device info
info = client.get_device_info(device_id="01234567890ABCD")
print(f"Status: {info['status']}")

# Upload file
result = client.upload_file("model.3mf", "/path/to/model.3mf")
print(f"Uploaded: {result['success']}")

# Start print
client.start_cloud_print(
    device_id="01234567890ABCD",
    file_id="model_id",
    file_name="model.3mf"
)
"""

WORKFLOW_1_CLOUD_STEPS = """
# 1. Get devices
devices = client.get_devices()
device_id = devices[0]['dev_id']

# 2. Upload file
upload_result = client.upload_file("model.3mf", "/path/to/model.3mf")

# 3. Start print
client.start_cloud_print(
    device_id=device_id,
    file_name="model.3mf"
)
"""


def _prepare(code: str, sim: CloudSimulator, tmp_path: Path) -> str:
    model = tmp_path / "model.3mf"
    model.write_bytes(b"PK\x03\x04" + b"seed example" * 500)
    token = sim.issue_token(sim.demo_account.email)
    return code.replace("your_token_here", token).replace("/path/to/model.3mf", str(model))


def test_python_client_library_example(
    sim_env: CloudSimulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scope: dict[str, Any] = {}
    exec(compile(_prepare(PYTHON_CLIENT_LIBRARY, sim_env, tmp_path), "seed", "exec"), scope)
    out = capsys.readouterr().out
    assert f"Found {len(scope['devices'])} printers" in out
    assert "Status: " in out and "Status: \n" not in out
    assert "Uploaded: True" in out
    scope["client"].close()


def test_workflow_1_cloud_steps(sim_env: CloudSimulator, tmp_path: Path) -> None:
    from bambulab.bambuclient import BambuClient

    scope: dict[str, Any] = {"client": BambuClient()}  # token and URL from the environment
    exec(compile(_prepare(WORKFLOW_1_CLOUD_STEPS, sim_env, tmp_path), "seed", "exec"), scope)
    assert scope["upload_result"]["success"] is True
    jobs = scope["client"].get_print_jobs(device_id=scope["device_id"])
    assert any(job.file_name == "model.3mf" for job in jobs)
    scope["client"].close()


def test_authentication_quick_reference_headers(sim_env: CloudSimulator) -> None:
    """The documented raw request: a Bearer token and a JSON content type."""
    token = sim_env.issue_token(sim_env.demo_account.email)
    headers = textwrap.dedent(
        f"""
        Authorization: Bearer {token}
        Content-Type: application/json
        """
    ).strip()
    parsed = dict(line.split(": ", 1) for line in headers.splitlines())
    answer = httpx.get(f"{sim_env.url}/v1/iot-service/api/user/bind", headers=parsed, timeout=5)
    assert answer.status_code == 200 and answer.json()["message"] == "success"
    refused = httpx.get(
        f"{sim_env.url}/v1/iot-service/api/user/bind",
        headers={"Authorization": "Bearer YOUR_TOKEN_HERE"},
        timeout=5,
    )
    assert refused.status_code == 401
