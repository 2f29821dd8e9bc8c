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

errors.run();
