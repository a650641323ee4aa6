// A framework-free adapter for the core HTTP layer: a request is a peer address and a header map.
import type { HttpAdapter } from '@fastlimit/core'

/** A request as {@link fakeAdapter} sees it. */
export interface FakeReq {
  readonly remote: string | undefined
  readonly headers: Record<string, string>
  /** @default 'GET' */
  readonly method?: string
}

/** Reads `remote` and `headers`; writes headers into a plain object. */
export const fakeAdapter: HttpAdapter<FakeReq, Record<string, string>> = {
  name: 'fake',
  remoteAddress: (req) => req.remote,
  header: (req, name) => req.headers[name],
  method: (req) => req.method ?? 'GET',
  setHeader: (res, name, value) => {
    res[name] = value
  },
}
