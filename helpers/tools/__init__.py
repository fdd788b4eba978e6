"""Tools around the course: `bench` (timings, `python -m helpers bench`), `editions` (the student edition,
`make student`) and `run_notebooks` (`make course`: the notebooks run headless, with progress)."""
