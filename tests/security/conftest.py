"""security tier: one test per hole of the trust-boundary review (docs/security.md). Each reproduces
the attack against the real component (git, bubblewrap, PostgreSQL, the opencode daemon, the shim)
and asserts that it is stopped."""
