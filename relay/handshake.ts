/**
 * Both halves of the relay handshake (docs/PROTOCOL.md, "Handshake"): the
 * connector sends HELLO, the acceptor answers CHALLENGE with its proof, the
 * connector checks it and answers PROOF, the acceptor checks that and
 * answers WELCOME. Each proof is an HMAC-SHA256 of both nonces and both host
 * names under the cluster secret. No sockets: each half takes decoded
 * messages and returns what to send; a violation throws ProtocolError.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import {
  ACCEPTOR_PROOF_LABEL,
  CONNECTOR_PROOF_LABEL,
  ERR_AUTH_FAILED,
  ERR_UNEXPECTED,
  ERR_UNKNOWN_HOST,
  MESSAGE_TYPE_NAMES,
  MSG_CHALLENGE,
  MSG_HELLO,
  MSG_PROOF,
  MSG_WELCOME,
  NONCE_LENGTH,
  PROOF_LENGTH,
  ProtocolError,
  checkBytes,
  checkName,
  encodeChallenge,
  encodeHello,
  encodeProof,
  encodeWelcome,
  invalid,
  type Message,
} from './codec';

/** The HMAC input of a proof: label || first nonce || second nonce || u8 len || connectorName || u8 len || acceptorName. */
function proofInput(label: string, first: Uint8Array, second: Uint8Array, connectorName: string, acceptorName: string): Buffer {
  checkBytes(first, NONCE_LENGTH, 'nonce');
  checkBytes(second, NONCE_LENGTH, 'nonce');
  checkName(connectorName, 'connectorName');
  checkName(acceptorName, 'acceptorName');
  const input = Buffer.alloc(label.length + 2 * NONCE_LENGTH + 2 + connectorName.length + acceptorName.length);
  let at = input.write(label, 0, 'latin1');
  input.set(first, at);
  at += NONCE_LENGTH;
  input.set(second, at);
  at += NONCE_LENGTH;
  input[at++] = connectorName.length;
  at += input.write(connectorName, at, 'latin1');
  input[at++] = acceptorName.length;
  input.write(acceptorName, at, 'latin1');
  return input;
}

function hmac(secret: Uint8Array | string, input: Buffer): Buffer {
  if (typeof secret === 'string' ? secret.length === 0 : !(secret instanceof Uint8Array) || secret.length === 0) {
    throw invalid('secret', 'a non-empty string or Uint8Array', typeof secret === 'string' ? '""' : secret);
  }
  return createHmac('sha256', secret).update(input).digest();
}

/** proofA = HMAC-SHA256(secret, ACCEPTOR_PROOF_LABEL || nonceC || nonceA || names). */
export function acceptorProof(secret: Uint8Array | string, nonceC: Uint8Array, nonceA: Uint8Array, connectorName: string, acceptorName: string): Buffer {
  return hmac(secret, proofInput(ACCEPTOR_PROOF_LABEL, nonceC, nonceA, connectorName, acceptorName));
}

/** proofC = HMAC-SHA256(secret, CONNECTOR_PROOF_LABEL || nonceA || nonceC || names): the nonce order is the reverse of proofA's. */
export function connectorProof(secret: Uint8Array | string, nonceC: Uint8Array, nonceA: Uint8Array, connectorName: string, acceptorName: string): Buffer {
  return hmac(secret, proofInput(CONNECTOR_PROOF_LABEL, nonceA, nonceC, connectorName, acceptorName));
}

/** True if `got` equals `expected`: both PROOF_LENGTH bytes, compared in constant time. */
export function verifyProof(expected: Uint8Array, got: Uint8Array): boolean {
  if (!(expected instanceof Uint8Array) || !(got instanceof Uint8Array)) return false;
  if (expected.length !== PROOF_LENGTH || got.length !== PROOF_LENGTH) return false;
  return timingSafeEqual(expected, got);
}

/** A fresh random nonce for HELLO or CHALLENGE. */
export function newNonce(): Buffer {
  return randomBytes(NONCE_LENGTH);
}

function unexpected(msg: Message, when: string): ProtocolError {
  return new ProtocolError(ERR_UNEXPECTED, `${MESSAGE_TYPE_NAMES[msg.type]} ${when}`);
}

export interface AcceptorSettings {
  readonly secret: Uint8Array | string;
  readonly selfName: string;
  /** May this host connect? (In the cluster config, and not this host.) */
  isPeer(hostName: string): boolean;
  readonly bootId: number;
  /** Announced in WELCOME. */
  readonly maxFramesPerBatch: number;
}

/** The acceptor's half: HELLO -> CHALLENGE, PROOF -> WELCOME. */
export class AcceptorHandshake {
  private step: 'await-hello' | 'await-proof' | 'done' = 'await-hello';
  private nonceC: Buffer = Buffer.alloc(0);
  private nonceA: Buffer = Buffer.alloc(0);
  /** The connector's host name, once its HELLO named one this side accepts. */
  peer: string | null = null;

  constructor(private readonly settings: AcceptorSettings) {}

  get done(): boolean {
    return this.step === 'done';
  }

  /** Steps taken: 0 awaiting HELLO, 1 awaiting PROOF, 2 done (a StageDeadline's progress). */
  get progress(): number {
    return this.step === 'await-hello' ? 0 : this.step === 'await-proof' ? 1 : 2;
  }

  /** Answer a handshake message (the reply to send). Throws ProtocolError to refuse. */
  onMessage(msg: Message): Buffer {
    const s = this.settings;
    if (this.step === 'await-hello' && msg.type === MSG_HELLO) {
      if (!s.isPeer(msg.hostName)) throw new ProtocolError(ERR_UNKNOWN_HOST, `host "${msg.hostName}" is not a peer in this cluster`);
      this.peer = msg.hostName;
      this.nonceC = Buffer.from(msg.nonce);
      this.nonceA = newNonce();
      this.step = 'await-proof';
      return encodeChallenge(this.nonceA, s.selfName, acceptorProof(s.secret, this.nonceC, this.nonceA, msg.hostName, s.selfName));
    }
    if (this.step === 'await-proof' && msg.type === MSG_PROOF) {
      if (!verifyProof(connectorProof(s.secret, this.nonceC, this.nonceA, this.peer!, s.selfName), msg.proof)) {
        throw new ProtocolError(ERR_AUTH_FAILED, 'the proof does not match the cluster secret');
      }
      this.step = 'done';
      return encodeWelcome(s.bootId, s.maxFramesPerBatch);
    }
    throw unexpected(msg, this.step === 'done' ? 'after the handshake' : 'before the handshake completed');
  }
}

/** The connector's half: HELLO, CHALLENGE -> PROOF, WELCOME. */
export class ConnectorHandshake {
  private step: 'hello-sent' | 'proof-sent' | 'done' = 'hello-sent';
  private readonly nonceC = newNonce();

  constructor(
    private readonly secret: Uint8Array | string,
    private readonly selfName: string,
    private readonly peerName: string,
  ) {}

  /** Steps taken: 0 HELLO sent, 1 PROOF sent, 2 done (a StageDeadline's progress). */
  get progress(): number {
    return this.step === 'hello-sent' ? 0 : this.step === 'proof-sent' ? 1 : 2;
  }

  /** The first message of the connection. */
  hello(): Buffer {
    return encodeHello(this.nonceC, this.selfName);
  }

  /**
   * Handle a handshake message: returns the PROOF to send after a CHALLENGE,
   * or the WELCOME's announcement (the connection is open). Throws
   * ProtocolError to refuse.
   */
  onMessage(msg: Message): Buffer | { bootId: number; maxFramesPerBatch: number } {
    if (this.step === 'hello-sent' && msg.type === MSG_CHALLENGE) {
      if (msg.hostName !== this.peerName) throw new ProtocolError(ERR_UNKNOWN_HOST, `dialled ${this.peerName} but the acceptor says it is ${msg.hostName}`);
      if (!verifyProof(acceptorProof(this.secret, this.nonceC, msg.nonce, this.selfName, this.peerName), msg.proof)) {
        throw new ProtocolError(ERR_AUTH_FAILED, `${this.peerName} did not prove knowledge of the cluster secret`);
      }
      this.step = 'proof-sent';
      return encodeProof(connectorProof(this.secret, this.nonceC, msg.nonce, this.selfName, this.peerName));
    }
    if (this.step === 'proof-sent' && msg.type === MSG_WELCOME) {
      this.step = 'done';
      return { bootId: msg.bootId, maxFramesPerBatch: msg.maxFramesPerBatch };
    }
    throw unexpected(msg, 'during the handshake');
  }
}
