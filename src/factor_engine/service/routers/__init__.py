"""One router per resource; each handler parses, calls one function of the service layer and returns."""
