"""The audit trail, a kernel service below the domain layers: AuditEvent and its hash-chained writer."""
