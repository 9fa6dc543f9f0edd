"""Search and ranking: the prior (prior), evolution (evolution), the search
program (search) with its report (report), and the ranking of given width
vectors against a ground truth (ranking). `python -m bcnet_jax.search` and
`python -m bcnet_jax.rank` are their commands."""
