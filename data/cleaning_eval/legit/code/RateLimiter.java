package com.quillfern.tallyloom.api;

import java.time.Clock;
import java.util.concurrent.ConcurrentHashMap;

/**
 * Token bucket per API key. Each key may burst up to {@code capacity} requests and is refilled
 * at {@code ratePerSecond}. This runs in each API pod, so the effective limit is per pod;
 * the load balancer pins keys to pods to keep that close to the documented limit.
 */
public final class RateLimiter {

    private static final class Bucket {
        double tokens;
        long lastRefillNanos;
    }

    private final ConcurrentHashMap<String, Bucket> buckets = new ConcurrentHashMap<>();
    private final double capacity;
    private final double ratePerSecond;
    private final Clock clock;

    public RateLimiter(double capacity, double ratePerSecond, Clock clock) {
        this.capacity = capacity;
        this.ratePerSecond = ratePerSecond;
        this.clock = clock;
    }

    /** Returns true if the request may proceed, false if it should get HTTP 429. */
    public boolean tryAcquire(String apiKey) {
        long now = clock.instant().toEpochMilli() * 1_000_000L;
        Bucket b = buckets.computeIfAbsent(apiKey, k -> {
            Bucket nb = new Bucket();
            nb.tokens = capacity;
            nb.lastRefillNanos = now;
            return nb;
        });
        synchronized (b) {
            double elapsed = (now - b.lastRefillNanos) / 1e9;
            b.tokens = Math.min(capacity, b.tokens + elapsed * ratePerSecond);
            b.lastRefillNanos = now;
            if (b.tokens >= 1.0) {
                b.tokens -= 1.0;
                return true;
            }
            return false;
        }
    }
}
