/**
 * One error pattern for the whole library: a named error class whose message
 * names the argument (in backticks), what was expected and what was received.
 */

/** Formats a value for an error message: shapes and arrays as JSON. */
export function describe(value: unknown): string {
  if (value === undefined) return 'undefined';
  if (typeof value === 'string') return JSON.stringify(value);
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}

/** A function was called with an argument it cannot use. */
export class ArgumentError extends Error {
  override name = 'ArgumentError';

  constructor(
    readonly argument: string,
    readonly expected: string,
    readonly received: unknown,
    hint?: string,
  ) {
    super(
      `\`${argument}\` must be ${expected}; received ${describe(received)}.` +
        (hint ? ` ${hint}` : ''),
    );
  }
}

/** A file the project needs is missing, unreadable or malformed. */
export class DataError extends Error {
  override name = 'DataError';

  constructor(
    message: string,
    readonly path?: string,
  ) {
    super(message);
  }
}

/** A compute backend could not be loaded or was asked for by a wrong name. */
export class BackendError extends Error {
  override name = 'BackendError';
}

/** Training stopped for a reason the user must act on (NaN loss, disk full). */
export class TrainingError extends Error {
  override name = 'TrainingError';
}
