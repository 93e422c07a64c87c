"""``bambu projects`` and ``bambu projects show ID``: the account's cloud projects."""

from __future__ import annotations

from typing import Annotated

import typer

from .base import OPTIONS, CliError, new_typer, not_empty, open_client

projects_app = new_typer(name="projects", help="Cloud projects: list them, or show one.")


@projects_app.callback(invoke_without_command=True)
def projects(
    ctx: typer.Context,
    limit: Annotated[
        int | None, typer.Option("--limit", "-n", min=1, help="At most this many projects.")
    ] = None,
) -> None:
    """List the account's projects (``projects show ID`` for one)."""
    if ctx.invoked_subcommand is not None:
        return
    from .output import Col, emit_json, table, when

    with open_client() as client:
        found = list(client.iter_projects(max_items=limit))
    if OPTIONS.json:
        emit_json([p.to_dict() for p in found])
        return
    table(
        f"{len(found)} project{'s' if len(found) != 1 else ''}",
        [
            Col("ID", wrap=False),
            Col("Name"),
            Col("Status"),
            Col("Files", justify="right"),
            Col("Created (UTC)", wrap=False),
            Col("Updated (UTC)", wrap=False),
        ],
        (
            [
                p.project_id,
                p.name,
                p.status,
                len(p.files) if p.files else None,
                when(p.create_time),
                when(p.update_time),
            ]
            for p in found
        ),
    )


@projects_app.command("show")
def show(
    project_id: Annotated[
        str, typer.Argument(metavar="ID", callback=not_empty, help="The project id.")
    ],
) -> None:
    """One project and its files."""
    from ..errors import NotFoundError, excerpt
    from .output import Col, emit_json, fields, table, when

    with open_client() as client:
        try:
            project = client.get_project(project_id)
        except NotFoundError as exc:
            raise CliError(f"no project {excerpt(project_id)} on this account ({exc})") from exc
    if OPTIONS.json:
        emit_json(project.to_dict())
        return
    fields(
        f"Project {project.project_id or project_id}",
        [
            ("name", project.name),
            ("status", project.status),
            ("model", project.model_id),
            ("created", when(project.create_time)),
            ("updated", when(project.update_time)),
        ],
    )
    table(
        "Files",
        [Col("ID", wrap=False), Col("Name"), Col("Size", justify="right"), Col("MD5", wrap=False)],
        ([f.file_id, f.name, _size(f.size), f.md5] for f in project.files),
    )


def _size(size: int | None) -> str | None:
    if size is None:
        return None
    value = float(size)
    for unit in ("B", "KB", "MB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"
