"""Use cases. They load, call the domain, change, flush and write audit events; they never
commit. `now` and the acting principal (`Actor`) are parameters."""
