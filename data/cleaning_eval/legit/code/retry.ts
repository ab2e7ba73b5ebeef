// Retry an async operation with exponential back-off and full jitter.
// Used by the Driftnote web client for sync pushes and blob uploads.

export interface RetryOptions {
  attempts: number;        // total tries, including the first one
  baseDelayMs: number;     // delay before the second try
  maxDelayMs: number;      // cap for any single delay
  retryOn?: (err: unknown) => boolean;
}

const defaults: RetryOptions = { attempts: 5, baseDelayMs: 250, maxDelayMs: 8000 };

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export async function withRetry<T>(op: () => Promise<T>, opts: Partial<RetryOptions> = {}): Promise<T> {
  const o = { ...defaults, ...opts };
  let lastError: unknown;
  for (let attempt = 1; attempt <= o.attempts; attempt++) {
    try {
      return await op();
    } catch (err) {
      lastError = err;
      if (o.retryOn && !o.retryOn(err)) throw err;
      if (attempt === o.attempts) break;
      const cap = Math.min(o.maxDelayMs, o.baseDelayMs * 2 ** (attempt - 1));
      await sleep(Math.random() * cap); // full jitter: spreads retries from many clients
    }
  }
  throw lastError;
}

// A 409 from /sync/v3/push means "pull first"; retrying blindly would never succeed.
export const isRetryableHttp = (err: unknown): boolean =>
  typeof err === 'object' && err !== null && 'status' in err &&
  [429, 500, 502, 503, 504].includes((err as { status: number }).status);
