import { execFile } from 'node:child_process';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** A throwaway CA, a server certificate it signed for 127.0.0.1 and localhost, and a CA that signed nothing. */
export interface TestPki {
  dir: string;
  caFile: string;
  certFile: string;
  keyFile: string;
  /** The CA's certificate, with the server's key, for a name that is not 127.0.0.1 nor localhost. */
  elsewhereCertFile: string;
  /** Another CA: trusting it instead must fail. */
  otherCaFile: string;
  ca: string;
  cert: string;
  key: string;
}

/**
 * Whether the TLS suites can run: they make their keys with the openssl binary at test time
 * (no key material is checked in). Locally a missing openssl skips them with the reason;
 * under CI=true it fails them, because a skipped suite in CI hides breakage.
 */
export async function opensslSuite(): Promise<{ skip: string | false }> {
  try {
    await run('openssl', ['version']);
    return { skip: false };
  } catch (e) {
    const reason = `no usable openssl binary (${(e as Error).message})`;
    if (process.env.CI === 'true') throw new Error(`CI needs openssl for the TLS tests, but found ${reason}`);
    return { skip: reason };
  }
}

async function newCa(dir: string, name: string): Promise<{ cert: string; key: string }> {
  const cert = join(dir, `${name}.pem`);
  const key = join(dir, `${name}.key`);
  await run('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2',
    '-subj', `/CN=boxgrid test ${name}`, '-keyout', key, '-out', cert,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
  ]);
  return { cert, key };
}

export async function makeTestPki(): Promise<TestPki> {
  const dir = await mkdtemp(join(tmpdir(), 'boxgrid-tls-'));
  const ca = await newCa(dir, 'ca');
  const other = await newCa(dir, 'other-ca');
  const keyFile = join(dir, 'server.key');
  const csr = join(dir, 'server.csr');
  const certFile = join(dir, 'server.pem');
  const ext = join(dir, 'server.ext');
  await run('openssl', ['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-subj', '/CN=localhost', '-keyout', keyFile, '-out', csr]);
  await writeFile(ext, 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n');
  const sign = (extFile: string, out: string) =>
    run('openssl', ['x509', '-req', '-in', csr, '-CA', ca.cert, '-CAkey', ca.key, '-CAcreateserial', '-days', '2', '-extfile', extFile, '-out', out]);
  await sign(ext, certFile);
  const elsewhereExt = join(dir, 'elsewhere.ext');
  const elsewhereCertFile = join(dir, 'elsewhere.pem');
  await writeFile(elsewhereExt, 'subjectAltName=DNS:elsewhere.example\nextendedKeyUsage=serverAuth\n');
  await sign(elsewhereExt, elsewhereCertFile);
  return {
    dir, caFile: ca.cert, certFile, keyFile, otherCaFile: other.cert, elsewhereCertFile,
    ca: await readFile(ca.cert, 'utf8'), cert: await readFile(certFile, 'utf8'), key: await readFile(keyFile, 'utf8'),
  };
}
