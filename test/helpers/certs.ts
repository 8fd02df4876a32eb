/**
 * Certificates made for a test with the openssl CLI: a CA, and leaves it signs for given DNS names, in
 * a fresh temp dir. ECDSA P-256 keys, so making a handful takes milliseconds.
 */
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

export interface Pem {
  readonly cert: string
  readonly key: string
  /** The PEM texts, for clients. */
  readonly certText: string
  readonly keyText: string
}

export interface Ca extends Pem {
  readonly dir: string
  /** A leaf for `names` (the first is the subject CN), `serverAuth` and `clientAuth`. */
  leaf(file: string, names: readonly string[]): Pem
}

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] })
}

function pem(dir: string, name: string): Pem {
  const cert = join(dir, `${name}.crt`)
  const key = join(dir, `${name}.key`)
  return { cert, key, certText: readFileSync(cert, 'utf8'), keyText: readFileSync(key, 'utf8') }
}

export function makeCa(name = 'veer test CA', dir = mkdtempSync(join(tmpdir(), 'veer-certs-'))): Ca {
  const base = name.replace(/\W+/g, '-')
  openssl(
    [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-days',
      '2',
      '-subj',
      `/CN=${name}`,
      '-keyout',
      `${base}.key`,
      '-out',
      `${base}.crt`,
      '-addext',
      'basicConstraints=critical,CA:TRUE',
      '-addext',
      'keyUsage=critical,keyCertSign,cRLSign',
    ],
    dir,
  )
  const ca = pem(dir, base)
  return {
    ...ca,
    dir,
    leaf(file, names) {
      const ext = join(dir, `${file}.ext`)
      writeFileSync(
        ext,
        `subjectAltName=${names.map((n) => (/^[\d.]+$/.test(n) ? `IP:${n}` : `DNS:${n}`)).join(',')}\n` +
          'extendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\n',
      )
      openssl(
        [
          'req',
          '-newkey',
          'ec',
          '-pkeyopt',
          'ec_paramgen_curve:P-256',
          '-nodes',
          '-subj',
          `/CN=${names[0]}`,
          '-keyout',
          `${file}.key`,
          '-out',
          `${file}.csr`,
        ],
        dir,
      )
      openssl(
        [
          'x509',
          '-req',
          '-in',
          `${file}.csr`,
          '-CA',
          ca.cert,
          '-CAkey',
          ca.key,
          '-CAcreateserial',
          '-days',
          '2',
          '-extfile',
          ext,
          '-out',
          `${file}.crt`,
        ],
        dir,
      )
      return pem(dir, file)
    },
  }
}
