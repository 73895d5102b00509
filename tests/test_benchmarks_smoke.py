"""The benchmark harness runs end to end on a tiny UNet and reports a markdown table.

Only the JAX side is exercised (`--no-torch`: torch/diffusers are optional extras). No timing is
asserted: tests do not time things.
"""

from __future__ import annotations

from benchmarks import run


def test_tiny_run_prints_training_and_mfu_tables_and_writes_results(tmp_path, capsys):
    results = tmp_path / "RESULTS.md"
    results.write_text("# Results\n\nHand-written analysis that must survive.\n")

    assert run.main(["--tiny", "--no-torch", "--only", "train,mfu",
                     "--results", str(results)]) == 0

    out = capsys.readouterr().out
    assert "| shape | batch | params jaxdiff / diffusers |" in out
    assert "| 16x16x1 | 4 |" in out and "| 32x32x3 | 4 |" in out
    assert "jaxdiff MFU" in out
    text = results.read_text()
    assert "Hand-written analysis that must survive." in text
    assert text.count("<!-- BEGIN tiny -->") == 1 and "<!-- END tiny -->" in text
    assert "load average" in text and "jaxlib" in text


def test_write_results_replaces_only_its_own_block(tmp_path):
    path = tmp_path / "R.md"
    path.write_text("intro\n<!-- BEGIN full -->\nold full\n<!-- END full -->\n"
                    "<!-- BEGIN quick -->\nold quick\n<!-- END quick -->\noutro\n")

    run.write_results(path, "quick", "new quick\n")

    assert path.read_text() == ("intro\n<!-- BEGIN full -->\nold full\n<!-- END full -->\n"
                                "<!-- BEGIN quick -->\nnew quick\n<!-- END quick -->\noutro\n")


def test_targets_report_the_ratio_and_whether_it_is_met():
    results = {"train": [{"shape": "16x16x1", "ratio": 0.5}, {"shape": "32x32x3", "ratio": 0.9}],
               "compile": {"steps": [10, 1000], "sampler_ratio": 1.1,
                           "sampler_ratio_cpu": 1.05}}

    lines = run.targets(results)

    assert lines[0].endswith("0.50x (target <= 0.8x): met")
    assert lines[1].endswith("0.90x (target <= 0.8x): NOT met")
    assert "1.05x CPU (target <= 1.3x): met" in lines[2]
