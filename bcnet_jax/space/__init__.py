"""The search space and its costs: groups, channel edges and width vectors
(search_space), their MACs and params (costs), the typed path ids a
supernet takes (paths) and the width vector of a training step (sampling)."""
