"""Members of a department, listed a page of users at a time."""
from __future__ import annotations

from sqlalchemy import select

from portal.extensions import db
from portal.models import Department, Membership, User
from portal.services.pages import Page, fetch_page
from portal.domain.errors import NotFoundError


def list_members(department: Department, *, after: str | None, limit: int) -> Page:
    """Users of the department ordered by email, each with their memberships there
    (two queries whatever the page size)."""
    query = (
        select(User)
        .where(select(Membership.id).where(Membership.user_id == User.id,
                                          Membership.department_id == department.id).exists())
        .order_by(User.email)
    )
    if after:
        query = query.where(User.email > after)
    page = fetch_page(query, limit, key=lambda user: user.email)
    users = page.items
    memberships: dict[int, list[Membership]] = {u.id: [] for u in users}
    if users:
        for membership in db.session.scalars(
            select(Membership)
            .where(Membership.department_id == department.id,
                   Membership.user_id.in_(memberships.keys()))
            .order_by(Membership.role)
        ):
            memberships[membership.user_id].append(membership)
    return Page([(u, memberships[u.id]) for u in users], page.next_after)


def get_membership(department: Department, membership_id: int) -> Membership:
    membership = db.session.get(Membership, membership_id)
    if membership is None or membership.department_id != department.id:
        raise NotFoundError("That role is no longer held.")
    return membership
