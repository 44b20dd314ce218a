"""The commands `dlx` runs (train, eval, explain, sample, runs, launch, plot): each sits above
the engine (setup, session, tasks, train, checkpoint, track) and none imports another.
dlx/cli.py parses flags and calls one of them."""
