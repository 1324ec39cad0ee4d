"""HTTP layer shared by the command and the query API: app factory, problem+json, security."""
