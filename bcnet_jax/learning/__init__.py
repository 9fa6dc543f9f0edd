"""What every stage trains with: the train state, the optimizer, the plain
step of a compact model and its accuracy. The supernet and retrain stages
both build on these; neither imports the other."""
