"""`stepcredit prm label | train | score | eval | search` end to end on small inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest

import stepcredit as sc
from stepcredit.cli import main
from stepcredit.prm.models import load_model

KW = ["--env-kwargs", "length=3", "--env-kwargs", "n_candidates=3", "--env-kwargs", "max_number=5"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("prm")
    mc, truth, model = d / "mc.parquet", d / "truth.jsonl", d / "prm"
    assert main(["prm", "label", "--env", "arith_chain", *KW, "--tasks", "60", "--continuations", "4", "-q", "-o", str(mc)]) == 0
    assert main(["prm", "label", "--env", "arith_chain", *KW, "--tasks", "60", "--truth", "-q", "-o", str(truth)]) == 0
    assert main(["prm", "train", str(truth), "-o", str(model), "--feature-size", "64", "--pair-size", "4096", "--l2", "0.1"]) == 0
    return d, mc, truth, model


def test_label_writes_mc_and_truth_labels(files):
    _, mc, truth, _ = files
    ro = sc.read_rollouts(mc)
    assert ro.n_episodes == 60 * 4 and ro.has("label")
    label = ro.column("label")
    assert np.all((label >= 0) & (label <= 1))
    # a wrong step cannot be followed by success on arith_chain (off track for good), so its
    # Monte-Carlo label is 0; the process column holds the ground truth
    np.testing.assert_array_equal(label[ro.column("process") == 0], 0.0)
    metas = [json.loads(m) for m in ro.meta.to_pylist()]
    assert all(len(m["info"]["label_n"]) == ro.step_counts[i] for i, m in enumerate(metas))
    tr = sc.read_rollouts(truth)
    np.testing.assert_array_equal(tr.column("label"), tr.column("process"))  # step_correct


def test_hard_labels_and_flag_conflicts(files, tmp_path, capsys):
    out = tmp_path / "hard.parquet"
    assert main(["prm", "label", "--env", "arith_chain", *KW, "--tasks", "10", "--continuations", "4", "--hard", "-q", "-o", str(out)]) == 0
    assert set(np.unique(sc.read_rollouts(out).column("label"))) <= {0.0, 1.0}
    assert main(["prm", "label", "--env", "arith_chain", "--tasks", "2", "--hard", "--truth", "-o", str(tmp_path / "x.jsonl")]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["prm", "label", "--env", "lock_chain", "--tasks", "2", "--truth", "-o", str(tmp_path / "y.jsonl")]) == 2
    assert "step_correct" in capsys.readouterr().err and not (tmp_path / "y.jsonl").exists()
    assert main(["prm", "label", "--env", "nope", "--tasks", "2", "-o", str(tmp_path / "z.jsonl")]) == 2


def test_train_score_eval_search(files, tmp_path, capsys):
    d, mc, truth, model = files
    capsys.readouterr()
    scored = tmp_path / "scored.jsonl"
    assert main(["prm", "score", str(model), str(truth), "-o", str(scored)]) == 0
    ro = sc.read_rollouts(scored)
    m = load_model(model)
    np.testing.assert_allclose(ro.column("process"), m.score_steps(sc.read_rollouts(truth)))
    res = tmp_path / "eval.json"
    assert main(["prm", "eval", str(model), str(truth), "--json", str(res)]) == 0
    r = json.loads(res.read_text())
    # trained on these very ground-truth labels (pairs memorised): near-perfect on them
    assert r["step_accuracy"] > 0.95 and r["f1"] > 0.8
    assert r["episodes"] == 240 and 0 <= r["random_choice"] <= r["best_of_n"] <= r["pass_at_n"] <= 1
    out = tmp_path / "search.json"
    assert main(["prm", "search", str(model), "--env", "arith_chain", *KW, "--tasks", "20", "-n", "4", "--beam", "2",
                 "--candidates", "3", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["method"].split()[0] for r in rows] == ["unguided", "best-of-4,", "pass@4", "beam"]
    assert all(0 <= r["success"] <= 1 for r in rows)


def test_errors_name_the_problem(files, tmp_path, capsys):
    d, mc, truth, model = files
    capsys.readouterr()
    assert main(["prm", "eval", str(tmp_path), str(truth)]) == 1
    assert "not a saved model" in capsys.readouterr().err
    nolabel = tmp_path / "nolabel.jsonl"
    nolabel.write_text(json.dumps({"episode_id": "e", "group_id": "g", "outcome": 1,
                                   "steps": [{"state": "s", "action": "a"}]}) + "\n")
    assert main(["prm", "train", str(nolabel), "-o", str(tmp_path / "m")]) == 1
    err = capsys.readouterr().err
    assert "label" in err and str(nolabel) in err and not (tmp_path / "m").exists()
    assert main(["prm", "eval", str(model), str(nolabel), "--truth", "meta.info.step_correct"]) == 2
    assert "meta.info.step_correct" in capsys.readouterr().err
