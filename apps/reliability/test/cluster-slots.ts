// Redis Cluster hash slots: CRC16/XMODEM of the hash tag, and identities chosen to land in given slot ranges.

const TABLE = (() => {
  const t = new Uint16Array(256)
  for (let i = 0; i < 256; i++) {
    let crc = i << 8
    for (let j = 0; j < 8; j++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff
    t[i] = crc
  }
  return t
})()

/** The Redis Cluster slot of a key's hash tag (the bytes hashed), 0 to 16383. */
export function slotOf(tag: string): number {
  let crc = 0
  for (const byte of Buffer.from(tag, 'utf8'))
    crc = ((crc << 8) & 0xffff) ^ (TABLE[((crc >> 8) ^ byte) & 0xff] as number)
  return crc % 16384
}

/** A range of slots served by one master. */
export interface SlotRange {
  readonly from: number
  readonly to: number
  /** The port of the master serving it (when the range was read). */
  readonly port: number
}

/** Parses `CLUSTER SLOTS` into ranges. */
export function parseClusterSlots(reply: unknown): SlotRange[] {
  return (reply as Array<[number, number, [string, number, ...unknown[]], ...unknown[]]>).map(
    ([from, to, master]) => ({
      from: Number(from),
      to: Number(to),
      port: Number(master[1]),
    }),
  )
}

/** Whether `slot` is in one of `ranges`. */
export function inRanges(slot: number, ranges: readonly SlotRange[]): boolean {
  return ranges.some((r) => slot >= r.from && slot <= r.to)
}

/**
 * `count` identities (simple ASCII, so FastLimit keeps them as they are and they are their own hash tag)
 * whose slot lies in `ranges`, named `${prefix}-N`.
 */
export function identitiesIn(ranges: readonly SlotRange[], count: number, prefix: string): string[] {
  const out: string[] = []
  for (let n = 0; out.length < count; n++) {
    const id = `${prefix}-${n}`
    if (inRanges(slotOf(id), ranges)) out.push(id)
  }
  return out
}
