"""The report: one style per registry method, the methods table (intervals, AUC), and the four files."""

import json
import os

from jaxmask import baselines, report


def results():
  """A results dict shaped like experiment.run's, with hand-made rows for three methods at k = 1, 2, 4."""
  row = lambda k, rate, lo, hi, **extra: {"k": k, "units": list(range(k)), "heldout_flip_rate": rate,
                                          "ci95": [lo, hi], "mean_logit_diff_change": 2 * rate, **extra}
  sweep_row = lambda lam, units, rate: {
      "method": "hard_concrete", "lambda": lam, "units": units, "expected_l0": float(len(units)),
      "train_flip_rate": rate, "heldout_flip_rate": rate, "heldout_flip_rate_by_condition": {"a": rate},
      "control_kl": 0.01, "control_kl_merged": 0.005, "control_perplexity": 50.0, "other_phenomenon_flip_rate": 0.1}
  return {
      "config": {"phenomenon": "agreement", "target_flip": 0.9, "only_known": True, "select_by": "overall",
                 "replacement": "counterfactual"},
      "model": {"checkpoint": "lm", "layers": 1, "hidden": 8, "num_units": 8, "vocab_size": 8},
      "items": {"search": {"known": 64}, "heldout": {"items": 70, "skipped_oov": 0, "known": 64},
                "heldout_clean_accuracy": 1.0, "heldout_clean_accuracy_by_condition": {"a": 1.0},
                "control_clean_perplexity": 40.0},
      "sweep": [sweep_row(0.02, [0, 1, 2], 1.0), sweep_row(5.0, [], 0.0)],
      "selected": {"method": "hard_concrete", "lambda": 0.02, "units": [0, 1, 2], "units_readable": ["L1:h:0"] * 3,
                   "units_lakretz": [1, 2, 3], "size": 3, "fraction_of_units": 0.375, "reached_target": True,
                   "heldout_flip_rate": 1.0, "heldout_flip_rate_by_condition": {"a": 1.0}, "control_kl": 0.01,
                   "control_kl_merged": 0.005, "control_perplexity": 50.0, "other_phenomenon": "gender",
                   "other_phenomenon_flip_rate": 0.1},
      "baselines": {
          "hard_concrete": [row(1, 0.0, 0.0, 0.0, seed_min=0.0, seed_max=0.0), row(2, 1.0, 1.0, 1.0, seed_min=0.5,
                                                                                     seed_max=1.0),
                            row(4, 1.0, 1.0, 1.0, seed_min=1.0, seed_max=1.0)],
          "greedy": [row(1, 0.0, 0.0, 0.0), row(2, 0.5, 0.375, 0.625), row(4, 1.0, 1.0, 1.0)],
          "random": [row(1, 0.0, 0.0, 0.0, heldout_flip_rate_sd=0.0), row(2, 0.1, 0.05, 0.15, heldout_flip_rate_sd=0.2),
                     row(4, 0.3, 0.25, 0.35, heldout_flip_rate_sd=0.25)]},
      "timing": {"total_seconds": 1.0}}


def test_every_registry_method_has_its_own_style():
  assert list(report.METHOD_STYLE) == list(baselines.METHODS)
  assert len({style[1] for style in report.METHOD_STYLE.values()}) == len(baselines.METHODS)
  assert report.METHOD_STYLE["greedy"] == ("greedy patching", "C8", "P")


def test_summary_has_one_row_per_method_with_intervals_and_auc():
  text = report.summary(results())
  assert "| method | k=1 | k=2 | k=4 | AUC |" in text
  # AUC of greedy: (1 * (0 + 0.5) / 2 + 2 * (0.5 + 1) / 2) / 3 = 0.583.
  assert "| greedy patching | 0.0% [0.0, 0.0] | 50.0% [37.5, 62.5] | 100.0% [100.0, 100.0] | 0.583 |" in text
  assert ("| random | 0.0% [0.0, 0.0] (sd 0.0%) | 10.0% [5.0, 15.0] (sd 20.0%) | 30.0% [25.0, 35.0] (sd 25.0%) "
          "| 0.150 |") in text
  assert "100.0% [100.0, 100.0] (seeds 50.0% to 100.0%)" in text
  assert "| greedy patching | 0.000 | 1.000 | 2.000 |" in text  # the mean logit-difference change


def test_write_makes_the_four_files(tmp_path):
  traces = {"units": ["L1:h:0"], "positions": 2, "words": ["<eos>", "the"], "groups": {"a": [[0.0, 1.0]]}}
  report.write(str(tmp_path), results(), traces)
  for name in ("results.json", "pareto.png", "traces.png", "summary.md"):
    assert os.path.getsize(tmp_path / name) > 500
  assert json.load(open(tmp_path / "results.json"))["baselines"]["greedy"][1]["ci95"] == [0.375, 0.625]
