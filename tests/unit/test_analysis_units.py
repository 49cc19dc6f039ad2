"""Pieces of the analysis layer that need no server: configs, schemas, plans, plot, CLI."""

from __future__ import annotations

import io
import json
import re
from contextlib import contextmanager

import pandas as pd
import pytest
from click.testing import CliRunner

from hsg.analysis.pagerank import PageRankConfig, normalized
from hsg.analysis.plots import plot_fragmentation
from hsg.analysis.targets import (
    SCHEMA,
    Target,
    TargetsConfig,
    TargetsReport,
    load_targets,
    model_provenance,
)
from hsg.analysis.topology import TopologyConfig, bipartite_density, removal_thresholds
from hsg.cli import cli
from hsg.db.cypher import list_queries
from hsg.db.errors import DatabaseError

ANALYSIS_QUERIES = {
    "annotation_enrichment",
    "differential_centrality",
    "feature_neighbourhood",
    "label_composition",
    "label_summary",
    "most_shared_features",
    "sequences_for_feature",
    "top_features_for_label",
}


def test_targets_model_is_named_by_its_name_with_the_hash_beside_it():
    # Model nodes are keyed by checkpoint hash, with the model's name in `name`
    node = {"id": "ab12", "name": "nt-v2-50m", "version": "v2", "checkpoint_hash": "ab12"}
    expected = {"id": "nt-v2-50m", "version": "v2", "checkpoint_hash": "ab12"}
    assert model_provenance(node) == expected
    assert model_provenance({"id": "ab12", "name": "nt-v2-50m", "version": "v2"}) == expected
    # nodes written before, keyed by name, read the same
    legacy = {"id": "nt-v2-50m", "version": "v2", "checkpoint_hash": "ab12"}
    assert model_provenance(legacy) == expected
    assert model_provenance({}) == {"id": None, "version": None, "checkpoint_hash": None}


def test_pagerank_config_round_trips_and_validates():
    config = PageRankConfig(damping=0.5, weight="activation", orientation="natural")
    assert PageRankConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert PageRankConfig.from_dict({"damping": 0.7}).damping == 0.7
    with pytest.raises(ValueError, match="unknown key"):  # strict like every hsg config
        PageRankConfig.from_dict({"damping": 0.7, "unknown": 1})
    for bad in (
        {"damping": 1.0},
        {"weight": "tokens"},
        {"orientation": "reverse"},
        {"max_iterations": 0},
        {"tolerance": -1},
    ):
        with pytest.raises(ValueError):
            PageRankConfig(**bad)


def test_topology_config_round_trips():
    config = TopologyConfig(PageRankConfig(damping=0.6), max_fraction=0.3, steps=3)
    assert TopologyConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert config.fractions() == [0.0, 0.1, 0.2, 0.3]
    with pytest.raises(ValueError):
        TopologyConfig(PageRankConfig(orientation="natural"))
    with pytest.raises(ValueError):
        TopologyConfig(max_fraction=0)


def test_targets_config_validates():
    assert TargetsConfig.from_dict(TargetsConfig("a", "b").to_dict()) == TargetsConfig("a", "b")
    for bad in ({"down": "a"}, {"top": 0}, {"min_support": -1}, {"pseudo_count": 0.0}):
        with pytest.raises(ValueError):
            TargetsConfig(**{"up": "a", "down": "b", **bad})


def _report() -> TargetsReport:
    targets = [
        Target(1, "m/L1/x/3", 3, "m/L1/x", 1, 4.5, 0.2, 0.01, 12, 3, 40, 5, False),
        Target(2, "m/L1/x/7", 7, "m/L1/x", 1, 3.1, 0.05, 0.0, 4, 0, 9, 0, True),
    ]
    return TargetsReport(
        sae={"id": "m/L1/x", "layer": 1, "config_sha256": "ab" * 32},
        parameters={"up": "a", "down": "b", "top": 2, "min_support": 3, "pseudo_count": 1e-6},
        candidates=2,
        targets=targets,
        created="2026-01-01T00:00:00+00:00",
    )


def test_targets_json_round_trip_and_schema(tmp_path):
    report = _report()
    path = tmp_path / "targets.json"
    path.write_text(report.to_json())
    data = json.loads(path.read_text())
    assert data["schema"] == SCHEMA
    assert set(data) == {
        "schema",
        "created",
        "sae",
        "parameters",
        "candidates",
        "warnings",
        "targets",
    }
    assert data["targets"][0]["feature"] == "m/L1/x/3" and data["targets"][0]["index"] == 3
    assert load_targets(path) == report
    path.write_text(json.dumps({**data, "schema": "something/else"}))
    with pytest.raises(ValueError, match="not a hsg.targets/1"):
        load_targets(path)


def test_targets_tsv_reads_back_with_pandas():
    frame = pd.read_csv(io.StringIO(_report().to_tsv()), sep="\t", comment="#")
    assert list(frame.feature) == ["m/L1/x/3", "m/L1/x/7"]
    assert list(frame.one_sided) == [False, True]
    assert frame.log2_fold_change.tolist() == [4.5, 3.1]


def test_normalised_scores_sum_to_one_and_sort():
    rows = [
        {"feature": "s/0", "index": 0, "pagerank": 1.0, "support": 1, "activations": 1},
        {"feature": "s/1", "index": 1, "pagerank": 3.0, "support": 2, "activations": 4},
        {"feature": "s/2", "index": 2, "pagerank": 1.0, "support": 1, "activations": 2},
    ]
    scores = normalized(rows)
    assert [s.index for s in scores] == [1, 0, 2]  # ties by index
    assert sum(s.pagerank_normalized for s in scores) == pytest.approx(1.0)
    assert scores[0].pagerank_normalized == pytest.approx(0.6)


def test_density_and_removal_plan():
    assert bipartite_density(6, 3, 4) == 0.5
    assert bipartite_density(0, 0, 4) == 0.0
    plan = removal_thresholds([0.1, 0.5, 0.3, 0.3], [0.0, 0.25, 0.5, 1.0])
    assert plan == [(0.0, float("inf")), (0.25, 0.5), (0.5, 0.3), (1.0, 0.1)]
    # half up: 1 of 2 features is removed at 25 %
    assert removal_thresholds([0.2, 0.1], [0.25]) == [(0.25, 0.2)]


def test_fragmentation_plot_is_a_png(tmp_path):
    curve = [
        {"fraction": f, "components": 1 + int(10 * f), "density": 0.3 - f / 2} for f in (0, 0.25)
    ]
    report = {
        "sae": "s",
        "labels": [{"label": "a", "fragmentation": curve}, {"label": "b", "fragmentation": curve}],
    }
    path = plot_fragmentation(report, tmp_path / "f.png")
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_named_queries_declare_exactly_the_parameters_they_use():
    queries = {q.name: q for q in list_queries()}
    assert ANALYSIS_QUERIES <= set(queries)
    for name in ANALYSIS_QUERIES:
        query = queries[name]
        used = set(re.findall(r"\$([A-Za-z_][A-Za-z0-9_]*)", query.text))
        assert used == set(query.params), name
        assert query.description, name


def test_cli_help_lists_analysis_commands():
    runner = CliRunner()
    for args in (
        ["analyze", "--help"],
        ["analyze", "pagerank", "--help"],
        ["analyze", "topology", "--help"],
        ["targets", "--help"],
    ):
        result = runner.invoke(cli, args)
        assert result.exit_code == 0, result.output
        assert "Usage:" in result.output


def test_cli_usage_errors_need_no_server():
    runner = CliRunner()
    result = runner.invoke(cli, ["targets", "--up", "a", "--down", "a"])
    assert result.exit_code == 2 and "must differ" in result.output
    result = runner.invoke(cli, ["analyze", "pagerank", "--label", "a", "--damping", "1.5"])
    assert result.exit_code == 2 and "damping" in result.output
    result = runner.invoke(cli, ["targets", "--up", "a", "--down", "b", "--top", "0"])
    assert result.exit_code == 2


def test_cli_reports_missing_gds_plugin(monkeypatch):
    @contextmanager
    def no_gds(settings):
        raise DatabaseError("the Graph Data Science plugin is not installed on bolt://x")
        yield  # pragma: no cover

    monkeypatch.setattr("hsg.analysis.open_session", no_gds)
    runner = CliRunner()
    for args in (
        ["analyze", "pagerank", "--label", "a"],
        ["targets", "--up", "a", "--down", "b"],
        ["analyze", "topology", "--label", "a", "--out", "unused"],
    ):
        result = runner.invoke(cli, args)
        assert result.exit_code == 1, result.output
        assert "Graph Data Science plugin is not installed" in result.output
