"""The processes people start: the ``embedstream`` CLI and the library calls behind each command."""
