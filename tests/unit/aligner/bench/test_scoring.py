import json

from aligner.bench import scoring
from serve.cli.main import main


def test_scoring_bench_reports_side_by_side_ratios(tmp_path):
    out = tmp_path / "scoring.json"
    assert (
        main(
            [
                "bench",
                "scoring",
                "--models",
                "tiny",
                "--candidates",
                "1,16",
                "--lengths",
                "64",
                "--repeats",
                "1",
                "--device",
                "cpu",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    report = json.loads(out.read_text())
    assert report["benchmark"] == "scoring" and report["device"] == "cpu"
    rows = [r for r in report["results"] if "candidates" in r]
    assert [(r["candidates"], r["max_len"]) for r in rows] == [(1, 64), (16, 64)]
    for row in rows:
        assert set(row["seconds"]) == {"one_at_a_time", "bucketed_eager"}
        assert row["bucketed_over_one_at_a_time"] > 0
    (stats,) = [r["scorer_stats"] for r in report["results"] if "scorer_stats" in r]
    assert stats["bucketed_eager"]["sequences"] > 0
    target = report["targets"]["bucketed_over_one_at_a_time"]
    assert target["target_min"] == scoring.TARGETS["bucketed_over_one_at_a_time"]["min"]
    assert [m["max_len"] for m in target["measured"]] == [64]


def test_bench_rejects_unknown_models(capsys):
    assert main(["bench", "scoring", "--models", "huge"]) == 2
    assert "--models: unknown model 'huge'; allowed: tiny, small" in capsys.readouterr().err
