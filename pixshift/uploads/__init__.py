"""The life of an upload, as its owner sees it: the CSV read and checked, the request taken in,
found, reported (status, output CSV), retried, cancelled and deleted."""
