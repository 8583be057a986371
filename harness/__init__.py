"""What tests/ and bench/ both run PixShift against: live stacks of real processes
(``livestack``) and a loopback image server (``imageserver``). Not part of the service."""
