"""One router per resource: parse, authorize, call the service."""
