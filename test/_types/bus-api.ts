/**
 * The public API's types, checked by `tsc --noEmit` (test/31.api.test.ts);
 * nothing here runs (the checks are in functions never called). Every line
 * compiles except those under `@ts-expect-error`, which must not compile (tsc
 * reports a directive with nothing to excuse). `Exact` is true only for the
 * very type, not for `any`: a listener whose argument were `any` fails here.
 */
import { Bus, BusAbortError, FrameIterator, type BusEvents, type Frame } from '../../src/index';

type Exact<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
function check<T extends true>(_proof: T): void {}

export function events(bus: Bus): void {
  bus.on('frame', (f) => {
    check<Exact<typeof f, Frame>>(true);
    check<Exact<ReturnType<typeof f.text>, string>>(true);
    check<Exact<ReturnType<typeof f.json<{ price: number }>>, { price: number }>>(true);
    check<Exact<typeof f.payload, Uint8Array>>(true);
  });
  bus.once('error', (e) => check<Exact<typeof e, Error>>(true));
  bus.prependListener('close', (info) => check<Exact<typeof info, { unread: number }>>(true));
  check<Exact<Parameters<Bus['emit']>[0], keyof BusEvents>>(true);

  // @ts-expect-error: a misspelt event does not compile
  bus.on('fram', () => {});
  // @ts-expect-error: nor does it with once/off
  bus.off('frames', () => {});
  // @ts-expect-error: a frame listener does not receive a string
  bus.on('frame', (_f: string) => {});
  // @ts-expect-error: emit checks its arguments too
  bus.emit('frame', 'not a frame');
}

export async function disposal(): Promise<void> {
  await using scoped = await Bus.open({ name: 'a', handleSignals: false });
  using sync = Bus.openSync({ name: 'b' });
  const it = scoped.frames({ signal: AbortSignal.timeout(10) });
  check<Exact<typeof it, FrameIterator>>(true);
  for await (const f of it) check<Exact<typeof f, Frame>>(true);
  check<Exact<ReturnType<typeof scoped.waitFor>, Promise<void>>>(true);
  await sync.waitFor('a', { timeoutMs: 100, signal: new AbortController().signal });
  // @ts-expect-error: waitFor takes options, not a number
  await sync.waitFor('a', 100);
  // @ts-expect-error: frames() takes options, not a signal
  scoped.frames(AbortSignal.timeout(10));
  check<Exact<Awaited<ReturnType<typeof sync.sendToLocalAsync>>, boolean>>(true);
  check<Exact<BusAbortError['name'], string>>(true);
}
