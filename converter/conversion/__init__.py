"""Moving weights between frameworks: strict accounting of a state dict against an architecture, and
the torch -> Keras and Keras -> torch flows built on it."""
