"""The Label Studio side of a team: overlap, who the users are, and the review tab.

Label Studio's open edition has the overlap settings (a project's ``maximum_annotations``:
a task counts as labelled there only once that many users answered it, and its label stream
hands a task to each of them) but no agreement, consensus or review; those are the loop's
(:mod:`al_loop.evaluation.agreement`, :mod:`al_loop.loop.team`). What is asked of Label
Studio here goes through :mod:`al_loop.studio.client`'s one retry policy.
"""
from __future__ import annotations

from label_studio_sdk import LabelStudio

from al_loop.errors import LabelStudioError
from al_loop.studio.client import call_idempotent, find_view, put_view, round_view_data

REVIEW_TAB = "Review"
# A filter no task passes: Label Studio shows every task for a tab without filter items.
_NO_TASK = -1


def set_overlap(client: LabelStudio, url: str, project: int, annotators: int) -> None:
    """Every task of ``project`` needs ``annotators`` answers from different users (all tasks:
    ``overlap_cohort_percentage`` 100). Sending the same values again changes nothing."""
    call_idempotent(url, f"setting the overlap of project {project} to {annotators}", client.projects.update,
                project, maximum_annotations=annotators, overlap_cohort_percentage=100)


def user_names(client: LabelStudio, url: str) -> dict[int, str]:
    """Label Studio's users by id: their email (what a team knows them by). Listing them takes an
    administrator's token; with another, {} (the loop then names them ``user <id>``)."""
    try:
        users = call_idempotent(url, "listing the users", client.users.list)
    except LabelStudioError as exc:
        if exc.status in (401, 403):
            return {}
        raise
    return {int(u.id): u.email or u.username or f"user {u.id}" for u in users}


def user_name(names: dict[int, str], user: int) -> str:
    return names.get(user, f"user {user}")


def put_review_tab(client: LabelStudio, url: str, project: int, task_ids: list[int]) -> int | None:
    """The 'Review' tab holds exactly ``task_ids`` (the tasks the team disagrees on and no reviewer
    has answered yet); emptied, not deleted, once none is left. None: no tab was ever needed."""
    if task_ids:
        return put_view(client, url, project, REVIEW_TAB, sorted(task_ids))
    view = find_view(client, url, project, REVIEW_TAB)
    if view is not None:
        data = round_view_data(REVIEW_TAB, [_NO_TASK])
        call_idempotent(url, f"emptying tab {REVIEW_TAB!r}", client.views.update, str(view), project=project, data=data)
    return view
