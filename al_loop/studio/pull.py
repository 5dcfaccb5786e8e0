"""What Label Studio holds for a project now: its tasks' answers, and their tiles' bytes.

``next-batch`` pulls with these before each round, and ``map --workspace`` to put the
expert's masks on the map.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from label_studio_sdk import LabelStudio

from al_loop.errors import LoopError
from al_loop.studio.answers import Answer, answers_by_user, latest_answer, unknown_labels, was_skipped
from al_loop.studio.client import annotated_tasks, list_tasks
from al_loop.studio.fetch import LOCAL_FILES_PREFIX, ImageFetcher, LabelStudioAccess, local_files_root
from al_loop.studio.label_config import LabelSchema


@dataclass
class TaskAnswers:
    """What Label Studio holds for the project's tasks right now."""

    answers: dict[int, Answer]  # task id -> newest submitted annotation, of tasks answered by enough experts
    skipped: set[int]
    present: dict[int, str]  # every task id in the project -> image URL
    # task id -> user id -> that user's newest submitted annotation, of every task anyone answered
    by_user: dict[int, dict[int, Answer]] = field(default_factory=dict)


def pull_answers(client: LabelStudio, url: str, project: int, schema: LabelSchema, annotators: int = 1) -> TaskAnswers:
    """Every task's answers; a task counts as answered (``answers``) once ``annotators`` different
    users answered it. A label the config does not know is a LoopError naming each task to fix
    (training on it would guess at what the expert meant)."""
    present = {t["id"]: str((t.get("data") or {}).get(schema.image_key, "")) for t in list_tasks(client, url, project)}
    answers, skipped, problems, by_user = {}, set(), [], {}
    for task in annotated_tasks(client, project, url):
        task_id = int(task["id"])
        answer = latest_answer(task)
        if answer is None:
            if was_skipped(task):
                skipped.add(task_id)
            continue
        by_user[task_id] = answers_by_user(task)
        for each in by_user[task_id].values():
            problems += [f"task {task_id}: {p}" for p in unknown_labels(each, schema)]
        if len(by_user[task_id]) >= annotators:
            answers[task_id] = answer
    if problems:
        raise LoopError(
            "annotations hold labels the project's labelling config does not know; fix them in Label Studio "
            "(or add the label to the config) and run again:\n  " + "\n  ".join(problems)
        )
    return TaskAnswers(answers, skipped, present, by_user)


class TileSource:
    """Task images through Label Studio, or straight from disk below ``local_root`` (or below the
    imported ``images`` folder, whose local-files root is found from a task's URL)."""

    def __init__(self, url: str, token: str, images: str | None, local_root: str | None, sample_url: str | None):
        root = local_root
        if root is None and images and sample_url and LOCAL_FILES_PREFIX in sample_url:
            root = local_files_root(images, sample_url)
        self.access = LabelStudioAccess(url, token)
        self.fetcher = ImageFetcher(root, self.access)

    def read(self, url: str) -> bytes:
        return self.fetcher.fetch(url, self.access)
