/** Shared by the kernel tests: reproducible inputs, and comparison with the CPU backend. */
import assert from 'node:assert/strict';

/** Deterministic values in [-1, 1) (a small LCG), so each case is reproducible. */
export function values(size: number, seed: number): Float32Array {
  const out = new Float32Array(size);
  let state = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < size; i++) {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    out[i] = state / 2 ** 31 - 1;
  }
  return out;
}

/** The number of elements of a tensor of `shape`. */
export function sizeOf(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** A tensor read back from a backend. */
export interface Readback {
  shape: number[];
  data: Float32Array;
}

/**
 * Checks a backend's result against the CPU backend's: the shape, then every
 * value within `rtol` relative plus an absolute 1e-5 of the largest expected
 * value, naming the worst element on a miss.
 */
export function assertCloseToCpu(
  label: string,
  backend: string,
  actual: Readback,
  expected: Readback,
  rtol = 1e-4,
): void {
  assert.deepEqual(actual.shape, expected.shape, `${label}: shape differs from the CPU backend's`);
  let scale = 0;
  for (const v of expected.data) scale = Math.max(scale, Math.abs(v));
  const atol = 1e-5 * scale;
  let worst = -1;
  let worstExcess = 0;
  for (let i = 0; i < expected.data.length; i++) {
    const allowed = atol + rtol * Math.abs(expected.data[i]);
    const excess = Math.abs(actual.data[i] - expected.data[i]) - allowed;
    if (!(excess <= worstExcess)) {
      worst = i;
      worstExcess = Number.isNaN(excess) ? Infinity : excess;
    }
  }
  if (worst >= 0) {
    const [got, want] = [actual.data[worst], expected.data[worst]];
    assert.fail(
      `${label}: element ${worst} is ${got} on ${backend} but ${want} on the CPU backend ` +
        `(off by ${Math.abs(got - want).toExponential(2)}, allowed ` +
        `${(atol + rtol * Math.abs(want)).toExponential(2)}). ` +
        'Check the padding and stride geometry of that case.',
    );
  }
}
