"""Training: goldfish loss, batch collation and the trainer."""
