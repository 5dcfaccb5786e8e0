"""Label Studio on PostgreSQL (issue 39): the suite's Label Studio keeps its data in a real
PostgreSQL server started on this machine, and `al-loop demo --database postgresql` starts one."""
from __future__ import annotations

import pytest

from al_loop.demo.run import _database
from al_loop.demo.servers import PostgresServer, postgres_bin
from al_loop.errors import LoopError, ServerError


def _has_postgres() -> bool:
    try:
        postgres_bin()
    except ServerError:
        return False
    return True


LABELS = ("<View><Image name='image' value='$image'/><RectangleLabels name='box' toName='image'>"
          "<Label value='pit'/></RectangleLabels></View>")
needs_postgres = pytest.mark.skipif(not _has_postgres(), reason="no PostgreSQL server on this machine: `make postgres`")


@needs_postgres
def test_the_suites_label_studio_stores_its_projects_in_postgresql(label_studio, tmp_path):
    from al_loop.studio.client import connect

    assert label_studio.database == "postgresql"
    client = connect(label_studio.url, label_studio.token)
    project = client.projects.create(title="kept in PostgreSQL", label_config=LABELS)
    client.tasks.create(project=project.id, data={"image": "/data/local-files/?d=x.png"})
    rows = label_studio.postgres.query(f"SELECT title, (SELECT count(*) FROM task WHERE project_id = {project.id}) "
                                       f"FROM project WHERE id = {project.id};")
    assert rows == "kept in PostgreSQL|1"
    # and not in a SQLite file beside it
    assert not list(label_studio.data_dir.rglob("*.sqlite3"))


@needs_postgres
def test_a_postgres_server_starts_with_its_database_and_stops_clean():
    server = PostgresServer(database="campaign").start()
    folder = server.folder
    try:
        assert server.query("SELECT current_database();") == "campaign"
        assert server.label_studio_env()["POSTGRE_HOST"] == str(folder)
        assert server.query("SELECT name FROM pg_available_extensions WHERE name IN ('pg_trgm', 'btree_gin') "
                            "ORDER BY name;").split() == ["btree_gin", "pg_trgm"]  # Label Studio's migrations need both
    finally:
        server.stop()
    assert not folder.exists()


def test_the_demo_refuses_an_unknown_database():
    with pytest.raises(LoopError, match="unknown database 'mysql'"):
        _database("mysql", print)
    assert _database("sqlite", print) is None
