// For a child script under callgrind: switches instrumentation on once start-up, loading and the warm-up
// are done. The bench starts valgrind with `--instr-atstart=no` (Node's start-up, module loading and the
// warm-up then run several times faster, uncounted) and sets FASTLIMIT_CALLGRIND_TOGGLE; callgrind_control
// (through vgdb) turns counting on just before the measured operations. Both runs of a pair do the same
// until then, so their difference is unchanged, and a long warm-up costs little.
import { spawnSync } from 'node:child_process'

const toggled = process.env.FASTLIMIT_CALLGRIND_TOGGLE === '1'

// The first spawnSync of a process changes something optimized code depends on (V8 marks the optimized
// functions that use typed arrays for deoptimization, "code dependencies"), and code compiled again after it
// is slower: done first in instrumentationOn, it deoptimized the warmed-up case right where counting begins
// (MemoryBackend's check: 5,735 instructions instead of 3,153). Spawned once here, at import, before any warm-up.
if (toggled) spawnSync('callgrind_control', ['-h'], { encoding: 'utf8' })

/** Turns callgrind's instrumentation on for this process, if the bench started it switched off. */
export function instrumentationOn(): void {
  if (!toggled) return
  const ctl = spawnSync('callgrind_control', ['--instr=on', String(process.pid)], { encoding: 'utf8' })
  if (ctl.status !== 0 || !/OK/.test(ctl.stdout))
    throw new Error(`callgrind_control could not switch instrumentation on: ${ctl.stdout}${ctl.stderr}`)
}
