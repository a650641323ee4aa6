// A TCP proxy on a free loopback port standing for a virtual IP (or a load balancer) in front of Redis:
// new connections go to the current target, which `moveTo` changes (a failover moving the VIP), while
// connections already open stay with the server they reached, as they do behind most load balancers.
import net from 'node:net'

export interface TcpProxy {
  readonly port: number
  /** Where new connections go. */
  target: number
  /** New connections go to `port` from now on; open ones are left alone. */
  moveTo(port: number): void
  /** How many connections it accepted. */
  readonly accepted: number
  /**
   * From now on, bytes in either direction are read and dropped (the connections stay open): a link
   * that stopped delivering, with no error on either side. `thaw()` forwards again (what was dropped
   * is lost).
   */
  freeze(): void
  thaw(): void
  close(): Promise<void>
}

/** Starts a proxy to `127.0.0.1:target`. */
export async function startProxy(target: number): Promise<TcpProxy> {
  const sockets = new Set<net.Socket>()
  let accepted = 0
  const state = { target, frozen: false }
  const server = net.createServer((client) => {
    accepted++
    const upstream = net.connect(state.target, '127.0.0.1')
    sockets.add(client)
    sockets.add(upstream)
    const end = () => {
      client.destroy()
      upstream.destroy()
      sockets.delete(client)
      sockets.delete(upstream)
    }
    client.on('error', end).on('close', end)
    upstream.on('error', end).on('close', end)
    client.on('data', (chunk: Buffer) => {
      if (!state.frozen) upstream.write(chunk)
    })
    upstream.on('data', (chunk: Buffer) => {
      if (!state.frozen) client.write(chunk)
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()))
  const port = (server.address() as net.AddressInfo).port
  return {
    port,
    get target() {
      return state.target
    },
    set target(p: number) {
      state.target = p
    },
    moveTo(p: number) {
      state.target = p
    },
    get accepted() {
      return accepted
    },
    freeze() {
      state.frozen = true
    },
    thaw() {
      state.frozen = false
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy()
        server.close(() => resolve())
      }),
  }
}
