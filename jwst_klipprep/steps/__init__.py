"""The stpipe steps: thin wrappers that open, check, call an algorithm and record."""
