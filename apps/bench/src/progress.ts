// Where the bench is: on a terminal one status line (section, case, round, estimated time left) redrawn in
// place under the log; piped or in CI (`CI` set), plain lines instead, one per round or per 15 s at most.
//
// The time left is the current section's (from its own pace once it has done some work, else its estimate)
// plus the estimates of the sections still to run; the estimates are seconds measured on the 2-core machine
// RESULTS.md comes from, so the figure is a guide, not a promise.

/** A section as the run plans it: its `--only=` name and its expected duration in seconds. */
export interface PlannedSection {
  name: string
  estimateS: number
}

/** What a section reports as it goes: the unit it is on and how far through it is. */
export interface Step {
  /** The case, variant or framework being measured. */
  case?: string
  /** 1-based round, with the number of rounds. */
  round?: number
  rounds?: number
  /** Units done and the total, for the section's share done (rounds × cases, runs, ...). */
  done: number
  total: number
}

function clock(seconds: number): string {
  const s = Math.max(0, Math.round(seconds))
  if (s < 60) return `${s}s`
  const m = Math.floor(s / 60)
  return m < 60 ? `${m}m${String(s % 60).padStart(2, '0')}s` : `${Math.floor(m / 60)}h${m % 60}m`
}

class Progress {
  /** A live status line only on an interactive terminal outside CI. */
  readonly live = Boolean(process.stdout.isTTY) && !process.env.CI
  private plan: PlannedSection[] = []
  private index = -1
  private sectionStart = 0
  private step: Step | undefined
  private shown = ''
  private lastPlain = 0
  private lastPlainRound: string | undefined
  private restore: (() => void) | undefined

  /** Sets the sections the run will go through, in order; on a terminal, console.log clears the status first. */
  begin(plan: PlannedSection[]): void {
    this.plan = plan
    if (!this.live) return
    const original = console.log
    const log = original.bind(console)
    console.log = (...args: unknown[]) => {
      this.clear()
      log(...args)
      this.draw()
    }
    this.restore = () => {
      console.log = original
    }
  }

  /** The run enters the section named `name` (one of the plan). */
  section(name: string): void {
    this.index = this.plan.findIndex((p) => p.name === name)
    this.sectionStart = Date.now()
    this.step = undefined
    this.lastPlainRound = undefined
    this.lastPlain = 0
  }

  /** The current section's progress. */
  update(step: Step): void {
    this.step = step
    if (this.live) {
      this.clear()
      this.draw()
      return
    }
    const roundKey = step.round === undefined ? undefined : `${step.round}/${step.rounds ?? '?'}`
    const now = Date.now()
    if ((roundKey !== undefined && roundKey !== this.lastPlainRound) || now - this.lastPlain >= 15_000) {
      this.lastPlainRound = roundKey
      this.lastPlain = now
      process.stdout.write(`${this.status()}\n`)
    }
  }

  /** Ends the run's progress display (the status line is cleared). */
  end(): void {
    if (!this.live) return
    this.clear()
    this.restore?.()
    this.index = -1
  }

  /** Seconds left in the whole run, from the current section's pace and the estimates of the rest. */
  secondsLeft(): number {
    const current = this.plan[this.index]
    let left = 0
    if (current) {
      const elapsed = (Date.now() - this.sectionStart) / 1000
      const s = this.step
      const share = s && s.total > 0 ? Math.min(1, s.done / s.total) : 0
      left += share >= 0.1 ? (elapsed * (1 - share)) / share : Math.max(0, current.estimateS - elapsed)
    }
    for (const p of this.plan.slice(this.index + 1)) left += p.estimateS
    return left
  }

  private status(): string {
    const current = this.plan[this.index]
    const parts = [`[bench ${this.index + 1}/${this.plan.length}] ${current?.name ?? '?'}`]
    const s = this.step
    if (s?.case) parts.push(s.case)
    if (s?.round !== undefined) parts.push(`round ${s.round}/${s.rounds ?? '?'}`)
    else if (s && s.total > 0) parts.push(`${s.done}/${s.total}`)
    parts.push(`~${clock(this.secondsLeft())} left`)
    return parts.join(' · ')
  }

  private clear(): void {
    if (this.shown) process.stdout.write('\r\x1b[K')
    this.shown = ''
  }

  private draw(): void {
    if (this.index < 0) return
    const cols = process.stdout.columns || 100
    this.shown = this.status().slice(0, cols - 1)
    process.stdout.write(this.shown)
  }
}

/** The run's one progress display, shared by the sections. */
export const progress = new Progress()
