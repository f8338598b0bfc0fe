"""The API shim: records requests, hands work to the worker atomically, reads `app` tables.

It never imports workflow, worker or OpenCode code and never launches DBOS.
"""
