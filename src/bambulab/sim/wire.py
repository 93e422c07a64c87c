"""Wire shapes: the three success envelopes and the renderers shared by endpoints.

Envelopes (PROTOCOL.md §1): "old" puts the payload beside
``message/code/error`` (iot-service), "new" nests it under ``data``, "bare"
is the object alone (some user-service endpoints). Renderers turn records
into the exact field names of the wire; URLs are made absolute with the base
URL of the incoming request, so they work whatever host name the client used.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi.responses import JSONResponse

from .clock import iso
from .records import Device, Task


def old(payload: Mapping[str, Any] | None = None) -> JSONResponse:
    """``{"message":"success","code":null,"error":null, ...payload}``."""
    return JSONResponse({"message": "success", "code": None, "error": None, **(payload or {})})


def new(data: Any) -> JSONResponse:
    """``{"code":0,"message":"Success","data":...}``."""
    return JSONResponse({"code": 0, "message": "Success", "data": data})


def bare(obj: Any) -> JSONResponse:
    """The object alone."""
    return JSONResponse(obj)


def absolute(base: str, path: str) -> str:
    """``base`` (no trailing slash) joined with a simulator path."""
    return f"{base}{path}" if path.startswith("/") else path


def access_code_wire(device: Device) -> str:
    """The access code as the bind list sends it, newline quirk included."""
    return device.access_code + ("\n" if device.access_code_newline else "")


def device_summary(device: Device, base: str) -> dict[str, Any]:
    """One entry of ``GET /user/bind`` ``devices[]``."""
    job = device.active
    return {
        "dev_id": device.dev_id,
        "name": device.name,
        "online": device.online,
        "print_status": device.print_status,
        "dev_model_name": device.model.model_name,
        "dev_product_name": device.model.product,
        "dev_access_code": access_code_wire(device),
        "nozzle_diameter": device.nozzle_diameter,
        "dev_structure": device.model.structure,
        "print_job": None
        if job is None
        else {
            "task_id": str(job.task_id),
            "task_name": job.title,
            "progress": job.progress,
            "start_time": iso(job.start_time),
            "prediction": job.prediction,
            "gcode_state": device.state,
            "thumbnail": absolute(base, job.cover),
        },
    }


def task_hit(task: Task, base: str) -> dict[str, Any]:
    """One history entry, as ``my/tasks`` ``hits[]`` and ``user/task/{id}`` show it."""
    hit: dict[str, Any] = {
        **task.extra,
        "id": task.id,
        "designId": task.design_id,
        "designTitle": task.design_title,
        "instanceId": task.design_id * 10 + task.plate_index if task.design_id else 0,
        "modelId": task.model_id,
        "title": task.title,
        "cover": absolute(base, task.cover),
        "status": task.status,
        "feedbackStatus": 0,
        "startTime": iso(task.start_time),
        "endTime": iso(task.end_time),
        "weight": task.weight,
        "length": task.length,
        "costTime": task.cost_time,
        "profileId": task.profile_id,
        "plateIndex": task.plate_index,
        "plateName": "",
        "deviceId": task.device_id,
        "deviceName": task.device_name,
        "deviceModel": task.device_model,
        "amsDetailMapping": task.ams_detail_mapping,
        "mode": task.mode,
        "isPublicProfile": task.design_id != 0,
        "isPrintable": True,
        "bedType": task.bed_type,
        "useAms": task.use_ams,
        "amsMapping": task.ams_mapping,
    }
    return hit
