"""Cloud printing, two faces: the slicer's flow behind ``start_cloud_print``, and many printers.

:func:`start_cloud_print` / :func:`async_start_cloud_print` drive the sans-IO
flow of :mod:`bambulab.protocol.cloud_print` (checks, project, task, then
``print.project_file`` on the cloud broker) with a :class:`BambuClient` or
:class:`AsyncBambuClient`. The MQTT step uses the ``mqtt`` client given
(cloud mode, may carry a ``signer``), or opens one for the call with the
account's token (``BAMBU_MQTT_HOST``/``BAMBU_CA_FILE`` as everywhere). When
no cloud broker is known (the API is pointed elsewhere and no MQTT host is
set), the print goes through the seed's ``POST /user/print`` and its job is
returned instead, as before.

:func:`print_many_cloud` / :func:`async_print_many_cloud` send one file to
several printers: upload once, then start on each printer concurrently
(bounded); one printer failing never stops the others, and each gets a
:class:`~bambulab.models.printing.PrintOutcome`.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BambuError, ConfigurationError, PrintFileError, ThreeMFError
from ..models import PrintJob, Task
from ..models.printing import PrintOptions, PrintOutcome
from ..models.threemf import ThreeMF
from ..mqtt.client import ENV_MQTT_HOST, AsyncBambuMQTT, BambuMQTT
from ..mqtt.core import Signer
from ..protocol import mqtt as proto
from ..protocol.cloud_print import CloudPrintRequest, Flow, Pause, Publish, cloud_print
from ..protocol.http import ApiCall
from ..protocol.threemf import read_3mf
from ..regions import REGIONS
from ..safetext import visible

if TYPE_CHECKING:
    from .client import AsyncBambuClient, BambuClient

MAX_CONCURRENCY = 4


def read_local(path: str | os.PathLike[str]) -> ThreeMF | None:
    """The metadata of a local 3MF (plates, filaments), read without loading it; None otherwise.

    A file that is not a readable 3MF is a :class:`PrintFileError`.
    """
    file = Path(path)
    if file.suffix.lower() != ".3mf":
        return None
    try:
        with file.open("rb") as stream:
            return read_3mf(stream, md5=False)
    except (OSError, ThreeMFError) as exc:
        raise PrintFileError(f"cannot read {file.name} as a 3MF: {exc}", file=file.name) from None


def _live(client: BambuClient | AsyncBambuClient, mqtt: object | None) -> bool:
    """Whether a cloud broker is known: given, configured, or the real cloud's own."""
    if mqtt is not None or os.environ.get(ENV_MQTT_HOST):
        return True
    return client.base_url == REGIONS[client.region].api


def _request(
    client: BambuClient | AsyncBambuClient,
    device_id: str,
    file_id: str | None,
    file_name: str | None,
    options: PrintOptions,
    settings: Mapping[str, Any] | None,
    project: ThreeMF | None,
    live: bool,
) -> CloudPrintRequest:
    return CloudPrintRequest(
        device_id=device_id,
        file_id=file_id,
        file_name=file_name,
        options=options,
        settings=dict(settings or {}),
        known_uploads=dict(client._uploads),
        project=project,
        live=live,
    )


def _options(options: PrintOptions | None, plate: int | None) -> PrintOptions:
    chosen = options or PrintOptions()
    if plate is not None and plate != chosen.plate:
        from dataclasses import replace

        chosen = replace(chosen, plate=plate)
    return chosen


# --- the blocking face -----------------------------------------------------------------------


def start_cloud_print(
    client: BambuClient,
    device_id: str,
    file_id: str | None = None,
    file_name: str | None = None,
    *,
    options: PrintOptions | None = None,
    plate: int | None = None,
    settings: Mapping[str, Any] | None = None,
    path: str | os.PathLike[str] | None = None,
    project: ThreeMF | None = None,
    mqtt: BambuMQTT | None = None,
    signer: Signer | None = None,
    command_timeout: float = 15.0,
) -> Task | PrintJob:
    """Print an uploaded file on a printer the way the slicer does (see the module doc)."""
    chosen = _options(options, plate)
    live = _live(client, mqtt)
    if not live:
        return _drive_api(client, file_id, file_name, settings, device_id)
    if project is None and path is not None:
        project = read_local(path)
    flow = cloud_print(
        _request(client, device_id, file_id, file_name, chosen, settings, project, live)
    )
    own: BambuMQTT | None = None

    def publish(step: Publish) -> proto.Incoming:
        nonlocal own
        live_client = mqtt
        if live_client is None:
            if own is None:
                own = BambuMQTT(
                    client.get_user_id(),
                    step.serial,
                    **client.mqtt_keywords(),
                    signer=signer,
                    command_timeout=command_timeout,
                )
                own.connect()
            live_client = own
        live_client.add_printer(step.serial)
        return live_client.send(step.command, step.serial)

    try:
        return _drive(flow, lambda call: call.parse(client._transport.call(call.request)), publish)
    finally:
        if own is not None:
            own.disconnect()


def _drive_api(
    client: BambuClient,
    file_id: str | None,
    file_name: str | None,
    settings: Mapping[str, Any] | None,
    device_id: str,
) -> PrintJob:
    from ..protocol import cloud_api as api

    call = api.start_cloud_print(device_id, file_id, file_name, None, dict(settings or {}))
    return call.parse(client._transport.call(call.request))


def _drive(
    flow: Flow,
    run: Callable[[ApiCall[Any]], Any],
    publish: Callable[[Publish], proto.Incoming],
) -> Task:
    answer: Any = None
    error: BaseException | None = None
    while True:
        try:
            step = flow.throw(error) if error is not None else flow.send(answer)
        except StopIteration as done:
            task: Task = done.value
            return task
        answer, error = None, None
        try:
            if isinstance(step, Pause):
                time.sleep(step.seconds)
            else:
                answer = publish(step) if isinstance(step, Publish) else run(step)
        except BambuError as exc:
            error = exc


def print_many_cloud(
    client: BambuClient,
    path: str | os.PathLike[str],
    devices: Iterable[str],
    options: PrintOptions | None = None,
    *,
    max_concurrency: int = MAX_CONCURRENCY,
    mqtt: BambuMQTT | None = None,
    signer: Signer | None = None,
    progress: Callable[[int, int], Any] | None = None,
) -> list[PrintOutcome]:
    """Upload ``path`` once and print it on every printer of ``devices``; one outcome each.

    ``progress(sent, total)`` follows the upload.
    """
    serials = list(dict.fromkeys(d.strip() for d in devices if d and d.strip()))
    if not serials:
        raise ConfigurationError("print_many_cloud needs at least one printer")
    chosen = options or PrintOptions()
    file = Path(path)
    try:
        project = read_local(file)
        uploaded = client.upload_file(file.name, file, progress=progress)
    except BambuError as exc:
        return [PrintOutcome(serial, ok=False, error=_line(exc)) for serial in serials]
    shared = mqtt
    own: BambuMQTT | None = None
    if shared is None and _live(client, None):
        own = BambuMQTT(
            client.get_user_id(),
            serials,
            **client.mqtt_keywords(),
            signer=signer,
        )
        own.connect()
        shared = own

    def one(serial: str) -> PrintOutcome:
        started = time.monotonic()
        try:
            result = client.start_cloud_print(
                serial,
                uploaded.file_id,
                file.name,
                options=chosen,
                project=project,
                mqtt=shared,
            )
        except BambuError as exc:
            return PrintOutcome(serial, ok=False, error=_line(exc), uploaded=True)
        return _outcome(serial, result, uploaded.file_url, started)

    try:
        with ThreadPoolExecutor(max(1, min(max_concurrency, len(serials)))) as pool:
            return list(pool.map(one, serials))
    finally:
        if own is not None:
            own.disconnect()


# --- the asyncio face --------------------------------------------------------------------------


async def async_start_cloud_print(
    client: AsyncBambuClient,
    device_id: str,
    file_id: str | None = None,
    file_name: str | None = None,
    *,
    options: PrintOptions | None = None,
    plate: int | None = None,
    settings: Mapping[str, Any] | None = None,
    path: str | os.PathLike[str] | None = None,
    project: ThreeMF | None = None,
    mqtt: AsyncBambuMQTT | None = None,
    signer: Signer | None = None,
    command_timeout: float = 15.0,
) -> Task | PrintJob:
    """The asyncio twin of :func:`start_cloud_print`."""
    chosen = _options(options, plate)
    if project is None and path is not None:
        project = await asyncio.to_thread(read_local, path)
    live = _live(client, mqtt)
    if not live:
        from ..protocol import cloud_api as api

        call = api.start_cloud_print(device_id, file_id, file_name, None, dict(settings or {}))
        return call.parse(await client._transport.call(call.request))
    flow = cloud_print(
        _request(client, device_id, file_id, file_name, chosen, settings, project, live)
    )
    own: AsyncBambuMQTT | None = None
    answer: Any = None
    error: BaseException | None = None
    try:
        while True:
            try:
                step = flow.throw(error) if error is not None else flow.send(answer)
            except StopIteration as done:
                task: Task = done.value
                return task
            answer, error = None, None
            try:
                if isinstance(step, Pause):
                    await asyncio.sleep(step.seconds)
                elif isinstance(step, Publish):
                    live_client = mqtt
                    if live_client is None:
                        if own is None:
                            own = AsyncBambuMQTT(
                                await client.get_user_id(),
                                step.serial,
                                **client.mqtt_keywords(),
                                signer=signer,
                                command_timeout=command_timeout,
                            )
                            await own.connect()
                        live_client = own
                    await live_client.add_printer(step.serial)
                    answer = await live_client.send(step.command, step.serial)
                else:
                    answer = step.parse(await client._transport.call(step.request))
            except BambuError as exc:
                error = exc
    finally:
        if own is not None:
            await own.aclose()


async def async_print_many_cloud(
    client: AsyncBambuClient,
    path: str | os.PathLike[str],
    devices: Iterable[str],
    options: PrintOptions | None = None,
    *,
    max_concurrency: int = MAX_CONCURRENCY,
    mqtt: AsyncBambuMQTT | None = None,
    signer: Signer | None = None,
) -> list[PrintOutcome]:
    """The asyncio twin of :func:`print_many_cloud`."""
    serials = list(dict.fromkeys(d.strip() for d in devices if d and d.strip()))
    if not serials:
        raise ConfigurationError("print_many_cloud needs at least one printer")
    chosen = options or PrintOptions()
    file = Path(path)
    try:
        project = await asyncio.to_thread(read_local, file)
        uploaded = await client.upload_file(file.name, file)
    except BambuError as exc:
        return [PrintOutcome(serial, ok=False, error=_line(exc)) for serial in serials]
    shared = mqtt
    own: AsyncBambuMQTT | None = None
    if shared is None and _live(client, None):
        own = AsyncBambuMQTT(
            await client.get_user_id(),
            serials,
            **client.mqtt_keywords(),
            signer=signer,
        )
        await own.connect()
        shared = own
    gate = asyncio.Semaphore(max(1, max_concurrency))

    async def one(serial: str) -> PrintOutcome:
        async with gate:
            started = time.monotonic()
            try:
                result = await client.start_cloud_print(
                    serial,
                    uploaded.file_id,
                    file.name,
                    options=chosen,
                    project=project,
                    mqtt=shared,
                )
            except BambuError as exc:
                return PrintOutcome(serial, ok=False, error=_line(exc), uploaded=True)
            return _outcome(serial, result, uploaded.file_url, started)

    try:
        return list(await asyncio.gather(*(one(s) for s in serials)))
    finally:
        if own is not None:
            await own.aclose()


# --- helpers ------------------------------------------------------------------------------------


def _line(error: BaseException) -> str:
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return visible(text)


def _outcome(serial: str, result: Task | PrintJob, url: str, started: float) -> PrintOutcome:
    task_id = str(result.get("id") or result.get("task_id") or "")
    return PrintOutcome(
        serial,
        ok=True,
        url=url,
        task_id=task_id,
        uploaded=True,
        seconds=round(time.monotonic() - started, 3),
    )
