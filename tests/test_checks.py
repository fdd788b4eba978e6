"""helpers.checks: a value within its tolerance passes with one fixed line, a moved one fails by name."""
import json

import pandas as pd
import pytest

from helpers import checks


@pytest.fixture
def refs(tmp_path, monkeypatch):
    path = tmp_path / "references.json"
    path.write_text(json.dumps({"x.rsum": {"": 183.7}, "x.table": {"joint|mean": 12.0, "joint|verdict": "supported"},
                                "x.word": {"": "not supported"}}))
    monkeypatch.setattr(checks, "REFERENCE_FILE", path)
    monkeypatch.delenv("COURSE_RECORD_REFERENCES", raising=False)
    monkeypatch.delenv("COURSE_ENCODERS", raising=False)
    monkeypatch.delenv("COURSE_DEVICE", raising=False)
    return path


def test_within_tolerance_prints_one_line_that_names_no_measured_digit(refs, capsys):
    checks.expect(184.9, "x.rsum", "test_rsum")
    assert capsys.readouterr().out == "checked: value within ±2 of the committed reference 'x.rsum'\n"


def test_a_moved_value_fails_with_its_name_and_both_numbers(refs):
    with pytest.raises(AssertionError, match=r"x.rsum = 170.*reference 183.7.*±2"):
        checks.expect(170.0, "x.rsum", "test_rsum")


def test_tables_strings_and_missing_entries(refs):
    ok = pd.DataFrame({"mean": [12.6], "verdict": ["supported"]}, index=["joint"])
    checks.expect(ok, "x.table", "test_recall")
    with pytest.raises(AssertionError, match="must be equal"):
        checks.expect(ok.assign(verdict="inconclusive"), "x.table", "test_recall")
    with pytest.raises(AssertionError, match="entries differ"):
        checks.expect(ok.rename(index={"joint": "dual"}), "x.table", "test_recall")
    with pytest.raises(AssertionError, match="no committed reference 'x.nothing'"):
        checks.expect(1.0, "x.nothing", "exact")
    checks.expect("not supported", "x.word", "exact")
    with pytest.raises(AssertionError):
        checks.expect("supported", "x.word", "exact")


def test_record_mode_writes_the_reference(refs, monkeypatch):
    monkeypatch.setenv("COURSE_RECORD_REFERENCES", "1")
    checks.expect({"a": 1.5, "b": True}, "x.new", "exact")
    assert json.loads(refs.read_text())["x.new"] == {"a": 1.5, "b": True}


def test_other_encoders_device_or_budget_are_not_compared(refs, monkeypatch, capsys):
    checks.expect(0.0, "x.rsum", "test_rsum", budget="gpu")
    monkeypatch.setenv("COURSE_ENCODERS", "blog")
    checks.expect(0.0, "x.rsum", "test_rsum")
    monkeypatch.setenv("COURSE_ENCODERS", "course")
    monkeypatch.setenv("COURSE_DEVICE", "cuda")
    checks.expect(0.0, "x.rsum", "test_rsum")
    assert capsys.readouterr().out.count("not checked:") == 3


def test_every_tolerance_says_why():
    assert all(t.why and t.abs >= 0 for t in checks.TOLERANCES.values())


def test_agree_passes_within_the_tolerance_and_names_what_moved(refs, capsys):
    checks.agree({"dual": 300.4, "joint": 320.0}, {"dual": 300.0, "joint": 321.5}, "test_rsum", "mean rSum")
    assert capsys.readouterr().out == "checked: mean rSum, 2 value(s) within ±2 of the committed run\n"
    with pytest.raises(AssertionError, match=r"joint = 325 here, 321.5 committed"):
        checks.agree({"dual": 300.4, "joint": 325.0}, {"dual": 300.0, "joint": 321.5}, "test_rsum", "mean rSum")
    with pytest.raises(AssertionError, match="computed"):
        checks.agree({"dual": 300.0}, {"joint": 300.0}, "test_rsum", "mean rSum")
    checks.agree(160.2, 160.0, "single_run_rsum", "one run", budget="gpu")
    assert capsys.readouterr().out.startswith("not checked")
