/**
 * The receive side of a Bus: taking frames from its own inbox, naming their
 * sources through the directory (cached per entry generation), parking on the
 * futex doorbell while the inbox is empty, and the event-driven loop behind
 * `bus.on('frame', ...)`.
 */
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import type { Directory } from './directory';
import { FutexSleeper } from './doorbell';
import type { FrameView } from './frame';
import type { InboxConsumer } from './inbox';
import { NO_INDEX } from './layout';
import { ReceivedFrame, type Frame } from './received';

/** Frames handled per turn of the event loop by the event-driven receivers. */
export const DRAIN_BATCH = 256;

/** What the receiver needs of its Bus: whether it is closed, and its 'frame' and 'error' events. */
export interface ReceiverHost {
  readonly isClosed: boolean;
  listenerCount(event: 'frame'): number;
  emit(event: 'frame', frame: Frame): boolean;
  emit(event: 'error', error: Error): boolean;
}

export class Receiver {
  private readonly names = new Map<number, { generation: number; name: string }>();
  private readonly sleeper: FutexSleeper;
  private running = false;

  constructor(
    private readonly bus: ReceiverHost,
    private readonly inbox: InboxConsumer,
    private readonly directory: Directory,
    buffer: ArrayBuffer,
    /** Idle strategy: poll this long (ms) after the inbox is found empty, before parking. */
    private readonly spinMs = 0,
  ) {
    this.sleeper = new FutexSleeper(buffer);
  }

  /** True while the event-driven loop runs. */
  get receiving(): boolean {
    return this.running;
  }

  /** Take the next frame from the inbox (a copy), or null if it is empty. */
  take(): Frame | null {
    let frame: Frame | null = null;
    this.inbox.poll((view) => {
      frame = this.toFrame(view);
    }, 1);
    return frame;
  }

  /** The source endpoint's name of a frame. */
  sourceName(view: FrameView): string {
    if (view.addressLength !== 0) return view.address;
    return this.nameOf(view.sourceIndex, view.sourceGeneration);
  }

  private nameOf(index: number, generation: number): string {
    if (index === NO_INDEX) return '';
    const known = this.names.get(index);
    if (known !== undefined && known.generation === generation) return known.name;
    const name = this.directory.nameAt(index, generation);
    if (name !== null) {
      this.names.set(index, { generation, name });
      return name;
    }
    // The source closed and its directory entry has been reused since it sent.
    return `#${index}.${generation}`;
  }

  private toFrame(view: FrameView): Frame {
    return new ReceivedFrame(this.sourceName(view), view.sequence, view.flags, view.copyPayload());
  }

  /**
   * Resolve when the inbox may hold a frame: at once if one is there, else
   * (after polling for the idle spin, if any) after parking until a producer rings, the bus closes, or a frames()
   * iterator ends (interruptWait). No timed re-check: a producer that
   * publishes while we are parked always rings.
   */
  async waitReadable(): Promise<void> {
    const inbox = this.inbox;
    if (this.bus.isClosed || inbox.hasFrame()) return;
    if (this.spinMs > 0) {
      // Spin, then park: poll once per turn of the event loop (other work goes on) for spinMs.
      const until = performance.now() + this.spinMs;
      do {
        await yieldToLoop();
        if (this.bus.isClosed || inbox.hasFrame()) return;
      } while (performance.now() < until);
    }
    if (!inbox.prepareToPark()) return;
    try {
      await this.sleeper.sleep(-1);
    } finally {
      if (!this.bus.isClosed) inbox.unpark();
    }
  }

  /** Start the event-driven loop, unless it runs, the bus is closed or nobody listens to 'frame'. */
  start(): void {
    if (this.running || this.bus.isClosed || this.bus.listenerCount('frame') === 0) return;
    this.running = true;
    void this.loop();
  }

  private async loop(): Promise<void> {
    const bus = this.bus;
    const emit = (view: FrameView) => {
      bus.emit('frame', this.toFrame(view));
    };
    try {
      while (!bus.isClosed && bus.listenerCount('frame') > 0) {
        const n = this.inbox.poll(emit, DRAIN_BATCH);
        if (n === DRAIN_BATCH) await yieldToLoop();
        else if (n === 0) await this.waitReadable();
      }
    } catch (err) {
      if (!bus.isClosed) bus.emit('error', err as Error);
    } finally {
      this.running = false;
    }
  }

  /** Stop the doorbell waiter thread: every parked wait returns (the next one starts a new thread). */
  interruptWait(): void {
    if (!this.bus.isClosed) this.sleeper.close();
  }

  /** The bus closed: stop the doorbell waiter thread. */
  close(): void {
    this.sleeper.close();
  }
}
