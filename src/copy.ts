/**
 * Copying a frame's bytes between typed arrays without a temporary view per
 * call: small copies go four bytes at a time through DataViews (V8 inlines
 * DataView access; a byte loop costs about twice as much, and `set` of a
 * `subarray` allocates a view and calls into C++ — it only wins from a few
 * hundred bytes on).
 */

/** Copies of at least this many bytes use `set` of a `subarray`. */
const SET_FROM_BYTES = 192;

/** A DataView over exactly `bytes` (indexes match `bytes`' indexes). */
export function dataViewOf(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** Copy `src[from, from + n)` to `dst[to, to + n)`; `srcView` and `dstView` are {@link dataViewOf} the two arrays. */
export function copyBytes(src: Uint8Array, srcView: DataView, from: number, dst: Uint8Array, dstView: DataView, to: number, n: number): void {
  if (n >= SET_FROM_BYTES) {
    dst.set(src.subarray(from, from + n), to);
    return;
  }
  let i = 0;
  for (; i + 4 <= n; i += 4) dstView.setUint32(to + i, srcView.getUint32(from + i, true), true);
  for (; i < n; i++) dst[to + i] = src[from + i]!;
}
