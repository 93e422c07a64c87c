"""The simulated Bambu cloud as a FastAPI app: ``create_app(world)``.

Assembles the endpoint modules, renders every refusal in the cloud's error
envelope (including FastAPI's own 404/405/422, which the real cloud would
never send in FastAPI's shape), and wraps everything in the fault-injection
middleware. The interactive API docs live under ``/sim/docs``.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from .api import account, control, devices, files, inbox, login, printing, projects, slicer
from .errors import SimError
from .faults import FaultMiddleware
from .world import World

log = logging.getLogger("bambulab.sim")


def create_app(world: World) -> FastAPI:
    """A FastAPI app serving ``world``."""
    app = FastAPI(
        title="Bambu Lab cloud simulator",
        version=__version__,
        docs_url="/sim/docs",
        openapi_url="/sim/openapi.json",
        redoc_url=None,
    )
    app.state.world = world
    for module in (login, devices, printing, projects, inbox, account, slicer, files, control):
        app.include_router(module.router)
    app.add_exception_handler(SimError, _sim_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _crash)
    app.add_middleware(FaultMiddleware, book=world.faults)
    return app


def error_response(error: SimError) -> JSONResponse:
    """The cloud's error envelope for ``error``."""
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


async def _sim_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SimError)
    return error_response(exc)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    # Keep where and what, drop "input": it may be a password or a code.
    problems = [
        {"loc": [str(part) for part in error.get("loc", ())], "msg": str(error.get("msg", ""))}
        for error in exc.errors()
    ]
    first = problems[0] if problems else {"loc": [], "msg": "invalid request"}
    message = f"{'.'.join(first['loc'][1:]) or 'request'}: {first['msg']}"
    return error_response(SimError(400, 400, message, details={"errors": problems}))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    texts = {404: "Not Found", 405: "Method Not Allowed"}
    message = texts.get(exc.status_code, str(exc.detail))
    return error_response(SimError(exc.status_code, exc.status_code, message))


async def _crash(request: Request, exc: Exception) -> Response:
    log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(SimError(500, 500, "Internal Server Error"))
