#!/usr/bin/env python3
"""Writes the small HDF5 files under test/fixtures/signs/ that test/signs.test.ts reads.

The fixtures are committed, so the tests need neither Python nor h5py; run
this only to change them, then commit the result:

    apt-get install -y python3-h5py      # Debian; or: pip install h5py numpy
    /usr/bin/python3 scripts/make-fixtures.py

valid/ holds a tiny pair in the course's layout (train: 6 images, gzip-chunked
so the loader's jsfive fallback is exercised; test: 1 image, contiguous like
the real files). bad/ holds train files that are valid HDF5 but wrong in one
way each, named for the flaw. Truncated and non-HDF5 files are made by the
test itself from these.
"""
import os

import h5py
import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..')
OUT = os.path.join(ROOT, 'test', 'fixtures', 'signs')


def images(labels, size=64):
  """One image per label: a gradient whose level encodes the label."""
  ramp = np.arange(size * size * 3, dtype=np.uint16).reshape(size, size, 3)
  return np.stack([((ramp + 40 * y) % 256).astype(np.uint8) for y in labels])


def write(name, split, x=None, y=None, classes=None, compress=True):
  """Writes one SIGNS-layout file; a dataset given as None is left out."""
  path = os.path.join(OUT, name)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  # Fixed creation settings so reruns give the same bytes.
  with h5py.File(path, 'w', track_order=False) as f:
    if x is not None:
      f.create_dataset(f'{split}_set_x', data=x, track_times=False,
                       **({'compression': 'gzip', 'compression_opts': 9} if compress else {}))
    if y is not None:
      f.create_dataset(f'{split}_set_y', data=y, track_times=False)
    if classes is not None:
      f.create_dataset('list_classes', data=classes, track_times=False)
  print(f'[fixtures] {os.path.relpath(path, ROOT)} ({os.path.getsize(path)} bytes)')


def main():
  classes = np.arange(6, dtype=np.int64)
  train_y = np.array([5, 0, 1, 2, 3, 4], dtype=np.int64)
  test_y = np.array([3], dtype=np.int64)

  write('valid/train_signs.h5', 'train', images(train_y), train_y, classes)
  write('valid/test_signs.h5', 'test', images(test_y), test_y, classes, compress=False)

  y2 = np.array([0, 1], dtype=np.int64)
  write('bad/missing-y.h5', 'train', images(y2), None, classes)
  write('bad/x-shape.h5', 'train', images(y2, size=8), y2, classes)
  write('bad/x-dtype.h5', 'train', (images(y2) // 64).astype(np.float32), y2, classes)
  write('bad/label-range.h5', 'train', images(y2), np.array([0, 7], dtype=np.int64), classes)
  write('bad/count-mismatch.h5', 'train', images([0, 1, 2]), y2, classes)


if __name__ == '__main__':
  main()
