"""The real servers and tools the tests start, and how a fresh machine gets them.

One table, two users:

* ``make test`` runs ``python3 tests/binaries.py provision`` before pytest:
  every missing binary is installed with ``apt-get`` when that is possible
  (root, Debian/Ubuntu, the package registry reachable); otherwise it says
  which one is missing and carries on.
* The test suite marks each test that needs one with
  ``@pytest.mark.needs("mosquitto")`` (or ``needs("mosquitto")`` as a
  parameter's mark). ``tests/conftest.py`` skips exactly those tests when the
  binary is missing and prints one summary line naming it; under ``CI=true``
  a missing binary fails those tests instead, so CI cannot go green by
  skipping.

``BAMBU_TEST_HIDE=mosquitto,...`` makes binaries count as missing (and
``BAMBU_NO_PROVISION=1`` stops the installer), to try the fresh-machine path
on a machine that has them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass

import pytest


@dataclass(frozen=True, slots=True)
class Binary:
    """A program some tests run, and the Debian package that brings it."""

    name: str
    package: str
    # where it lives when not on PATH (daemons in /usr/sbin); a pattern with ``*`` is
    # looked up too, newest version first (/usr/lib/postgresql/*/bin/postgres)
    places: tuple[str, ...] = ()
    # a file the package installs that must exist too, found under the library
    # directories (a GObject typelib: the executable is a plain python3)
    marker: str = ""

    def path(self) -> str | None:
        """The executable, or ``None`` when missing (or hidden for a test run)."""
        if self.name in hidden():
            return None
        if self.marker and not _find_marker(self.marker):
            return None
        for place in (shutil.which(self.name), *_expand(self.places)):
            if place and os.path.isfile(place) and os.access(place, os.X_OK):
                return place
        return None


# Add a row when a test starts using another real server or tool.
BINARIES: dict[str, Binary] = {
    b.name: b
    for b in (
        Binary("mosquitto", "mosquitto", ("/usr/sbin/mosquitto",)),
        # the FTPS server of the real printers, for the FTPS client's tests
        Binary("vsftpd", "vsftpd", ("/usr/sbin/vsftpd",)),
        # writes the pam_userdb file that logs the vsftpd tests' user in
        Binary("db_load", "db-util"),
        # a client nobody here wrote, for the simulator's FTPS server
        Binary("curl", "curl"),
        # third-party clients of the simulated RTSPS camera
        Binary("ffprobe", "ffmpeg"),
        Binary("ffmpeg", "ffmpeg"),
        # a real RTSP(S) server nobody here wrote, for the RTSPS client: GStreamer's
        # gst-rtsp-server through Debian's python3 (tests/camera/gst_rtsp.py)
        Binary(
            "gst-rtsp-server",
            "gir1.2-gst-rtsp-server-1.0 python3-gi gstreamer1.0-plugins-good",
            ("/usr/bin/python3",),
            marker="GstRtspServer-1.0.typelib",
        ),
        # headless browser for the camera index page (and the farm dashboard)
        Binary("chromium", "chromium", ("/usr/bin/chromium",)),
        Binary("chromedriver", "chromium-driver", ("/usr/bin/chromedriver",)),
        # the servers' shared rate limits and event stream across instances
        Binary("redis-server", "redis-server", ("/usr/bin/redis-server",)),
        # the farm's queue shared by several instances (tests/farm/conftest.py: pg_url);
        # Debian keeps the server's programs off PATH, in one directory per major version
        Binary("postgres", "postgresql", ("/usr/lib/postgresql/*/bin/postgres",)),
        # the metrics exposition checked by Prometheus' own linter, scraped by Prometheus
        Binary("promtool", "prometheus", ("/usr/bin/promtool",)),
        Binary("prometheus", "prometheus", ("/usr/bin/prometheus",)),
    )
}


def _expand(places: tuple[str, ...]) -> list[str]:
    import glob
    import re

    def version(path: str) -> tuple[int, ...]:
        return tuple(int(n) for n in re.findall(r"\d+", path))

    found: list[str] = []
    for place in places:
        found.extend(
            sorted(glob.glob(place), key=version, reverse=True) if "*" in place else [place]
        )
    return found


def _find_marker(name: str) -> str | None:
    for root in ("/usr/lib", "/usr/lib64", "/usr/local/lib"):
        for found in _glob(root, name):
            return found
    return None


def _glob(root: str, name: str) -> list[str]:
    import glob

    return glob.glob(f"{root}/girepository-1.0/{name}") + glob.glob(
        f"{root}/*/girepository-1.0/{name}"
    )


def hidden() -> set[str]:
    return {n.strip() for n in os.environ.get("BAMBU_TEST_HIDE", "").split(",") if n.strip()}


def binary(name: str) -> Binary:
    try:
        return BINARIES[name]
    except KeyError:
        raise KeyError(f"unknown binary {name!r}: add it to tests/binaries.py") from None


def missing() -> list[Binary]:
    return [b for b in BINARIES.values() if b.path() is None]


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def needs(name: str) -> pytest.MarkDecorator:
    """The mark of a test (or a parameter) that runs ``name``."""
    binary(name)  # fail at import on a typo, not by skipping forever
    return pytest.mark.needs(name)


def provision() -> int:
    """Install what is missing when this machine allows it; say what stays missing."""
    absent = missing()
    if not absent:
        return 0
    names = ", ".join(b.name for b in absent)
    why_not = _cannot_install()
    if why_not is None:
        packages = sorted({p for b in absent for p in b.package.split()})
        print(f"provision: installing {' '.join(packages)} (for {names})", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        steps = (
            ["apt-get", "update", "-qq"],
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
        )
        for step in steps:
            done = subprocess.run(step, env=env, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                last = (done.stderr.strip().splitlines() or ["no output"])[-1]
                print(f"provision: {' '.join(step[:2])} failed: {last}", flush=True)
                break
        for service in ("vsftpd", "postgresql"):
            if service in packages:
                _stop_distro_service(service, env)
        absent = missing()
        if not absent:
            return 0
        why_not = "apt-get could not install them"
    still = ", ".join(b.name for b in absent)
    consequence = "CI=true: their tests will fail" if in_ci() else "their tests will be skipped"
    print(f"provision: {still} not installed ({why_not}); {consequence}", flush=True)
    return 0


def _stop_distro_service(service: str, env: dict[str, str]) -> None:
    """Debian's postinst starts vsftpd on port 21 and a PostgreSQL cluster on 5432 (where no
    policy-rc.d forbids it): the tests start private ones, so the system's are stopped and
    not started at boot."""
    steps = (
        (["systemctl", "disable", "--now", service], shutil.which("systemctl")),
        (["invoke-rc.d", service, "stop"], shutil.which("invoke-rc.d")),
    )
    for step, present in steps:
        if present:
            subprocess.run(step, env=env, capture_output=True, check=False)


def _cannot_install() -> str | None:
    if os.environ.get("BAMBU_NO_PROVISION"):
        return "BAMBU_NO_PROVISION is set"
    if hidden():
        return "BAMBU_TEST_HIDE is set"
    if os.geteuid() != 0:
        return "not root"
    apt = shutil.which("apt-get")
    if apt is None or not os.access(apt, os.X_OK):
        return "no apt-get"
    return None


if __name__ == "__main__":
    if sys.argv[1:] != ["provision"]:
        sys.exit("usage: python3 tests/binaries.py provision")
    sys.exit(provision())


def promtool_check(text: str) -> None:
    """Fail unless ``promtool check metrics`` finds nothing to say about ``text``."""
    path = binary("promtool").path()
    assert path is not None, "promtool is not installed"
    checked = subprocess.run(
        [path, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip() == "" and checked.stderr.strip() == ""
