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

    from al_loop.settings import markdown_table, where

    if args.markdown:
        print(markdown_table())
        return 0
    s = settings_of(args)
    rows = s.rows()
    if args.json:
        print(json.dumps({row["name"]: {k: v for k, v in row.items() if k != "name"} for row in rows}, indent=2))
        return 0
    exists = workspace_of(s).exists()
    print(f"workspace {s.workspace}" + ("" if exists else " (none there yet: `al-loop init` makes it)"))
    print(f"{'setting':<22}{'value':<40}source")
    for row in rows:
        source = row["source"] if row["source"] == "default" else f"{row['source']} ({where(row['name'], row['source'])})"
        print(f"{row['name']:<22}{str(row['value']):<40}{source}")
    return 0
