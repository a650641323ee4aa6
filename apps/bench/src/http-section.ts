// The HTTP section: server CPU µs per request each middleware adds over its bare framework, over loopback
// TCP and in process; with `--instructions`, callgrind's instructions per request of the in-process variants.
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { type CountCase, countInstructions, fmtIns } from './callgrind'
import { fmtOps, fmtStat, runJsonChild, type Stat, stat } from './harness'
import { FLAVOURS, FRAMEWORKS, httpBench, PEERS } from './http'
import { progress } from './progress'
import { type Headline, overlaps, type Section, table } from './report'

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

/** Instructions per request of every in-process variant (keyed `<framework>-<variant>`). */
async function countRequests(
  quick: boolean,
  { reps, jobs }: { reps: number; jobs: number },
): Promise<{ ins: Map<string, Stat>; warm: number; n: number }> {
  // A long warm-up (not counted: see callgrind-child.ts) so that V8's last tier-ups and the heap's growth
  // happen before the measured requests; with 1,000 they still land in them and double the count.
  const warm = quick ? 5000 : 10_000
  const n = quick ? 2000 : 3000
  console.log(
    `[bench] HTTP in process: instructions per request under callgrind (${n.toLocaleString()} and 0 after ${warm.toLocaleString()}, ${reps}x, ${jobs} at a time)`,
  )
  const cases: CountCase[] = FRAMEWORKS.flatMap((f) =>
    FLAVOURS.map((mode) => ({
      id: `${f}-${mode}`,
      label: `${f} ${mode}`,
      entry: path.join(here, 'http-inproc.ts'),
      n,
      args: (count: number) => [f, 'count', mode, String(count), String(warm)],
    })),
  )
  const ins = await countInstructions(cases, {
    reps,
    jobs,
    onRun: (done, total, label) => progress.update({ case: `callgrind: ${label}`, done, total }),
  })
  return { ins, warm, n }
}

export async function httpSection({
  quick,
  instructions,
}: {
  quick: boolean
  /** Count instructions per request of the in-process variants: `reps` pairs, `jobs` at a time. */
  instructions?: { reps: number; jobs: number }
}): Promise<Section> {
  const rounds = quick ? 2 : 6
  const seconds = quick ? 1 : 4
  console.log(`[bench] HTTP: ${rounds} rounds of ${seconds} s per server variant`)
  const results = await httpBench({
    rounds,
    seconds,
    warmup: quick ? 'short' : 'long',
    onRound: (round, variant, done, total) =>
      progress.update({
        case: `loopback ${variant}`,
        round,
        rounds,
        done,
        total: total + FRAMEWORKS.length * 2,
      }),
  })
  console.log('[bench] HTTP in process (no network): each framework in its own process')
  const inproc: Record<string, Record<string, Stat>> = {}
  const loopbackUnits = rounds * FRAMEWORKS.length * FLAVOURS.length
  for (const [i, f] of FRAMEWORKS.entries()) {
    progress.update({
      case: `in process ${f}`,
      done: loopbackUnits + 2 * i,
      total: loopbackUnits + FRAMEWORKS.length * 2,
    })
    inproc[f] = inProcess(f, quick)
  }
  let counted: Awaited<ReturnType<typeof countRequests>> | undefined
  if (instructions) {
    progress.section('http instructions')
    counted = await countRequests(quick, instructions)
  }
  const insOf = (f: string, mode: string) => counted?.ins.get(`${f}-${mode}`)
  /** Instructions a variant adds over the bare framework (medians of each). */
  const insOver = (f: string, mode: string) => {
    const m = insOf(f, mode)
    const bare = insOf(f, 'bare')
    return m && bare ? m.median - bare.median : undefined
  }
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
      basis: 'server user CPU (loopback)',
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
      const ins = insOf(f, mode)
      const over = insOver(f, mode)
      inRows.push([
        f,
        label,
        fmtStat(r[mode] as Stat, us),
        mode === 'bare' ? '—' : fmtStat(r[`${mode}-overhead`] as Stat, (n) => n.toFixed(2)),
        ...(counted
          ? [ins ? fmtStat(ins, fmtIns) : 'n/a', mode === 'bare' || over === undefined ? '—' : fmtIns(over)]
          : []),
      ])
    }
    const oursStat = r['fastlimit-overhead'] as Stat
    const peerStat = r['peer-overhead'] as Stat
    const ours = oursStat.median
    const peer = peerStat.median
    const countedWhen = (r['countWhen-overhead'] as Stat | undefined)?.median
    if (countedWhen !== undefined) {
      headlines.push({
        label: `${f}: countWhen (reserve, response hook, refund) / plain check (in process)`,
        ratio: countedWhen / Math.max(0.05, ours),
        detail: `${ours.toFixed(2)} -> ${countedWhen.toFixed(2)} µs CPU per request, no network`,
        unresolved: ours <= 0 || countedWhen <= 0,
        basis: 'CPU time (in process)',
      })
    }
    const oursIns = insOver(f, 'fastlimit')
    const peerIns = insOver(f, 'peer')
    const label = `${f}: ${PEERS[f]} overhead / ours (in process)`
    // The CPU-time overheads cannot be told apart in this run (their ranges overlap): instructions decide.
    if (
      oursIns !== undefined &&
      peerIns !== undefined &&
      (overlaps(oursStat, peerStat) || ours <= 0 || peer <= 0)
    ) {
      headlines.push({
        label,
        ratio: peerIns / Math.max(1, oursIns),
        target: 3,
        basis: 'instructions',
        detail: `${fmtIns(oursIns)} vs ${fmtIns(peerIns)} instructions per request over bare; CPU ${ours.toFixed(2)} vs ${peer.toFixed(2)} µs, within its noise`,
        unresolved: oursIns <= 0 || peerIns <= 0,
      })
    } else {
      const insNote =
        oursIns !== undefined && peerIns !== undefined
          ? `; ${fmtIns(oursIns)} vs ${fmtIns(peerIns)} instructions (${(peerIns / Math.max(1, oursIns)).toFixed(2)}x)`
          : ''
      headlines.push({
        label,
        ratio: peer / Math.max(0.05, ours),
        target: 3,
        basis: 'CPU time (in process)',
        detail: `${ours.toFixed(2)} vs ${peer.toFixed(2)} µs CPU per request, no network${insNote}`,
        unresolved: ours <= 0 || peer <= 0,
      })
    }
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
      table(
        [
          'framework',
          'variant',
          'CPU µs/request, median (min–max)',
          'overhead µs/request',
          ...(counted ? ['instructions/request, median (min–max)', 'instructions over bare'] : []),
        ],
        inRows,
      ),
      ...(counted
        ? [
            '',
            `Instructions per request: callgrind (\`node --single-threaded\`, the same child bundled with esbuild), one`,
            `variant per process: ${counted.warm.toLocaleString()} requests of warm-up, then ${counted.n.toLocaleString()} more or none; the difference`,
            `divided by ${counted.n.toLocaleString()}, median (min–max) of ${instructions?.reps} such pairs. "Over bare" subtracts the bare framework's median.`,
            'These counts do not move with the load of the machine, so they resolve what the CPU times above cannot;',
            'where the CPU-time overheads of ours and the peer overlap, the headline ratio is taken from them.',
          ]
        : []),
    ].join('\n'),
    headlines,
  }
}
