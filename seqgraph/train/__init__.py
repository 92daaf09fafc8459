"""Training: datasets (:mod:`.data`), optimisers and learning-rate schedules (:mod:`.optim`),
the training loop and checkpoints."""
