/**
 * The files and text a cluster config points at or comes from: the secret
 * (a private file or an environment variable), the TLS key, certificate and
 * CA files, and the description of a JSON syntax error by line and column
 * that never quotes the text (it may hold a secret pasted inline).
 */
import { closeSync, constants as fsConstants, fstatSync, openSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { ConfigError, errnoOf, fail, kindOf, object, onlyFields } from './config-fields';

/** The shortest cluster secret accepted, in bytes. */
export const MIN_SECRET_LENGTH = 16;

/** TLS material, read from the files named in `tls`. */
export interface TlsMaterial {
  readonly key: Buffer;
  readonly cert: Buffer;
  readonly ca: Buffer;
}

/** Environment to read `secret.env` from. */
export type ConfigEnv = Readonly<Record<string, string | undefined>>;

/** Where the secret comes from, as `secret` names it (paths resolved). */
export type SecretSource = { readonly kind: 'file'; readonly path: string } | { readonly kind: 'env'; readonly name: string };

const SECRET_FIELDS = ['file', 'env'] as const;
const TLS_FIELDS = ['key', 'cert', 'ca'] as const;
const ENV_NAME_PATTERN = /^[A-Za-z_][A-Za-z0-9_]*$/;

// ---------------------------------------------------------------------------
// The secret and the TLS files

export function secretShape(value: unknown, baseDir: string): SecretSource {
  if (value === undefined) throw fail('secret', 'secret', 'an object with "file" or "env"', value);
  // Anything written inline here may be the secret itself: describe, never show.
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new ConfigError('secret', `secret must be an object with "file" or "env"; received ${kindOf(value)} (not shown)`);
  }
  const s = value as Record<string, unknown>;
  onlyFields(s, 'secret', SECRET_FIELDS);
  if ((s.file === undefined) === (s.env === undefined)) {
    const received = s.file === undefined ? 'neither' : 'both';
    throw new ConfigError('secret', `secret must have exactly one of "file" or "env"; received ${received}`);
  }
  if (s.file !== undefined) {
    if (typeof s.file !== 'string' || s.file === '' || !plausiblePath(s.file)) {
      throw new ConfigError('secret.file', `secret.file must be a non-empty file path; received ${kindOf(s.file)} (not shown)`);
    }
    return { kind: 'file', path: resolve(baseDir, s.file) };
  }
  if (typeof s.env !== 'string' || !ENV_NAME_PATTERN.test(s.env)) {
    const length = typeof s.env === 'string' ? ` of ${s.env.length} characters` : '';
    throw new ConfigError(
      'secret.env',
      `secret.env must be the name of an environment variable (A-Z a-z 0-9 _, not starting with a digit); received ${kindOf(s.env)}${length} (not shown)`,
    );
  }
  return { kind: 'env', name: s.env };
}

export function readSecret(source: SecretSource, env: ConfigEnv): Buffer {
  let secret: Buffer;
  let field: string;
  if (source.kind === 'file') {
    field = 'secret.file';
    secret = readPrivateFile(source.path, field);
    const end = secret.length > 0 && secret[secret.length - 1] === 0x0a ? (secret[secret.length - 2] === 0x0d ? 2 : 1) : 0;
    if (end > 0) secret = secret.subarray(0, secret.length - end);
  } else {
    field = 'secret.env';
    const value = Object.prototype.hasOwnProperty.call(env, source.name) ? env[source.name] : undefined;
    if (typeof value !== 'string') throw new ConfigError(field, `secret.env: environment variable ${source.name} must be set; it is not`);
    if (value === '') throw new ConfigError(field, `secret.env: environment variable ${source.name} must not be empty; it is`);
    secret = Buffer.from(value, 'utf8');
  }
  if (secret.length < MIN_SECRET_LENGTH) {
    secret.fill(0);
    throw new ConfigError(field, `${field}: the secret must be at least ${MIN_SECRET_LENGTH} bytes; it is ${secret.length} bytes`);
  }
  return secret;
}

/** Read a file that must be a regular file private to its owner (mode & 0o077 == 0), as ssh requires of keys. */
function readPrivateFile(path: string, field: string): Buffer {
  let fd: number;
  try {
    fd = openSync(path, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK);
  } catch (err) {
    throw new ConfigError(field, `${field}: cannot open ${path}: ${errnoOf(err)}`, { cause: err });
  }
  try {
    const stat = fstatSync(fd);
    if (stat.isDirectory()) throw new ConfigError(field, `${field}: ${path} must be a file; it is a folder (EISDIR)`);
    if (!stat.isFile()) throw new ConfigError(field, `${field}: ${path} must be a regular file; it is not`);
    if ((stat.mode & 0o077) !== 0) {
      const mode = `0${(stat.mode & 0o777).toString(8).padStart(3, '0')}`;
      throw new ConfigError(field, `${field}: ${path} must not be accessible by group or others (mode 0600 or 0400); its mode is ${mode}`);
    }
    return readFileSync(fd);
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    throw new ConfigError(field, `${field}: cannot read ${path}: ${errnoOf(err)}`, { cause: err });
  } finally {
    closeSync(fd);
  }
}

/**
 * The TLS file paths of `value` (key, cert, ca) for host `hostName`: a
 * `{host}` in a path is replaced by the host's name, so one shared config
 * names each host's own files (`"key": "./tls/{host}.key"`); relative paths
 * are resolved against the config's folder.
 */
export function tlsShape(value: unknown, baseDir: string, hostName = ''): Record<keyof TlsMaterial, string> {
  const t = object(value, 'tls', 'tls');
  onlyFields(t, 'tls', TLS_FIELDS);
  const files = {} as Record<keyof TlsMaterial, string>;
  for (const key of TLS_FIELDS) {
    const field = `tls.${key}`;
    const file = t[key];
    if (typeof file !== 'string' || file === '') throw fail(field, field, 'a non-empty file path (key, cert and ca are all required)', file);
    if (!plausiblePath(file)) {
      throw new ConfigError(field, `${field} must be a file path, not PEM text; received a string of ${file.length} characters (not shown)`);
    }
    files[key] = resolve(baseDir, file.split(HOST_PLACEHOLDER).join(hostName));
  }
  return files;
}

/** In a TLS path, replaced by the name of the host the config is loaded for. */
export const HOST_PLACEHOLDER = '{host}';

export function readTls(files: Record<keyof TlsMaterial, string>): TlsMaterial {
  const material = {} as Record<keyof TlsMaterial, Buffer>;
  for (const key of TLS_FIELDS) {
    const field = `tls.${key}`;
    let data: Buffer;
    try {
      data = readFileSync(files[key]);
    } catch (err) {
      throw new ConfigError(field, `${field}: cannot read ${files[key]}: ${errnoOf(err)}`, { cause: err });
    }
    if (data.length === 0) throw new ConfigError(field, `${field}: ${files[key]} must not be empty; it is`);
    material[key] = data;
  }
  return Object.freeze(material);
}

/** False for text that is surely not a path (PEM, anything with a control character): such text is never echoed. */
function plausiblePath(text: string): boolean {
  return !/[\x00-\x1f]/.test(text) && !text.includes('-----BEGIN');
}

// ---------------------------------------------------------------------------
// The config file and its JSON syntax errors

/**
 * Read the config file at `file` (absolute) and parse it as JSON, a leading
 * BOM allowed. A ConfigError (field `''`, message starting with `file`) if it
 * cannot be read or is not valid JSON.
 */
export function readConfigJson(file: string): unknown {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError('', `${file}: cannot read the config file: ${errnoOf(err)}`, { cause: err, file });
  }
  const bom = text.charCodeAt(0) === 0xfeff ? 1 : 0;
  try {
    return JSON.parse(bom ? text.slice(1) : text);
  } catch (err) {
    // No `cause`: V8's SyntaxError quotes the text around the error, which could
    // hold a secret someone pasted inline.
    throw new ConfigError('', `${file}: ${describeJsonError(text, bom, err)}`, { file });
  }
}

/** `not valid JSON at line L, column C (position P): problem`, positions in the file as read (BOM included). */
function describeJsonError(text: string, bom: number, err: unknown): string {
  const body = bom ? text.slice(1) : text;
  let found = locateJsonError(body);
  if (found === undefined) {
    // The scanner disagrees with V8 (it should not): use V8's words without the quoted text.
    const message = String((err as Error | null)?.message ?? err);
    const at = /at position (\d+)/.exec(message);
    const problem = message.replace(/, ".*" is not valid JSON$/s, '').replace(/ in JSON at position \d+.*$/s, '');
    found = { position: at ? Number(at[1]) : body.length, problem };
  }
  const position = found.position + bom;
  const before = text.slice(0, position);
  const line = before.split('\n').length;
  const column = position - (before.lastIndexOf('\n') + 1) + 1;
  return `not valid JSON at line ${line}, column ${column} (position ${position}): ${found.problem}`;
}

/** The first syntax error in `text` per RFC 8259, or `undefined` if there is none. */
function locateJsonError(text: string): { position: number; problem: string } | undefined {
  let i = 0;
  const stop = (problem: string): Error & { position: number; problem: string } =>
    Object.assign(new Error(problem), { position: i, problem: i >= text.length ? 'unexpected end of input' : problem });
  const unexpected = (): Error => stop(`unexpected ${JSON.stringify(text[i])}`);
  const space = (): void => {
    while (i < text.length && ' \t\n\r'.includes(text[i]!)) i++;
  };
  const string = (): void => {
    i++;
    for (;;) {
      const c = text[i];
      if (c === undefined) throw stop('unterminated string');
      if (c === '"') {
        i++;
        return;
      }
      if (c === '\\') {
        i++;
        const e = text[i];
        if (e !== undefined && '"\\/bfnrt'.includes(e)) i++;
        else if (e === 'u' && /^[0-9A-Fa-f]{4}$/.test(text.slice(i + 1, i + 5))) i += 5;
        else throw stop('bad escape in string');
      } else if (c < ' ') {
        throw stop('control character in string');
      } else {
        i++;
      }
    }
  };
  const NUMBER = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y;
  const value = (): void => {
    space();
    const c = text[i];
    if (c === '{' || c === '[') {
      const close = c === '{' ? '}' : ']';
      i++;
      space();
      if (text[i] === close) {
        i++;
        return;
      }
      for (;;) {
        if (c === '{') {
          space();
          if (text[i] !== '"') throw stop('expected a double-quoted property name');
          string();
          space();
          if (text[i] !== ':') throw stop("expected ':' after a property name");
          i++;
        }
        value();
        space();
        if (text[i] === ',') {
          i++;
          continue;
        }
        if (text[i] === close) {
          i++;
          return;
        }
        throw stop(`expected ',' or '${close}'`);
      }
    }
    if (c === '"') return string();
    NUMBER.lastIndex = i;
    const n = NUMBER.exec(text);
    if (n !== null && n[0] !== '-') {
      i += n[0].length;
      return;
    }
    for (const literal of ['true', 'false', 'null']) {
      if (text.startsWith(literal, i)) {
        i += literal.length;
        return;
      }
    }
    throw unexpected();
  };
  try {
    value();
    space();
    if (i < text.length) throw stop('unexpected text after the JSON value');
    return undefined;
  } catch (err) {
    const e = err as { position?: unknown; problem?: unknown };
    if (typeof e.position === 'number' && typeof e.problem === 'string') return { position: e.position, problem: e.problem };
    return undefined; // e.g. RangeError from very deep nesting
  }
}
