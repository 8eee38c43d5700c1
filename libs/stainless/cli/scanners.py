"""``stainless scanner``: register scanners and manage their API keys (admin)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from stainless.core.audit import add_audit, command_line_actor
from stainless.core.config import load_settings
from stainless.core.db.engine import create_db_engine, session_scope
from stainless.core.db.migrate import upgrade
from stainless.core.db.models import Scanner
from stainless.stages.ingestion.scanners import ScannerError, register_scanner, revoke, rotate_key

scanner_app = typer.Typer(
    pretty_exceptions_enable=False,
    help="Scanners and their API keys (admin).",
    no_args_is_help=True,
)
err = Console(stderr=True)
Name = Annotated[str, typer.Argument(help="The scanner's unique name.")]


def admin_engine() -> Engine:
    """The database of the settings, migrated (the admin commands run before any service)."""
    settings = load_settings()
    upgrade(settings.database.url)
    return create_db_engine(settings.database)


def _fail(exc: ScannerError) -> typer.Exit:
    err.print(f"[red]error:[/red] {exc}")
    return typer.Exit(2)


@scanner_app.command("add")
def add(name: Name) -> None:
    """Register a scanner and print its API key — shown this once only."""
    try:
        with session_scope(admin_engine()) as session:
            _, key = register_scanner(session, name=name)
            add_audit(session, command_line_actor(), "key-create", f"scanner:{name}")
    except ScannerError as exc:
        raise _fail(exc) from None
    err.print(f"scanner {name!r} registered; its API key (store it now, it is not shown again):")
    typer.echo(key)


@scanner_app.command("rotate")
def rotate(name: Name) -> None:
    """Give the scanner a new key; the old one stops working at once."""
    try:
        with session_scope(admin_engine()) as session:
            key = rotate_key(session, name=name)
            add_audit(session, command_line_actor(), "key-rotate", f"scanner:{name}")
    except ScannerError as exc:
        raise _fail(exc) from None
    err.print(f"new API key of {name!r} (the previous key no longer works):")
    typer.echo(key)


@scanner_app.command("revoke")
def revoke_command(name: Name) -> None:
    """Revoke the scanner's key; `rotate` issues a new one."""
    try:
        with session_scope(admin_engine()) as session:
            revoke(session, name=name)
            add_audit(session, command_line_actor(), "key-revoke", f"scanner:{name}")
    except ScannerError as exc:
        raise _fail(exc) from None
    err.print(f"the key of {name!r} is revoked")


@scanner_app.command("list")
def list_scanners() -> None:
    """Scanners, their key prefixes and whether they are revoked."""
    table = Table("name", "id", "key prefix", "revoked")
    with Session(admin_engine()) as session:
        for scanner in session.exec(select(Scanner).order_by(col(Scanner.name))):
            revoked = scanner.revoked_at.isoformat() if scanner.revoked_at else ""
            table.add_row(scanner.name, scanner.id, f"stl_{scanner.key_prefix}_…", revoked)
    Console().print(table)
