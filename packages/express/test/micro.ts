// Instructions per request of the common path (one app-wide rateLimit(), memory backend, allowed), for callgrind:
//   valgrind --tool=callgrind --callgrind-out-file=/dev/null node --single-threaded --conditions=@fastlimit/source \
//     --import tsx test/micro.ts 10000
// and again with 110000: the difference of the two "Collected" counts over 100000 is the cost of one request
// (add "layered" after the count for an app-wide and a route rateLimit() on each request).
// Requests are plain objects shaped like Express's (socket.remoteAddress, headers, method), each new, as Express's are.
import { rateLimit } from '../src/index'

const n = Number(process.argv[2] ?? '20000')
const layered = process.argv[3] === 'layered'
const app = rateLimit({ rules: '1000000000/min' })
const route = rateLimit({ rules: '1000000000/min', scope: 'route' })
const sockets = Array.from({ length: 256 }, (_, i) => ({ remoteAddress: `203.0.113.${i}` }))
const res = { setHeader: (_name: string, _value: string) => undefined, statusCode: 200, end: () => undefined }

const once = (req: object): Promise<void> =>
  new Promise((resolve) => app(req as never, res as never, () => resolve()))
const twice = (req: object): Promise<void> =>
  new Promise((resolve) =>
    app(req as never, res as never, () => route(req as never, res as never, () => resolve())),
  )

const run = layered ? twice : once
for (let i = 0; i < n; i++) {
  await run({ socket: sockets[i & 255], headers: {}, method: 'GET' })
}
