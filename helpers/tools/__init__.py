"""Tools around the course: `bench` (timings, `python -m helpers bench`) and `editions` (the student edition,
`make student`)."""
