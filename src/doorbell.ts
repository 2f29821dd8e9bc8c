/**
 * Doorbells: how a producer wakes a parked consumer, and how a consumer sleeps.
 *
 * A producer rings only after it won the parked flag (see LaneProducer.publish),
 * so a busy consumer costs no system call and each sleep is rung once.
 *  - DOORBELL_FUTEX: FUTEX_WAKE on the inbox's parked word (app inboxes).
 *  - DOORBELL_UDP: one datagram to 127.0.0.1:<port> (the relay's inbox, whose
 *    event loop already waits on sockets).
 */
import { debuglog } from 'node:util';
import native, { WaitResult, type NativeWaiter } from './native';
import { fromNative } from './errors';
import { DOORBELL_FUTEX, DOORBELL_UDP, INBOX_PARKED_OFFSET } from './layout';

const debug = debuglog('shmbus');

/** The one-byte datagram a UDP doorbell carries (0x44, "D"). The relay counts any other datagram as garbage and ignores it. */
export const UDP_DOORBELL_DATAGRAM = new Uint8Array([0x44]);

let udpErrors = 0;

/** Doorbell datagrams that could not be sent (reported in Bus.stats). */
export function udpDoorbellErrors(): number {
  return udpErrors;
}

/** Wake every producer sleeping on the futex word at `byteOffset` (a lane's head: room was made). */
export function wakeAll(buffer: ArrayBuffer, byteOffset: number): void {
  native.futexWake(buffer, byteOffset, 0x7fffffff);
}

/** Ring the consumer of an inbox mapped at `buffer`. */
export function ring(kind: number, buffer: ArrayBuffer, port: number): void {
  if (kind === DOORBELL_FUTEX) {
    native.futexWake(buffer, INBOX_PARKED_OFFSET, 1);
  } else if (kind === DOORBELL_UDP) {
    // Synchronous sendto: the bell must ring now, even if the caller keeps the event loop busy.
    let sent = false;
    try {
      sent = native.udpDoorbell(port, UDP_DOORBELL_DATAGRAM[0]!);
    } catch (err) {
      debug('udp doorbell to port %d failed: %s', port, (err as Error).message);
    }
    if (!sent) udpErrors++;
  }
}

/**
 * A sleep on a futex word of a mapping — a consumer on its inbox's parked
 * word, or a producer on a lane's head while it waits for room — through a
 * native thread that wakes the event loop when the word is rung or a timeout
 * passes.
 */
export class FutexSleeper {
  private waiter: NativeWaiter | null = null;
  private resolvers: Array<() => void> = [];

  constructor(
    private readonly buffer: ArrayBuffer,
    private readonly byteOffset: number = INBOX_PARKED_OFFSET,
  ) {}

  /**
   * Sleep while the word holds `expected` (as an i32; default 1, "parked"),
   * at most `timeoutMs` (< 0: no limit). Concurrent callers share one wait.
   */
  sleep(timeoutMs: number, expected = 1): Promise<void> {
    return new Promise((resolve) => {
      this.resolvers.push(resolve);
      const waiter = this.getWaiter();
      if (!waiter.armed) waiter.wait(expected | 0, timeoutMs);
    });
  }

  private getWaiter(): NativeWaiter {
    if (this.waiter === null) {
      try {
        this.waiter = native.createWaiter(this.buffer, this.byteOffset, (result: WaitResult) => this.woken(result));
      } catch (err) {
        throw fromNative(err, 'cannot start the doorbell waiter');
      }
    }
    return this.waiter;
  }

  private woken(_result: WaitResult): void {
    const resolvers = this.resolvers;
    this.resolvers = [];
    for (const resolve of resolvers) resolve();
  }

  /** Stop the waiter thread; pending sleeps resolve. Idempotent. */
  close(): void {
    if (this.waiter !== null) {
      this.waiter.close();
      this.waiter = null;
    }
    this.woken(WaitResult.Closed);
  }
}
