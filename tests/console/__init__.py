"""Console tier: the Textual console through Pilot, its text snapshots, and the real console in tmux."""
