"""The cloud HTTP API, two faces: :class:`BambuClient` and :class:`AsyncBambuClient`.

Both expose every builder of :mod:`bambulab.protocol.cloud_api` as a method of
the same name and signature; the sync face blocks, the async face returns
awaitables. Only lifecycle names differ (``close``/``aclose``).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, Generic, ParamSpec, TypeVar, overload

from ..errors import ConfigurationError
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


def _read_upload(file_name: str, file_path: str | os.PathLike[str] | None) -> tuple[str, bytes]:
    path = Path(file_path if file_path is not None else file_name).expanduser()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigurationError(f"cannot upload: no such file {str(path)!r}") from None
    except IsADirectoryError:
        raise ConfigurationError(f"cannot upload: {str(path)!r} is a directory") from None
    except OSError as exc:
        raise ConfigurationError(f"cannot upload {str(path)!r}: {exc.strerror}") from exc
    name = api.check_upload_name(file_name or path.name)
    if not data:
        raise ConfigurationError(f"cannot upload {str(path)!r}: the file is empty")
    return name, data


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
        self, file_name: str, file_path: str | os.PathLike[str] | None = None
    ) -> UploadResult:
        """Upload a 3MF/G-code/STL/STEP file to cloud storage.

        ``upload_file("model.3mf", "/path/to/model.3mf")``; ``result['success']``.
        """
        name, data = _read_upload(file_name, file_path)
        ticket = self.get_upload_urls(name, len(data))
        for put in upload_plan.plan(ticket, data):
            upload_plan.check_put(self._transport.raw("PUT", put.url, put.content, {}), put)
        self._remember(name, ticket.file_id)
        return upload_plan.result(ticket, data)


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
        self, file_name: str, file_path: str | os.PathLike[str] | None = None
    ) -> UploadResult:
        """Upload a 3MF/G-code/STL/STEP file to cloud storage."""
        name, data = await asyncio.to_thread(_read_upload, file_name, file_path)
        ticket = await self.get_upload_urls(name, len(data))
        for put in upload_plan.plan(ticket, data):
            upload_plan.check_put(await self._transport.raw("PUT", put.url, put.content, {}), put)
        self._remember(name, ticket.file_id)
        return upload_plan.result(ticket, data)
