"""Pure logic: no I/O, and no imports from the rest of outreach."""
