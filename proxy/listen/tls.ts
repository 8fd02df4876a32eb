/**
 * The traffic listener's certificates: read from the files the config names and checked before anything
 * serves, the one for a handshake picked by its SNI name, and read again when a file changes (a
 * Kubernetes Secret swap) without dropping a connection: new handshakes get the new certificate,
 * established connections keep theirs.
 */
import { createHash, X509Certificate } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { createSecureContext, type SecureContext, type SecureContextOptions } from 'node:tls'
import type { CertificateFiles, TlsConfig } from '../../config/types.ts'

export interface CertificateInfo {
  /** The DNS names of its subjectAltName (what SNI picks it by). */
  readonly names: readonly string[]
  readonly notAfter: string
}

/** What one reading of the files gave: the default context's options and the contexts by SNI name. */
export interface TlsMaterial {
  /** For the server's default context (`tls.createServer`, `setSecureContext`). */
  readonly options: SecureContextOptions
  /** Exact names (lower case) and wildcard suffixes (`*.example.com` is kept as `.example.com`). */
  readonly byName: ReadonlyMap<string, SecureContext>
  readonly certificates: readonly CertificateInfo[]
  /** Of every file's text: the same digest, the same certificates. */
  readonly digest: string
}

/** Every file the TLS settings name, for the watch. */
export function tlsFiles(config: TlsConfig): string[] {
  const files = [config.cert, config.key, ...config.certificates.flatMap((c) => [c.cert, c.key])]
  if (config.clientCA !== undefined) files.push(config.clientCA)
  return [...new Set(files)]
}

/** Read and check every file; a one-line problem naming the setting when one is unusable. */
export async function readTls(config: TlsConfig): Promise<TlsMaterial | string> {
  const digest = createHash('sha256')
  const ca = config.clientCA === undefined ? undefined : await readCa(config.clientCA, digest)
  if (ca !== undefined && typeof ca !== 'string') return `tls.clientCA: ${ca.problem}`
  const base = { minVersion: config.minVersion, ca }
  const first = await pair('tls', config, base, digest)
  if (typeof first === 'string') return first
  const byName = new Map<string, SecureContext>()
  const certificates = [first.info]
  for (let i = 0; i < config.certificates.length; i++) {
    const more = await pair(`tls.certificates[${i}]`, config.certificates[i]!, base, digest)
    if (typeof more === 'string') return more
    if (more.info.names.length === 0)
      return `tls.certificates[${i}].cert: ${config.certificates[i]!.cert} names no DNS name (subjectAltName), so no SNI name can pick it`
    const context = createSecureContext(more.options)
    for (const name of more.info.names) {
      const key = name.startsWith('*.') ? name.slice(1) : name
      if (!byName.has(key)) byName.set(key, context)
    }
    certificates.push(more.info)
  }
  return { options: first.options, byName, certificates, digest: digest.digest('hex') }
}

/** The context for a handshake's SNI name: an exact name, then a wildcard one level up; else the default. */
export function pickContext(material: TlsMaterial, servername: string): SecureContext | undefined {
  if (material.byName.size === 0) return undefined
  const name = servername.toLowerCase()
  const exact = material.byName.get(name)
  if (exact !== undefined) return exact
  const dot = name.indexOf('.')
  return dot > 0 ? material.byName.get(name.slice(dot)) : undefined
}

/** A CA bundle file, checked to be PEM certificates; a problem (without the setting's name) if not. */
export async function readCa(
  file: string,
  digest?: ReturnType<typeof createHash>,
): Promise<string | { problem: string }> {
  const ca = await read(file, digest)
  if (typeof ca !== 'string') return ca
  try {
    createSecureContext({ ca })
    new X509Certificate(ca)
  } catch (err) {
    return { problem: `${file} is not a PEM CA certificate (${(err as Error).message})` }
  }
  return ca
}

async function read(
  file: string,
  digest?: ReturnType<typeof createHash>,
): Promise<string | { problem: string }> {
  try {
    const text = await readFile(file, 'utf8')
    digest?.update(text)
    return text
  } catch (err) {
    const e = err as NodeJS.ErrnoException
    return {
      problem: `cannot read ${file} (${e.code === 'ENOENT' ? 'no such file' : (e.code ?? e.message)})`,
    }
  }
}

async function pair(
  at: string,
  files: CertificateFiles,
  base: SecureContextOptions,
  digest: ReturnType<typeof createHash>,
): Promise<{ options: SecureContextOptions; info: CertificateInfo } | string> {
  const cert = await read(files.cert, digest)
  if (typeof cert !== 'string') return `${at}.cert: ${cert.problem}`
  const key = await read(files.key, digest)
  if (typeof key !== 'string') return `${at}.key: ${key.problem}`
  let leaf: X509Certificate
  try {
    leaf = new X509Certificate(cert)
  } catch (err) {
    return `${at}.cert: ${files.cert} is not a PEM certificate (${(err as Error).message})`
  }
  const options: SecureContextOptions = { ...base, cert, key }
  try {
    createSecureContext(options)
  } catch (err) {
    const why = (err as Error).message
    return /mismatch/i.test(why)
      ? `${at}.key: ${files.key} is not the key of ${files.cert}; give the key the certificate was issued for`
      : `${at}.key: ${files.key} is not a usable PEM private key (${why})`
  }
  const names = (leaf.subjectAltName ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.startsWith('DNS:'))
    .map((s) => s.slice(4).toLowerCase())
  return { options, info: { names, notAfter: new Date(leaf.validTo).toISOString() } }
}
