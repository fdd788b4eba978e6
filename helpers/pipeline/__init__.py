"""The pipeline: the course's recipe and runs, and the tables notebooks 05-08 and the command line show.

`recipes` (models, seeds, budgets, the chosen settings, `run_dir`: one folder per configuration),
`feature_cache` (features extracted once, the course's splits), `runs` (train or reuse, rank the test
set), `search` (05's search), `evaluation` (06's tables), `features_kept` (07's tables), `ablations` (08's runs and
tables), `splits` (06's split sensitivity: other splits of the subset). It may import the learner modules and the
speed code; neither imports it.
"""
