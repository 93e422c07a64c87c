"""Uploads to cloud storage, the simulated S3 behind them, and a tiny CDN.

Two upload flows (PROTOCOL.md §1.3): ``GET /user/upload`` hands out two
pre-signed PUT URLs, one for the bytes and one for the decimal size, and the
file exists once both have arrived; ``POST /user/upload`` hands out one URL
and ``POST /user/upload/confirm`` registers the file. The S3 side checks
signatures, expiry and the declared size the way S3 would, answering with
S3's XML errors, not the cloud's JSON envelope.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from pathlib import PurePosixPath
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict
from starlette.requests import ClientDisconnect

from .. import assets
from ..errors import FILE_FAILED, bad_request, not_found
from ..records import CloudFile, StoredObject, Upload
from ..s3 import BUCKET, S3_PREFIX, S3Error
from ..wire import old
from ..world import World
from .deps import AccountDep, BaseUrlDep, WorldDep, world_from
from .paging import int_or_none

log = logging.getLogger("bambulab.sim")
router = APIRouter(tags=["files"])

ALLOWED_SUFFIXES = (".3mf", ".gcode", ".stl", ".step")
MAX_SIZE = 1 << 30  # 1 GiB
SIZE_PART_MAX = 64  # the decimal size of the two-URL flow


class UploadBody(BaseModel):
    """``{"filename","size"}`` of the single-URL flow."""

    model_config = ConfigDict(extra="allow")
    filename: str
    size: int | str


class ConfirmBody(BaseModel):
    """``{"file_id"}``."""

    model_config = ConfigDict(extra="allow")
    file_id: str | int


@router.get("/v1/iot-service/api/user/upload")
async def upload_urls(
    account: AccountDep,
    world: WorldDep,
    base: BaseUrlDep,
    filename: str = "",
    size: str = "",
) -> JSONResponse:
    """Two pre-signed PUT URLs: the file's bytes and its decimal size."""
    upload = _start(world, account.uid, filename, size, "urls")
    return old(
        {
            "file_id": upload.file_id,
            "urls": [
                {
                    "type": "filename",
                    "file": upload.filename,
                    "url": world.presigned_url(base, "PUT", upload.data_key),
                },
                {
                    "type": "size",
                    "file": upload.filename,
                    "url": world.presigned_url(base, "PUT", upload.size_key),
                },
            ],
        }
    )


@router.post("/v1/iot-service/api/user/upload")
async def upload_url(
    body: UploadBody, account: AccountDep, world: WorldDep, base: BaseUrlDep
) -> JSONResponse:
    """One pre-signed PUT URL; the upload is registered by ``/upload/confirm``."""
    upload = _start(world, account.uid, body.filename, str(body.size), "single")
    return old(
        {
            "file_id": upload.file_id,
            "upload_url": world.presigned_url(base, "PUT", upload.data_key),
        }
    )


@router.post("/v1/iot-service/api/user/upload/confirm")
async def confirm_upload(
    body: ConfirmBody, account: AccountDep, world: WorldDep, base: BaseUrlDep
) -> JSONResponse:
    """Register an upload whose bytes arrived; 404 while they have not."""
    file_id = str(body.file_id)
    cloud_file = world.files.get(file_id)
    if cloud_file is None:
        upload = world.uploads.get(file_id)
        if upload is None or upload.owner != account.uid or not upload.data_received:
            raise not_found("file not found", code=FILE_FAILED)
        cloud_file = _register(world, upload)
    if cloud_file.owner != account.uid:
        raise not_found("file not found", code=FILE_FAILED)
    return old(
        {
            "file_id": cloud_file.file_id,
            "file_name": cloud_file.name,
            "file_url": world.presigned_url(base, "GET", cloud_file.key),
            "md5": cloud_file.md5,
            "size": cloud_file.size,
            "status": "ready",
        }
    )


@router.api_route(
    S3_PREFIX + "/{resource:path}",
    methods=["GET", "HEAD", "PUT", "POST", "DELETE"],
    include_in_schema=False,
)
async def object_store(resource: str, request: Request) -> Response:
    """The simulated S3 bucket: pre-signed PUT and GET/HEAD only, streamed both ways."""
    world = world_from(request)
    path = f"/{resource}"
    try:
        world.presigner.check(
            request.method,
            path,
            dict(request.query_params),
            {k.lower(): v for k, v in request.headers.items()},
            world.clock.now(),
        )
        prefix = f"/{BUCKET}/"
        if not path.startswith(prefix):
            raise S3Error(404, "NoSuchBucket", "The specified bucket does not exist")
        key = path[len(prefix) :]
        if request.method == "PUT":
            etag = await _put(world, key, request)
            return Response(status_code=200, headers={"ETag": f'"{etag}"'})
        stored = world.objects.get(key)
        if stored is None:
            raise S3Error(404, "NoSuchKey", "The specified key does not exist.")
        # Streams from disk with Content-Length; answers a Range with 206.
        return FileResponse(
            stored.path,
            media_type="application/octet-stream",
            headers={"ETag": f'"{stored.md5}"'},
        )
    except ClientDisconnect:
        # The client went away mid-body: nothing was stored, no one is listening.
        return Response(status_code=400)
    except S3Error as exc:
        log.info("s3: %s %s refused: %s", request.method, path, exc.code)
        # Answered without reading the rest of the body, as S3 does; the
        # connection then closes and clients read this answer (httpcore does).
        return Response(
            exc.xml(path, secrets.token_hex(8).upper()),
            status_code=exc.status,
            media_type="application/xml",
        )


@router.get("/sim-cdn/{path:path}", include_in_schema=False)
async def cdn(path: str) -> Response:
    """Covers, avatars and downloads: generated on the fly, stable per path."""
    if path.endswith(".png"):
        return Response(assets.png(path), media_type="image/png")
    return Response(f"simulated download: {path}\n".encode(), media_type="application/octet-stream")


# --- helpers -------------------------------------------------------------------------


def _start(
    world: World, uid: int, filename: str, size_text: str, flow: Literal["urls", "single"]
) -> Upload:
    name = filename.strip()
    if not name or "/" in name or "\\" in name:
        raise bad_request("filename is required", code=FILE_FAILED)
    if PurePosixPath(name).suffix.lower() not in ALLOWED_SUFFIXES:
        raise bad_request(
            f"unsupported file type; allowed: {', '.join(ALLOWED_SUFFIXES)}", code=FILE_FAILED
        )
    size = int_or_none(size_text)
    if size is None or not 0 < size <= MAX_SIZE:
        raise bad_request("size must be a positive integer of at most 1 GiB", code=FILE_FAILED)
    file_id = str(30_000_000 + world.next_serial())
    folder = f"users/{uid}/uploads/{file_id}"
    upload = Upload(
        file_id=file_id,
        owner=uid,
        filename=name,
        size=size,
        flow=flow,
        data_key=f"{folder}/{name}",
        size_key=f"{folder}/{name}.size",
    )
    world.uploads[file_id] = upload
    log.info("upload: %s started %s (%d bytes, flow %s)", uid, name, size, flow)
    return upload


async def _put(world: World, key: str, request: Request) -> str:
    """Store a PUT for an upload, streamed to disk; returns the ETag (MD5 of what was stored)."""
    upload = next(
        (u for u in world.uploads.values() if key in (u.data_key, u.size_key)),
        None,
    )
    if upload is None:
        raise S3Error(403, "AccessDenied", "Access Denied")
    if key == upload.size_key:
        body = await _small_body(request, SIZE_PART_MAX)
        if body.decode("utf-8", "replace").strip() != str(upload.size):
            raise S3Error(400, "BadDigest", "The size part must carry the declared decimal size")
        stored = world.store(key, body)
        upload.size_received = True
    else:
        stored = await _stream_to_store(world, key, request, upload.size)
        upload.data_received = True
    if upload.flow == "urls" and upload.data_received and upload.size_received:
        _register(world, upload)
    return stored.md5


def _declared_length(request: Request) -> int | None:
    text = request.headers.get("content-length")
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        raise S3Error(400, "InvalidArgument", "Content-Length is not a number") from None


async def _small_body(request: Request, cap: int) -> bytes:
    declared = _declared_length(request)
    if declared is not None and declared > cap:
        raise S3Error(
            400, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size"
        )
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > cap:
            raise S3Error(
                400, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size"
            )
        chunks.append(chunk)
    return b"".join(chunks)


async def _stream_to_store(world: World, key: str, request: Request, size: int) -> StoredObject:
    """Write the body to a temporary file (size enforced, MD5 on the way), then commit it.

    Nothing becomes visible unless exactly ``size`` bytes arrived: a short or
    dropped body leaves no object and no temporary file behind.
    """
    declared = _declared_length(request)
    if declared is None and "chunked" not in request.headers.get("transfer-encoding", ""):
        raise S3Error(
            411, "MissingContentLength", "You must provide the Content-Length HTTP header."
        )
    if declared is not None and declared > size:
        raise S3Error(400, "BadDigest", "The body is longer than the declared size")
    if declared is not None and declared < size:
        raise S3Error(
            400, "IncompleteBody", "You did not provide the number of bytes specified by the upload"
        )
    temp = world.objects.temp_path()
    digest = hashlib.md5(usedforsecurity=False)
    received = 0
    committed = False
    try:
        with temp.open("wb") as out:
            async for chunk in request.stream():
                received += len(chunk)
                if received > size:
                    raise S3Error(400, "BadDigest", "The body is longer than the declared size")
                digest.update(chunk)
                out.write(chunk)
        if received < size:
            raise S3Error(
                400,
                "IncompleteBody",
                "You did not provide the number of bytes specified by the upload",
            )
        stored = world.objects.commit(key, temp, received, digest.hexdigest())
        committed = True
        return stored
    except ClientDisconnect:
        log.info("s3: PUT %s dropped after %d of %d bytes", key, received, size)
        raise
    finally:
        if not committed:
            world.objects.discard(temp)


def _register(world: World, upload: Upload) -> CloudFile:
    stored = world.objects[upload.data_key]
    cloud_file = CloudFile(
        file_id=upload.file_id,
        owner=upload.owner,
        name=upload.filename,
        size=upload.size,
        md5=stored.md5,
        key=upload.data_key,
        create_time=world.clock.now(),
    )
    world.files[cloud_file.file_id] = cloud_file
    log.info("upload: %s registered as file %s", upload.filename, upload.file_id)
    return cloud_file
