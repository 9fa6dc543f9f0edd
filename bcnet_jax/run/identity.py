"""What makes a saved thing part of a run, and how two identities differ.

A checkpoint, a search state and a scoring state are valid only for the run
that wrote them: each stage defines its identity once (its `identity()`),
as a flat JSON object {dotted field: value}, and every mismatch is named the
same way, one field at a time with both values:

  optim.warmup_epochs: checkpoint 5.0, this run 0.0

Synopsis:

  current = identity.of_config(config, ('seed', 'optim'), num_classes=10)
  identity.check(saved, current, saved_as='checkpoint',
                 error=lambda details: ForeignCheckpoint(f'... {details}'))
"""

from __future__ import annotations

import json
from typing import Any, Callable, Sequence

# Config fields removed since identities recorded them: ignored in a saved
# identity, so what was saved with them still resumes.
RETIRED = ('model.lowering',)
# Config fields added since, each with the value that does what the code
# before it did: a saved identity without one is read as holding it, so
# what was saved before still resumes where the run leaves it so.
ADDED = {'model.kwargs': '{}', 'model.train_arg': '', 'model.fixed': '',
         'model.round_to': 1}
NOT_RECORDED = '(not recorded)'
_SHOWN = 6  # differing fields named in one message


def flatten(tree: Any, prefix: str = '') -> dict[str, Any]:
  """{dotted name: leaf} of nested dicts (a ConfigDict too), as JSON."""
  if hasattr(tree, 'to_dict'):
    tree = tree.to_dict()
  if not isinstance(tree, dict):
    return {prefix.rstrip('.'): json.loads(json.dumps(tree))}
  out = {}
  for key, value in tree.items():
    out.update(flatten(value, f'{prefix}{key}.'))
  return out


def of_config(config: Any, fields: Sequence[str], **extra: Any
              ) -> dict[str, Any]:
  """The identity made of config `fields` (dotted; a section stands for all
  its fields) and `extra` values."""
  out = {}
  for name in fields:
    value = config
    for key in name.split('.'):
      value = value[key]
    out.update(flatten(value, name + '.') if hasattr(value, 'to_dict')
               else {name: json.loads(json.dumps(value))})
  out.update(flatten(extra))
  return out


def differences(saved: dict[str, Any], current: dict[str, Any], *,
                saved_as: str, current_as: str = 'this run') -> list[str]:
  """`field: <saved_as> A, <current_as> B` for every differing field:
  those both record first (the telling ones, such as `stage`), then those
  only one of them records."""
  current = flatten(current)
  saved = _completed(saved, current)

  def shown(values, key):
    return repr(values[key]) if key in values else NOT_RECORDED

  differing = [k for k in set(saved) | set(current)
               if saved.get(k, NOT_RECORDED) != current.get(k, NOT_RECORDED)]
  return [f'{k}: {saved_as} {shown(saved, k)}, {current_as} '
          f'{shown(current, k)}'
          for k in sorted(differing,
                          key=lambda k: (k not in saved or k not in current,
                                         k))]


def unrecorded(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
  """The fields of `current` that `saved` does not record at all: it was
  written by an older bcnet_jax, before they were part of the identity."""
  current = flatten(current)
  return sorted(set(current) - set(_completed(saved, current)))


def _completed(saved: dict[str, Any], current: dict[str, Any]
               ) -> dict[str, Any]:
  """`saved` flattened, less RETIRED fields, with the ADDED fields that
  `current` records and it does not."""
  saved = {k: v for k, v in flatten(saved).items() if k not in RETIRED}
  return {**{k: v for k, v in ADDED.items() if k in current}, **saved}


def describe(differing: list[str]) -> str:
  """The differences in one line, the first few of many."""
  more = len(differing) - _SHOWN
  return '; '.join(differing[:_SHOWN]) + (
      f' (and {more} more field{"s" if more > 1 else ""})' if more > 0
      else '')


def check(saved: dict[str, Any], current: dict[str, Any], *, saved_as: str,
          error: Callable[[str], Exception], current_as: str = 'this run'
          ) -> None:
  """Raises error(details) if the identities differ in any field."""
  differing = differences(saved, current, saved_as=saved_as,
                          current_as=current_as)
  if differing:
    raise error(describe(differing))
