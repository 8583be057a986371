"""Bytes in, bytes and a record out: formats, the compression search and the child processes that
run it under a CPU budget. Nothing here touches the database or the network."""
