"""Review campaigns, decisions and remediation.

Importing the package registers remediation's after-apply hook with the sync engine (revocations are
verified inside every successful sync's apply transaction), so it is in place wherever the reviews'
models are: the web app, the scheduler, the CLI, the tests.
"""

from attest.reviews import remediation as _remediation  # noqa: F401  (registers the sync's after-apply hook)
