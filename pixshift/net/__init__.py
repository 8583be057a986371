"""Talking to other hosts safely: the URL and address rules, one deadline per call, downloads, and
the per-host slots and pauses that keep one host from costing the others."""
