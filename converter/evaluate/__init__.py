"""`vrconvert evaluate`: both models over a whole set of videos, resumable and parallel.

`sources` lists the videos and their labels, `worker` runs one video through both models (a pure
`evaluate_one(item, settings) -> record`), `local` and `ray_runner` run it in parallel, `store` keeps
the results file (the truth: one appended line per finished video), `summary` and `report` read it.
"""
