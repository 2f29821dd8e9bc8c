/**
 * Fences for the two store-then-load handshakes of an inbox (docs/LAYOUT.md §3):
 *
 *   parked        producer: store tail,  load parked   consumer: store parked, load tails
 *   space wanted  consumer: store head,  load flag     producer: store flag,   load head
 *
 * Each needs a full (StoreLoad) fence between its store and its load on both
 * sides. The frequent side of each — a producer's publish, a consumer's
 * release, once per frame or per visit — would pay a builtin `Atomics` call
 * (~10 ns) and, worse, a locked instruction that waits for the cache line to
 * arrive from the other core. So the fence is made asymmetric, as liburcu and
 * Folly do: the frequent ("light") side uses plain stores and loads, and the
 * rare ("heavy") side — parking, waiting for room — issues
 * membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED), which runs a full barrier on
 * every running thread of every registered process.
 *
 * A process is light only where that is sound: on x86-64 (TSO: a plain store
 * is a release store, a plain load an acquire load, and V8 keeps typed-array
 * accesses in program order), and registered for the global expedited barrier.
 * Anywhere else it uses `Atomics` (sequentially consistent) on both sides,
 * which is correct against light and heavy peers alike. SHMBUS_FENCES=atomic
 * forces that path (tests and benchmarks compare the two).
 */
import native from './native';

const TSO = process.arch === 'x64' || process.arch === 'ia32';

function register(): boolean {
  try {
    return native.membarrierRegister();
  } catch {
    return false;
  }
}

/** The kernel offers the global expedited barrier and this process takes part in it. */
const REGISTERED = register();

/** This process uses plain stores and loads on the frequent side of both handshakes. */
export const LIGHT_FENCES = TSO && REGISTERED && process.env.SHMBUS_FENCES !== 'atomic';

/**
 * The heavy side of a handshake, between its store and its load: after it,
 * every light-side store made before it is visible, and every light-side load
 * made after it sees our store. A no-op where no process can be light.
 */
export function heavyBarrier(): void {
  if (REGISTERED) native.membarrierGlobal();
}
