/**
 * Real @grpc/grpc-js servers and clients for tests, with JSON-serialised messages (so no .proto is
 * needed): an Echo service with a unary Say, a server-streaming Count and a bidi Chat, on 127.0.0.1:0,
 * reached as h2c://.
 */
import * as grpc from '@grpc/grpc-js'

const json = {
  serialize: (v: unknown) => Buffer.from(JSON.stringify(v)),
  deserialize: (b: Buffer) => JSON.parse(b.toString()),
}
const SERVICE = {
  say: {
    path: '/test.Echo/Say',
    requestStream: false,
    responseStream: false,
    requestSerialize: json.serialize,
    requestDeserialize: json.deserialize,
    responseSerialize: json.serialize,
    responseDeserialize: json.deserialize,
  },
  count: {
    path: '/test.Echo/Count',
    requestStream: false,
    responseStream: true,
    requestSerialize: json.serialize,
    requestDeserialize: json.deserialize,
    responseSerialize: json.serialize,
    responseDeserialize: json.deserialize,
  },
  chat: {
    path: '/test.Echo/Chat',
    requestStream: true,
    responseStream: true,
    requestSerialize: json.serialize,
    requestDeserialize: json.deserialize,
    responseSerialize: json.serialize,
    responseDeserialize: json.deserialize,
  },
} satisfies grpc.ServiceDefinition
const EchoClient = grpc.makeGenericClientConstructor(SERVICE, 'Echo')
// biome-ignore lint/suspicious/noExplicitAny: grpc-js's generic client methods are untyped
type Method = (...args: any[]) => any
export type Client = grpc.Client & { say: Method; count: Method; chat: Method }

export interface EchoServer {
  /** h2c://127.0.0.1:PORT */
  readonly url: string
  /** Calls taken so far (every method). */
  calls(): number
  /** Say calls taken so far. */
  says(): number
  close(): Promise<void>
}

export interface EchoOptions {
  /** The `by` Say answers (default: the server's name). */
  readonly by?: string
  /** Say answers NOT_FOUND for this text. */
  readonly notFound?: string
}

/**
 * A gRPC server on 127.0.0.1:0 whose Say answers `fail`: one status for every call, or a function of
 * the call's number (0, 1, …) giving a status or undefined for OK.
 */
export async function echoServer(
  name: string,
  fail?: grpc.status | ((n: number) => grpc.status | undefined),
  opts: EchoOptions = {},
): Promise<EchoServer> {
  let calls = 0
  let says = 0
  const server = new grpc.Server()
  server.addService(SERVICE, {
    say: (call: grpc.ServerUnaryCall<{ text: string }, unknown>, done: grpc.sendUnaryData<unknown>) => {
      calls++
      const code = typeof fail === 'function' ? fail(says) : fail
      says++
      const trailer = new grpc.Metadata()
      trailer.set('x-served-by', name)
      if (code !== undefined) return done({ code, details: `${name} is failing` }, null, trailer)
      if (call.request.text === opts.notFound)
        return done({ code: grpc.status.NOT_FOUND, details: 'no such text' }, null, trailer)
      const by = opts.by ?? name
      done(null, { text: call.request.text, by, user: call.metadata.get('x-user')[0] ?? null }, trailer)
    },
    count: (call: grpc.ServerWritableStream<{ to: number }, unknown>) => {
      calls++
      for (let n = 1; n <= call.request.to; n++) call.write({ n })
      call.end()
    },
    chat: (call: grpc.ServerDuplexStream<{ n: number }, unknown>) => {
      calls++
      call.on('data', (m: { n: number }) => call.write({ n: m.n * 2, by: name }))
      call.on('end', () => call.end())
    },
  })
  const port = await new Promise<number>((ok, fail) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) =>
      err ? fail(err) : ok(p),
    ),
  )
  return {
    url: `h2c://127.0.0.1:${port}`,
    calls: () => calls,
    says: () => says,
    close: () => new Promise<void>((ok) => server.tryShutdown(() => ok())),
  }
}

/** An insecure Echo client of 127.0.0.1:PORT. */
export function echoClient(port: number, options?: grpc.ClientOptions): Client {
  return new EchoClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), options) as unknown as Client
}

export interface Unary {
  readonly err: grpc.ServiceError | null
  readonly value: { text?: string; by?: string; user?: string | null } | null
  readonly trailers: grpc.Metadata | null
}

/** One Say call: its error or value, and its trailers. */
export function say(c: Client, text: string, metadata = new grpc.Metadata()): Promise<Unary> {
  return new Promise((ok) => {
    let trailers: grpc.Metadata | null = null
    const call = c.say({ text }, metadata, (err: grpc.ServiceError | null, value: Unary['value']) =>
      // The status (and its trailers) comes after the callback's value: wait for it.
      setImmediate(() => ok({ err, value, trailers })),
    ) as grpc.ClientUnaryCall
    call.on('status', (s: grpc.StatusObject) => (trailers = s.metadata))
  })
}
