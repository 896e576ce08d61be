"""The C media core and its pure-Python twin (filled in by the mediacore work)."""
