/**
 * Compares a learner's ResNet50 layer table (sent back by the child as data)
 * with the reference, and says in the learner's terms what the difference
 * most likely comes from. Works on rows rather than on a model because the
 * verdict is computed in the grader's process, away from the learner's code.
 */
import type { LayerTableReference } from '../summary.js';
import type { ModelTable } from './types.js';

const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);

/** How many rows of each class name a table has. */
function classCounts(rows: unknown[][]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const row of rows) counts.set(String(row[0]), (counts.get(String(row[0])) ?? 0) + 1);
  return counts;
}

/** The likely cause of a table mismatch, or '' when nothing specific shows. */
function likelyCause(table: ModelTable, ref: LayerTableReference): string {
  const mine = classCounts(table.rows);
  const theirs = classCounts(ref.layers);
  const n = (m: Map<string, number>, k: string) => m.get(k) ?? 0;
  if (table.rows.some((r) => r[0] === 'Conv2D' && r[4] !== 'linear')) {
    return (
      "some of your Conv2D layers have their own activation ('relu'): leave Conv2D linear " +
      'and put each ReLU after its BatchNorm.'
    );
  }
  const badBn = table.rows.find((r) => {
    const shape = r[1] as number[];
    return r[0] === 'BatchNormalization' && r[2] !== 4 * shape[shape.length - 1];
  });
  if (badBn) {
    return (
      `a BatchNormalization of yours has ${String(badBn[2])} parameters for ` +
      `${JSON.stringify(badBn[1])}: it normalises over another axis than the channels (axis 3).`
    );
  }
  if (n(mine, 'Add') < n(theirs, 'Add')) {
    return (
      `your model has ${n(mine, 'Add')} Add layers; the course's has ${n(theirs, 'Add')}, one ` +
      'per block: check that your blocks add the shortcut.'
    );
  }
  if (n(mine, 'Conv2D') < n(theirs, 'Conv2D')) {
    return (
      `your model has ${n(mine, 'Conv2D')} Conv2D layers; the course's has ` +
      `${n(theirs, 'Conv2D')}: each convolutional block needs a 1×1 convolution on its shortcut.`
    );
  }
  if (n(mine, 'Activation') < n(theirs, 'Activation')) {
    return (
      `your model has ${n(mine, 'Activation')} ReLU layers; the course's has ` +
      `${n(theirs, 'Activation')}: check each block's final ReLU after the add.`
    );
  }
  const dense = table.rows.find((r) => r[0] === 'Dense');
  if (dense && dense[3] !== 'softmax') {
    return "your last Dense layer should have `activation: 'softmax'`.";
  }
  return '';
}

/**
 * Row-by-row comparison, as `compareLayerTable` in `summary.ts` does: a
 * shortcut convolution and its BatchNorm may be listed in another order, so
 * each row matches any unused reference row of the same content within four
 * places. Returns '' when the tables agree.
 */
export function compareTable(table: ModelTable, ref: LayerTableReference): string {
  const WINDOW = 4;
  const used = new Set<number>();
  let first = -1;
  for (let i = 0; i < table.rows.length; i++) {
    let match = -1;
    for (let j = Math.max(0, i - WINDOW); j <= i + WINDOW && j < ref.layers.length; j++) {
      if (!used.has(j) && same(table.rows[i], ref.layers[j])) {
        match = j;
        break;
      }
    }
    if (match < 0) {
      first = i;
      break;
    }
    used.add(match);
  }
  if (first < 0 && table.rows.length === ref.layers.length) return '';
  const parts: string[] = [];
  if (table.rows.length !== ref.layers.length) {
    const [mine, theirs] = [table.rows.length, ref.layers.length];
    parts.push(`your model has ${mine} layers; the course's has ${theirs}.`);
  }
  const cause = likelyCause(table, ref);
  if (cause) parts.push(cause);
  if (first >= 0) {
    const want = ref.layers[first];
    const mine = table.rows[first];
    const shapeOnly =
      !cause && want && mine[0] === want[0] && mine[2] === want[2] && !same(mine[1], want[1]);
    if (shapeOnly) {
      parts.push(
        'your layers have the right sizes but an output shape differs: check the strides and ' +
          "padding (a stage's stride sits on the first 1×1 convolution and the shortcut of " +
          "its convolutional block; the f×f convolutions use 'same').",
      );
    }
    parts.push(
      `The first difference is layer ${first} (${table.names[first]}): yours is ` +
        `${JSON.stringify(table.rows[first])}, the course's ` +
        `${want ? JSON.stringify(want) : 'has no layer there'}.`,
    );
  }
  // Each part is a sentence; the case name and a colon come before the first.
  return parts.map((p, i) => (i === 0 ? p : p[0].toUpperCase() + p.slice(1))).join(' ');
}
