"""``stainless keys``: keys of the results API (people and systems), hashed, expiring (admin)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from sqlmodel import Session

from stainless.cli.scanners import admin_engine
from stainless.core.audit import add_audit, command_line_actor
from stainless.core.db.engine import session_scope
from stainless.core.http.auth import KeyRefused, Role, create_key, list_keys, revoke_key, rotate_key

keys_app = typer.Typer(
    pretty_exceptions_enable=False,
    help="Results-API keys: shown once, stored as hashes, expiring (admin).",
    no_args_is_help=True,
)
err = Console(stderr=True)
Name = Annotated[str, typer.Argument(help="Who holds the key: a person or a system.")]
Days = Annotated[int, typer.Option(min=1, max=3650, help="Days until the key expires.")]


def _fail(exc: KeyRefused) -> typer.Exit:
    err.print(f"[red]error:[/red] {exc}")
    return typer.Exit(2)


@keys_app.command("create")
def create(
    name: Name,
    role: Annotated[Role, typer.Option(help="reviewer, scientist or admin.")],
    days: Days = 90,
) -> None:
    """Issue a key and print it — shown this once only."""
    try:
        with session_scope(admin_engine()) as session:
            _, key = create_key(session, name=name, role=role, days=days)
            detail = {"role": role.value, "days": days}
            add_audit(session, command_line_actor(), "key-create", f"key:{name}", detail)
    except KeyRefused as exc:
        raise _fail(exc) from None
    err.print(
        f"{role.value} key of {name!r}, valid {days} days (store it now, it is not shown again):"
    )
    typer.echo(key)


@keys_app.command("rotate")
def rotate(name: Name, days: Days = 90) -> None:
    """Issue a new key for the holder; the old one stops working at once."""
    try:
        with session_scope(admin_engine()) as session:
            key = rotate_key(session, name=name, days=days)
            add_audit(session, command_line_actor(), "key-rotate", f"key:{name}", {"days": days})
    except KeyRefused as exc:
        raise _fail(exc) from None
    err.print(f"new key of {name!r}, valid {days} days (the previous key no longer works):")
    typer.echo(key)


@keys_app.command("revoke")
def revoke(name: Name) -> None:
    """End the holder's key now; `rotate` issues a new one."""
    try:
        with session_scope(admin_engine()) as session:
            revoke_key(session, name=name)
            add_audit(session, command_line_actor(), "key-revoke", f"key:{name}")
    except KeyRefused as exc:
        raise _fail(exc) from None
    err.print(f"the key of {name!r} is revoked")


@keys_app.command("list")
def list_command() -> None:
    """Holders, roles, key prefixes, expiry and revocation."""
    table = Table("name", "role", "key prefix", "expires", "revoked")
    with Session(admin_engine()) as session:
        for row in list_keys(session):
            revoked = row.revoked_at.isoformat() if row.revoked_at else ""
            prefix = f"srk_{row.key_prefix}_…"
            table.add_row(row.name, row.role, prefix, row.expires_at.isoformat(), revoked)
    Console().print(table)
