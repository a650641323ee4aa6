// A TCP proxy on loopback between the tests and PostgreSQL, that can hold back what the client sends:
// a network that delivers a message late, without touching the server.
import net from 'node:net'

export interface DelayProxy {
  readonly port: number
  /** Holds client-to-server chunks for which `match` is true for `ms` (and everything after them, in order). */
  delay(match: (chunk: Buffer) => boolean, ms: number): void
  close(): Promise<void>
}

export function startDelayProxy(target: { host: string; port: number }): Promise<DelayProxy> {
  let rule: { match: (chunk: Buffer) => boolean; ms: number } | undefined
  const sockets = new Set<net.Socket>()
  const server = net.createServer((client) => {
    const upstream = net.connect(target.port, target.host)
    sockets.add(client)
    sockets.add(upstream)
    // One chain per connection keeps the chunks in order when some are held.
    let chain = Promise.resolve()
    client.on('data', (chunk) => {
      const hold = rule?.match(chunk) ? rule.ms : 0
      chain = chain.then(async () => {
        if (hold > 0) await new Promise((r) => setTimeout(r, hold))
        if (!upstream.destroyed) upstream.write(chunk)
      })
    })
    upstream.pipe(client)
    const end = () => {
      client.destroy()
      upstream.destroy()
      sockets.delete(client)
      sockets.delete(upstream)
    }
    client.on('close', end)
    upstream.on('close', end)
    client.on('error', end)
    upstream.on('error', end)
  })
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      resolve({
        port: (server.address() as net.AddressInfo).port,
        delay: (match, ms) => {
          rule = { match, ms }
        },
        close: () =>
          new Promise((done) => {
            for (const s of sockets) s.destroy()
            server.close(() => done())
          }),
      })
    })
  })
}
