// Instructions per request of the common path (one app-wide rateLimit(), memory backend, allowed), for callgrind:
//   valgrind --tool=callgrind --callgrind-out-file=/dev/null node --single-threaded --conditions=@fastlimit/source \
//     --import tsx test/micro.ts 10000
// and again with 110000: the difference of the two "Collected" counts over 100000 is the cost of one request
// (add "layered" after the count for an app-wide and a route rateLimit() on each request; "countWhen" for
// countWhen: (req, res) => res.statusCode >= 400, each request reserved, its response closed, and refunded;
// "countAll" for countWhen: () => true, the response hook without a refund).
// Requests are plain objects shaped like Express's (socket.remoteAddress, headers, method), each new, as Express's are.
import { EventEmitter } from 'node:events'
import { rateLimit } from '../src/index'

const n = Number(process.argv[2] ?? '20000')
const variant = process.argv[3]
const layered = variant === 'layered'
const app = rateLimit({
  rules: '1000000000/min',
  ...(variant === 'countWhen' ? { countWhen: (_req, res) => res.statusCode >= 400 } : {}),
  ...(variant === 'countAll' ? { countWhen: () => true } : {}),
})
const route = rateLimit({ rules: '1000000000/min', scope: 'route' })
const sockets = Array.from({ length: 256 }, (_, i) => ({ remoteAddress: `203.0.113.${i}` }))
/** A response like Node's as far as the middleware reads it: headers, status, and its 'close' event. */
class Res extends EventEmitter {
  statusCode = 200
  headersSent = true
  setHeader(_name: string, _value: string): void {}
  end(): void {}
}
const res = new Res()

const once = (req: object): Promise<void> =>
  new Promise((resolve) => {
    const r = new Res()
    app(req as never, r as never, () => {
      r.emit('close')
      resolve()
    })
  })
const twice = (req: object): Promise<void> =>
  new Promise((resolve) =>
    app(req as never, res as never, () => route(req as never, res as never, () => resolve())),
  )

const run = layered ? twice : once
for (let i = 0; i < n; i++) {
  await run({ socket: sockets[i & 255], headers: {}, method: 'GET' })
}
