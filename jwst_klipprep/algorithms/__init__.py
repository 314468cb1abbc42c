"""Pure numpy/scipy algorithms on ``(nints, ny, nx)`` arrays; no datamodels, no stpipe."""
