/**
 * Decoding `name@host` address prefixes out of shared memory without building
 * a new string per frame: the bytes are hashed and compared against the
 * strings seen before (a relay sees few distinct addresses, each many times).
 */

interface Known {
  readonly bytes: Uint8Array;
  readonly address: string;
  /** The part before the last "@" (the endpoint name). */
  readonly name: string;
  /** The part after the last "@" (the host), '' if there is no "@". */
  readonly host: string;
}

const MAX_ENTRIES = 4096;

export class AddressCache {
  private readonly byHash = new Map<number, Known[]>();
  private size = 0;

  /** The address written at `bytes[offset, offset + length)`. */
  decode(bytes: Uint8Array, offset: number, length: number): Known {
    let hash = 0x811c9dc5;
    for (let i = 0; i < length; i++) hash = Math.imul(hash ^ bytes[offset + i]!, 0x01000193);
    const bucket = this.byHash.get(hash);
    if (bucket !== undefined) {
      for (const known of bucket) {
        if (known.bytes.length !== length) continue;
        let same = true;
        for (let i = 0; i < length; i++) {
          if (known.bytes[i] !== bytes[offset + i]) {
            same = false;
            break;
          }
        }
        if (same) return known;
      }
    }
    const copy = bytes.slice(offset, offset + length);
    const address = String.fromCharCode(...copy);
    const at = address.lastIndexOf('@');
    const known: Known = { bytes: copy, address, name: at < 0 ? address : address.slice(0, at), host: at < 0 ? '' : address.slice(at + 1) };
    if (this.size >= MAX_ENTRIES) {
      this.byHash.clear();
      this.size = 0;
    }
    if (bucket !== undefined) bucket.push(known);
    else this.byHash.set(hash, [known]);
    this.size++;
    return known;
  }
}
