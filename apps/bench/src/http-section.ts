// The HTTP section: server CPU µs per request each middleware adds over its bare framework.
import { fmtOps, fmtStat } from './harness'
import { FRAMEWORKS, httpBench, PEERS } from './http'
import { type Headline, type Section, table } from './report'

export async function httpSection({ quick }: { quick: boolean }): Promise<Section> {
  const rounds = quick ? 3 : 5
  const seconds = quick ? 2 : 4
  console.log(`[bench] HTTP: ${rounds} rounds of ${seconds} s per server variant`)
  const results = await httpBench({ rounds, seconds })
  const us = (n: number) => n.toFixed(1)
  const rows = results.map((r) => [
    r.framework,
    r.flavour === 'bare'
      ? 'bare'
      : r.flavour === 'noop'
        ? 'a no-op middleware'
        : r.flavour === 'fastlimit'
          ? `@fastlimit/${r.framework}`
          : PEERS[r.framework as 'express'],
    fmtStat(r.reqPerSec, fmtOps),
    fmtStat(r.cpuUsPerReq, us),
    r.flavour === 'bare' ? '—' : fmtStat(r.overheadUs, us),
    String(r.non2xx),
  ])
  const headlines: Headline[] = []
  for (const f of FRAMEWORKS) {
    const ours = results.find((r) => r.framework === f && r.flavour === 'fastlimit')
    const peer = results.find((r) => r.framework === f && r.flavour === 'peer')
    if (!ours || !peer) continue
    const o = Math.max(0.05, ours.overheadUs.median)
    headlines.push({
      label: `${f}: ${PEERS[f]} overhead / ours`,
      ratio: peer.overheadUs.median / o,
      target: 3,
      detail: `${ours.overheadUs.median.toFixed(2)} vs ${peer.overheadUs.median.toFixed(2)} µs CPU per request`,
    })
  }
  return {
    title: 'HTTP middleware overhead',
    body: [
      'Each server variant runs in its own child process; autocannon (10 connections) drives one variant at a',
      'time from this process, and the order rotates each round (A, B, C; B, C, A; ...). Server CPU time per',
      'request comes from `/proc/<pid>/stat` (user + system), steadier than req/s on a shared machine; the',
      "overhead is each variant's CPU per request minus the bare framework's in the same round. Every limiter",
      'keys by client IP on its memory store, sends its rate-limit headers, and admits every request. The',
      '"no-op middleware" row is a middleware that only calls the next one: what the framework charges for any',
      'middleware at all, which both limiters pay too. Servers are pinned to CPU 0 and the load generator to CPU 1.',
      '',
      table(
        [
          'framework',
          'variant',
          'req/s, median (min–max)',
          'server CPU µs/request',
          'overhead µs/request',
          'non-2xx',
        ],
        rows,
      ),
    ].join('\n'),
    headlines,
  }
}
