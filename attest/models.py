"""Every table of Attest: importing this module registers each models module on `Base.metadata`.

Used where the whole schema is needed at once (Alembic's environment, the migration test, the benchmarks'
fresh databases). It imports every domain and the scheduler (JobLease), so it sits with the entry points at
the top of the layers; the kernel's attest/db.py imports no domain.
"""

from __future__ import annotations

from attest import jobs
from attest.audit import models as audit_models
from attest.auth import models as auth_models
from attest.db import Base
from attest.entitlements import keys as entitlement_keys
from attest.entitlements import models as entitlement_models
from attest.reviews import models as review_models
from attest.trail import models as trail_models

MODULES = (trail_models, auth_models, entitlement_models, entitlement_keys, review_models, audit_models, jobs)
metadata = Base.metadata
