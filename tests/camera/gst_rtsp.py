"""A real RTSP(S) server nobody here wrote, for the RTSPS client's tests: GStreamer's gst-rtsp-server.

Run by Debian's ``/usr/bin/python3`` (python3-gi with the GstRtspServer 1.0
typelib), not the project's venv: it imports nothing from ``bambulab``.

    /usr/bin/python3 tests/camera/gst_rtsp.py --code CODE [--cert C --key K]

serves ``videotestsrc`` as RTP/JPEG at ``/streaming/live/1`` on a free
127.0.0.1 port, with Basic authentication ``bblp``/``CODE`` and, given a
certificate and key (PEM files, e.g. the simulator CA's leaf for a serial),
TLS (``rtsps://``). It prints ``PORT <n>`` on stdout once it listens and runs
until stdin closes or it is killed.
"""

from __future__ import annotations

import argparse
import sys
import threading

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import Gio, GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

PIPELINE = (
    # format=I420: rtpjpegpay carries 4:2:0 only ("Invalid component" otherwise)
    "( videotestsrc is-live=true ! video/x-raw,format=I420,width=640,height=360,framerate=5/1 "
    "! jpegenc ! rtpjpegpay name=pay0 pt=26 )"
)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--code", required=True)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    args = parser.parse_args()

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service("0")

    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(PIPELINE)
    factory.set_shared(True)
    # TCP only, as the printers: the client asks for interleaved transport.
    factory.set_protocols(GstRtsp.RTSPLowerTrans.TCP)

    auth = GstRtspServer.RTSPAuth()
    token = GstRtspServer.RTSPToken()
    token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "viewer")
    auth.add_basic(GstRtspServer.RTSPAuth.make_basic("bblp", args.code), token)
    if args.cert and args.key:
        certificate = Gio.TlsCertificate.new_from_files(args.cert, args.key)
        auth.set_tls_certificate(certificate)
    server.set_auth(auth)

    permissions = GstRtspServer.RTSPPermissions()
    permissions.add_permission_for_role("viewer", "media.factory.access", True)
    permissions.add_permission_for_role("viewer", "media.factory.construct", True)
    factory.set_permissions(permissions)

    server.get_mount_points().add_factory("/streaming/live/1", factory)
    if server.attach(None) == 0:
        print("ERROR cannot listen", flush=True)
        return 1
    print(f"PORT {server.get_bound_port()}", flush=True)

    loop = GLib.MainLoop()

    def watch_stdin() -> None:
        sys.stdin.read()  # the test closed our stdin (or died): stop
        GLib.idle_add(loop.quit)

    threading.Thread(target=watch_stdin, daemon=True).start()
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
