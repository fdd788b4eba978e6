"""Tools around the course: `bench` (timings, `python -m helpers bench`), `editions` (the student edition,
`make student`), `run_notebooks` (`make course`: the notebooks run headless, with progress) and `clean`
(notebooks without timestamps or widget state, `make refresh`)."""
