// For a child script under callgrind: switches instrumentation on once start-up, loading and the warm-up
// are done. The bench starts valgrind with `--instr-atstart=no` (Node's start-up, module loading and the
// warm-up then run several times faster, uncounted) and sets FASTLIMIT_CALLGRIND_TOGGLE; callgrind_control
// (through vgdb) turns counting on just before the measured operations. Both runs of a pair do the same
// until then, so their difference is unchanged, and a long warm-up costs little.
import { spawnSync } from 'node:child_process'

/** Turns callgrind's instrumentation on for this process, if the bench started it switched off. */
export function instrumentationOn(): void {
  if (process.env.FASTLIMIT_CALLGRIND_TOGGLE !== '1') return
  const ctl = spawnSync('callgrind_control', ['--instr=on', String(process.pid)], { encoding: 'utf8' })
  if (ctl.status !== 0 || !/OK/.test(ctl.stdout))
    throw new Error(`callgrind_control could not switch instrumentation on: ${ctl.stdout}${ctl.stderr}`)
}
