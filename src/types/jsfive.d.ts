/**
 * Types for the parts of jsfive 0.4 (a pure JavaScript HDF5 reader, which
 * ships none) that this project uses. `DataObjects` is internal to jsfive;
 * `src/data/signs.ts` reads it to find where a contiguous dataset's bytes
 * start, which is much faster than `Dataset.value`. Checked against 0.4.2.
 *
 * jsfive throws plain strings as well as Errors; catch `unknown`.
 */
declare module 'jsfive' {
  /** One header message of a data object: `type`, `offset_to_message`, ... */
  export type HeaderMessage = Map<string, number>;

  /** The low-level view of one HDF5 object header. Internal to jsfive. */
  export class DataObjects {
    constructor(fh: ArrayBuffer, offset: number);
    /** The whole file. */
    readonly fh: ArrayBuffer;
    /** Where the object header starts in the file. */
    readonly offset: number;
    readonly shape: number[];
    /** A numpy-style string such as `<u1` or `<i8`, or an array for others. */
    readonly dtype: string | unknown[];
    readonly is_dataset: boolean;
    find_msg_type(msgType: number): HeaderMessage[];
    /** [layout version, dims (v1/v2 only), layout class, property offset]. */
    _get_data_message_properties(
      msgOffset: number,
    ): [number, number | undefined, number, number];
    get_data(): unknown[];
  }

  /** A group: `keys` lists its members, `get` opens one by path. */
  export class Group {
    readonly name: string;
    readonly keys: string[];
    readonly attrs: Record<string, unknown>;
    get(path: string): Group | Dataset | null;
  }

  /** An open HDF5 file, read entirely from memory. */
  export class File extends Group {
    constructor(buffer: ArrayBuffer, filename?: string);
    readonly filename: string;
  }

  /** A dataset; `value` decodes every element into a plain array. */
  export class Dataset {
    readonly name: string;
    readonly shape: number[];
    readonly dtype: string | unknown[];
    readonly value: unknown[];
    readonly attrs: Record<string, unknown>;
    readonly _dataobjects: DataObjects;
  }
}
