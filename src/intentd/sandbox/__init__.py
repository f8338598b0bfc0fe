"""The bubblewrap sandbox that ExecuteST runs acceptance commands in, and its limits.

Public surface: `run_in_sandbox`, `SandboxLimits`, `SandboxResult`, `SandboxError`.
"""

from intentd.sandbox.limits import SandboxLimits
from intentd.sandbox.result import SandboxError, SandboxResult
from intentd.sandbox.runner import run_in_sandbox

__all__ = ["SandboxError", "SandboxLimits", "SandboxResult", "run_in_sandbox"]
