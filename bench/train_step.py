"""Train-step throughput and memory: BCNet steps, ua and plain.

  python bench/train_step.py [--model resnet20_cifar] [--batch 128]
      [--steps 5] [--modes plain,ua,fused,fused_pass_by_pass,reference]
      # plain first: the other modes' plain_ratio needs it
      [--peer [--peer_python PYTHON]]
      [--twin PACKAGE.MODULE:ATTR]  # your own model, traced (on PYTHONPATH)

Prints exactly one JSON line per mode (docs/design.md §3's definitions):
  mode: 'fused' (bcnet, 2 fused passes), 'fused_pass_by_pass' (the same,
    each pass's gradients before the next pass: supernet.pass_by_pass),
    'reference' (bcnet, 4 masked passes), 'ua' (left path only) or 'plain'
    (the compact nominal network).
  model, dtype, batch, steps: what was run; steps are timed after one
    compiling step. --steps 0 compiles only: memory, no timings.
  compile_s: seconds to lower and compile the step.
  peak_bytes: the compiled step's memory analysis, arguments + outputs +
    temporaries (temp_bytes: the temporaries alone); the donated state
    counts as an argument and as an output.
  images_per_s: batch x steps / seconds.
  subnet_images_per_s: images_per_s x sub-networks per step (4, 4, 4, 1, 1).
  plain_ratio: seconds per step / the plain mode's (when both ran).
  traces: 1, checked with chex.assert_max_traces over its steps and 50 more
    random width vectors (lowered only: lowering hits jit's trace cache as a
    call does); a retrace is an error.
  useful_mac_fraction: MACs of the sliced sub-networks a step trains (mean
    over the width vectors) / MACs the step computes (passes x the nominal
    network for a single-path pass, x the supernet's C' for a pair pass).
  seconds_per_step, devices: for reading the numbers.

The step runs as training runs it: jit over all devices, the state donated,
one width vector per step from sampling.widths_for_step. Images are a fixed
pseudo-random batch: a step's cost does not depend on pixel values.

--peer also runs the BCNet step written the usual PyTorch way (eager, four
sliced passes; ../shared/peer_torch, CIFAR ResNet-20/56 only) with the same
batch, steps, bins and CPU threads, in a child process of this one, with
PYTHON (an interpreter that has torch; default: this one), and prints its
line (its step time is the median) and the fused step's sub-network
images/s over the peer's (`fused_vs_peer`). Machines are noisy: only ratios
from one run mean anything.

--twin runs the same modes, in the same process, on a user's Flax module
traced into a supernet (models.from_flax; its single-path modes: plain, ua,
reference), e.g. tests/user_models.py's plain-linen twin of ResNet-20:

  PYTHONPATH=. python bench/train_step.py --model resnet20_cifar \
      --twin tests.user_models:ResNet20Twin --modes plain,ua,reference

Its lines carry `builtin_ratio`: its seconds per step / the built-in's.
"""

import argparse
import functools
import json
import os
import subprocess
import sys
import time

import chex
import jax
import numpy as np
import optax

from bcnet_jax import models
from bcnet_jax.learning import state as compact_lib
from bcnet_jax.learning import steps as learning_steps
from bcnet_jax.run import parallel
from bcnet_jax.run import stages
from bcnet_jax.space import sampling
from bcnet_jax.space.costs import CostModel
from bcnet_jax.supernet import state as state_lib
from bcnet_jax.supernet import steps

# mode -> train_step keywords ('plain': the compact nominal network).
MODES = {
    'plain': {},
    'ua': {'objective': 'ua', 'complementary': True,
           'implementation': 'fused'},
    'fused': {'objective': 'bcnet', 'complementary': True,
              'implementation': 'fused'},
    'fused_pass_by_pass': {'objective': 'bcnet', 'complementary': True,
                           'implementation': 'fused', 'pass_by_pass': True},
    'reference': {'objective': 'bcnet', 'complementary': True,
                  'implementation': 'reference'},
}
TRACE_VECTORS = 50
PEER_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..',
                        'shared', 'peer_torch')
PEER_DEPTHS = {'resnet20_cifar': 20, 'resnet56_cifar': 56}


def single_path(mode: str) -> bool:
  """Whether `mode`'s passes are single paths (a traced model's kind)."""
  return (mode == 'plain' or MODES[mode]['objective'] == 'ua' or
          MODES[mode]['implementation'] == 'reference')


def step_shape(mode: str, space) -> tuple[int, int, bool]:
  """(passes, sub-networks, single_path) per step, as the step has them."""
  if mode == 'plain':
    return 1, 1, True
  kwargs = {k: v for k, v in MODES[mode].items() if k != 'pass_by_pass'}
  step_passes = steps.passes(space, space.full(), **kwargs)
  return (len(step_passes), sum(len(p.carries) for p in step_passes),
          step_passes[0].paths.single)


def useful_mac_fraction(mode: str, supernet: models.WidthModel,
                        widths: np.ndarray) -> float:
  """Sliced sub-network MACs / computed MACs, mean over `widths` [K, G].

  A single-path pass computes the nominal network's channels (its window),
  a pair pass every one of the supernet's C'.
  """
  if mode == 'plain':
    return 1.0
  costs = CostModel(supernet)
  space = supernet.space
  table = sampling.subnetwork_table(MODES[mode]['objective'],
                                    MODES[mode]['complementary'])
  # A path's MACs depend on its width vector, not on its side.
  useful = sum(costs.macs(space.complement(widths) if of_complement
                          else widths).astype(np.float64)
               for _, of_complement in table)
  passes, _, single_path = step_shape(mode, space)
  if single_path:
    per_pass = costs.macs(space.full())
  else:
    coef, a, b = costs.macs_terms()  # index len(dims) is the constant 1
    channels = np.array([d.supernet_channels for d in space.dims] + [1])
    per_pass = (channels[a] * channels[b]) @ coef
  return float(np.mean(useful) / (passes * per_pass))


def bench(mode: str, model_name: str, batch_size: int, num_steps: int,
          seed: int = 0, dtype: str = 'float32') -> dict:
  kwargs = {**MODES[mode], 'dtype': stages.DTYPES[dtype]}
  supernet = models.get_model(model_name)
  space = supernet.space
  subnets = step_shape(mode, space)[1]
  model = (models.compact_like(supernet, space.full()) if mode == 'plain'
           else supernet)
  tx = optax.sgd(0.01, momentum=0.9, nesterov=True)

  step_fn = (learning_steps.compact_step if mode == 'plain'
             else steps.supernet_step)

  def train_step(*args, **kw):
    return step_fn(*args, **kw)

  # A second trace (a width vector that recompiles) raises AssertionError.
  chex.clear_trace_counter()  # so that each call counts from zero
  mesh = parallel.create_mesh()
  compact = mode == 'plain'
  step = parallel.jit_train_step(
      functools.partial(chex.assert_max_traces(train_step, n=1), model=model,
                        tx=tx, **kwargs), mesh,
      num_replicated_args=0 if compact else 1)
  state = parallel.create_state(functools.partial(
      compact_lib.compact_state if compact else state_lib.supernet_state,
      model, tx, jax.random.key(seed)), mesh)
  rng = np.random.default_rng(seed)
  res = model.resolution
  batch = parallel.global_batch({
      'image': rng.normal(size=(batch_size, res, res, model.in_channels)
                          ).astype(np.float32),
      'label': rng.integers(0, model.num_classes, batch_size, np.int32)},
      mesh)
  widths = np.stack([sampling.widths_for_step(space, seed, i)
                     for i in range(num_steps + 1 + TRACE_VECTORS)])
  args = lambda i: () if compact else (widths[i],)  # noqa: E731
  start = time.perf_counter()
  compiled = step.lower(state, batch, *args(0)).compile()
  compile_s = time.perf_counter() - start
  memory = compiled.memory_analysis()  # None on a backend without one
  line = {
      'bench': 'train_step', 'mode': mode, 'model': model_name,
      'dtype': dtype, 'batch': batch_size, 'steps': num_steps,
      'compile_s': compile_s,
      'peak_bytes': memory and (memory.argument_size_in_bytes +
                                memory.output_size_in_bytes +
                                memory.temp_size_in_bytes),
      'temp_bytes': memory and memory.temp_size_in_bytes,
      'useful_mac_fraction': useful_mac_fraction(mode, supernet, widths),
      'devices': jax.device_count(),
  }
  if not num_steps:
    return line
  state, metrics = compiled(state, batch, *args(0))
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for i in range(1, num_steps + 1):
    state, metrics = compiled(state, batch, *args(i))
  jax.block_until_ready((state, metrics))
  seconds = time.perf_counter() - start
  if not np.isfinite(float(metrics['loss'])):
    raise FloatingPointError(f'{mode}: non-finite loss')
  for i in range(num_steps + 1, len(widths)):
    step.lower(state, batch, *args(i))
  images_per_s = batch_size * num_steps / seconds
  return {**line, 'images_per_s': images_per_s,
          'subnet_images_per_s': images_per_s * subnets,
          'traces': 1,  # over all width vectors: assert_max_traces(n=1) held
          'seconds_per_step': seconds / num_steps}


def peer(model_name: str, batch_size: int, num_steps: int, bins: int,
         python: str, device: str = 'cpu') -> dict | str:
  """The PyTorch peer's BCNet step line, or why it did not run."""
  if model_name not in PEER_DEPTHS:
    return f'the PyTorch peer has only {sorted(PEER_DEPTHS)}'
  if not os.path.isfile(os.path.join(PEER_DIR, 'bench.py')):
    return f'no PyTorch peer at {os.path.normpath(PEER_DIR)}'
  if subprocess.run([python, '-c', 'import torch'], capture_output=True,
                    check=False).returncode:
    return (f'{python} has no torch: install it in a separate virtual '
            'environment (../shared/peer_torch/README.md) and pass '
            '--peer_python')
  out = subprocess.run(
      [python, 'bench.py', '--depth', str(PEER_DEPTHS[model_name]),
       '--step', 'bcnet', '--batch', str(batch_size),
       '--steps', str(max(num_steps, 3)), '--warmup', '2',
       '--bins', str(bins), '--threads', str(len(os.sched_getaffinity(0))),
       '--device', device],
      cwd=PEER_DIR, capture_output=True, text=True, check=False)
  if out.returncode:
    return f'the peer failed: {out.stderr.strip().splitlines()[-1:]}'
  return json.loads(out.stdout.strip().splitlines()[-1])


def rounded(line: dict) -> dict:
  """The line as printed: 4 significant digits are plenty for timings."""
  return {k: float(f'{v:.4g}') if isinstance(v, float) else v
          for k, v in line.items()}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--model', default='resnet20_cifar',
                      choices=list(models.MODELS))
  parser.add_argument('--twin', help='your own Flax module, traced: '
                      'PACKAGE.MODULE:ATTR, timed beside --model')
  parser.add_argument('--batch', type=int, default=128)
  parser.add_argument('--steps', type=int, default=5,
                      help='timed steps; 0: compile only (memory)')
  parser.add_argument('--modes', default=','.join(MODES))
  parser.add_argument('--dtype', default='float32',
                      choices=list(stages.DTYPES),
                      help='compute dtype of the activations')
  parser.add_argument('--peer', action='store_true',
                      help="also run the PyTorch peer's BCNet step")
  parser.add_argument('--peer_python', default=sys.executable,
                      help='an interpreter with torch, for --peer')
  args = parser.parse_args()
  modes = args.modes.split(',')
  unknown = sorted(set(modes) - set(MODES))
  if unknown:
    parser.error(f'unknown modes {unknown}; choose from {list(MODES)}')
  if args.steps < 0:
    parser.error('--steps must be at least 0')
  lines = {}
  for mode in modes:
    line = bench(mode, args.model, args.batch, args.steps, dtype=args.dtype)
    if 'plain' in lines and 'seconds_per_step' in line:
      line['plain_ratio'] = (line['seconds_per_step'] /
                             lines['plain']['seconds_per_step'])
    lines[mode] = line
    print(json.dumps(rounded(line)), flush=True)
  if args.twin:
    for mode in modes:
      if not single_path(mode):
        print(f'twin: no {mode} step (a traced model runs single paths)',
              file=sys.stderr, flush=True)
        continue
      line = bench(mode, args.twin, args.batch, args.steps, dtype=args.dtype)
      if 'seconds_per_step' in line:
        line['builtin_ratio'] = (line['seconds_per_step'] /
                                 lines[mode]['seconds_per_step'])
      print(json.dumps(rounded(line)), flush=True)
  if args.peer:
    line = peer(args.model, args.batch, args.steps,
                models.get_space(args.model).bins, args.peer_python)
    if isinstance(line, str):
      print(f'peer skipped: {line}', file=sys.stderr, flush=True)
      return
    if 'subnet_images_per_s' in lines.get('fused', {}):
      line['fused_vs_peer'] = (lines['fused']['subnet_images_per_s'] /
                               line['subnet_images_per_s'])
    print(json.dumps(rounded({'bench': 'peer_torch', **line})), flush=True)


if __name__ == '__main__':
  main()
