"""docs/learner_time.py: each exercise's estimate comes from its size, and the tables it generates in
docs/instructor-guide.md are in step with the notebooks."""
import importlib.util

from helpers.config import PROJECT_ROOT

SPEC = importlib.util.spec_from_file_location("learner_time", PROJECT_ROOT / "docs" / "learner_time.py")
learner_time = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(learner_time)


def test_an_exercise_takes_longer_the_more_its_solution_has_to_say():
    assert learner_time.solution_lines("def f(x):\n    ### BEGIN SOLUTION\n    y = x\n\n    return y\n"
                                       "    ### END SOLUTION\nexercises.f.check(f)") == 2
    assert learner_time.exercise_estimate("code", 1) == 4.5          # 3 + 1.5 per line
    assert learner_time.exercise_estimate("code", 10) == 18
    assert learner_time.exercise_estimate("predict", 0) == 2 and learner_time.exercise_estimate("change", 0) == 4
    per_exercise = {name: minutes for path in sorted((PROJECT_ROOT / "notebooks").glob("0[1-8]_*.ipynb"))
                    for name, _, _, minutes in learner_time.count(path, learner_time.EXERCISES)["exercises"]}
    assert sorted(per_exercise) == sorted(learner_time.EXERCISES)
    assert per_exercise["bootstrap_interval"] > per_exercise["recall_at_k"] > per_exercise["mentions"]


def test_the_guide_tables_are_in_step_with_the_notebooks():
    guide = learner_time.GUIDE.read_text(encoding="utf-8")
    assert learner_time.guide_with_tables(guide) == guide, \
        ("docs/instructor-guide.md's learner-time tables are out of date: run "
         "`.venv/bin/python docs/learner_time.py --write-guide`, then check section 3's plans against the new appendix")
    stale = guide.replace("| 1 | How is retrieval scored? | ", "| 1 | How is retrieval scored? | 9", 1)
    stale = stale.replace("| all 9 notebooks | | | | | | ", "| all 9 notebooks | | | | | | 9", 1)
    assert stale.count("| 9") >= guide.count("| 9") + 2                        # both tables made stale ...
    assert learner_time.guide_with_tables(stale) == guide                       # ... and both rewritten
