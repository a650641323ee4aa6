// Progress on a terminal while a log is read: lines read, rate, time left. Nothing on anything else.

/** Where progress goes: `process.stderr`, or anything with the same two members (tests inject one). */
export interface ProgressStream {
  readonly isTTY?: boolean
  write(text: string): unknown
}

/** Milliseconds between two updates of the progress line. */
const EVERY_MS = 100

function count(n: number): string {
  return Math.round(n).toLocaleString('en-US')
}

function duration(seconds: number): string {
  if (!Number.isFinite(seconds)) return '?'
  if (seconds < 60) return `${Math.ceil(seconds)} s`
  const m = Math.floor(seconds / 60)
  return `${m} min ${Math.ceil(seconds - m * 60)} s`
}

/**
 * A one-line progress display, rewritten in place (`\r` and erase-line), shown only when the stream
 * is a terminal and `enabled`. Call {@link Progress.update} as often as you like: it writes at most
 * every 100 ms (it reads the clock on every call, so call it every few thousand lines).
 */
export class Progress {
  readonly #stream: ProgressStream
  readonly #active: boolean
  readonly #totalBytes: number | undefined
  readonly #now: () => number
  readonly #start: number
  #last = Number.NEGATIVE_INFINITY
  #shown = false

  /**
   * @param stream where to write (`process.stderr`)
   * @param options `enabled: false` (with `--json`) shows nothing; `totalBytes` (the file's size) gives
   *   the time left; `now` is the clock in milliseconds (tests inject one)
   */
  constructor(
    stream: ProgressStream,
    options: { enabled?: boolean; totalBytes?: number; now?: () => number } = {},
  ) {
    this.#stream = stream
    this.#active = options.enabled !== false && stream.isTTY === true
    this.#totalBytes = options.totalBytes
    this.#now = options.now ?? (() => performance.now())
    this.#start = this.#now()
  }

  /** Whether anything is shown. */
  get active(): boolean {
    return this.#active
  }

  /** Shows `lines` read and `bytes` of the file consumed, if 100 ms passed since the last update. */
  update(lines: number, bytes: number): void {
    if (!this.#active) return
    const now = this.#now()
    if (now - this.#last < EVERY_MS) return
    this.#last = now
    this.#stream.write(`\r\u001b[K${this.line(lines, bytes, now)}`)
    this.#shown = true
  }

  /** The text of the progress line. */
  line(lines: number, bytes: number, now = this.#now()): string {
    const seconds = Math.max((now - this.#start) / 1000, 1e-3)
    const rate = lines / seconds
    let left = ''
    const total = this.#totalBytes
    if (total !== undefined && total > 0 && bytes > 0) {
      const pct = Math.min(100, (bytes / total) * 100)
      left = `, ${pct.toFixed(0)}%, ${duration(((total - bytes) / bytes) * seconds)} left`
    }
    return `replay: ${count(lines)} lines read, ${count(rate)} lines/s${left}`
  }

  /** Clears the progress line (if one was shown). */
  done(): void {
    if (this.#active && this.#shown) this.#stream.write('\r\u001b[K')
    this.#shown = false
  }
}
