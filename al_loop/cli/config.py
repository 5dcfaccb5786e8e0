"""``al-loop config``: every setting, its value and where it came from."""
from __future__ import annotations

from al_loop.cli.options import json_flag, settings_of, workspace_flag, workspace_of


def add_parser(sub) -> None:
    config = sub.add_parser("config", help="every setting, its value and where it came from (flag, environment, workspace, default)",
                            description="Resolves every setting as the other commands do (flag, then environment, then "
                            "the workspace, then the default) and says where each value came from.")
    workspace_flag(config)
    json_flag(config, "the settings")
    config.add_argument("--markdown", action="store_true", help="print the reference table of every setting (the README's)")


def run(args) -> int:
    import json

    from al_loop.settings import markdown_table, setting_fields, where

    if args.markdown:
        print(markdown_table())
        return 0
    s = settings_of(args)
    workspace = workspace_of(s)
    exists = workspace.exists()
    rows = _as_the_loop_uses(s.rows(), workspace.config() if exists else None)
    if args.json:
        print(json.dumps({row["name"]: {k: v for k, v in row.items() if k != "name"} for row in rows}, indent=2))
        return 0
    print(f"workspace {s.workspace}" + ("" if exists else " (none there yet: `al-loop init` makes it)"))
    groups = {f.name: f.metadata["group"] for f in setting_fields()}
    _table([r for r in rows if groups[r["name"]] not in ("backend", "limits")], where)
    print("\nthe ML backend server's own (al-loop serve-backend only):")
    _table([r for r in rows if groups[r["name"]] in ("backend", "limits")], where)
    return 0


def _as_the_loop_uses(rows: list[dict], config) -> list[dict]:
    """The workspace's Label Studio address where no flag or variable names one: the loop's
    commands talk to the Label Studio that `init` recorded in config.yaml."""
    if config is None:
        return rows
    return [{**r, "value": config.label_studio_url, "source": "workspace-config"}
            if r["name"] == "label_studio_url" and r["source"] == "default" else r for r in rows]


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _table(rows: list[dict], where) -> None:
    """Name, value and source in 100 columns."""
    print(f"{'setting':<22}{'value':<40}source")
    for row in rows:
        if row["source"] == "workspace-config":
            source = "workspace config.yaml (from init)"
        elif row["source"] == "default":
            source = "default"
        else:
            source = f"{row['source']} ({where(row['name'], row['source'])})"
        print(f"{row['name']:<22}{_fit(str(row['value']), 38):<40}{_fit(source, 38)}")
