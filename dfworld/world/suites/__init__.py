"""Event-script suites shipped with dfworld (package data)."""
