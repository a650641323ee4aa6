// The HTTP section: server CPU µs per request each middleware adds over its bare framework.
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { fmtOps, fmtStat, runJsonChild, type Stat, stat } from './harness'
import { FRAMEWORKS, httpBench, PEERS } from './http'
import { type Headline, type Section, table } from './report'

const here = path.dirname(fileURLToPath(import.meta.url))

/** The in-process measurement of one framework: CPU µs per request of each mode, per round. */
function inProcess(framework: string, quick: boolean): Record<string, Stat> {
  const { samples } = runJsonChild<{ samples: Record<string, number[]> }>(
    path.join(here, 'http-inproc.ts'),
    [framework, quick ? '2' : '9', quick ? '2000' : '15000'],
    { cwd: path.resolve(here, '..'), timeout: 600_000 },
    `in-process HTTP run of ${framework} failed`,
  )
  const bare = samples.bare as number[]
  const out: Record<string, Stat> = {}
  for (const [mode, values] of Object.entries(samples)) {
    out[mode] = stat(values)
    out[`${mode}-overhead`] = stat(values.map((v, i) => v - (bare[i] as number)))
  }
  return out
}

export async function httpSection({ quick }: { quick: boolean }): Promise<Section> {
  const rounds = quick ? 2 : 6
  const seconds = quick ? 1 : 4
  console.log(`[bench] HTTP: ${rounds} rounds of ${seconds} s per server variant`)
  const results = await httpBench({ rounds, seconds, warmup: quick ? 'short' : 'long' })
  console.log('[bench] HTTP in process (no network): each framework in its own process')
  const inproc: Record<string, Record<string, Stat>> = {}
  for (const f of FRAMEWORKS) inproc[f] = inProcess(f, quick)
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
    const o = ours.userOverheadUs.median
    const p = peer.userOverheadUs.median
    headlines.push({
      label: `${f}: ${PEERS[f]} overhead / ours`,
      ratio: p / Math.max(0.05, o),
      target: 3,
      detail: `${o.toFixed(2)} vs ${p.toFixed(2)} µs user CPU per request`,
      unresolved: o <= 0 || p <= 0,
    })
  }
  const inRows: string[][] = []
  for (const f of FRAMEWORKS) {
    const r = inproc[f] as Record<string, Stat>
    for (const [mode, label] of [
      ['bare', 'bare'],
      ['noop', 'a no-op middleware'],
      ['fastlimit', `@fastlimit/${f}`],
      ['peer', PEERS[f]],
      ['countWhen', `@fastlimit/${f} with countWhen (each 200 refunded)`],
    ] as const) {
      inRows.push([
        f,
        label,
        fmtStat(r[mode] as Stat, us),
        mode === 'bare' ? '—' : fmtStat(r[`${mode}-overhead`] as Stat, (n) => n.toFixed(2)),
      ])
    }
    const ours = (r['fastlimit-overhead'] as Stat).median
    const peer = (r['peer-overhead'] as Stat).median
    const counted = (r['countWhen-overhead'] as Stat).median
    headlines.push({
      label: `${f}: countWhen (reserve, response hook, refund) / plain check (in process)`,
      ratio: counted / Math.max(0.05, ours),
      detail: `${ours.toFixed(2)} -> ${counted.toFixed(2)} µs CPU per request, no network`,
      unresolved: ours <= 0 || counted <= 0,
    })
    headlines.push({
      label: `${f}: ${PEERS[f]} overhead / ours (in process)`,
      ratio: peer / Math.max(0.05, ours),
      target: 3,
      detail: `${ours.toFixed(2)} vs ${peer.toFixed(2)} µs CPU per request, no network`,
      unresolved: ours <= 0 || peer <= 0,
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
      '',
      '### In process, without the network',
      '',
      "The same apps and middlewares, their request listener driven through Node's own `IncomingMessage` and",
      '(the "countWhen" row: fastlimit deciding after the response, `countWhen: res.statusCode >= 400`, so',
      'every 200 is reserved, waits for the response to close and is refunded: the cost of the response hook)',
      '`ServerResponse` over an in-memory socket (no TCP), one process per framework with the four variants',
      'interleaved round-robin; CPU per request from `process.cpuUsage()`. What remains is the JavaScript each',
      'variant runs, so this table resolves differences of a microsecond that the loopback run above cannot.',
      '',
      table(['framework', 'variant', 'CPU µs/request, median (min–max)', 'overhead µs/request'], inRows),
    ].join('\n'),
    headlines,
  }
}
