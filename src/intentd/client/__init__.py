"""The operator CLI's side of the API: an HTTP client of the shim (never a reader of tables), the
terminal views of runs, and the verbs `intentd submit|runs|show|watch|approve|…` (docs/cli.md).

It imports nothing of the shim, the worker or the workflow: it speaks to them as any client does.
"""
