"""The blueprints of the HTTP API, one per resource (DESIGN section 7)."""
