"""Training: goldfish loss, batch collation and the trainer."""

from lethe._callable import make_callable

make_callable(__name__, "_train")  # lethe.train(config, overrides) stays the API call
