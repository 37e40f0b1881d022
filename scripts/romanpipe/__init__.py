"""Shared plumbing of the Roman WFI workflow: model I/O, DQ flags, naming, parameters, CRDS."""
