"""Supernet training: the stage's setup, scores and table (stage), the step
functions (steps), the train state (state), the loss pool (loss_pool), the
optimizer (optim) and the batch evaluator of width vectors (evaluator)."""
