// The HTTP section: server CPU µs per request each middleware adds over its bare framework.
import { fmtOps, fmtStat } from './harness'
import { FRAMEWORKS, httpBench, PEERS } from './http'
import { type Headline, type Section, table } from './report'

export async function httpSection({ quick }: { quick: boolean }): Promise<Section> {
  const rounds = quick ? 2 : 6
  const seconds = quick ? 1 : 4
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
    fmtStat(r.userUsPerReq, us),
    r.flavour === 'bare' ? '—' : fmtStat(r.userOverheadUs, us),
    r.flavour === 'bare' ? '—' : fmtStat(r.overheadUs, us),
    String(r.non2xx),
  ])
  const headlines: Headline[] = []
  for (const f of FRAMEWORKS) {
    const ours = results.find((r) => r.framework === f && r.flavour === 'fastlimit')
    const peer = results.find((r) => r.framework === f && r.flavour === 'peer')
    if (!ours || !peer) continue
    const o = Math.max(0.05, ours.userOverheadUs.median)
    headlines.push({
      label: `${f}: ${PEERS[f]} overhead / ours`,
      ratio: peer.userOverheadUs.median / o,
      target: 3,
      detail: `${ours.userOverheadUs.median.toFixed(2)} vs ${peer.userOverheadUs.median.toFixed(2)} µs user CPU per request`,
    })
  }
  return {
    title: 'HTTP middleware overhead',
    body: [
      'Each server variant runs in its own child process; autocannon (10 connections) drives one variant at a',
      'time from this process, and the order rotates each round (A, B, C, D; B, C, D, A; ...). Server CPU time',
      "per request comes from the server's own `process.cpuUsage()` (µs; the same figures as `/proc/<pid>/stat`",
      "without its 10 ms ticks), steadier than req/s on a shared machine; the overhead is each variant's CPU per",
      "request minus the bare framework's in the same round. The headline uses user CPU, the JavaScript a",
      'middleware runs: system CPU is the loopback TCP stack, the same work for every variant and most of the',
      'noise. Every limiter',
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
          'user CPU µs/request',
          'user overhead µs/request',
          'total overhead µs/request',
          'non-2xx',
        ],
        rows,
      ),
    ].join('\n'),
    headlines,
  }
}
