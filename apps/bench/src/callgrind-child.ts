// For a child script under callgrind: switches instrumentation on once start-up and loading are done.
// The bench starts valgrind with `--instr-atstart=no` (Node's start-up and module loading then run several
// times faster, uncounted) and sets FASTLIMIT_CALLGRIND_TOGGLE; callgrind_control (through vgdb) turns
// counting on just before the warm-up, which both runs of a pair share, so the difference is unchanged.
import { spawnSync } from 'node:child_process'

/** Turns callgrind's instrumentation on for this process, if the bench started it switched off. */
export function instrumentationOn(): void {
  if (process.env.FASTLIMIT_CALLGRIND_TOGGLE !== '1') return
  const ctl = spawnSync('callgrind_control', ['--instr=on', String(process.pid)], { encoding: 'utf8' })
  if (ctl.status !== 0 || !/OK/.test(ctl.stdout))
    throw new Error(`callgrind_control could not switch instrumentation on: ${ctl.stdout}${ctl.stderr}`)
}
