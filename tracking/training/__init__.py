"""One tracked training: the classifier, its callbacks, checkpoints and resume, provenance."""
