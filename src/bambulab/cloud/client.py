"""The cloud HTTP API, two faces: :class:`BambuClient` and :class:`AsyncBambuClient`.

Both expose every builder of :mod:`bambulab.protocol.cloud_api` as a method of
the same name and signature; the sync face blocks, the async face returns
awaitables. Only lifecycle names differ (``close``/``aclose``).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO, Generic, ParamSpec, TypeVar, overload

from ..errors import BambuError, ConfigurationError
from ..models import Message, PrintJob, Project, Task, UploadResult
from ..protocol import cloud_api as api
from ..protocol import upload as upload_plan
from ..protocol.http import MAX_ANSWER_BYTES, ApiCall, RetryPolicy
from ..protocol.paging import Pager
from ..regions import endpoints
from .tokens import resolve_token
from .transport import AsyncTransport, SyncTransport, resolve_timeout

P = ParamSpec("P")
T = TypeVar("T")


Progress = Callable[[int, int], object]


class _UploadSource:
    """A file to upload: checked up front, then read in chunks once per PUT try.

    Nothing is held in memory beyond one chunk. Each try re-reads the file
    from the start, hashing it as it goes, and fails with a clear error if the
    file no longer has the size it had when the upload began. ``progress``
    gets ``(sent, total)`` after each chunk went out; across retries it only
    ever grows (a redone PUT reports again once it passes the earlier mark).
    """

    def __init__(
        self,
        file_name: str,
        file_path: str | os.PathLike[str] | None,
        progress: Progress | None,
    ) -> None:
        self.path = Path(file_path if file_path is not None else file_name).expanduser()
        shown = str(self.path)
        try:
            info = self.path.stat()
        except FileNotFoundError:
            raise ConfigurationError(f"cannot upload: no such file {shown!r}") from None
        except OSError as exc:
            raise ConfigurationError(f"cannot upload {shown!r}: {exc.strerror}") from exc
        if stat.S_ISDIR(info.st_mode):
            raise ConfigurationError(f"cannot upload: {shown!r} is a directory")
        if not stat.S_ISREG(info.st_mode):
            raise ConfigurationError(f"cannot upload {shown!r}: not a regular file")
        self.name = api.check_upload_name(file_name or self.path.name)
        if info.st_size == 0:
            raise ConfigurationError(f"cannot upload {shown!r}: the file is empty")
        self.size = info.st_size
        self.progress = progress
        self._reported = 0

    def reading(self) -> _Reading:
        """Open the file for one PUT try."""
        try:
            return _Reading(self, self.path.open("rb"))
        except OSError as exc:
            raise ConfigurationError(f"cannot upload {str(self.path)!r}: {exc.strerror}") from exc

    def report(self, sent: int) -> None:
        if self.progress is not None and sent > self._reported:
            self._reported = sent
            self.progress(sent, self.size)


class _Reading:
    """One pass over the file: chunks, their MD5, and the size check.

    The MD5 of a chunk is computed on a helper thread while the chunk is on
    its way out (hashlib releases the GIL), so hashing does not slow the
    upload down; at most two chunks are alive at a time.
    """

    def __init__(self, source: _UploadSource, handle: BinaryIO) -> None:
        self.source = source
        self._handle = handle
        self._digest = hashlib.md5(usedforsecurity=False)
        self._hasher = ThreadPoolExecutor(1, thread_name_prefix="bambu-upload-md5")
        self._hashing: Future[None] | None = None
        self.sent = 0

    def next_chunk(self) -> bytes | None:
        """The next chunk, or None at the end; raises if the file changed size."""
        size = self.source.size
        if self.sent >= size:
            if self._handle.read(1):
                raise self._changed("grew")
            return None
        chunk = self._handle.read(min(upload_plan.CHUNK, size - self.sent))
        if not chunk:
            raise self._changed("shrank")
        self._wait_hash()
        self._hashing = self._hasher.submit(self._digest.update, chunk)
        self.sent += len(chunk)
        return chunk

    def _wait_hash(self) -> None:
        if self._hashing is not None:
            self._hashing.result()
            self._hashing = None

    def _changed(self, how: str) -> ConfigurationError:
        return ConfigurationError(
            f"cannot upload {str(self.source.path)!r}: the file {how} during the upload "
            f"(it had {self.source.size} bytes); nothing was registered"
        )

    def chunks(self) -> Iterator[bytes]:
        while (chunk := self.next_chunk()) is not None:
            yield chunk
            self.source.report(self.sent)  # resumed: the chunk went out

    async def achunks(self) -> AsyncIterator[bytes]:
        while (chunk := await asyncio.to_thread(self.next_chunk)) is not None:
            yield chunk
            self.source.report(self.sent)

    def md5(self) -> str:
        self._wait_hash()
        return self._digest.hexdigest()

    def close(self) -> None:
        self._hasher.shutdown(wait=True)
        self._handle.close()


class _Op(Generic[P, T]):
    """A method made from a call builder: sync face returns ``T``."""

    def __init__(self, build: Callable[P, ApiCall[T]]) -> None:
        self.build = build
        self.__doc__ = build.__doc__

    @overload
    def __get__(self, obj: None, owner: type[Any]) -> _Op[P, T]: ...
    @overload
    def __get__(self, obj: BambuClient, owner: type[Any]) -> Callable[P, T]: ...
    def __get__(self, obj: BambuClient | None, owner: type[Any]) -> Any:
        if obj is None:
            return self
        build = self.build

        def method(*args: P.args, **kwargs: P.kwargs) -> T:
            call = build(*args, **kwargs)
            return call.parse(obj._transport.call(call.request))

        method.__doc__ = build.__doc__
        method.__name__ = build.__name__
        return method


class _AsyncOp(Generic[P, T]):
    """A method made from a call builder: async face returns an awaitable of ``T``."""

    def __init__(self, build: Callable[P, ApiCall[T]]) -> None:
        self.build = build
        self.__doc__ = build.__doc__

    @overload
    def __get__(self, obj: None, owner: type[Any]) -> _AsyncOp[P, T]: ...
    @overload
    def __get__(
        self, obj: AsyncBambuClient, owner: type[Any]
    ) -> Callable[P, Coroutine[Any, Any, T]]: ...
    def __get__(self, obj: AsyncBambuClient | None, owner: type[Any]) -> Any:
        if obj is None:
            return self
        build = self.build

        async def method(*args: P.args, **kwargs: P.kwargs) -> T:
            call = build(*args, **kwargs)
            return call.parse(await obj._transport.call(call.request))

        method.__doc__ = build.__doc__
        method.__name__ = build.__name__
        return method


class _ClientBase:
    def __init__(
        self,
        token: str | None = None,
        region: str = "global",
        *,
        base_url: str | None = None,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
        headers: dict[str, str] | None = None,
        token_file: str | os.PathLike[str] | None = None,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
    ) -> None:
        # timeout: the overall deadline of one request in seconds (connect,
        # headers and body); default BAMBU_TIMEOUT, else 15. max_answer_bytes:
        # larger answers are refused with ProtocolError, never read whole.
        self.endpoints = endpoints(region, base_url)
        self.region = self.endpoints.region
        self._args = (
            self.endpoints,
            resolve_token(token, token_file),
            resolve_timeout(timeout),
            retry or RetryPolicy(),
            headers,
        )
        self._limits = {"max_answer_bytes": max_answer_bytes}
        # Names of the files this client uploaded -> their ids, newest last: what
        # ``start_cloud_print(file_name=...)`` resolves a name with.
        self._uploads: dict[str, str] = {}
        self._open()

    def _open(self) -> None:
        raise NotImplementedError

    def _remember(self, name: str, file_id: str) -> None:
        """Note an upload, so a print can name the file instead of its id."""
        if file_id:
            self._uploads.pop(name, None)
            self._uploads[name] = file_id
            while len(self._uploads) > 1000:  # a long-lived client stays small
                del self._uploads[next(iter(self._uploads))]

    @property
    def base_url(self) -> str:
        """The API host in use."""
        return self.endpoints.api

    def mqtt_keywords(self) -> dict[str, Any]:
        """What a cloud ``BambuMQTT``/``AsyncBambuMQTT`` needs of this account: token and region."""
        return {"token": self._args[1], "region": self.region}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(region={self.region!r}, base_url={self.base_url!r})"


class BambuClient(_ClientBase):
    """Blocking client of the Bambu cloud API.

    ``BambuClient(token=..., region="global")``; without a token it uses
    ``BAMBU_TOKEN`` or the token saved by ``bambu login``. ``BAMBU_API_URL``
    (or ``base_url=``) points it at another host, such as the simulator.
    """

    def _open(self) -> None:
        self._transport = SyncTransport(*self._args, **self._limits)

    def close(self) -> None:
        """Close the connection pool."""
        self._transport.close()

    def __enter__(self) -> BambuClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    get_devices = _Op(api.get_devices)
    bind_device = _Op(api.bind_device)
    unbind_device = _Op(api.unbind_device)
    rename_device = _Op(api.rename_device)
    get_device_info = _Op(api.get_device_info)
    get_firmware_version = _Op(api.get_firmware_version)
    get_print_status = _Op(api.get_print_status)
    get_print_jobs = _Op(api.get_print_jobs)
    post_print = _Op(api.start_cloud_print)
    get_projects = _Op(api.get_projects)
    get_project = _Op(api.get_project)
    get_tasks = _Op(api.get_tasks)
    get_task = _Op(api.get_task)
    create_task = _Op(api.create_task)
    create_project = _Op(api.create_project)
    set_project_file = _Op(api.set_project_file)
    get_notifications = _Op(api.get_notifications)
    mark_notification_read = _Op(api.mark_notification_read)
    get_messages = _Op(api.get_messages)
    get_profile = _Op(api.get_profile)
    update_profile = _Op(api.update_profile)
    get_preference = _Op(api.get_preference)
    get_slicer_settings = _Op(api.get_slicer_settings)
    get_slicer_setting = _Op(api.get_slicer_setting)
    delete_slicer_setting = _Op(api.delete_slicer_setting)
    get_slicer_resources = _Op(api.get_slicer_resources)
    get_upload_urls = _Op(api.get_upload_urls)
    request_upload = _Op(api.request_upload)
    confirm_upload = _Op(api.confirm_upload)
    get_camera_credentials = _Op(api.get_camera_credentials)

    def get_user_id(self) -> str:
        """The account's user id (``uid``); the cloud MQTT user is ``u_<uid>``."""
        return str(self.get_preference().uid)

    def start_cloud_print(
        self,
        device_id: str,
        file_id: str | None = None,
        file_name: str | None = None,
        file_url: str | None = None,
        settings: dict[str, Any] | None = None,
        **options: Any,
    ) -> Task | PrintJob:
        """Print an uploaded file on a printer, as the slicer does.

        ``start_cloud_print(device_id="...", file_name="model.3mf")`` (the seed's
        form; ``file_id`` wins when it names an upload). Checks the printer
        (bound, online, not busy), the file, the plate and an explicit AMS
        mapping before anything is sent, creates the project and task, then
        sends ``print.project_file`` on the cloud broker; returns the task. A
        retried call never starts the print twice. Keywords: ``options``
        (:class:`~bambulab.models.printing.PrintOptions`), ``plate``,
        ``path`` (the local 3MF, to check its plates), ``mqtt`` (a cloud
        :class:`BambuMQTT` to use), ``signer``. With no cloud broker known
        (API pointed elsewhere, no ``BAMBU_MQTT_HOST``), or with only
        ``file_url``, it is the seed's ``POST /user/print`` and returns its job.
        """
        from . import printing

        if not (file_id or file_name or file_url):
            raise ConfigurationError("start_cloud_print needs file_id, file_name or file_url")
        if file_url and not (file_id or file_name):
            return self.post_print(device_id, None, None, file_url, settings)
        return printing.start_cloud_print(
            self, device_id, file_id, file_name, settings=settings, **options
        )

    def iter_tasks(
        self, device_id: str | None = None, page_size: int = 20, max_items: int | None = None
    ) -> Iterator[Task]:
        """Every task of the print history, newest first, fetched page by page."""
        yield from self._iterate(
            Pager(
                lambda after: api.get_tasks(device_id, after, page_size),
                page_size,
                "after",
                max_items,
            )
        )

    def iter_messages(
        self, type: str | None = None, page_size: int = 20, max_items: int | None = None
    ) -> Iterator[Message]:
        """Every message, newest first, fetched page by page."""
        yield from self._iterate(
            Pager(
                lambda after: api.get_messages(type, after, page_size),
                page_size,
                "after",
                max_items,
            )
        )

    def iter_projects(self, page_size: int = 20, max_items: int | None = None) -> Iterator[Project]:
        """Every project, fetched page by page."""
        yield from self._iterate(
            Pager(lambda page: api.get_projects(page, page_size), page_size, "page", max_items)
        )

    def _iterate(self, pager: Pager) -> Iterator[Any]:
        while (call := pager.next_call()) is not None:
            yield from pager.feed(call.parse(self._transport.call(call.request)))

    def upload_file(
        self,
        file_name: str,
        file_path: str | os.PathLike[str] | None = None,
        *,
        progress: Progress | None = None,
        flow: upload_plan.Flow = "urls",
    ) -> UploadResult:
        """Upload a 3MF/G-code/STL/STEP file to cloud storage, streamed from disk.

        ``upload_file("model.3mf", "/path/to/model.3mf")``; ``result['success']``.
        The file is never held in memory. ``progress(sent, total)`` is called on
        this thread after each chunk. ``flow="single"`` uses the alternative
        request/confirm flow. Transient failures are retried; an expired URL is
        asked for again once (PROTOCOL.md §1.3; rules in :mod:`bambulab.protocol.upload`).
        """
        source = _UploadSource(file_name, file_path, progress)
        plan = upload_plan.UploadFlow(
            source.name, source.size, flow=flow, retry=self._transport.retry
        )
        while not isinstance(step := plan.next_step(), upload_plan.Done):
            if isinstance(step, (upload_plan.AskUrls, upload_plan.Confirm)):
                plan.answered(step.call.parse(self._transport.call(step.call.request)))
            elif isinstance(step, upload_plan.Wait):
                time.sleep(step.seconds)
            elif isinstance(step, upload_plan.PutBytes):
                try:
                    reply = self._transport.put_stream(step.url, [step.content], len(step.content))
                except BambuError as exc:
                    plan.put_failed(exc)
                else:
                    plan.put_answered(reply)
            else:
                reading = source.reading()
                try:
                    reply = self._transport.put_stream(step.url, reading.chunks(), step.size)
                except BambuError as exc:
                    plan.put_failed(exc)
                else:
                    plan.put_answered(reply, reading.md5())
                finally:
                    reading.close()
        self._remember(step.result.file_name, step.result.file_id)
        return step.result


class AsyncBambuClient(_ClientBase):
    """Non-blocking twin of :class:`BambuClient`: same methods, awaited."""

    def _open(self) -> None:
        self._transport = AsyncTransport(*self._args, **self._limits)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._transport.aclose()

    async def __aenter__(self) -> AsyncBambuClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    get_devices = _AsyncOp(api.get_devices)
    bind_device = _AsyncOp(api.bind_device)
    unbind_device = _AsyncOp(api.unbind_device)
    rename_device = _AsyncOp(api.rename_device)
    get_device_info = _AsyncOp(api.get_device_info)
    get_firmware_version = _AsyncOp(api.get_firmware_version)
    get_print_status = _AsyncOp(api.get_print_status)
    get_print_jobs = _AsyncOp(api.get_print_jobs)
    post_print = _AsyncOp(api.start_cloud_print)
    get_projects = _AsyncOp(api.get_projects)
    get_project = _AsyncOp(api.get_project)
    get_tasks = _AsyncOp(api.get_tasks)
    get_task = _AsyncOp(api.get_task)
    create_task = _AsyncOp(api.create_task)
    create_project = _AsyncOp(api.create_project)
    set_project_file = _AsyncOp(api.set_project_file)
    get_notifications = _AsyncOp(api.get_notifications)
    mark_notification_read = _AsyncOp(api.mark_notification_read)
    get_messages = _AsyncOp(api.get_messages)
    get_profile = _AsyncOp(api.get_profile)
    update_profile = _AsyncOp(api.update_profile)
    get_preference = _AsyncOp(api.get_preference)
    get_slicer_settings = _AsyncOp(api.get_slicer_settings)
    get_slicer_setting = _AsyncOp(api.get_slicer_setting)
    delete_slicer_setting = _AsyncOp(api.delete_slicer_setting)
    get_slicer_resources = _AsyncOp(api.get_slicer_resources)
    get_upload_urls = _AsyncOp(api.get_upload_urls)
    request_upload = _AsyncOp(api.request_upload)
    confirm_upload = _AsyncOp(api.confirm_upload)
    get_camera_credentials = _AsyncOp(api.get_camera_credentials)

    async def get_user_id(self) -> str:
        """The account's user id (``uid``); the cloud MQTT user is ``u_<uid>``."""
        return str((await self.get_preference()).uid)

    async def start_cloud_print(
        self,
        device_id: str,
        file_id: str | None = None,
        file_name: str | None = None,
        file_url: str | None = None,
        settings: dict[str, Any] | None = None,
        **options: Any,
    ) -> Task | PrintJob:
        """Print an uploaded file on a printer, as the slicer does (see :class:`BambuClient`)."""
        from . import printing

        if not (file_id or file_name or file_url):
            raise ConfigurationError("start_cloud_print needs file_id, file_name or file_url")
        if file_url and not (file_id or file_name):
            return await self.post_print(device_id, None, None, file_url, settings)
        return await printing.async_start_cloud_print(
            self, device_id, file_id, file_name, settings=settings, **options
        )

    def iter_tasks(
        self, device_id: str | None = None, page_size: int = 20, max_items: int | None = None
    ) -> AsyncIterator[Task]:
        """Every task of the print history, newest first, fetched page by page."""
        return self._iterate(
            Pager(
                lambda after: api.get_tasks(device_id, after, page_size),
                page_size,
                "after",
                max_items,
            )
        )

    def iter_messages(
        self, type: str | None = None, page_size: int = 20, max_items: int | None = None
    ) -> AsyncIterator[Message]:
        """Every message, newest first, fetched page by page."""
        return self._iterate(
            Pager(
                lambda after: api.get_messages(type, after, page_size),
                page_size,
                "after",
                max_items,
            )
        )

    def iter_projects(
        self, page_size: int = 20, max_items: int | None = None
    ) -> AsyncIterator[Project]:
        """Every project, fetched page by page."""
        return self._iterate(
            Pager(lambda page: api.get_projects(page, page_size), page_size, "page", max_items)
        )

    async def _iterate(self, pager: Pager) -> AsyncIterator[Any]:
        while (call := pager.next_call()) is not None:
            for item in pager.feed(call.parse(await self._transport.call(call.request))):
                yield item

    async def upload_file(
        self,
        file_name: str,
        file_path: str | os.PathLike[str] | None = None,
        *,
        progress: Progress | None = None,
        flow: upload_plan.Flow = "urls",
    ) -> UploadResult:
        """Upload a file to cloud storage, streamed from disk (see :meth:`BambuClient.upload_file`).

        ``progress(sent, total)`` is called on the event loop after each chunk.
        """
        source = await asyncio.to_thread(_UploadSource, file_name, file_path, progress)
        plan = upload_plan.UploadFlow(
            source.name, source.size, flow=flow, retry=self._transport.retry
        )
        while not isinstance(step := plan.next_step(), upload_plan.Done):
            if isinstance(step, (upload_plan.AskUrls, upload_plan.Confirm)):
                plan.answered(step.call.parse(await self._transport.call(step.call.request)))
            elif isinstance(step, upload_plan.Wait):
                await asyncio.sleep(step.seconds)
            elif isinstance(step, upload_plan.PutBytes):
                try:
                    reply = await self._transport.put_stream(
                        step.url, _once(step.content), len(step.content)
                    )
                except BambuError as exc:
                    plan.put_failed(exc)
                else:
                    plan.put_answered(reply)
            else:
                reading = await asyncio.to_thread(source.reading)
                try:
                    reply = await self._transport.put_stream(step.url, reading.achunks(), step.size)
                except BambuError as exc:
                    plan.put_failed(exc)
                else:
                    plan.put_answered(reply, reading.md5())
                finally:
                    reading.close()
        self._remember(step.result.file_name, step.result.file_id)
        return step.result


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data
