"""Tools around the course: `bench` (timings, `python -m helpers bench`), `editions` (the student edition,
`make student`) and `clean` (notebooks without timestamps or widget state, `make refresh`)."""
