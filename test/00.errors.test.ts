import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { BusError, ERROR_TABLE, SystemError, fromNative, isBusError } from '../src/errors';

const errors = suite('errors');

errors('the README lists every error code, and no other', () => {
  const readme = readFileSync(join(__dirname, '..', 'README.md'), 'utf8');
  const listed = new Set([...readme.matchAll(/\| `(ERR_SHMBUS_[A-Z_]+)` \|/g)].map((m) => m[1]));
  assert.equal([...listed].sort(), Object.keys(ERROR_TABLE).sort());
});

errors('a BusError carries its code, name and cause', () => {
  const cause = new Error('inner');
  const err = new BusError('ERR_SHMBUS_CLOSED', 'closed', { cause });
  assert.is(err.code, 'ERR_SHMBUS_CLOSED');
  assert.is(err.name, 'BusError [ERR_SHMBUS_CLOSED]');
  assert.is(err.cause, cause);
  assert.ok(isBusError(err, 'ERR_SHMBUS_CLOSED'));
  assert.not.ok(isBusError(err, 'ERR_SHMBUS_SYSTEM'));
});

errors('a native system error becomes a SystemError naming syscall, errno and path', () => {
  const native = Object.assign(new Error('open EACCES /dev/shm/x'), { code: 'EACCES', syscall: 'open', path: '/dev/shm/x', errno: 13 });
  const err = fromNative(native, 'cannot open inbox segment');
  assert.instance(err, SystemError);
  const sys = err as SystemError;
  assert.is(sys.code, 'ERR_SHMBUS_SYSTEM');
  assert.is(sys.syscall, 'open');
  assert.is(sys.errno, 'EACCES');
  assert.is(sys.path, '/dev/shm/x');
  assert.is(sys.message, 'cannot open inbox segment: open EACCES /dev/shm/x');
});

errors('a refused external buffer becomes ERR_SHMBUS_UNSUPPORTED_RUNTIME', () => {
  const native = Object.assign(new Error('external ArrayBuffers are refused'), { code: 'ENOTSUP', syscall: 'napi_create_external_arraybuffer' });
  assert.is(fromNative(native, 'map').code, 'ERR_SHMBUS_UNSUPPORTED_RUNTIME');
});

errors('errors of other shapes pass through unchanged', () => {
  const plain = new TypeError('not ours');
  assert.throws(() => fromNative(plain, 'x'), (e: unknown) => e === plain);
});

errors('codes are append-only: every published code stays, and the lane codes are there', () => {
  const published = [
    // Layout 1.
    'ERR_SHMBUS_INVALID_OPTION', 'ERR_SHMBUS_UNKNOWN_DESTINATION', 'ERR_SHMBUS_FRAME_TOO_LARGE', 'ERR_SHMBUS_NAME_IN_USE',
    'ERR_SHMBUS_DIRECTORY_FULL', 'ERR_SHMBUS_NOT_A_SEGMENT', 'ERR_SHMBUS_LAYOUT_MISMATCH', 'ERR_SHMBUS_CORRUPT_SEGMENT',
    'ERR_SHMBUS_CLOSED', 'ERR_SHMBUS_SYSTEM', 'ERR_SHMBUS_UNSUPPORTED_RUNTIME', 'ERR_SHMBUS_LOCK_TIMEOUT',
    'ERR_SHMBUS_DESTINATION_DEAD', 'ERR_SHMBUS_INVALID_CONFIG', 'ERR_SHMBUS_RELAY_UNAVAILABLE', 'ERR_SHMBUS_CLAIM_RECLAIMED',
    // Layout 2 (lanes).
    'ERR_SHMBUS_INVALID_PAYLOAD', 'ERR_SHMBUS_NO_LANE',
  ];
  for (const code of published) assert.ok(code in ERROR_TABLE, `${code} was removed or renamed`);
  assert.is(new BusError('ERR_SHMBUS_NO_LANE', 'x').code, 'ERR_SHMBUS_NO_LANE');
});

errors.run();
