"""End-to-end demos on the embedded world."""
