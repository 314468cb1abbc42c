"""The ``klipprep`` pipeline."""
