"""Living spaces: a space's vectors moved to another model while it is searched and written (``migration``),
the writes that keep both models' vectors while it moves (``dual_write``), and the one way a stored text point's
vectors are made again from its payload (``reembed``)."""
