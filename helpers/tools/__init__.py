"""Tools around the course: `bench` (timings, `python -m helpers bench`), `editions` (the student edition,
`make student`), `run_notebooks` (`make course`: the notebooks run headless, with progress) and `clean`
(notebooks without timestamps or widget state, `make refresh`); `standin` (a tiny full-COCO stand-in and a
local server, so `COURSE_DATA=karpathy` runs offline in the tests); `scale` (download, sharded extraction, DDP
training and both protocols end to end, on full COCO or on the stand-in, `make scale-standin`)."""
