"""Flask commands (design.md, "Configuration and commands"). Each commits once."""
from __future__ import annotations

import sys
from datetime import datetime

import click
from flask import Flask

from portal import clock
from portal.domain.audit import parse_checkpoint
from portal.domain.errors import PortalError
from portal.extensions import db
from portal.services import accounts, audit, departments, devices
from portal.services.actors import CLI


def _now() -> datetime:
    """A command's `now`, from the app's clock."""
    return clock.now()


def _fail(exc: PortalError) -> click.ClickException:
    db.session.rollback()
    message = exc.message
    if getattr(exc, "field_errors", None):
        message = "; ".join(f"{field}: {' '.join(msgs)}"
                            for field, msgs in exc.field_errors.items())
    return click.ClickException(message)


def _department(name: str):
    department = departments.find_department(name)
    if department is None:
        raise click.ClickException(f"No department named “{name}”.")
    return department


def init_commands(app: Flask) -> None:
    @app.cli.group("departments", help="Manage departments.")
    def departments_group() -> None:
        pass

    @departments_group.command("create")
    @click.argument("name")
    def create_department(name: str) -> None:
        """Create a department with default settings (idempotent)."""
        existing = departments.find_department(" ".join(name.split()))
        if existing is not None:
            click.echo(f"Department “{existing.name}” already exists (id {existing.id}).")
            return
        try:
            department = departments.create_department(name=name, actor=CLI, now=_now())
        except PortalError as exc:
            raise _fail(exc) from None
        db.session.commit()
        click.echo(f"Created department “{department.name}” (id {department.id}).")

    @app.cli.group("users", help="Manage users and their roles.")
    def users_group() -> None:
        pass

    @users_group.command("create")
    @click.argument("email")
    @click.option("--password", help="Password of a new user (at least 10 characters).")
    @click.option("--role", required=True, type=click.Choice(accounts.ALL_ROLES))
    @click.option("--department", "department_name",
                  help="Department of the role (every role but admin).")
    def create_user(email: str, password: str | None, role: str,
                    department_name: str | None) -> None:
        """Create a user, or add a role to an existing one."""
        department = _department(department_name) if department_name else None
        existed = accounts.find_user(email) is not None
        try:
            user = accounts.create_or_update_user(email=email, password=password, role=role,
                                                  department=department, actor=CLI, now=_now())
        except PortalError as exc:
            raise _fail(exc) from None
        db.session.commit()
        where = f" in “{department.name}”" if department else ""
        verb = "Updated" if existed else "Created"
        note = " (password unchanged)" if existed and password else ""
        click.echo(f"{verb} {user.email}: {role}{where}{note}.")

    @users_group.command("disable")
    @click.argument("email")
    def disable_user(email: str) -> None:
        """Disable a user: ends their sign-in sessions and revokes their tokens."""
        user = accounts.find_user(email)
        if user is None:
            raise click.ClickException(f"No user {email}.")
        accounts.set_user_enabled(user=user, enabled=False, actor=CLI, now=_now())
        db.session.commit()
        click.echo(f"Disabled {user.email}; their sessions and tokens no longer work.")

    @app.cli.group("devices", help="Manage devices.")
    def devices_group() -> None:
        pass

    @devices_group.command("create")
    @click.argument("name")
    @click.option("--department", "department_name", required=True)
    @click.option("--os", "os_name", default="")
    @click.option("--ip", "ip_address", default="")
    @click.option("--group", "group_name", help="Device group (created when missing).")
    def create_device(name: str, department_name: str, os_name: str, ip_address: str,
                      group_name: str | None) -> None:
        """Create a device and print its agent token (shown once, on the last line)."""
        department = _department(department_name)
        now = _now()
        try:
            group_id = None
            if group_name:
                group = devices.find_group(department, group_name)
                if group is None:
                    group = devices.create_group(department=department, name=group_name,
                                                 actor=CLI, now=now)
                group_id = group.id
            device, token = devices.create_device(
                department=department, name=name, os=os_name, ip_address=ip_address,
                group_id=group_id, actor=CLI, now=now)
        except PortalError as exc:
            raise _fail(exc) from None
        db.session.commit()
        click.echo(f"Created device {device.name} in “{department.name}”. "
                   "Its agent token (shown once):")
        click.echo(token)

    @devices_group.command("rotate-token")
    @click.argument("name")
    def rotate_device_token(name: str) -> None:
        """Revoke the device's agent tokens and print a new one (shown once, on the last
        line)."""
        device = devices.find_device(name.strip())
        if device is None:
            raise click.ClickException(f"No device named “{name.strip()}”.")
        token, revoked = accounts.rotate_device_token(device=device, actor=CLI, now=_now())
        db.session.commit()
        click.echo(f"Revoked {revoked} token(s) of device {device.name}; the old ones get "
                   "401 from now on. Its new agent token (shown once):")
        click.echo(token)

    @app.cli.group("tokens", help="Manage API tokens.")
    def tokens_group() -> None:
        pass

    @tokens_group.command("create")
    @click.option("--user", "email", required=True)
    def create_token(email: str) -> None:
        """Create an API token for a user and print it (shown once, on the last line)."""
        user = accounts.find_user(email)
        if user is None:
            raise click.ClickException(f"No user {email}.")
        token = accounts.create_user_token(user=user, actor=CLI, now=_now())
        db.session.commit()
        click.echo(f"API token for {user.email} (shown once):")
        click.echo(token)

    @tokens_group.command("revoke")
    @click.argument("token", required=False)
    @click.option("--user", "email", help="Revoke every API token of this user.")
    def revoke_token(token: str | None, email: str | None) -> None:
        """Revoke one API token, given as TOKEN or on standard input (so it stays out of
        the shell history), or with --user EMAIL every token of that user."""
        if email is not None:
            if token is not None:
                raise click.ClickException("Give a token or --user EMAIL, not both.")
            user = accounts.find_user(email)
            if user is None:
                raise click.ClickException(f"No user {email}.")
            revoked = accounts.revoke_user_tokens(user=user, actor=CLI, now=_now())
            db.session.commit()
            click.echo(f"Revoked {revoked} API token(s) of {user.email}." if revoked
                       else f"{user.email} has no live API tokens.")
            return
        if token is None or token == "-":
            token = (click.prompt("Token to revoke", hide_input=True)
                     if sys.stdin.isatty() else sys.stdin.readline())
        token = token.strip()
        if not token:
            raise click.ClickException(
                "Give the token to revoke (as an argument or on standard input), "
                "or --user EMAIL.")
        row = accounts.revoke_token(token=token, actor=CLI, now=_now())
        if row is None:
            raise click.ClickException("No live API token matches (unknown or revoked).")
        db.session.commit()
        owner = f"device {row.device.name}" if row.device else f"user {row.user.email}"
        click.echo(f"Revoked the API token of {owner}, created "
                   f"{row.created_at:%Y-%m-%d %H:%M} UTC.")

    @app.cli.command("scheduler")
    @click.option("--wait/--no-wait", default=True,
                  help="When another scheduler holds the lock, wait for it (default).")
    def scheduler_command(wait: bool) -> None:
        """Run the job process: request expiry, audit sealing and outbox delivery. On
        PostgreSQL one is elected by an advisory lock; a standby waits on the lock itself
        and takes over (start-up sweep at once) as soon as the running one's database
        session ends."""
        import signal

        from portal.election import SchedulerLock

        def stop(signum, frame):  # SIGTERM stops as Ctrl+C does: the running job finishes
            raise SystemExit(0)

        signal.signal(signal.SIGTERM, stop)
        lock = SchedulerLock(app)
        try:
            while True:
                if not lock.acquire(wait=False):
                    if not wait:
                        raise click.ClickException("Another scheduler is running.")
                    click.echo("Another scheduler holds the lock; standing by.")
                    lock.acquire(wait=True)
                if not _run_scheduler(lock):
                    return
                lock.release()
                click.echo("Lost the scheduler lock (its database connection is gone); "
                           "standing by again.", err=True)
        except (KeyboardInterrupt, SystemExit):
            pass
        finally:
            lock.release()

    def _run_scheduler(lock) -> bool:
        """Run the jobs while the lock is held: False once stopped, True if it was lost."""
        import time

        from portal.election import LOCK_CHECK_SECONDS
        from portal.jobs import build_scheduler, take_over

        if lock.is_elected:
            take_over(app)
        scheduler = build_scheduler(app)
        scheduler.start()
        click.echo("Scheduler running: expiry, audit sealing and outbox delivery. "
                   "Ctrl+C stops it.")
        try:
            while lock.is_held():
                time.sleep(LOCK_CHECK_SECONDS)
            return True
        except (KeyboardInterrupt, SystemExit):
            return False
        finally:
            scheduler.shutdown(wait=True)

    @app.cli.group("audit", help="The audit trail.")
    def audit_group() -> None:
        pass

    @audit_group.command("verify")
    @click.option("--checkpoint", "checkpoint_line", metavar="LINE",
                  help="A line printed by `audit checkpoint` earlier: also find a truncation "
                       "or rewrite since then.")
    @click.option("--export", "export_file", metavar="FILE",
                  type=click.Path(exists=True, dir_okay=False, readable=True),
                  help="A JSON Lines file from the audit log's \"Export JSON Lines\": check "
                       "it against the chain (exit 1 naming its first bad line).")
    def verify(checkpoint_line: str | None, export_file: str | None) -> None:
        """Exit 0 when the chain and its head are intact, else 1 naming the first bad event.
        With --export FILE: whether an exported JSON Lines file is exactly what the audit
        trail holds (every event, every byte, and its chain head a point of the chain)."""
        if export_file is not None:
            _verify_export(export_file)
            return
        checkpoint = None
        if checkpoint_line is not None:
            checkpoint = parse_checkpoint(checkpoint_line)
            if checkpoint is None:
                raise click.BadParameter("not a line printed by `audit checkpoint`.",
                                         param_hint="--checkpoint")
        result = audit.verify_trail(checkpoint=checkpoint)
        if result.unsealed:
            click.echo(f"{result.unsealed} event(s) not yet sealed (the oldest from "
                       f"{result.oldest_unsealed_at:%Y-%m-%d %H:%M:%S} UTC): the scheduler "
                       "seals them within a second; they are not covered by this check.")
        if result.broken is None:
            against = f", and it still holds the checkpoint's event #{checkpoint.seq}" \
                if checkpoint else ""
            click.echo(f"Audit trail intact: {result.checked} events verified{against}.")
            return
        click.echo(f"Audit trail broken at {result.broken.describe()}.", err=True)
        raise SystemExit(1)

    def _verify_export(path: str) -> None:
        from portal.services.audit_export_check import ExportRejected, check_export

        def lines():
            with open(path, "rb") as handle:
                yield from handle

        try:
            result = check_export(lines)
        except ExportRejected as exc:
            click.echo(f"Export rejected: {exc.message}.", err=True)
            raise SystemExit(1) from None
        except OSError as exc:
            raise click.ClickException(f"Can't read {path}: {exc.strerror}.") from None
        click.echo(result.summary())

    @audit_group.command("checkpoint")
    def checkpoint_command() -> None:
        """Seal what is pending, then print the chain's head as one line to keep outside the
        database (give it to `audit verify --checkpoint` later)."""
        try:
            while audit.seal_pending(_now()):
                db.session.commit()
        except PortalError as exc:
            raise _fail(exc) from exc
        db.session.commit()
        click.echo(audit.current_checkpoint(_now()).line())
