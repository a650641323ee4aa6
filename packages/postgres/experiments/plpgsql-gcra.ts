// An experiment, not shipped: how much a server-side form would gain. GCRA alone as a PL/pgSQL function
// (one round trip per decision, no deadline check after the lock beyond the function's own) against
// PostgresBackend's two-round-trip transaction, at 1 and 64 calls in flight, 7 rounds of 700 ms, on a
// database of its own on the machine's PostgreSQL (dropped at the end). Run from packages/postgres:
//   npx tsx experiments/plpgsql-gcra.ts
// A shipped server-side form would need all six algorithms ported (a third implementation beside core and
// the Redis Lua port), checked against core by the conformance suite's random sequences.
import type { BucketConfig } from '@fastlimit/core'
import pg from 'pg'
import { PostgresBackend } from '../src/index'
import { createDatabase } from '../test/databases'

const db = await createDatabase()
const pool = new pg.Pool({ connectionString: db.url, max: 10 })
pool.on('error', () => {})
const backend = new PostgresBackend(pool, { cleanupIntervalMs: 0 })
await backend.ready()
await pool.query(`
CREATE FUNCTION fl_gcra(k bytea, b bytea, lim bigint, win bigint, burst bigint, cost bigint, deadline numeric)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
  st text; exp bigint; now_ms bigint; lvl bigint := 0; cap bigint := burst * win; ahead bigint;
  parts text[]; after bigint; whole bigint; ttl bigint; q bigint;
BEGIN
  PERFORM set_config('synchronous_commit', 'off', true);
  INSERT INTO fastlimit (key, bucket, state, expires_at) VALUES (k, b, '', 0) ON CONFLICT DO NOTHING;
  SELECT state, expires_at INTO st, exp FROM fastlimit WHERE key = k AND bucket = b FOR UPDATE;
  now_ms := floor(extract(epoch from clock_timestamp()) * 1000);
  IF extract(epoch from clock_timestamp()) * 1000 >= deadline THEN RAISE EXCEPTION 'late' USING ERRCODE = 'FL001'; END IF;
  IF exp > now_ms AND st <> '' THEN
    parts := string_to_array(st, ',');
    ahead := parts[1]::bigint - now_ms;
    IF ahead >= 0 THEN
      IF ahead > cap / lim THEN lvl := cap + 1; ELSE lvl := ahead * lim + parts[2]::bigint; END IF;
      IF lvl > cap THEN lvl := cap; END IF;
    END IF;
  END IF;
  IF cost > 0 AND cost <= burst AND lvl + cost * win <= cap THEN
    after := lvl + cost * win;
    whole := after / lim;
    q := (after + lim - 1) / lim; ttl := greatest(q, 1);
    UPDATE fastlimit SET state = (now_ms + whole)::text || ',' || (after - whole * lim)::text,
      expires_at = CASE WHEN exp >= now_ms + ttl THEN exp ELSE now_ms + ttl + least(win, 60000) END
      WHERE key = k AND bucket = b;
    RETURN '1,' || ((cap - after) / win)::text;
  END IF;
  RETURN '0,' || ((cap - lvl) / win)::text;
END $$`)
const K = 2000
const rule: BucketConfig = { algorithm: 'gcra', limit: 1_000_000, windowMs: 60_000 }
const kb = (i: number) => Buffer.from(`fl:{fn-user-${i}}`)
const bb = Buffer.from('gcra:1000000:60000:1000000')
const variants: Record<string, (i: number) => Promise<unknown>> = {
  twoRoundTrips: (i) => backend.checkAndIncrement(`fl:{user-${i}}`, rule, 1, { deadline: Date.now() + 5000 }),
  plpgsqlOneRoundTrip: async (i) => {
    const c = await pool.connect()
    try {
      // One message: the function call in an implicit transaction, as a simple query like the backend's.
      await c.query({
        text: `SELECT set_config('lock_timeout','5000',true), set_config('statement_timeout','5020',true); SELECT fl_gcra(E'\\\\x${kb(i).toString('hex')}'::bytea, E'\\\\x${bb.toString('hex')}'::bytea, 1000000, 60000, 1000000, 1, ${Date.now() + 5000})`,
        rowMode: 'array',
      })
    } finally {
      c.release()
    }
  },
}
for (const v of Object.values(variants)) for (let i = 0; i < K; i++) await v(i)
const res: Record<string, number[]> = {}
for (let round = 0; round < 7; round++) {
  for (const [name, v] of Object.entries(variants)) {
    for (const inflight of [1, 64]) {
      let n = 0
      const t0 = performance.now()
      let i = 0
      await Promise.all(
        Array.from({ length: inflight }, async () => {
          while (performance.now() - t0 < 700) {
            await v(i++ % K)
            n++
          }
        }),
      )
      const samples = res[`${name}@${inflight}`] ?? []
      samples.push(n / ((performance.now() - t0) / 1000))
      res[`${name}@${inflight}`] = samples
    }
  }
}
for (const [k, v] of Object.entries(res)) {
  v.sort((a, b) => a - b)
  console.log(k.padEnd(26), Math.round(v[3] ?? 0), v.map(Math.round).join(' '))
}
await backend.close()
await pool.end()
await db.drop()
