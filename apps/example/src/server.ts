// The smallest fastlimit server: node:http, the in-memory backend, 5 requests per 10 s per client IP.
import { createServer } from 'node:http'
import { FastLimit } from '@fastlimit/core'

const limiter = new FastLimit()
const rules = limiter.rules({ limit: 5, window: '10s', name: 'demo' })
const port = Number(process.env.PORT ?? 3000)

const server = createServer(async (req, res) => {
  const ip = req.socket.remoteAddress ?? 'unknown'
  const d = await limiter.check(ip, rules)
  res.setHeader('RateLimit-Policy', `${d.limit};w=10`)
  // A decision of the error policy (the store was not reached) knows no remaining or reset: send none.
  if (d.source !== 'policy') {
    res.setHeader(
      'RateLimit',
      `limit=${d.limit}, remaining=${d.remaining}, reset=${Math.ceil((d.resetMs - Date.now()) / 1000)}`,
    )
  }
  if (!d.allowed) {
    res.writeHead(429, {
      'Content-Type': 'application/json',
      'Retry-After': String(Math.ceil(d.retryAfterMs / 1000)),
    })
    res.end(JSON.stringify({ error: 'Too Many Requests', retryAfterMs: d.retryAfterMs }))
    return
  }
  res.writeHead(200, { 'Content-Type': 'application/json' })
  res.end(JSON.stringify({ ok: true, remaining: d.remaining, path: req.url }))
})

server.listen(port, '127.0.0.1', () => {
  console.log(`fastlimit example on http://127.0.0.1:${port} (memory backend, 5 requests per 10 s per IP)`)
  console.log(
    `try: for i in $(seq 7); do curl -s -o /dev/null -w '%{http_code}\\n' http://127.0.0.1:${port}/; done`,
  )
})
