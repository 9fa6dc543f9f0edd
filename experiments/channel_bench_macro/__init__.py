r"""Channel-Bench-Macro: does a supernet rank widths like stand-alone training?

  python -m experiments.channel_bench_macro --space=mobilenet --size=smoke \
      --workdir=DIR [--results=Results_MobileNet.json] [--config=...]

Trains a BCNet and a unilateral (UA) supernet of the benchmark's space with
the library's training program, scores one MACs-stratified sample of its
4^7 architectures with the batch evaluator, and, given the benchmark's
results file, reports how each ranking agrees with stand-alone accuracy
(experiments/README.md).

Modules: `sample` (the stratified sample), `experiment` (sizes, stages,
resume, record.json), `report` (results file, statistics, figure),
`__main__` (the command).
"""
