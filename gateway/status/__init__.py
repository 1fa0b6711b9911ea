"""The gateway's status page (``/``) and its JSON (``/api/status``), and the token that
guards the HTTP listener when it is bound to another address than loopback.

:mod:`common.httpaccess` checks requests (pure); :mod:`gateway.status.snapshot`
turns what the runtime knows into the status document (pure); :mod:`gateway.status.page`
holds the HTTP handlers. Imported by the runtime when the HTTP listener starts.
"""
