"""The docs' experiment tables come from a simulate report by one command: the figures in them
are the report's, worked out here by hand on four rows."""
from al_loop.experiment.tables import main, tables


def _row(strategy: str, seed: int, recall: float, typed: float | None = None) -> dict:
    row = {"strategy": strategy, "seed": seed, "round": 1, "labelled": 10, "object_recall": recall,
           "object_precision": 0.5, "object_f1": 0.5, "miou": 0.5, "stop_kappa": None}
    if typed is not None:
        row |= {"typed_object_recall": typed, "typed_object_recall_macro": typed / 2, "objects_mistyped": 4.0 + seed,
                "object_recall[crater]": 0.25 * seed, "object_recall[skylight]": 1.0}
    return row


def test_a_typed_report_gets_the_types_table_and_typed_differences(tmp_path, capsys):
    rows = [_row("entropy", 0, 0.2, 0.1), _row("entropy", 1, 0.4, 0.3), _row("random", 0, 0.1, 0.1),
            _row("random", 1, 0.1, 0.1)]
    text = tables({"config": {"strategies": ["entropy", "random"]}, "rounds": rows})
    assert "| recall of crater / skylight |" in text
    # entropy: typed recall mean 0.2, macro 0.1, mistyped (4 + 5) / 2, crater (0 + 0.25) / 2 -> 0.12 at 2 places
    assert "| 10 | entropy | 2 | 0.300 ± 1.271 | 0.200 ± 1.271 | 0.12 / 1.00 | 0.100 | 4.5 |" in text
    # paired against random: recall +0.2 (both seeds ahead), typed recall +0.1
    assert "+0.200 [" in text and "+0.100 [" in text and "2 / 0" in text
    binary = tables({"config": {"strategies": ["entropy", "random"]},
                     "rounds": [_row("entropy", 0, 0.2), _row("random", 0, 0.1)]})
    assert "typed" not in binary and "object recall minus random" in binary
    path = tmp_path / "r.json"
    path.write_text(__import__("json").dumps({"config": {"strategies": ["entropy", "random"]}, "rounds": rows}))
    assert main([str(path)]) == 0 and "pits found but mistyped" in capsys.readouterr().out
