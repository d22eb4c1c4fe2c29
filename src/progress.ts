/**
 * What training prints: a progress bar that redraws in place on a terminal,
 * and one line per epoch with a bracketed prefix and four decimals.
 */
import type { BatchProgress, EpochRecord, Evaluation } from './train.js';

/** Formats seconds as m:ss (or h:mm:ss). */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds)) return '--:--';
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${ss}` : `${m}:${ss}`;
}

/** One line of the progress bar for a step. */
export function progressLine(p: BatchProgress, width = 24): string {
  const filled = Math.round((p.batch / p.batches) * width);
  const bar = '='.repeat(Math.max(0, filled - 1)) + (filled > 0 ? '>' : '') + '.'.repeat(width - filled);
  return (
    `[epoch ${p.epoch}/${p.epochs}] ${String(p.batch).padStart(String(p.batches).length)}/` +
    `${p.batches} [${bar}] loss ${p.loss.toFixed(4)} accuracy ${p.accuracy.toFixed(4)} ` +
    `${p.imagesPerSecond.toFixed(1)} images/s ETA ${formatDuration(p.etaSeconds)}`
  );
}

/** The line printed once an epoch ends. */
export function epochLine(r: EpochRecord, epochs: number): string {
  return (
    `[epoch ${r.epoch}/${epochs}] loss ${r.loss.toFixed(4)} accuracy ${r.accuracy.toFixed(4)} ` +
    `${r.imagesPerSecond.toFixed(1)} images/s ${formatDuration(r.seconds)}`
  );
}

/** The lines that report an evaluation. */
export function evaluationLines(e: Evaluation, label = 'test'): string[] {
  const perClass = e.perClass
    .map((a, c) => `${c}: ${Number.isNaN(a) ? 'n/a' : a.toFixed(4)}`)
    .join('  ');
  return [
    `[${label}] loss ${e.loss.toFixed(4)} accuracy ${e.accuracy.toFixed(4)} ` +
      `(${e.correct}/${e.total} correct)`,
    `[${label}] per-class accuracy  ${perClass}`,
  ];
}

/**
 * Shows training progress on a stream: on a terminal, a bar redrawn in place
 * after every step; elsewhere (a log file, CI), a bar line at each quarter of
 * an epoch, so logs stay short.
 */
export class ProgressPrinter {
  private lastQuarter = -1;
  private drawn = false;

  constructor(
    private readonly stream: NodeJS.WriteStream = process.stdout,
    private readonly interactive = Boolean(stream.isTTY),
  ) {}

  batch(p: BatchProgress): void {
    if (this.interactive) {
      const columns = this.stream.columns ?? 120;
      this.stream.write(`\r${progressLine(p).slice(0, columns - 1)}\x1b[K`);
      this.drawn = true;
      return;
    }
    const quarter = Math.floor((p.batch / p.batches) * 4);
    if (p.batch === 1) this.lastQuarter = -1;
    if (quarter > this.lastQuarter && p.batch < p.batches) {
      this.lastQuarter = quarter;
      this.stream.write(`${progressLine(p)}\n`);
    }
  }

  /** Prints a whole line, first clearing a bar drawn in place. */
  line(text: string): void {
    if (this.drawn) {
      this.stream.write('\r\x1b[K');
      this.drawn = false;
    }
    this.stream.write(`${text}\n`);
  }
}
