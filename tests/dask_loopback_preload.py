"""Dask worker preload of the batch tests: the worker may talk to 127.0.0.1 only.

Loaded with ``dask worker --preload tests/dask_loopback_preload.py`` or the
``DASK_DISTRIBUTED__WORKER__PRELOAD`` variable; any other connection (CRDS, a web service...)
raises in the task, which then fails its test.
"""

import socket

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _guard():
    real_connect = socket.socket.connect
    real_getaddrinfo = socket.getaddrinfo

    def connect(self, address, *args, **kwargs):
        if isinstance(address, tuple) and address[0] not in LOOPBACK:
            raise RuntimeError(f"network access attempted on a Dask worker: {address}")
        return real_connect(self, address, *args, **kwargs)

    def getaddrinfo(host, *args, **kwargs):
        if host is not None and host not in LOOPBACK:
            raise RuntimeError(f"network access attempted on a Dask worker: {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    socket.socket.connect = connect
    socket.getaddrinfo = getaddrinfo


def dask_setup(worker):  # noqa: ARG001 - the preload protocol passes the worker
    """Called by Dask when the worker starts."""
    _guard()
    socket.create_connection = _refuse_remote(socket.create_connection)


def _refuse_remote(create_connection):
    def guarded(address, *args, **kwargs):
        if address[0] not in LOOPBACK:
            raise RuntimeError(f"network access attempted on a Dask worker: {address}")
        return create_connection(address, *args, **kwargs)

    return guarded
