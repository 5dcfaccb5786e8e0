"""What each Label Studio project told the backend's ``/setup``: its labelling config and
how to reach Label Studio, by project id."""
from __future__ import annotations

from dataclasses import dataclass, field

from al_loop.errors import SchemaError
from al_loop.studio.fetch import LabelStudioAccess
from al_loop.studio.label_config import LabelSchema, parse_label_config

# How Label Studio names a project: ``"<id>.<created timestamp>"`` towards backends, ``{"id": ...}``
# in webhooks, a plain id elsewhere.
ProjectKey = int | str | dict | None


@dataclass
class ProjectLink:
    """What ``/setup`` told us about a project: its config and how to reach Label Studio."""

    schema: LabelSchema | None = None
    access: LabelStudioAccess = field(default_factory=LabelStudioAccess)


def project_id(key: ProjectKey) -> int | None:
    """The project's id in any of the forms Label Studio sends (see :data:`ProjectKey`)."""
    if isinstance(key, dict):
        key = key.get("id")
    try:
        return int(str(key).split(".")[0])
    except (TypeError, ValueError):
        return None


class Projects:
    """The projects linked by ``/setup``; ``default`` is the backend's own Label Studio access."""

    def __init__(self, default: LabelStudioAccess):
        self.default = default
        self._links: dict[int, ProjectLink] = {}

    def link(self, project_key: ProjectKey, schema_xml: str | None, hostname: str | None,
             token: str | None) -> ProjectLink:
        """Remember a project's config and Label Studio address (``/setup``); raises SchemaError."""
        schema = parse_label_config(schema_xml) if schema_xml else None
        access = LabelStudioAccess(hostname, token) if hostname else self.default
        link = ProjectLink(schema, access)
        pid = project_id(project_key)
        if pid is not None:
            self._links[pid] = link
        return link

    def project(self, project_key: ProjectKey) -> ProjectLink:
        """What ``/setup`` told about the project, else the backend's own Label Studio settings."""
        return self._links.get(project_id(project_key)) or ProjectLink(access=self.default)

    def schema(self, project_key: ProjectKey, label_config: str | None) -> LabelSchema:
        """The config sent with the request, else the project's from ``/setup``; raises SchemaError."""
        if label_config:
            return parse_label_config(label_config)
        schema = self.project(project_key).schema
        if schema is None:
            raise SchemaError("no labelling config: send label_config or connect the backend to the project first")
        return schema
